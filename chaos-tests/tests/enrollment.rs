//! VM enrollment with a single-use intro token (issue E, DESIGN §7, Consul auto-config):
//! `meshctl enroll token` on the operator side; on the "VM", `meshd agent` with nothing but
//! its name, the token file and its services file (the token carries the control addresses
//! and the CA pin). The VM is a distinct loopback address here, not a network namespace.
//!
//! Properties:
//! - the agent enrolls, stores its credential 0600, registers its service and serves; after a
//!   restart it reuses the stored credential (the token file is gone);
//! - a reused, expired, forged, other-node or over-asking token is refused, each with a
//!   message naming the reason;
//! - `meshctl enroll revoke` revokes the node's credential: the control plane refuses it.
//!
//! Reproduce: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test
//! enrollment -- --nocapture`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use mesh_chaos_tests::control::ControlCluster;
use mesh_chaos_tests::harness::{ProcSpec, bin_path};
use mesh_chaos_tests::sidecars::{DEADLINE, get, wait_for};
use mesh_node::client::{ApiClient, Trust};
use mesh_proto::enroll::EnrollTokenRequest;
use mesh_proto::resource::Kind;

const CLUSTER: u8 = 76;

struct Vm {
    data: PathBuf,
    token_file: PathBuf,
    args: Vec<String>,
}

/// Files and arguments of a VM agent on `127.0.76.<host>` serving `service`.
fn vm(cl: &ControlCluster, name: &str, host: u8, service: &str, token: &str) -> anyhow::Result<Vm> {
    let root = cl.env.root().join(name);
    std::fs::create_dir_all(&root)?;
    let token_file = root.join("intro.token");
    std::fs::write(&token_file, token)?;
    let services = root.join("services.yaml");
    let app_port = 23000 + u16::from(host);
    std::fs::write(
        &services,
        format!(
            "services:\n  - name: {service}\n    port: {app_port}\n    inbound: 127.0.{CLUSTER}.{host}:15006\n    health: {{tcp: true, interval: 200ms, timeout: 100ms}}\n"
        ),
    )?;
    let data = root.join("data");
    let args = vec![
        "agent".to_string(),
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--token-file".into(),
        token_file.display().to_string(),
        "--services".into(),
        services.display().to_string(),
        "--admin-addr".into(),
        format!("127.0.{CLUSTER}.{host}:15000"),
    ];
    Ok(Vm {
        data,
        token_file,
        args,
    })
}

async fn token(
    cl: &ControlCluster,
    node: &str,
    services: &[&str],
    ttl_secs: u64,
) -> anyhow::Result<String> {
    Ok(cl
        .client()?
        .enroll_token(&EnrollTokenRequest {
            node: node.into(),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            ttl_secs,
        })
        .await?
        .token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_enrolls_with_a_single_use_intro_token_and_bad_tokens_are_refused() {
    let mut cl = ControlCluster::start("enrollment", CLUSTER, 1).expect("control cluster");
    cl.env.set_reproduce(
        "cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test enrollment -- --nocapture",
    );
    let meshd = bin_path("meshd").unwrap();
    let op = cl.client().unwrap();

    // Enroll vm-1.
    let intro = token(&cl, "vm-1", &["billing"], 600).await.unwrap();
    assert!(intro.starts_with("meshfed-enroll1."), "{intro}");
    cl.env
        .spawn(ProcSpec::new("app-billing", &meshd).args([
            "demo-app",
            "--listen",
            "127.0.0.1:23020",
            "--name",
            "billing",
        ]))
        .unwrap();
    let vm1 = vm(&cl, "vm-1", 20, "billing", &intro).unwrap();
    let agent = cl
        .env
        .spawn(ProcSpec::new("vm-1", &meshd).args(vm1.args.clone()))
        .unwrap();
    let admin = "127.0.76.20:15000".parse().unwrap();
    wait_for("vm-1 ready", || async move {
        Ok(get(admin, "/ready").await?.status == 200)
    })
    .await
    .expect("vm-1 enrolls and serves");
    let stored = vm1.data.join("enrolled.json");
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the credential is stored 0600");
    wait_for("billing.vm-1 in the catalog", || {
        let op = op.clone();
        async move {
            let l = op.list(Kind::WorkloadEndpoint, None).await?;
            Ok(l.items.iter().any(|r| r.metadata.name == "billing.vm-1"))
        }
    })
    .await
    .expect("registered");
    let listed = op.enroll_list().await.unwrap();
    assert!(
        listed
            .tokens
            .iter()
            .any(|t| t.node.as_str() == "vm-1" && t.used_unix_ms.is_some())
    );

    // Refusals, each by reason.
    let forged = {
        let mut t =
            mesh_core::enroll::decode_token(&token(&cl, "vm-9", &["billing"], 600).await.unwrap())
                .unwrap();
        t.secret = "mfenroll_forged".into();
        mesh_core::enroll::encode_token(&t)
    };
    let expired = token(&cl, "vm-5", &["billing"], 1).await.unwrap();
    let cases = [
        ("vm-1", 21, "billing", intro.clone(), "already used"),
        (
            "vm-2",
            22,
            "billing",
            token(&cl, "vm-1", &["billing"], 600).await.unwrap(),
            "issued for node vm-1, but this agent is vm-2",
        ),
        (
            "vm-3",
            23,
            "admin",
            token(&cl, "vm-3", &["billing"], 600).await.unwrap(),
            "asks for admin",
        ),
        ("vm-9", 24, "billing", forged, "never issued"),
        ("vm-5", 25, "billing", expired, "expired at"),
    ];
    // Wait until the 1 s token has lapsed (a condition on the clock, not a settle sleep).
    let lapses = mesh_core::enroll::decode_token(&cases[4].3)
        .unwrap()
        .expires_unix_ms;
    while mesh_node::clock::now_unix_ms() <= lapses {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, host, service, tok, want) in cases {
        let v = vm(&cl, &format!("{name}-{host}"), host, service, &tok).unwrap();
        let mut args = v.args.clone();
        args[2] = name.into();
        let h = cl
            .env
            .spawn(ProcSpec::new(format!("{name}-{host}"), &meshd).args(args))
            .unwrap();
        let log = cl
            .env
            .proc(h)
            .wait_for_log("enrollment refused", DEADLINE)
            .unwrap_or_else(|e| panic!("{name}: not refused: {e}"));
        assert!(log.contains(want), "{name}: expected {want:?} in:\n{log}");
    }

    // A restart needs no token: the stored credential is reused.
    std::fs::remove_file(&vm1.token_file).unwrap();
    cl.env.proc(agent).restart().unwrap();
    cl.env
        .proc(agent)
        .wait_for_log("using the credential this node enrolled with", DEADLINE)
        .expect("restart reuses the credential");
    wait_for("vm-1 ready again", || async move {
        Ok(get(admin, "/ready").await?.status == 200)
    })
    .await
    .expect("ready after restart");

    // Revoke: the node's credential is refused by the control plane.
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    let node_client = ApiClient::new(
        vec![cl.nodes[0].api.to_string()],
        Trust::PinnedCa(cl.ca_fingerprint.clone()),
        Some(c["agent_token"].as_str().unwrap().to_owned()),
    )
    .unwrap();
    let before = node_client.watch(0, Duration::from_millis(10)).await;
    assert!(before.is_ok(), "the enrolled credential works: {before:?}");
    op.enroll_revoke("vm-1").await.unwrap();
    let after = node_client.watch(0, Duration::from_millis(10)).await;
    assert!(
        matches!(&after, Err(mesh_node::client::ClientError::Api { status, .. }) if status.as_u16() == 401),
        "a revoked node's credential still works: {after:?}"
    );
}
