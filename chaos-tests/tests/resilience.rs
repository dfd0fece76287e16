//! Resilience policies in the real sidecar (issue B, DESIGN §6 per-route policy): real
//! `meshd control`, `meshd agent` and `meshd demo-app` processes on loopback.
//!
//! Properties:
//! - retries on 5xx make a backend that fails 30 % of requests answer 100 % (TrafficPolicy
//!   `retries`, retryOn `5xx`);
//! - against a backend that fails everything, the retry budget caps the extra load at its
//!   ratio (Finagle/Linkerd retry budgets);
//! - outlier detection: a killed endpoint is ejected after its first connect failure, traffic
//!   moves to the other endpoint without a failed request, and the endpoint is picked again
//!   after its ejection time once it is back;
//! - SVIDs on a 20 s lifetime rotate under 60 s of steady load with 100.00 % success.
//!
//! Reproduce one test: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests
//! --test resilience <name> -- --nocapture`. On failure every process log is printed and the
//! data directories are kept.

use std::time::{Duration, Instant};

use mesh_chaos_tests::sidecars::{Sidecars, UpstreamSpec, Workload, get, inbound_of, wait_for};

const FILE: &str = "resilience";
const DAY: u64 = 24 * 3600;

/// `web` on host 10 calling `api` through :9001, and one `api` per entry of `api_hosts`.
fn web_and_api(cluster: u8, api_hosts: &[(u8, u8)]) -> Vec<Workload> {
    let mut web = Workload::new("web", 10);
    web.upstreams.push(UpstreamSpec {
        service: "api".into(),
        port: 9001,
        endpoints: api_hosts
            .iter()
            .map(|(h, _)| inbound_of(cluster, *h))
            .collect(),
        protocol: None,
    });
    let mut all = vec![web];
    for &(host, fail_percent) in api_hosts {
        let mut api = Workload::new("api", host);
        api.fail_percent = fail_percent;
        all.push(api);
    }
    all
}

/// Send `n` GETs one after another; the statuses in order.
async fn statuses(mesh: &Sidecars, n: usize, path: &str) -> Vec<u16> {
    let via = mesh.upstream(0, 9001);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let a = get(via, &format!("{path}/{i}")).await;
        out.push(a.map_or(0, |a| a.status));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_turn_a_30_percent_failing_backend_into_100_percent_success() {
    let test = "retries_turn_a_30_percent_failing_backend_into_100_percent_success";
    let mesh = Sidecars::start(test, FILE, 41, 1, DAY, &web_and_api(41, &[(11, 30)]))
        .await
        .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow");
    let policy = serde_json::json!({
        "targetRef": {"kind": "Service", "name": "api"},
        "retries": {"attempts": 3, "retryOn": ["5xx"],
                    "budget": {"ratio": 0.5, "minPerSecond": 10}},
        "outlierDetection": {"consecutive5xx": 1000},
    });
    mesh.apply(&[("TrafficPolicy", "api-retries", policy)])
        .await
        .expect("apply policy");
    // Without retries every third or fourth request fails, so ten 200s in a row mean the
    // policy has reached web's sidecar.
    wait_for("the retry policy to take effect", || async {
        Ok(statuses(&mesh, 10, "/warm").await.iter().all(|s| *s == 200))
    })
    .await
    .expect("policy in effect");
    let (served0, failed0) = mesh.app_stats(1).await.expect("stats");
    let n = 500;
    let got = statuses(&mesh, n, "/flaky").await;
    let ok = got.iter().filter(|s| **s == 200).count();
    let (served, failed) = mesh.app_stats(1).await.expect("stats");
    let (served, failed) = (served - served0, failed - failed0);
    println!(
        "{ok}/{n} succeeded; the app served {served} attempts, {failed} of them 503 ({:.1} %)",
        100.0 * failed as f64 / served as f64
    );
    assert_eq!(ok, n, "statuses other than 200: {:?}", {
        let mut bad: Vec<u16> = got.into_iter().filter(|s| *s != 200).collect();
        bad.dedup();
        bad
    });
    assert!(
        failed as f64 >= 0.25 * served as f64,
        "the backend was not flaky enough to prove anything: {failed}/{served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_extra_load_on_a_failing_backend_at_its_ratio() {
    let test = "the_retry_budget_caps_extra_load_on_a_failing_backend_at_its_ratio";
    let mesh = Sidecars::start(test, FILE, 42, 1, DAY, &web_and_api(42, &[(11, 100)]))
        .await
        .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow");
    let policy = serde_json::json!({
        "targetRef": {"kind": "Service", "name": "api"},
        "retries": {"attempts": 5, "retryOn": ["5xx"],
                    "budget": {"ratio": 0.2, "minPerSecond": 0}},
        "outlierDetection": {"consecutive5xx": 1000000},
    });
    mesh.apply(&[("TrafficPolicy", "api-retries", policy)])
        .await
        .expect("apply policy");
    // The policy has arrived once the app sees more attempts than requests were sent.
    wait_for("the retry policy to take effect", || async {
        let (before, _) = mesh.app_stats(1).await?;
        let sent = statuses(&mesh, 20, "/warm").await.len() as u64;
        let (after, _) = mesh.app_stats(1).await?;
        Ok(after - before > sent)
    })
    .await
    .expect("policy in effect");
    let (served0, _) = mesh.app_stats(1).await.expect("stats");
    let n = 1000;
    let got = statuses(&mesh, n, "/down").await;
    let (served, _) = mesh.app_stats(1).await.expect("stats");
    let extra = (served - served0) as f64 / n as f64 - 1.0;
    println!(
        "{n} requests, {} attempts: retries added {:.1} % (budget ratio 20 %)",
        served - served0,
        100.0 * extra
    );
    assert!(
        got.iter().all(|s| *s == 503),
        "a failing backend answered otherwise"
    );
    // The budget may carry up to a few tokens deposited before the measured window.
    assert!(
        extra <= 0.22,
        "retries added {:.1} % of the load",
        100.0 * extra
    );
    assert!(
        extra >= 0.10,
        "the budget was barely used: {:.1} %",
        100.0 * extra
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_ejected_at_once_and_returns_after_its_ejection_time() {
    let test = "a_killed_endpoint_is_ejected_at_once_and_returns_after_its_ejection_time";
    let mut mesh = Sidecars::start(
        test,
        FILE,
        43,
        1,
        DAY,
        &web_and_api(43, &[(11, 0), (12, 0)]),
    )
    .await
    .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow");
    let policy = serde_json::json!({
        "targetRef": {"kind": "Service", "name": "api"},
        "loadBalancer": {"policy": "roundRobin"},
        "outlierDetection": {"consecutiveConnectFailures": 1, "baseEjectionTime": "3s"},
    });
    mesh.apply(&[("TrafficPolicy", "api-outlier", policy)])
        .await
        .expect("apply policy");
    mesh.first_200(mesh.upstream(0, 9001), "/first")
        .await
        .expect("first 200");
    // Both endpoints take traffic.
    let (a0, _) = mesh.app_stats(1).await.expect("stats");
    let (b0, _) = mesh.app_stats(2).await.expect("stats");
    assert!(statuses(&mesh, 20, "/both").await.iter().all(|s| *s == 200));
    let (a1, _) = mesh.app_stats(1).await.expect("stats");
    let (b1, _) = mesh.app_stats(2).await.expect("stats");
    assert!(
        a1 > a0 && b1 > b0,
        "one endpoint took no traffic: {a0}->{a1}, {b0}->{b1}"
    );

    // Kill the second api's sidecar: no request may fail (the connect failure is retried on
    // the other endpoint), and the web sidecar logs the ejection.
    let killed = mesh.hosts[2].agent;
    mesh.cl
        .env
        .proc(killed)
        .kill9()
        .expect("kill -9 api sidecar");
    let got = statuses(&mesh, 50, "/during").await;
    assert!(
        got.iter().all(|s| *s == 200),
        "failed requests while ejecting: {got:?}"
    );
    let web = mesh.hosts[0].agent;
    mesh.cl
        .env
        .proc(web)
        .wait_for_log("Ejected", Duration::from_secs(5))
        .expect("web's sidecar ejects the dead endpoint");

    // Bring it back; after the 3 s ejection it takes traffic again.
    mesh.cl
        .env
        .proc(killed)
        .restart()
        .expect("restart api sidecar");
    let admin = mesh.hosts[2].admin;
    wait_for("restarted api sidecar ready", || async move {
        Ok(get(admin, "/ready").await?.status == 200)
    })
    .await
    .expect("ready");
    let back_from = Instant::now();
    let (b2, _) = mesh.app_stats(2).await.expect("stats");
    wait_for("the endpoint to take traffic again", || async {
        let got = statuses(&mesh, 5, "/after").await;
        assert!(
            got.iter().all(|s| *s == 200),
            "failed requests after return: {got:?}"
        );
        Ok(mesh.app_stats(2).await?.0 > b2)
    })
    .await
    .expect("endpoint returns");
    println!(
        "endpoint back in rotation {:?} after its sidecar was ready",
        back_from.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_rotating_every_10_s_fail_no_request_over_60_s_of_load() {
    let test = "svids_rotating_every_10_s_fail_no_request_over_60_s_of_load";
    let mesh = Sidecars::start(test, FILE, 44, 1, 20, &web_and_api(44, &[(11, 0)]))
        .await
        .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow");
    mesh.first_200(mesh.upstream(0, 9001), "/first")
        .await
        .expect("first 200");
    let expiry = || async {
        let m = get(mesh.hosts[1].admin, "/metrics").await?;
        mesh_chaos_tests::sidecars::sample(
            &m.body,
            "identity_cert_expiration_timestamp_seconds",
            &["workload=\"api\""],
        )
        .ok_or_else(|| anyhow::anyhow!("no expiry gauge"))
    };
    let first_expiry = expiry().await.expect("expiry");
    let via = mesh.upstream(0, 9001);
    let until = Instant::now() + Duration::from_secs(60);
    let (mut ok, mut failed) = (0u64, Vec::new());
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        match get(via, &format!("/load/{i}")).await {
            Ok(a) if a.status == 200 => ok += 1,
            other => failed.push((i, other.map(|a| a.status).map_err(|e| e.to_string()))),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_expiry = expiry().await.expect("expiry");
    let renewals = ((last_expiry - first_expiry) / 10.0).round();
    println!(
        "{ok}/{i} requests succeeded ({:.2} %) over 60 s; api's SVID expiry moved {:.0} s (≈{renewals} renewals)",
        100.0 * ok as f64 / i as f64,
        last_expiry - first_expiry
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(
        last_expiry - first_expiry >= 30.0,
        "the SVID was not renewed repeatedly: expiry moved {} s",
        last_expiry - first_expiry
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_rate_limit_answers_429_past_its_burst() {
    let test = "a_local_rate_limit_answers_429_past_its_burst";
    let mesh = Sidecars::start(test, FILE, 47, 1, DAY, &web_and_api(47, &[(11, 0)]))
        .await
        .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow");
    mesh.first_200(mesh.upstream(0, 9001), "/first")
        .await
        .expect("first 200");
    let policy = serde_json::json!({
        "targetRef": {"kind": "Service", "name": "api"},
        "rateLimit": {"requestsPerSecond": 5, "burst": 5},
    });
    mesh.apply(&[("TrafficPolicy", "api-limit", policy)])
        .await
        .expect("apply policy");
    let via = mesh.upstream(0, 9001);
    let deadline = Instant::now() + mesh_chaos_tests::sidecars::DEADLINE;
    let a = loop {
        let a = get(via, "/burst").await.expect("request");
        if a.status == 429 {
            break a;
        }
        assert!(Instant::now() < deadline, "never limited; last: {a:?}");
    };
    assert!(a.headers.contains("x-meshfed-response-flags: rl"), "{a:?}");
    assert!(a.headers.contains("retry-after: 1"), "{a:?}");
    // Over one second of back-to-back requests, about burst + rate get through.
    let started = Instant::now();
    let mut ok = 0;
    while started.elapsed() < Duration::from_secs(1) {
        if get(via, "/steady").await.expect("request").status == 200 {
            ok += 1;
        }
    }
    println!("{ok} requests admitted in 1 s at 5 rps with a burst of 5");
    assert!(ok <= 11, "{ok} admitted in 1 s");
    // The app's sidecar metrics count the 429s.
    let m = get(mesh.hosts[1].admin, "/metrics").await.expect("metrics");
    let labels = ["direction=\"inbound\"", "status_code=\"429\""];
    assert!(
        mesh_chaos_tests::sidecars::sample(&m.body, "response_total", &labels)
            .is_some_and(|n| n >= 1.0),
        "{}",
        m.body
    );
}
