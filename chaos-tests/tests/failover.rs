//! Locality failover in the real sidecar (DESIGN §6 "Failover"): traffic stays in the
//! caller's zone; when that zone's endpoint is lost, requests move to the next zone without
//! failing, and traffic returns home once the endpoint is back and its ejection has passed.
//! Endpoints come from the catalog only, ranked by `Discovery`, chosen by the core `Upstream`.
//!
//! Reproduce: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test
//! failover -- --nocapture`.

use std::time::{Duration, Instant};

use mesh_chaos_tests::sidecars::{DEADLINE, Sidecars, UpstreamSpec, Workload, get, wait_for};

/// Which app answered `n` sequential requests through `via`: (by app name, failures).
async fn answers(via: std::net::SocketAddr, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut apps, mut failed) = (Vec::new(), Vec::new());
    for i in 0..n {
        match get(via, &format!("/f/{i}")).await {
            Ok(a) if a.status == 200 => {
                let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
                apps.push(v["app"].as_str().unwrap_or("?").to_owned());
            }
            Ok(a) => failed.push(format!("{} {}", a.status, a.body.trim())),
            Err(e) => failed.push(e.to_string()),
        }
    }
    (apps, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_local_zone_fails_over_to_the_next_without_errors_and_returns() {
    let test = "losing_the_local_zone_fails_over_to_the_next_without_errors_and_returns";
    let mut web = Workload::new("web", 10);
    web.upstreams.push(UpstreamSpec {
        service: "api".into(),
        port: 9001,
        endpoints: Vec::new(),
        protocol: None,
    });
    let near = Workload::new("api", 11);
    let mut far = Workload::new("api", 12);
    far.zone = "b";
    let mut mesh = Sidecars::start(test, "failover", 75, 1, 86_400, &[web, near, far])
        .await
        .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow");
    let policy = serde_json::json!({
        "targetRef": {"kind": "Service", "name": "api"},
        "outlierDetection": {"consecutiveConnectFailures": 1, "baseEjectionTime": "2s"},
    });
    mesh.apply(&[("TrafficPolicy", "api", policy)])
        .await
        .expect("policy");
    let via = mesh.upstream(0, 9001);
    wait_for(
        "both api endpoints in the catalog and the zone preferred",
        || async {
            let (apps, _) = answers(via, 10).await;
            Ok(apps.len() == 10 && apps.iter().all(|a| a == "api@11"))
        },
    )
    .await
    .expect("zone a serves");

    // Lose zone a: kill -9 its sidecar (its catalog entry stays "healthy": the data plane
    // must notice by itself).
    let lost = mesh.hosts[1].agent;
    mesh.cl.env.proc(lost).kill9().expect("kill -9 zone a");
    let t0 = Instant::now();
    let (apps, failed) = answers(via, 100).await;
    let took = t0.elapsed();
    assert!(failed.is_empty(), "failed during failover: {failed:?}");
    assert!(
        apps.iter().all(|a| a == "api@12"),
        "not all on zone b: {apps:?}"
    );
    println!("zone a lost: 100/100 requests succeeded on zone b in {took:?}");

    // Zone a returns; after its 2 s ejection it takes the traffic back.
    mesh.cl.env.proc(lost).restart().expect("restart zone a");
    let admin = mesh.hosts[1].admin;
    wait_for("zone a sidecar ready", || async move {
        Ok(get(admin, "/ready").await?.status == 200)
    })
    .await
    .expect("ready");
    let back = Instant::now();
    let deadline = back + DEADLINE;
    loop {
        let (apps, failed) = answers(via, 5).await;
        assert!(failed.is_empty(), "failed while returning: {failed:?}");
        if apps.iter().all(|a| a == "api@11") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "traffic never returned to zone a"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("traffic home {:?} after zone a was ready", back.elapsed());
}
