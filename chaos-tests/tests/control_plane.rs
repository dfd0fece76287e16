//! Control-plane faults against real `meshd control` processes (issue A, DESIGN §4 and §11).
//!
//! Properties, each from DESIGN §11 "must hold":
//! - no acknowledged write is lost across kill -9 of the leader and a full restart, and the
//!   whole client history is linearizable (per-key WGL check);
//! - no read, from any node, returns a version superseded by an acknowledged newer write, even
//!   from a leader that was paused (SIGSTOP) while another was elected;
//! - invalid input is refused with a precise message and stores nothing; the API needs a token;
//!   the CA refuses foreign and unowned identities.
//!
//! Reproduce one test: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests
//! --test control_plane <name> -- --nocapture`. On failure every process log is printed and the
//! data directories are kept (the path is printed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mesh_chaos_tests::control::{ControlCluster, export_resource};
use mesh_chaos_tests::harness::History;
use mesh_chaos_tests::linearizability::{OpKind, Outcome, check};
use mesh_node::client::{ApiClient, ClientError};
use mesh_proto::api::{ApplyRequest, CredentialRequest, SignRequest};
use mesh_proto::resource::{Kind, Resource};

async fn write(c: &ApiClient, key: &str, value: u64) -> Result<u64, ClientError> {
    c.apply(&ApplyRequest {
        resources: vec![export_resource(key, value)],
        dry_run: false,
    })
    .await
    .map(|r| r.version)
}

async fn read(c: &ApiClient, key: &str) -> Result<Option<u64>, ClientError> {
    match c.get(Kind::ServiceExport, "default", key).await {
        Ok(r) => Ok(r.metadata.labels.get("v").and_then(|v| v.parse().ok())),
        Err(ClientError::Api { status, .. }) if status == http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

fn outcome<T>(r: &Result<T, ClientError>, ok: impl FnOnce(&T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(e) if e.is_definite() => Outcome::Fail,
        Err(_) => Outcome::Unknown,
    }
}

/// One client: random reads and writes over `keys` keys until `stop`. After an op whose outcome
/// is unknown, it continues under a fresh client id, as Jepsen retires a process.
async fn client_loop(
    id: u32,
    c: Arc<ApiClient>,
    h: History,
    stop: Arc<AtomicBool>,
    keys: u64,
) -> u64 {
    let (mut seq, mut rng, mut me, mut acked) = (0u64, 0x9E37_79B9u64 ^ u64::from(id), id, 0);
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("k{}", (rng >> 33) % keys);
        let o = if (rng >> 20) % 2 == 0 {
            let v = u64::from(id) * 1_000_000 + seq;
            let op = h.invoke(me, &key, OpKind::Write(v));
            let r = write(&c, &key, v).await;
            acked += u64::from(r.is_ok());
            let o = outcome(&r, |_| Outcome::Ok(None));
            h.complete(op, o);
            o
        } else {
            let op = h.invoke(me, &key, OpKind::Read);
            let r = read(&c, &key).await;
            let o = outcome(&r, |v| Outcome::Ok(*v));
            h.complete(op, o);
            o
        };
        if matches!(o, Outcome::Unknown) {
            me += 1000;
        }
        if matches!(o, Outcome::Fail | Outcome::Unknown) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    acked
}

fn tuned(c: &ApiClient) -> Arc<ApiClient> {
    let mut c = c.clone_settings();
    c.attempt_timeout = Duration::from_secs(3);
    c.retry_for = Duration::from_secs(3);
    Arc::new(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_five_times_loses_no_acknowledged_write() {
    let mut cl = ControlCluster::start("leader_kills", 11, 3).expect("start cluster");
    cl.env.set_reproduce("cargo test -p mesh-chaos-tests --test control_plane leader_kill9_five_times_loses_no_acknowledged_write -- --nocapture");
    let base = cl.client().unwrap();
    let hist = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (1..=3)
        .map(|id| tokio::spawn(client_loop(id, tuned(&base), hist.clone(), stop.clone(), 5)))
        .collect();
    let all = [0, 1, 2];
    let mut failovers = Vec::new();
    for round in 1..=5 {
        let leader = cl
            .leader(&all, Duration::from_secs(20))
            .await
            .expect("leader before kill");
        tokio::time::sleep(Duration::from_millis(300)).await; // let the clients run against it
        let killed_at = Instant::now();
        cl.kill9(leader).expect("kill -9");
        // Failover = kill until the next write commits, probed by a dedicated writer.
        let mut probe = base.clone_settings();
        probe.attempt_timeout = Duration::from_millis(700);
        probe.retry_for = Duration::ZERO;
        let mut n = 0u64;
        let failover = loop {
            n += 1;
            let r = write(&probe, "probe", round * 1000 + n).await;
            if std::env::var("MESHFED_DEBUG_PROBE").is_ok() {
                eprintln!(
                    "probe {n} at +{} ms: {:?}",
                    killed_at.elapsed().as_millis(),
                    r.as_ref().err().map(|e| e.to_string())
                );
            }
            if r.is_ok() {
                break killed_at.elapsed();
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "no write committed within 30 s of killing the leader"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        println!(
            "round {round}: killed node {} (leader); next write committed after {} ms",
            cl.nodes[leader].name,
            failover.as_millis()
        );
        failovers.push(failover);
        cl.restart(leader).expect("restart");
        cl.wait_ready(leader, Duration::from_secs(30))
            .await
            .expect("restarted node rejoins");
        cl.wait_caught_up(10, Duration::from_secs(30))
            .await
            .expect("restarted node catches up");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for c in clients {
        acked += c.await.unwrap();
    }
    // Final reads of every key after the faults, part of the checked history.
    let final_client = tuned(&base);
    for k in 0..5 {
        let key = format!("k{k}");
        let op = hist.invoke(99, &key, OpKind::Read);
        let r = read(&final_client, &key).await;
        hist.complete(op, outcome(&r, |v| Outcome::Ok(*v)));
        r.expect("final read");
    }
    let ops = hist.ops();
    let verdict = check(&ops, Duration::from_secs(60));
    let mut ms: Vec<u128> = failovers.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    println!(
        "history: {} ops, {acked} acknowledged writes; failover ms sorted {ms:?}; verdict {verdict:?}",
        ops.len()
    );
    assert!(
        acked >= 20,
        "too few acknowledged writes ({acked}) for the check to mean anything"
    );
    assert!(
        verdict.is_linearizable(),
        "history is not linearizable: {verdict:?}\n{}",
        hist.to_json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_never_serves_a_superseded_version() {
    let mut cl = ControlCluster::start("paused_leader", 12, 3).expect("start cluster");
    cl.env.set_reproduce("cargo test -p mesh-chaos-tests --test control_plane paused_leader_never_serves_a_superseded_version -- --nocapture");
    let all = [0usize, 1, 2];
    let c = tuned(&cl.client().unwrap());
    write(&c, "pk", 1).await.expect("write v1");
    let old = cl.leader(&all, Duration::from_secs(10)).await.unwrap();
    cl.stop(old).expect("SIGSTOP leader");
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != old).collect();
    let new = cl
        .leader(&others, Duration::from_secs(20))
        .await
        .expect("new leader while old is paused");
    assert_ne!(new, old);
    let c_others = tuned(&cl.client_on(&others).unwrap());
    write(&c_others, "pk", 2)
        .await
        .expect("write v2 through the new leader");
    cl.cont(old).expect("SIGCONT old leader");
    // Hammer every node, the old leader first, for 3 s. Any answer must be the new version.
    let (mut answered, mut refused) = (BTreeMap::new(), 0u32);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for i in std::iter::once(old).chain(others.iter().copied()) {
            let mut one = cl.client_on(&[i]).unwrap().clone_settings();
            one.retry_for = Duration::ZERO;
            one.attempt_timeout = Duration::from_secs(2);
            match read(&one, "pk").await {
                Ok(v) => {
                    assert_eq!(
                        v,
                        Some(2),
                        "node {} returned superseded value {v:?} after v2 was acknowledged",
                        cl.nodes[i].name
                    );
                    *answered.entry(cl.nodes[i].name.clone()).or_insert(0u32) += 1;
                }
                Err(_) => refused += 1,
            }
        }
    }
    println!("reads answered per node {answered:?}; refused (no leader / not leader) {refused}");
    assert!(
        answered.contains_key(&cl.nodes[old].name),
        "the resumed old leader never answered; the test proved nothing about it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_leaves_state_identical() {
    let mut cl = ControlCluster::start("full_restart", 13, 3).expect("start cluster");
    cl.env.set_reproduce("cargo test -p mesh-chaos-tests --test control_plane full_restart_leaves_state_identical -- --nocapture");
    let c = tuned(&cl.client().unwrap());
    for i in 0..30u64 {
        write(&c, &format!("r{}", i % 12), i).await.expect("write");
    }
    let before = c
        .list(Kind::ServiceExport, None)
        .await
        .expect("list before");
    for i in 0..3 {
        cl.kill9(i).unwrap();
    }
    for i in 0..3 {
        cl.restart(i).unwrap();
    }
    cl.leader(&[0, 1, 2], Duration::from_secs(30))
        .await
        .expect("leader after full restart");
    let after = c.list(Kind::ServiceExport, None).await.expect("list after");
    assert_eq!(
        before.version, after.version,
        "config version changed across restart"
    );
    assert_eq!(
        serde_json::to_value(&before.items).unwrap(),
        serde_json::to_value(&after.items).unwrap(),
        "resources differ after a full restart"
    );
    // Every node's own applied state converges to the same thing.
    for i in 0..3 {
        let one = cl.client_on(&[i]).unwrap();
        let w = one
            .watch(0, Duration::from_secs(5))
            .await
            .expect("watch from 0");
        let mut snap = w.snapshot.expect("watch from 0 is a snapshot");
        snap.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(snap.len(), 12, "node {i} holds {} resources", snap.len());
        assert_eq!(w.version, before.version, "node {i} is at another version");
    }
    println!(
        "state identical after full restart: {} resources at version {}",
        after.items.len(),
        after.version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_precisely_and_nothing_is_stored() {
    let mut cl = ControlCluster::start("bad_input", 14, 3).expect("start cluster");
    cl.env.set_reproduce("cargo test -p mesh-chaos-tests --test control_plane bad_input_is_refused_precisely_and_nothing_is_stored -- --nocapture");
    let dir = cl.env.data_dir("manifests");
    let files = [
        (
            "malformed.yaml",
            "apiVersion: meshfed.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: a\n spec: [unclosed\n",
            "malformed.yaml:",
        ),
        (
            "unknown-kind.yaml",
            "apiVersion: meshfed.io/v1alpha1\nkind: ServiceImport\nmetadata:\n  name: a\nspec: {}\n",
            "unknown-kind.yaml:2:",
        ),
        (
            "bad-field.yaml",
            "apiVersion: meshfed.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: good\nspec:\n  service: good\n  peers: [west]\n---\napiVersion: meshfed.io/v1alpha1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  parentRefs: [{name: api}]\n  rules:\n    - backendRefs:\n        - name: api\n          weight: 2000000\n",
            "bad-field.yaml:18:",
        ),
    ];
    let meshctl = cl.meshctl().unwrap();
    for (name, text, want) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(&meshctl)
            .args(["apply", "-f", path.to_str().unwrap()])
            .env("MESHCTL_CONFIG", dir.join("no-config.json"))
            .env("MESHFED_API", cl.nodes[0].api.to_string())
            .env("MESHFED_TOKEN", &cl.token)
            .env("MESHFED_CA_FINGERPRINT", &cl.ca_fingerprint)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "meshctl apply -f {name}: exit {:?}\n{stderr}",
            out.status.code()
        );
        assert_eq!(out.status.code(), Some(1), "{name} was not refused");
        assert!(
            stderr.contains(want),
            "{name}: error does not name the location {want:?}: {stderr}"
        );
    }
    let c = cl.client().unwrap();
    for kind in Kind::ALL {
        let l = c.list(kind, None).await.unwrap();
        assert!(
            l.items.is_empty(),
            "{kind} has stored items after refused input"
        );
        assert_eq!(l.version, 0, "config version moved after refused input");
    }
    // The same invalid batch sent straight to the API is refused as a whole, with field paths.
    let bad = ApplyRequest {
        resources: vec![
            export_resource("ok", 1),
            Resource {
                kind: "ServiceImport".into(),
                ..export_resource("x", 1)
            },
        ],
        dry_run: false,
    };
    match c.apply(&bad).await {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status.as_u16(), 422);
            assert!(
                error
                    .details
                    .iter()
                    .any(|d| d.document == 1 && d.field == "kind"),
                "{error:?}"
            );
        }
        other => panic!("invalid batch accepted: {other:?}"),
    }
    assert!(
        c.list(Kind::ServiceExport, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // No token, or a wrong one: 401.
    for token in [None, Some("mfop_not-a-real-token".to_string())] {
        let anon = cl.client_with_token(token).unwrap();
        match anon.list(Kind::ServiceExport, None).await {
            Err(ClientError::Api { status, .. }) => assert_eq!(status.as_u16(), 401),
            other => panic!("call without a valid token was not refused with 401: {other:?}"),
        }
    }
    // The CA: a CSR for another trust domain is refused, even for the operator.
    let td = format!("{}.mesh", cl.name);
    let foreign = mesh_core::identity::generate_csr(
        &mesh_proto::SpiffeId::parse("spiffe://other.mesh/ns/default/sa/api").unwrap(),
    )
    .unwrap();
    match c
        .sign(&SignRequest {
            csr_pem: foreign.csr_pem,
            ttl_secs: None,
        })
        .await
    {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status.as_u16(), 400);
            assert!(error.message.contains("other.mesh"), "{error:?}");
        }
        other => panic!("foreign-trust-domain CSR was signed: {other:?}"),
    }
    // An agent credential for vm-1/billing may get billing, and nothing else.
    let agent_token = c
        .create_credential(&CredentialRequest {
            node: "vm-1".into(),
            services: vec!["billing".into()],
            ttl_secs: 0,
        })
        .await
        .unwrap()
        .token;
    let agent = cl.client_with_token(Some(agent_token)).unwrap();
    let id = |sa: &str| {
        mesh_proto::SpiffeId::parse(&format!("spiffe://{td}/ns/default/sa/{sa}")).unwrap()
    };
    let own = mesh_core::identity::generate_csr(&id("billing")).unwrap();
    let signed = agent
        .sign(&SignRequest {
            csr_pem: own.csr_pem,
            ttl_secs: Some(20),
        })
        .await
        .expect("own identity is signed");
    assert_eq!(signed.spiffe_id, id("billing").to_string());
    let other = mesh_core::identity::generate_csr(&id("payments")).unwrap();
    match agent
        .sign(&SignRequest {
            csr_pem: other.csr_pem,
            ttl_secs: None,
        })
        .await
    {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status.as_u16(), 403, "{error:?}");
        }
        other => panic!("agent obtained an identity it does not own: {other:?}"),
    }
    // An agent credential is not an operator token.
    match agent.list(Kind::ServiceExport, None).await {
        Err(ClientError::Api { status, .. }) => assert_eq!(status.as_u16(), 403),
        other => panic!("agent credential could read config: {other:?}"),
    }
}
