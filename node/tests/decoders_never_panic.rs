//! Deterministic "fuzz-lite" for the network-facing decoders in `mesh-node` (DESIGN §11:
//! "every decoder that faces the network ... never panics"): meshctl's manifest reader
//! (`manifest::parse_source`, and `Manifests::locate` for the server's field problems), join
//! tokens (`JoinToken::decode`), and the Raft RPC frames a control node reads from its peers
//! (`AppendEntriesRequest`, `VoteRequest`, `InstallSnapshotRequest`, and the request and reply
//! envelopes, through `mesh_proto::codec`).
//!
//! Property: for seeded random inputs and seeded mutations of valid encodings (bit flips,
//! truncations, insertions, hostile length fields, duplicated chunks, format tokens), every call
//! returns `Ok` or `Err`; a panic is caught and reported with its case seed and input in hex.
//! Runs are deterministic; `FUZZ_LITE_SEED=<u64>` picks another seed and `FUZZ_LITE_SCALE=<n>`
//! multiplies the case counts. The harness is a copy of the one in
//! `core/tests/decoders_never_panic.rs` (test crates cannot share a module without a support
//! file). This file does not run Raft on what it decodes, and is no substitute for
//! coverage-guided fuzzing (`fuzz/`).

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_node::manifest::{Source, parse_source};
use mesh_node::token::JoinToken;
use mesh_proto::api::FieldProblem;
use mesh_proto::codec;
use mesh_proto::command::{Command, ResourceWrite, StateData};
use mesh_proto::resource::{Kind, ResourceKey};
use mesh_raft_store::{ControlNode, TypeConfig};
use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, Membership,
    SnapshotMeta, SnapshotSegmentId, StorageError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

/// Cases per (decoder, generator) pair, before `FUZZ_LITE_SCALE`.
const RANDOM_CASES: usize = 2_000;
const MUTATION_CASES: usize = 3_000;
/// `raft_net`'s frame limit.
const MAX_RAFT_FRAME: usize = 32 * 1024 * 1024;

// ------------------------------------------------------------------------------ the harness

/// splitmix64: tiny, seedable, and good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    /// A length skewed towards short: most inputs are small, a few are large.
    fn len(&mut self, max: usize) -> usize {
        let cap = *self.pick(&[4, 16, 64, 512, max]);
        self.below(cap.min(max) + 1)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.len(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// A string over `alphabet` (tokens, so multi-byte pieces stay intact).
    fn text(&mut self, alphabet: &[&str], max_tokens: usize) -> String {
        let n = self.len(max_tokens);
        (0..n).map(|_| *self.pick(alphabet)).collect()
    }
}

/// Byte patterns that claim huge or inconsistent lengths: bincode varint markers (0xfb u16,
/// 0xfc u32, 0xfd u64, 0xfe u128), DER long-form lengths, and a big-endian u32 frame header.
#[rustfmt::skip]
const HOSTILE_LENGTHS: &[&[u8]] = &[
    &[0xfb, 0xff, 0xff],
    &[0xfc, 0xff, 0xff, 0xff, 0xff],
    &[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xfa], &[0xff], &[0x80], &[0x81, 0x00], &[0x82, 0xff, 0xff], &[0x84, 0xff, 0xff, 0xff, 0xff],
    &[0x89, 0x01, 0, 0, 0, 0, 0, 0, 0, 0],
    &[0xff, 0xff, 0xff, 0xff], &[0x00, 0x00, 0x00, 0x00],
];

/// A mutation of one of `seeds`: one to four edits, each a bit flip, truncation, insertion,
/// deletion, interesting byte, off-by-one, hostile length, duplicated chunk, splice from
/// another seed, or a token from `dict`.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dict: &[&[u8]]) -> Vec<u8> {
    let mut out = rng.pick(seeds).clone();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        let pos = rng.below(len + 1);
        let span = rng.below(len - pos + 1).min(1 + rng.below(64));
        match rng.below(10) {
            0 if len > 0 => out[pos.min(len - 1)] ^= 1 << rng.below(8),
            1 => out.truncate(pos),
            2 => {
                let junk = rng.bytes(16);
                out.splice(pos..pos, junk);
            }
            3 => {
                out.drain(pos..pos + span);
            }
            4 if len > 0 => {
                out[pos.min(len - 1)] = *rng.pick(&[0, 1, 0x7f, 0x80, 0xfa, 0xfb, 0xff])
            }
            5 if len > 0 => {
                let b = &mut out[pos.min(len - 1)];
                *b = if rng.below(2) == 0 {
                    b.wrapping_add(1)
                } else {
                    b.wrapping_sub(1)
                };
            }
            6 => {
                let pattern = *rng.pick(HOSTILE_LENGTHS);
                let end = (pos + pattern.len()).min(len);
                out.splice(pos..end, pattern.iter().copied());
            }
            7 => {
                let chunk = out[pos..pos + span].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, chunk);
            }
            8 => {
                let other = rng.pick(seeds);
                let from = rng.below(other.len() + 1);
                let take = rng.below(other.len() - from + 1);
                out.splice(pos..pos + span, other[from..from + take].iter().copied());
            }
            _ if !dict.is_empty() => {
                let token = *rng.pick(dict);
                out.splice(pos..pos + span.min(1), token.iter().copied());
            }
            _ => {}
        }
    }
    out
}

/// How a failing input is shown: hex for bytes, so it can be pasted into a regression test.
trait Input {
    fn describe(&self) -> String;
}

impl Input for Vec<u8> {
    fn describe(&self) -> String {
        hex(self)
    }
}

impl Input for String {
    fn describe(&self) -> String {
        format!("{:?} (hex {})", self, hex(self.as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Run `cases` cases of `target`: each draws an input from `generate` with its own seed, then
/// feeds it to `check`, which may draw further choices (options, requester) from the same RNG.
fn run<T: Input>(
    target: &str,
    cases: usize,
    generate: impl Fn(&mut Rng) -> T,
    check: impl Fn(&T, &mut Rng),
) {
    let base = env_u64("FUZZ_LITE_SEED").unwrap_or(0x006d_6573_6866_6564);
    let scale = env_u64("FUZZ_LITE_SCALE").unwrap_or(1).max(1) as usize;
    let salt = target.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    for case in 0..cases * scale {
        let seed = Rng(base ^ salt ^ (case as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)).next();
        let mut rng = Rng(seed);
        let input = generate(&mut rng);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(&input, &mut rng)));
        if let Err(payload) = outcome {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panic!(
                "{target}: decoder panicked ({message}) on case {case}, case seed {seed:#018x}, \
                 FUZZ_LITE_SEED={base:#x}; input: {}",
                input.describe()
            );
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[should_panic(expected = "decoder panicked (boom) on case")]
fn harness_reports_a_panicking_decoder() {
    run(
        "self-test",
        50,
        |rng| rng.bytes(8),
        |b, _| assert!(b.len() < 6, "boom"),
    );
}

// ------------------------------------------------------------------------------ manifests

#[rustfmt::skip]
const YAML_TOKENS: &[&[u8]] = &[
    b"---\n", b"...\n", b"- ", b": ", b"{", b"}", b"[", b"]", b",", b"&a ", b"*a", b"<<: *a\n",
    b"!!binary ", b"!!str ", b"!<tag:x> ", b"? ", b"|\n", b">-\n", b"\t", b"  ", b"\n", b"#",
    b"'", b"\"", b"\\u0000", b"\\", b"~", b"null", b".inf", b"0x7fffffffffffffff",
    b"99999999999999999999", b"%YAML 1.2\n", b"%TAG ! tag:x:\n", b"@", b"`", b"\xef\xbb\xbf",
    b"\r", b"\xff",
];

#[rustfmt::skip]
const FIELDS: &[&str] = &[
    "", "spec", "metadata.name", "spec.rules[0].backendRefs[1].weight",
    "spec.rules[99999999999999999999]", "metadata.labels[\"a/b\"]", "metadata.labels[\"",
    "spec..x", "[", "]", "spec.rules[", "spec.targetRef.name", "spec.rules[0].to[0].paths[7]",
];

/// Multi-document YAML with flow style, anchors and aliases, on top of the shipped examples.
const EXTRA_MANIFEST: &str = "\
apiVersion: meshfed.io/v1alpha1
kind: ServiceExport
metadata: {name: api, labels: {app: api, tier: \"1\"}}
spec:
  service: api
  peers: [west, 'north']
---
apiVersion: meshfed.io/v1alpha1
kind: FailoverPolicy
metadata:
  name: &s api
  labels: {app: *s}
spec:
  service: *s
  targets:
    - {region: eu, zone: eu-1}
    - cluster: west
";

fn manifests() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut texts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(!texts.is_empty(), "no examples in {}", dir.display());
    texts.sort();
    texts.push(EXTRA_MANIFEST.to_owned());
    texts.push(texts.join("---\n"));
    texts
}

fn source(text: &str) -> Vec<Source> {
    vec![Source {
        name: "fuzz.yaml".to_owned(),
        text: text.to_owned(),
    }]
}

/// meshctl's path: parse, validate, then map field problems (its own, or a server's, whose
/// document index and field path arrive over the wire) back to lines.
fn check_manifest(text: &str, rng: &mut Rng) {
    let field_seeds: Vec<Vec<u8>> = FIELDS.iter().map(|f| f.as_bytes().to_vec()).collect();
    let field = match rng.below(2) {
        0 => (*rng.pick(FIELDS)).to_owned(),
        _ => lossy(&mutate(
            rng,
            &field_seeds,
            &[b"[", b"]", b".", b"\"", b"0", b"\\"],
        )),
    };
    match parse_source(source(text)) {
        Ok(m) => {
            let _ = m.validate().map_err(|e| e.to_string());
            for d in &m.documents {
                let _ = d.position(&field);
            }
            let _ = m.locate(&FieldProblem {
                document: rng.below(m.documents.len() + 2),
                field,
                message: "from the server".to_owned(),
            });
        }
        Err(e) => drop(e.to_string()),
    }
}

#[test]
fn manifest_reader_never_panics() {
    let texts = manifests();
    for t in &texts {
        let m = parse_source(source(t)).unwrap();
        assert!(m.validate().is_ok(), "seed manifest is invalid:\n{t}");
    }
    let seeds: Vec<Vec<u8>> = texts.iter().map(|t| t.clone().into_bytes()).collect();
    run(
        "manifest/random",
        RANDOM_CASES,
        |rng| lossy(&rng.bytes(512)),
        |t, rng| {
            check_manifest(t, rng);
        },
    );
    run(
        "manifest/mutated",
        MUTATION_CASES,
        |rng| lossy(&mutate(rng, &seeds, YAML_TOKENS)),
        |t, rng| check_manifest(t, rng),
    );
}

// ------------------------------------------------------------------------------ join tokens

#[rustfmt::skip]
const JSON_TOKENS: &[&[u8]] = &[
    b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"true", b"1e999", b"-0",
    b"\"\\u0000\"", b"\"\\ud800\"", b"\"api\":", b"\"secret\":",
];

#[test]
fn join_token_decoder_never_panics() {
    let token = JoinToken {
        secret: format!("mfjoin_{}", "A".repeat(43)),
        ca_fingerprint: format!("sha256:{}", "ab".repeat(32)),
        trust_domain: "east.mesh".to_owned(),
        api: vec!["127.0.1.1:7443".to_owned(), "[::1]:7443".to_owned()],
    };
    let encoded = token.encode().unwrap();
    assert_eq!(JoinToken::decode(&encoded).unwrap(), token);
    let prefix = "meshfed-join1.";
    let b64: Vec<String> = ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain("-_=+/. \n".chars())
        .map(String::from)
        .collect();
    let b64: Vec<&str> = b64.iter().map(String::as_str).collect();
    let check = |s: &String, _: &mut Rng| drop(JoinToken::decode(s));

    run(
        "token/random",
        RANDOM_CASES,
        |rng| lossy(&rng.bytes(256)),
        check,
    );
    run(
        "token/random-body",
        RANDOM_CASES,
        |rng| format!("{prefix}{}", rng.text(&b64, 400)),
        check,
    );
    let text = [encoded.into_bytes()];
    let dict: &[&[u8]] = &[b".", b"=", b"+", b"/", b" ", b"\n", b"meshfed-join1."];
    run(
        "token/mutated-text",
        MUTATION_CASES,
        |rng| lossy(&mutate(rng, &text, dict)),
        check,
    );
    let json = [serde_json::to_vec(&token).unwrap()];
    run(
        "token/mutated-json",
        MUTATION_CASES,
        |rng| {
            format!(
                "{prefix}{}",
                URL_SAFE_NO_PAD.encode(mutate(rng, &json, JSON_TOKENS))
            )
        },
        check,
    );
}

// ------------------------------------------------------------------------------ Raft RPC

/// `raft_net`'s private request envelope, mirrored: bincode writes an enum as its variant index
/// and payload, so the same variants in the same order decode the same bytes.
#[derive(Serialize, Deserialize)]
enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// `raft_net`'s private reply envelope, mirrored the same way: a leader decodes it from peers.
#[derive(Serialize, Deserialize)]
enum RaftReply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A joint config ({1,2} then {2,3}) with node 4 as a learner.
fn membership() -> Membership<u64, ControlNode> {
    let node = |n: u64| ControlNode {
        name: format!("c{n}"),
        raft_addr: format!("127.0.1.{n}:7001"),
        api_addr: format!("127.0.1.{n}:7443"),
    };
    let voters = vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3])];
    Membership::new(voters, BTreeMap::from([1, 2, 3, 4].map(|n| (n, node(n)))))
}

fn append_requests() -> Vec<AppendEntriesRequest<TypeConfig>> {
    let command = Command::ApplyResources {
        resources: vec![ResourceWrite {
            key: ResourceKey {
                kind: Kind::HTTPRoute,
                namespace: "default".to_owned(),
                name: "api".to_owned(),
            },
            labels: BTreeMap::new(),
            spec_json: r#"{"parentRefs":[{"kind":"Service","name":"api"}]}"#.to_owned(),
            expect_version: Some(0),
        }],
        now_unix_ms: 1_750_000_000_000,
    };
    let entries = vec![
        Entry {
            log_id: log_id(2, 4),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 5),
            payload: EntryPayload::Normal(Command::Batch(vec![command])),
        },
        Entry {
            log_id: log_id(2, 6),
            payload: EntryPayload::Membership(membership()),
        },
    ];
    vec![
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 3)),
            entries,
            leader_commit: Some(log_id(1, 3)),
        },
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        },
    ]
}

fn vote_requests() -> Vec<VoteRequest<u64>> {
    vec![
        VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 6))),
        VoteRequest::new(Vote::new(1, 1), None),
    ]
}

fn snapshot_request() -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(2, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 6)),
            last_membership: StoredMembership::new(Some(log_id(2, 6)), membership()),
            snapshot_id: "2-1-6-0".to_owned(),
        },
        offset: 0,
        data: codec::encode(&StateData::default()).unwrap(),
        done: true,
    }
}

fn replies() -> Vec<RaftReply> {
    let disk = std::io::Error::other("disk full");
    let storage = StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, disk);
    let segment = |id: &str, offset| SnapshotSegmentId {
        id: id.to_owned(),
        offset,
    };
    let mismatch = SnapshotMismatch {
        expect: segment("a", 0),
        got: segment("b", 9),
    };
    vec![
        RaftReply::Append(Ok(AppendEntriesResponse::Success)),
        RaftReply::Append(Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(
            2, 5,
        ))))),
        RaftReply::Append(Ok(AppendEntriesResponse::Conflict)),
        RaftReply::Append(Ok(AppendEntriesResponse::HigherVote(Vote::new(4, 3)))),
        RaftReply::Append(Err(RaftError::Fatal(Fatal::StorageError(storage)))),
        RaftReply::Vote(Ok(VoteResponse::new(
            Vote::new(3, 2),
            Some(log_id(2, 6)),
            true,
        ))),
        RaftReply::Vote(Err(RaftError::Fatal(Fatal::Stopped))),
        RaftReply::Snapshot(Ok(InstallSnapshotResponse {
            vote: Vote::new(2, 1),
        })),
        RaftReply::Snapshot(Err(RaftError::APIError(
            InstallSnapshotError::SnapshotMismatch(mismatch),
        ))),
    ]
}

/// Every Raft decoder a peer's bytes reach, and the summaries openraft logs of what decoded;
/// then the framed path, header through `frame_len` and body through the envelope.
fn check_raft(bytes: &[u8]) {
    use openraft::MessageSummary as _;
    if let Ok(r) = codec::decode::<AppendEntriesRequest<TypeConfig>>(bytes) {
        drop(r.summary());
    }
    if let Ok(r) = codec::decode::<VoteRequest<u64>>(bytes) {
        drop(r.to_string());
    }
    if let Ok(r) = codec::decode::<InstallSnapshotRequest<TypeConfig>>(bytes) {
        drop(r.to_string());
    }
    let _ = codec::decode::<RaftRequest>(bytes);
    if let Ok(RaftReply::Append(Ok(r))) = codec::decode::<RaftReply>(bytes) {
        drop(r.to_string());
    }
    if let Some((header, body)) = bytes.split_first_chunk::<4>()
        && let Ok(len) = codec::frame_len(*header, MAX_RAFT_FRAME)
        && let Some(body) = body.get(..len)
    {
        let _ = codec::decode::<RaftRequest>(body);
        let _ = codec::decode::<RaftReply>(body);
    }
}

#[test]
fn raft_frames_never_panic() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    let mut requests = Vec::new();
    for r in append_requests() {
        seeds.push(codec::encode(&r).unwrap());
        assert!(codec::decode::<AppendEntriesRequest<TypeConfig>>(seeds.last().unwrap()).is_ok());
        requests.push(RaftRequest::Append(r));
    }
    for r in vote_requests() {
        seeds.push(codec::encode(&r).unwrap());
        assert!(codec::decode::<VoteRequest<u64>>(seeds.last().unwrap()).is_ok());
        requests.push(RaftRequest::Vote(r));
    }
    let snapshot = snapshot_request();
    seeds.push(codec::encode(&snapshot).unwrap());
    requests.push(RaftRequest::Snapshot(snapshot));
    for r in &requests {
        let body = codec::encode(r).unwrap();
        assert!(codec::decode::<RaftRequest>(&body).is_ok());
        seeds.push(codec::frame(&body).unwrap());
        seeds.push(body);
    }
    for r in &replies() {
        let body = codec::encode(r).unwrap();
        assert!(codec::decode::<RaftReply>(&body).is_ok());
        seeds.push(codec::frame(&body).unwrap());
        seeds.push(body);
    }

    run(
        "raft/random",
        RANDOM_CASES,
        |rng| rng.bytes(1024),
        |b, _| check_raft(b),
    );
    run(
        "raft/mutated",
        MUTATION_CASES * 3,
        |rng| mutate(rng, &seeds, &[]),
        |b, _| check_raft(b),
    );
}
