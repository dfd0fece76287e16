//! Deterministic "fuzz-lite" for the network-facing decoders reachable from `mesh-core` (DESIGN
//! §11: "every decoder that faces the network ... never panics"): the binary codec (`Command`,
//! `CommandResponse`, `StateData`, `frame_len`), the CSR signer (`check_csr`, `sign_svid`), SVID
//! verification (`verify_svid`, `spiffe_id_of`, `TrustBundles`), request canonicalisation
//! (`canonicalize_path`, `request_facts`) and config validation (`parse_resource`, `validate`).
//!
//! Property: for seeded random inputs and seeded mutations of valid encodings (bit flips,
//! truncations, insertions, hostile length fields, duplicated chunks, format tokens), every call
//! returns `Ok` or `Err`; a panic is caught and reported with its case seed and input in hex.
//! Runs are deterministic; `FUZZ_LITE_SEED=<u64>` picks another seed and `FUZZ_LITE_SCALE=<n>`
//! multiplies the case counts for a longer local soak. This file does not check *which* error a
//! decoder returns (the corpus tests do) and is no substitute for coverage-guided fuzzing
//! (`fuzz/`).

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};

use base64::Engine as _;
use mesh_core::config::{parse_resource, validate, validate_batch};
use mesh_core::http::{PathOptions, canonicalize_path, request_facts};
use mesh_core::identity::{
    Requester, TrustBundles, Usage, check_csr, generate_ca, generate_csr, sign_svid, spiffe_id_of,
    verify_svid,
};
use mesh_proto::codec::{self, MAX_FRAME_BYTES};
use mesh_proto::command::{
    AgentStatus, CaMaterial, CertExpiry, ClusterInfo, Command, CommandResponse, ControlNodeInfo,
    Credential, CredentialKind, EnrollRefusal, GossipKey, Need, RedeemRefusal, ResourceWrite,
    StateData,
};
use mesh_proto::enroll::PendingEnrollment;
use mesh_proto::federation::{Peering, PeeringState, PendingToken};
use mesh_proto::resource::{Kind, Resource, ResourceKey, StoredResource};
use mesh_proto::{NodeName, ServiceName, SpiffeId, TrustDomain};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

/// Cases per (decoder, generator) pair, before `FUZZ_LITE_SCALE`.
const RANDOM_CASES: usize = 2_000;
const MUTATION_CASES: usize = 3_000;
/// Certificates are valid around this time (unix seconds).
const NOW: u64 = 1_750_000_000;

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

// ------------------------------------------------------------------------------ binary codec

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn key(kind: Kind, name: &str) -> ResourceKey {
    ResourceKey {
        kind,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn fake_ca() -> CaMaterial {
    CaMaterial {
        cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        key_pem: "k".into(),
        fingerprint: format!("sha256:{}", "ab".repeat(32)),
        not_after_unix: NOW + 1,
    }
}

fn commands() -> Vec<Command> {
    let now_unix_ms = NOW * 1000;
    let write = |name: &str, expect_version| ResourceWrite {
        key: key(Kind::TrafficPolicy, name),
        labels: BTreeMap::from([("app".to_owned(), "api".to_owned())]),
        spec_json: r#"{"targetRef":{"kind":"Service","name":"api"}}"#.into(),
        expect_version,
    };
    let apply = Command::ApplyResources {
        resources: vec![write("a", Some(3)), write("b", None)],
        now_unix_ms,
    };
    let revoke = Command::RevokeNode {
        node: id("n1"),
        now_unix_ms,
    };
    let delete = Command::DeleteResource {
        key: key(Kind::HTTPRoute, "r"),
        now_unix_ms,
    };
    vec![
        Command::InitCluster {
            cluster: id("east"),
            trust_domain: id("east.mesh"),
            ca: fake_ca(),
            operator_token_sha256: "0f".repeat(32),
            join_token_sha256: "1e".repeat(32),
            gossip_key: GossipKey {
                id: 1,
                key_b64: "AAAA".into(),
            },
            now_unix_ms,
        },
        apply.clone(),
        delete.clone(),
        Command::RegisterControlNode {
            info: ControlNodeInfo {
                node_id: 2,
                name: id("c2"),
                raft_addr: "127.0.1.2:7001".into(),
                api_addr: "127.0.1.2:7443".into(),
            },
            now_unix_ms,
        },
        Command::PutCredential {
            token_sha256: "2d".repeat(32),
            credential: Credential {
                kind: CredentialKind::Agent {
                    node: id("n1"),
                    services: vec![id("api"), id("web")],
                },
                created_unix_ms: now_unix_ms,
                expires_unix_ms: 0,
                revoked: false,
            },
        },
        revoke.clone(),
        Command::Authorized {
            token_sha256: "3c".repeat(32),
            need: Need::Operator,
            now_unix_ms,
            command: Box::new(apply),
        },
        Command::Batch(vec![delete, revoke, Command::Batch(vec![])]),
        Command::Authorized {
            token_sha256: "5a".repeat(32),
            need: Need::Agent {
                node: id("n1"),
                service: id("api"),
            },
            now_unix_ms,
            command: Box::new(Command::DeleteResource {
                key: key(Kind::WorkloadEndpoint, "api.n1"),
                now_unix_ms,
            }),
        },
        Command::Authorized {
            token_sha256: "6b".repeat(32),
            need: Need::AgentNode { node: id("n1") },
            now_unix_ms,
            command: Box::new(Command::ReportAgentStatus {
                node: id("n1"),
                config_version: 12,
                certs: vec![CertExpiry {
                    service: id("api"),
                    expires_unix: NOW + 86_400,
                }],
                now_unix_ms,
            }),
        },
        Command::PutFederationToken {
            secret_sha256: "7a".repeat(32),
            token: pending_token(),
        },
        Command::RedeemFederationToken {
            secret_sha256: "7a".repeat(32),
            peering: peering(),
            now_unix_ms,
        },
        Command::PutPeering { peering: peering() },
        Command::RemovePeering { name: id("west") },
        Command::PutEnrollToken {
            secret_sha256: "8c".repeat(32),
            token: enrollment(),
        },
        Command::RedeemEnrollment {
            secret_sha256: "8c".repeat(32),
            node: id("vm-1"),
            services: vec![id("billing")],
            agent_token_sha256: "9d".repeat(32),
            now_unix_ms,
        },
    ]
}

fn enrollment() -> PendingEnrollment {
    PendingEnrollment {
        node: id("vm-1"),
        services: vec![id("billing")],
        created_unix_ms: NOW * 1000,
        expires_unix_ms: NOW * 1000 + 3_600_000,
        used_unix_ms: None,
    }
}

fn pending_token() -> PendingToken {
    PendingToken {
        peer: id("west"),
        created_unix_ms: NOW * 1000,
        expires_unix_ms: NOW * 1000 + 3_600_000,
        used_unix_ms: Some(NOW * 1000 + 5),
    }
}

fn peering() -> Peering {
    Peering {
        name: id("west"),
        trust_domain: id("west.mesh"),
        ca_pem: fake_ca().cert_pem,
        ca_fingerprint: fake_ca().fingerprint,
        api: vec!["127.0.2.1:7443".into()],
        gateways: vec!["127.0.2.9:15443".into()],
        state: PeeringState::Active,
        since_unix_ms: NOW * 1000,
        last_heartbeat_unix_ms: NOW * 1000,
    }
}

fn responses() -> Vec<CommandResponse> {
    let k = key(Kind::AuthorizationPolicy, "p");
    vec![
        CommandResponse::FederationTokenStored,
        CommandResponse::PeeringRecorded,
        CommandResponse::RedeemRefused {
            reason: RedeemRefusal::WrongPeer {
                issued_for: id("west"),
                redeemer: id("south"),
            },
        },
        CommandResponse::PeeringRemoved { existed: true },
        CommandResponse::EnrollTokenStored,
        CommandResponse::Enrolled,
        CommandResponse::EnrollRefused {
            reason: EnrollRefusal::NotGranted {
                service: id("admin"),
                granted: vec![id("billing")],
            },
        },
        CommandResponse::None,
        CommandResponse::Initialized,
        CommandResponse::Applied {
            version: 7,
            changed: vec![k.clone(), key(Kind::ServiceExport, "e")],
            unchanged: vec![key(Kind::FailoverPolicy, "f")],
        },
        CommandResponse::Deleted { version: 300 },
        CommandResponse::NotFound { key: k.clone() },
        CommandResponse::Conflict {
            key: k,
            expected: 1,
            actual: u64::MAX,
        },
        CommandResponse::NodeRegistered { node_id: 3 },
        CommandResponse::Revoked { credentials: 2 },
        CommandResponse::Unauthorized {
            reason: "token revoked".into(),
        },
        CommandResponse::Batch(vec![
            CommandResponse::CredentialStored,
            CommandResponse::AlreadyInitialized,
        ]),
        CommandResponse::StatusRecorded,
    ]
}

fn state() -> StateData {
    let stored = |kind, name: &str, version| {
        let key = key(kind, name);
        (
            key.clone(),
            StoredResource {
                key,
                labels: BTreeMap::new(),
                spec_json: r#"{"service":"api","peers":["west"]}"#.into(),
                version,
            },
        )
    };
    StateData {
        cluster: Some(ClusterInfo {
            name: id("east"),
            trust_domain: id("east.mesh"),
            created_unix_ms: NOW * 1000,
        }),
        ca: Some(fake_ca()),
        credentials: BTreeMap::from([(
            "4b".repeat(32),
            Credential {
                kind: CredentialKind::ControlJoin,
                created_unix_ms: 1,
                expires_unix_ms: 2,
                revoked: true,
            },
        )]),
        gossip_keys: vec![GossipKey {
            id: 9,
            key_b64: "BBBB".into(),
        }],
        control_nodes: BTreeMap::from([(
            1,
            ControlNodeInfo {
                node_id: 1,
                name: id("c1"),
                raft_addr: "127.0.1.1:7001".into(),
                api_addr: "127.0.1.1:7443".into(),
            },
        )]),
        version: 12,
        resources: BTreeMap::from([
            stored(Kind::ServiceExport, "api", 11),
            stored(Kind::FailoverPolicy, "api", 12),
            stored(Kind::WorkloadEndpoint, "api.n1", 12),
        ]),
        agents: BTreeMap::from([(
            id("n1"),
            AgentStatus {
                config_version: 11,
                certs: vec![CertExpiry {
                    service: id("api"),
                    expires_unix: NOW + 3600,
                }],
                reported_unix_ms: NOW * 1000,
            },
        )]),
        federation_tokens: BTreeMap::from([("7a".repeat(32), pending_token())]),
        peerings: BTreeMap::from([(id("west"), peering())]),
        enrollments: BTreeMap::from([("8c".repeat(32), enrollment())]),
    }
}

/// Every body decoder, then the framed path: header through `frame_len`, body through `decode`.
fn check_codec(bytes: &[u8], rng: &mut Rng) {
    let _ = codec::decode::<Command>(bytes);
    let _ = codec::decode::<CommandResponse>(bytes);
    let _ = codec::decode::<StateData>(bytes);
    let Some((header, body)) = bytes.split_first_chunk::<4>() else {
        return;
    };
    let limit = *rng.pick(&[0, 16, 4096, MAX_FRAME_BYTES, usize::MAX]);
    if let Ok(len) = codec::frame_len(*header, limit)
        && let Some(body) = body.get(..len)
    {
        let _ = codec::decode::<Command>(body);
        let _ = codec::decode::<StateData>(body);
    }
}

#[test]
fn codec_decoders_never_panic() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for c in commands() {
        seeds.push(codec::encode(&c).unwrap());
    }
    for r in responses() {
        seeds.push(codec::encode(&r).unwrap());
    }
    seeds.push(codec::encode(&state()).unwrap());
    seeds.push(codec::encode(&StateData::default()).unwrap());
    for s in &seeds {
        let ok = codec::decode::<Command>(s).is_ok()
            || codec::decode::<CommandResponse>(s).is_ok()
            || codec::decode::<StateData>(s).is_ok();
        assert!(ok, "seed {} does not decode", hex(s));
    }
    let framed: Vec<Vec<u8>> = seeds.iter().map(|s| codec::frame(s).unwrap()).collect();
    seeds.extend(framed);

    run(
        "codec/random",
        RANDOM_CASES,
        |rng| rng.bytes(1024),
        |b, rng| check_codec(b, rng),
    );
    run(
        "codec/mutated",
        MUTATION_CASES * 2,
        |rng| mutate(rng, &seeds, &[]),
        |b, rng| check_codec(b, rng),
    );
    for header in [[0; 4], [0xff; 4], [0x04, 0, 0, 1], [0, 0, 0, 5]] {
        for limit in [0, 5, usize::MAX] {
            let _ = codec::frame_len(header, limit);
        }
    }
}

// ------------------------------------------------------------------------------ identity

#[rustfmt::skip]
const PEM_TOKENS: &[&[u8]] = &[
    b"-----BEGIN CERTIFICATE REQUEST-----\n", b"-----END CERTIFICATE REQUEST-----\n",
    b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n", b"\n", b"\r\n", b" ",
    b"=", b"==", b"-----", b"A", b"/+", b"\0",
];

/// The PKI the identity targets start from, each part checked valid so mutations start from a
/// real encoding and not from noise.
struct Pki {
    td: TrustDomain,
    ca: CaMaterial,
    ca_der: Vec<u8>,
    csr_pem: String,
    csr_der: Vec<u8>,
    leaf_der: Vec<u8>,
    bundles: TrustBundles,
}

fn pki() -> Pki {
    let td: TrustDomain = id("east.mesh");
    let ca = generate_ca(&id("east"), &td, NOW).unwrap();
    let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    let wid = SpiffeId::workload(&td, "default", &id::<ServiceName>("api"));
    let csr = generate_csr(&wid).unwrap();
    let csr_der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.csr_pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
    let leaf = sign_svid(&ca, &csr.csr_pem, &wid, 3600, NOW).unwrap();
    let leaf_der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    let mut bundles = TrustBundles::new();
    bundles
        .insert_der(td.clone(), vec![CertificateDer::from(ca_der.clone())])
        .unwrap();
    assert_eq!(
        check_csr(&csr.csr_pem, &td, &Requester::Operator).unwrap(),
        wid
    );
    let chain = [CertificateDer::from(leaf_der.as_slice())];
    assert_eq!(
        verify_svid(&chain, &bundles, Usage::Server, NOW).unwrap(),
        wid
    );
    Pki {
        td,
        ca,
        ca_der,
        csr_pem: csr.csr_pem,
        csr_der,
        leaf_der,
        bundles,
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// The signer's path for a CSR a requester sends: `check_csr`, then `sign_svid` (which decodes
/// and verifies the CSR again), for a requester drawn from `rng`.
fn check_csr_pem(csr_pem: &str, pki: &Pki, rng: &mut Rng) {
    let node: NodeName = id("n1");
    let requester = match rng.below(4) {
        0 => Requester::Operator,
        1 => Requester::ControlJoin { node },
        2 => Requester::Control { node },
        _ => Requester::Agent {
            node,
            services: vec![id("api")],
        },
    };
    let asked = check_csr(csr_pem, &pki.td, &requester);
    let wid = SpiffeId::workload(&pki.td, "default", &id::<ServiceName>("api"));
    let _ = sign_svid(&pki.ca, csr_pem, asked.as_ref().unwrap_or(&wid), 3600, NOW);
}

#[test]
fn csr_signer_never_panics() {
    let pki = pki();
    let label = "CERTIFICATE REQUEST";
    run(
        "csr/random-text",
        RANDOM_CASES,
        |rng| lossy(&rng.bytes(2048)),
        |s, rng| {
            check_csr_pem(s, &pki, rng);
        },
    );
    run(
        "csr/random-der",
        RANDOM_CASES,
        |rng| pem(label, &rng.bytes(1024)),
        |s, rng| {
            check_csr_pem(s, &pki, rng);
        },
    );
    let text = [pki.csr_pem.clone().into_bytes()];
    run(
        "csr/mutated-pem",
        MUTATION_CASES,
        |rng| lossy(&mutate(rng, &text, PEM_TOKENS)),
        |s, rng| check_csr_pem(s, &pki, rng),
    );
    let der = [pki.csr_der.clone()];
    run(
        "csr/mutated-der",
        MUTATION_CASES,
        |rng| pem(label, &mutate(rng, &der, &[])),
        |s, rng| check_csr_pem(s, &pki, rng),
    );
    let huge = "A".repeat(mesh_core::identity::MAX_CSR_PEM_BYTES + 1);
    assert!(check_csr(&huge, &pki.td, &Requester::Operator).is_err());
}

/// Every consumer of a peer's certificate DER: the id reader, chain verification with the
/// mutated cert as leaf or as intermediate, and a federation peer's bundle (DER and PEM).
fn check_cert(der: &[u8], pki: &Pki, rng: &mut Rng) {
    let _ = spiffe_id_of(der);
    let usage = *rng.pick(&[Usage::Server, Usage::Client]);
    let now = *rng.pick(&[NOW, NOW, NOW, 0, u64::MAX]);
    let mutated = CertificateDer::from(der);
    let leaf = CertificateDer::from(pki.leaf_der.as_slice());
    let root = CertificateDer::from(pki.ca_der.as_slice());
    let chain = match rng.below(3) {
        0 => vec![mutated],
        1 => vec![mutated, root],
        _ => vec![leaf, mutated],
    };
    let _ = verify_svid(&chain, &pki.bundles, usage, now);
    let mut bundles = TrustBundles::new();
    let _ = bundles.insert_der(pki.td.clone(), vec![CertificateDer::from(der.to_vec())]);
    let _ = bundles.insert_pem(pki.td.clone(), &pem("CERTIFICATE", der));
}

#[test]
fn svid_verification_never_panics() {
    let pki = pki();
    run(
        "svid/random",
        RANDOM_CASES,
        |rng| rng.bytes(1024),
        |d, rng| check_cert(d, &pki, rng),
    );
    let seeds = [pki.leaf_der.clone(), pki.ca_der.clone()];
    run(
        "svid/mutated",
        MUTATION_CASES * 2,
        |rng| mutate(rng, &seeds, &[]),
        |d, rng| check_cert(d, &pki, rng),
    );
}

// ------------------------------------------------------------------------------ HTTP facts

/// Path pieces; the first [`CLEAN_PATH_TOKENS`] are ones a canonical path may hold, the rest
/// are what the canonicaliser must refuse or normalise.
#[rustfmt::skip]
const PATH_TOKENS: &[&str] = &[
    "/", "/", "/", "a", "B", "0", "%41", "%7e", "%2e", "%2E%2E", "%E2%82%AC", "%3A", ".",
    "..", "/..", "/.", "//", "~", "-", "*", ":", "@", "?", "%20",
    // not clean:
    "%", "%2F", "%2f", "%25", "%00", "%5C", "%3B", "%C0%AF", "%e0%80%af", "%ed%a0%80", "%FF", "%zz", "%4",
    ";", "\\", "#", " ", "\t", "\u{7f}", "\u{0}", "\u{e9}", "\u{202e}",
];
const CLEAN_PATH_TOKENS: usize = 24;

const TARGETS: &[&str] = &[
    "/",
    "/api/./v1/../v2?x=1",
    "//api//v1/",
    "/%41%62c/%7Euser/%e2%82%ac",
    "/v1/items;jsessionid=1",
    "/a%2fb",
    "/a/%2e%2e/b",
    "/admin%20/x",
    "*",
    "http://east/api",
    "/a?b#c",
];

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    policy_headers: Vec<String>,
    opts: PathOptions,
}

impl Input for Request {
    fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n:?}: hex {}", hex(v)))
            .collect();
        format!(
            "method {:?}, target {}, headers [{}], policy headers {:?}, {:?}",
            self.method,
            self.target.describe(),
            headers.join(", "),
            self.policy_headers,
            self.opts
        )
    }
}

const HEADERS: &[(&str, &[u8])] = &[
    ("host", b"api.east"),
    (":authority", b"API.east:80"),
    ("content-length", b"10"),
    ("transfer-encoding", b"chunked"),
    ("x-user", b"alice"),
    ("cookie", b"a=1"),
    ("Cookie", b"b=2"),
    ("X-Forwarded-For", b" 10.0.0.1\t"),
];

#[rustfmt::skip]
const HEADER_TOKENS: &[&[u8]] = &[
    b":", b" ", b"\t", b"\r\n", b"\0", b"\x7f", b"\xff", b"\xc3\xa9", b",", b";", b"[::1]", b"@",
];

fn path_options(rng: &mut Rng) -> PathOptions {
    PathOptions {
        case_insensitive: rng.below(2) == 0,
        max_len: *rng.pick(&[
            0,
            1,
            8,
            64,
            mesh_core::http::DEFAULT_MAX_PATH_LEN,
            usize::MAX,
        ]),
    }
}

/// A request target: a known one, tokens without raw bytes every server refuses (so the
/// decoder and the dot-segment resolver get exercised), any tokens, or a mutated known target.
fn target(rng: &mut Rng, dict: &[&[u8]]) -> String {
    match rng.below(4) {
        0 => (*rng.pick(TARGETS)).to_owned(),
        1 => rng.text(&PATH_TOKENS[..CLEAN_PATH_TOKENS], 400),
        2 => rng.text(PATH_TOKENS, 400),
        _ => {
            let seeds: Vec<Vec<u8>> = TARGETS.iter().map(|t| t.as_bytes().to_vec()).collect();
            lossy(&mutate(rng, &seeds, dict))
        }
    }
}

fn request(rng: &mut Rng, dict: &[&[u8]]) -> Request {
    let method = match rng.below(4) {
        0 | 1 => (*rng.pick(&["GET", "DELETE", "PROPFIND", "M-SEARCH"])).to_owned(),
        2 => lossy(&mutate(
            rng,
            &[b"GET".to_vec(), b"PATCH".to_vec()],
            HEADER_TOKENS,
        )),
        _ => lossy(&rng.bytes(40)),
    };
    let mut headers = Vec::new();
    for _ in 0..rng.below(7) {
        let (name, value) = *rng.pick(HEADERS);
        let (mut name, mut value) = (name.as_bytes().to_vec(), value.to_vec());
        match rng.below(4) {
            0 => name = mutate(rng, &[name], HEADER_TOKENS),
            1 => value = mutate(rng, &[value], HEADER_TOKENS),
            _ => {}
        }
        headers.push((lossy(&name), value));
    }
    let policy_headers = (0..rng.below(3))
        .map(|_| (*rng.pick(&["host", "x-user", "X-User", "cookie", ":authority", ""])).to_owned())
        .collect();
    Request {
        method,
        target: target(rng, dict),
        headers,
        policy_headers,
        opts: path_options(rng),
    }
}

/// Canonicalises `raw`, and checks that a canonical path is a fixed point: routing and policy
/// must never disagree because one of them canonicalised twice.
fn check_path(raw: &str, opts: PathOptions) {
    if let Ok(path) = canonicalize_path(raw, opts) {
        let again = canonicalize_path(path.as_str(), opts);
        assert_eq!(
            again.as_ref().map(|p| p.as_str()),
            Ok(path.as_str()),
            "canonical path is not a fixed point"
        );
    }
}

#[test]
fn request_canonicalisation_never_panics() {
    let dict: Vec<&[u8]> = PATH_TOKENS.iter().map(|t| t.as_bytes()).collect();
    run(
        "path/random-bytes",
        RANDOM_CASES,
        |rng| lossy(&rng.bytes(512)),
        |t, rng| {
            check_path(t, path_options(rng));
        },
    );
    run(
        "path/tokens-and-mutations",
        MUTATION_CASES * 2,
        |rng| target(rng, &dict),
        |t, rng| {
            check_path(t, path_options(rng));
        },
    );
    run(
        "request-facts",
        MUTATION_CASES * 2,
        |rng| request(rng, &dict),
        |r, _| {
            let facts = request_facts(&r.method, &r.target, &r.headers, &r.policy_headers, r.opts);
            if let Ok(f) = facts {
                check_path(f.path.as_str(), r.opts);
            }
        },
    );
}

// ------------------------------------------------------------------------------ config

#[rustfmt::skip]
const JSON_TOKENS: &[&[u8]] = &[
    b"{", b"}", b"[", b"]", b"\"", b":", b",", b"null", b"true", b"1e999", b"-0",
    b"18446744073709551616", b"\"\\u0000\"", b"\"\\ud800\"", b"0.1", b"\"1h\"", b"\"-1s\"",
];

#[rustfmt::skip]
const KEYS: &[&str] = &[
    "apiVersion", "kind", "metadata", "spec", "name", "namespace", "labels", "version",
    "parentRefs", "rules", "matches", "path", "type", "value", "method", "backendRefs", "weight",
    "port", "timeouts", "request", "connect", "targetRef", "retries", "attempts", "perTryTimeout",
    "retryOn", "budget", "ratio", "minPerSecond", "action", "from", "to", "principals",
    "trustDomains", "methods", "paths", "headers", "service", "targets", "region", "zone",
    "cluster", "peers", "loadBalancer", "policy", "hashHeader", "rateLimit", "burst",
    "faultInjection", "delay", "abort", "percent", "status", "duration", "node", "address",
    "locality", "healthy", "x",
];

fn resources() -> Vec<Value> {
    let doc = |kind: &str, name: &str, spec: Value| {
        json!({
            "apiVersion": "meshfed.io/v1alpha1",
            "kind": kind,
            "metadata": { "name": name, "namespace": "shop", "labels": { "app": "api" } },
            "spec": spec,
        })
    };
    vec![
        doc(
            "HTTPRoute",
            "api-canary",
            json!({
                "parentRefs": [{ "name": "api" }],
                "rules": [{
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/v1" },
                                  "headers": [{ "name": "x-user", "value": "alice" }],
                                  "method": "GET" }],
                    "backendRefs": [{ "name": "api-v1", "weight": 90 },
                                    { "name": "api-v2", "port": 8080, "weight": 10 }],
                    "timeouts": { "request": "1m30s" },
                }],
            }),
        ),
        doc(
            "TrafficPolicy",
            "api",
            json!({
                "targetRef": { "name": "api" },
                "timeouts": { "request": "5s", "connect": "250ms" },
                "retries": { "attempts": 3, "perTryTimeout": "1s", "retryOn": ["5xx", "reset"],
                             "budget": { "ratio": 0.2, "minPerSecond": 10 } },
                "circuitBreaker": { "maxConnections": 100, "maxPendingRequests": 10 },
                "outlierDetection": { "consecutive5xx": 5, "baseEjectionTime": "30s",
                                      "maxEjectionPercent": 50 },
                "loadBalancer": { "policy": "consistentHash", "hashHeader": "x-user" },
                "rateLimit": { "requestsPerSecond": 100, "burst": 20 },
                "faultInjection": { "delay": { "percent": 1.5, "duration": "100ms" },
                                    "abort": { "percent": 0.5, "status": 503 } },
            }),
        ),
        doc(
            "AuthorizationPolicy",
            "api-allow-web",
            json!({
                "targetRef": { "name": "api" },
                "action": "ALLOW",
                "rules": [{
                    "from": [{ "principals": ["spiffe://east.mesh/ns/default/sa/web"],
                               "trustDomains": ["west.mesh"] }],
                    "to": [{ "methods": ["GET"], "paths": ["/v1/*", "/healthz"],
                             "headers": [{ "name": "x-user", "value": "alice" }] }],
                }],
            }),
        ),
        doc(
            "FailoverPolicy",
            "api",
            json!({
                "service": "api",
                "targets": [{ "region": "eu", "zone": "eu-1" }, { "cluster": "west" }],
            }),
        ),
        doc(
            "ServiceExport",
            "api",
            json!({ "service": "api", "peers": ["west"] }),
        ),
        {
            let mut endpoint = doc(
                "WorkloadEndpoint",
                "api.vm-1",
                json!({
                    "service": "api", "node": "vm-1", "address": "10.0.3.2:15006",
                    "locality": { "region": "eu", "zone": "eu-1" }, "healthy": true,
                }),
            );
            endpoint["metadata"]["namespace"] = json!("default");
            endpoint
        },
    ]
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(1.0e308),
        7 => json!(-0.5),
        8 => json!(*rng.pick(&[
            "",
            "0s",
            "99999999999999999999h",
            "1.5.5s",
            "0.0000000001ms",
            "1m30",
            "/a/../..",
            "/v1/*",
            "%2F",
            "*",
            "spiffe://east.mesh/ns/default/sa/web",
            "ALLOW",
            "consistentHash",
            "HTTPRoute",
            "Exact",
            "-",
            "a.b",
            "\u{0}",
        ])),
        9 => Value::String(rng.text(&["a", "-", ".", "/", "%", "\u{e9}", "\u{0}", "*", "9"], 300)),
        10 if depth < 6 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        11 if depth < 6 => Value::Object(
            (0..rng.below(4))
                .map(|_| ((*rng.pick(KEYS)).to_owned(), random_value(rng, depth + 1)))
                .collect(),
        ),
        // Nesting as deep as serde_json lets through from the wire (its limit is 128).
        12 => (0..120).fold(json!("deep"), |v, _| json!([v])),
        _ => json!(0.5),
    }
}

/// One structural edit at a random place of `v`: drop or add a key, drop or duplicate an item,
/// or replace a value by one of another type or an edge-case value.
fn mutate_value(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(map) if !map.is_empty() && rng.below(5) != 0 => {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .unwrap_or_default();
            match rng.below(6) {
                0 => drop(map.remove(&key)),
                1 => drop(map.insert((*rng.pick(KEYS)).to_owned(), random_value(rng, 0))),
                _ => {
                    if let Some(child) = map.get_mut(&key) {
                        mutate_value(rng, child);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && rng.below(5) != 0 => {
            let i = rng.below(items.len());
            match rng.below(6) {
                0 => drop(items.remove(i)),
                1 => items.insert(i, items[i].clone()),
                _ => mutate_value(rng, &mut items[i]),
            }
        }
        _ => *v = random_value(rng, 0),
    }
}

impl Input for Value {
    fn describe(&self) -> String {
        self.to_string()
    }
}

/// The meshctl path (untyped value, lenient decode) and then validation, alone and in a batch.
fn check_config_value(v: &Value) {
    if let Ok(res) = parse_resource(0, v) {
        let _ = validate(0, &res);
        let _ = validate_batch(&[res.clone(), res]);
    }
}

/// The API path: bytes to a value (meshctl) and bytes straight to a `Resource` (the server).
fn check_config_bytes(bytes: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        check_config_value(&v);
    }
    if let Ok(res) = serde_json::from_slice::<Resource>(bytes) {
        let _ = validate(0, &res);
    }
}

#[test]
fn config_validation_never_panics() {
    let docs = resources();
    for d in &docs {
        let res = parse_resource(0, d).unwrap();
        assert!(
            validate(0, &res).is_ok(),
            "seed {d} is invalid: {:?}",
            validate(0, &res)
        );
    }
    let bytes: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| serde_json::to_vec(d).unwrap())
        .collect();
    run(
        "config/random",
        RANDOM_CASES,
        |rng| rng.bytes(512),
        |b, _| check_config_bytes(b),
    );
    run(
        "config/mutated-bytes",
        MUTATION_CASES,
        |rng| mutate(rng, &bytes, JSON_TOKENS),
        |b, _| check_config_bytes(b),
    );
    run(
        "config/mutated-values",
        MUTATION_CASES,
        |rng| {
            let mut v = rng.pick(&docs).clone();
            for _ in 0..=rng.below(4) {
                // `spec` is where the typed decode and the value checks are; aim there mostly.
                match v.get_mut("spec") {
                    Some(spec) if rng.below(4) != 0 => mutate_value(rng, spec),
                    _ => mutate_value(rng, &mut v),
                }
            }
            v
        },
        |v, _| check_config_value(v),
    );
}

// ------------------------------------------------------------------------------ tunnel preamble

/// The preamble faces every local sidecar and every peer gateway: decoding it, and deciding on
/// it, must never panic, and a decoded preamble must re-encode to a frame within the limit.
#[test]
fn tunnel_preamble_decoder_never_panics() {
    use mesh_core::tunnel::{Admission, admit_stream, dispatch_tunnel};
    use mesh_proto::tunnel::{MAX_PREAMBLE_BYTES, Preamble, TUNNEL_VERSION, Target};

    let west: TrustDomain = id("west.mesh");
    let east: TrustDomain = id("east.mesh");
    let seeds: Vec<Vec<u8>> = [
        Preamble::service(west.clone(), id("api"), None),
        Preamble::service(west.clone(), id("a-much-longer-service-name"), Some(65535)),
        Preamble {
            version: TUNNEL_VERSION,
            target: Target::Probe { nonce: u64::MAX },
        },
    ]
    .iter()
    .map(|p| p.to_frame().unwrap())
    .collect();
    let policy = Admission {
        local: west.clone(),
        federated: [east.clone()].into(),
        exported: [(id::<ServiceName>("api"), [8443u16].into())].into(),
    };
    let gateway = SpiffeId::gateway(&east, &id::<NodeName>("gw"));
    let sidecar = SpiffeId::workload(&east, "default", &id::<ServiceName>("web"));
    let peers = [west.clone()].into();
    let check = |frame: &Vec<u8>, _: &mut Rng| {
        let Some(header) = frame.get(..4) else {
            return;
        };
        let header: [u8; 4] = header.try_into().unwrap();
        let decoded = Preamble::body_len(header).and_then(|len| {
            let body = frame.get(4..).unwrap_or(&[]);
            Preamble::decode(&body[..len.min(body.len())])
        });
        if let Ok(p) = &decoded {
            assert!(p.to_frame().unwrap().len() <= 4 + MAX_PREAMBLE_BYTES);
        }
        let _ = admit_stream(&policy, &gateway, &decoded);
        let _ = dispatch_tunnel(&east, &peers, &sidecar, &decoded);
    };
    let dict: [&[u8]; 4] = [
        b"west.mesh",
        b"\xfb\xff\xff",
        b"\xfc\xff\xff\xff\xff",
        b"\x01",
    ];
    run(
        "preamble/random",
        RANDOM_CASES,
        |rng| rng.bytes(1100),
        check,
    );
    run(
        "preamble/mutated",
        MUTATION_CASES,
        |rng| mutate(rng, &seeds, &dict),
        check,
    );
}
