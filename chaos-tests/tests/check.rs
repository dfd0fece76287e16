//! `meshctl check` against a real mesh (DESIGN §9, `linkerd check` style): √ on a healthy
//! mesh with exit 0; once a service's only endpoint fails its health check, × naming that
//! service with a hint, and exit 1. `-o json` carries the same verdict.
//!
//! Reproduce: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test check
//! -- --nocapture`.

use std::time::{Duration, Instant};

use mesh_chaos_tests::sidecars::{DEADLINE, Sidecars, Workload};

fn meshctl(mesh: &Sidecars, args: &[&str]) -> (i32, String) {
    match mesh.cl.run_meshctl(args) {
        Ok((code, out, err)) => (code, format!("{out}{err}")),
        Err(e) => panic!("cannot run meshctl (cargo build -p mesh-node --bins?): {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_healthy_mesh_and_fails_naming_an_unhealthy_service() {
    let test = "check_passes_on_a_healthy_mesh_and_fails_naming_an_unhealthy_service";
    let mut mesh = Sidecars::start(test, "check", 74, 1, 86_400, &[Workload::new("api", 11)])
        .await
        .expect("start mesh");
    // Healthy once the endpoint is registered and the agent has reported.
    let deadline = Instant::now() + DEADLINE;
    let out = loop {
        let (code, out) = meshctl(&mesh, &["check"]);
        if code == 0 && out.contains("service api: 1/1 endpoints healthy") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "never healthy: exit {code}\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.contains("√ leader elected"), "{out}");
    assert!(out.contains("Status check results are √"), "{out}");

    // The app dies: its health check fails, the catalog marks it, check fails.
    let app = mesh.hosts[0].app_proc;
    mesh.cl.env.proc(app).kill9().expect("kill the app");
    let deadline = Instant::now() + DEADLINE;
    let out = loop {
        let (code, out) = meshctl(&mesh, &["check"]);
        if code == 1 {
            break out;
        }
        assert!(Instant::now() < deadline, "check never failed: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("{out}");
    assert!(
        out.contains("× service api: none of 1 endpoints healthy"),
        "{out}"
    );
    assert!(out.contains("see: check the app"), "{out}");
    let (code, json) = meshctl(&mesh, &["check", "-o", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["success"], false);
}
