//! HTTPRoute traffic splitting in the real sidecar (issue B, DESIGN §8 HTTPRoute): a canary
//! route on `api` sends 90 % to `api-v1` and 10 % to `api-v2`, two services whose endpoints
//! the caller learns only from the control plane's catalog, each reached with its own pinned
//! identity.
//!
//! Properties: over 2000 requests the split holds within ±3 points, every request succeeds,
//! and a request the route does not match is answered 404 `NR` by the caller's sidecar. The
//! `Host`-routing HTTP proxy listener reaches any mesh service by name (`HTTP_PROXY` use),
//! with the same identity pinning, and refuses authorities that name no service.
//!
//! Reproduce: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test
//! routing -- --nocapture`.

use mesh_chaos_tests::sidecars::{Sidecars, UpstreamSpec, Workload, get};

const FILE: &str = "routing";
const DAY: u64 = 24 * 3600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_canary_split_holds_within_3_points_over_2000_requests() {
    let test = "a_90_10_canary_split_holds_within_3_points_over_2000_requests";
    let mut web = Workload::new("web", 10);
    web.upstreams.push(UpstreamSpec {
        service: "api".into(),
        port: 9001,
        endpoints: Vec::new(),
        protocol: None,
    });
    let workloads = [
        web,
        Workload::new("api-v1", 11),
        Workload::new("api-v2", 12),
    ];
    let mesh = Sidecars::start(test, FILE, 48, 1, DAY, &workloads)
        .await
        .expect("start mesh");
    mesh.allow("web", "api-v1").await.expect("allow v1");
    mesh.allow("web", "api-v2").await.expect("allow v2");
    let route = serde_json::json!({
        "parentRefs": [{"kind": "Service", "name": "api"}],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "method": "GET"}],
            "backendRefs": [{"name": "api-v1", "weight": 90}, {"name": "api-v2", "weight": 10}],
        }],
    });
    mesh.apply(&[("HTTPRoute", "api-canary", route)])
        .await
        .expect("apply route");
    let via = mesh.upstream(0, 9001);
    // Both backends registered in the catalog and reached: the split is live.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..600 {
        if let Ok(a) = get(via, "/warm").await
            && a.status == 200
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&a.body)
        {
            seen.insert(v["app"].as_str().unwrap_or("").to_owned());
        }
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 2, "not both backends answered: {seen:?}");
    let n = 2000;
    let (mut v1, mut v2, mut other) = (0u32, 0u32, Vec::new());
    for i in 0..n {
        let a = get(via, &format!("/canary/{i}")).await.expect("request");
        let app = serde_json::from_str::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v["app"].as_str().map(str::to_owned));
        match (a.status, app.as_deref()) {
            (200, Some("api-v1@11")) => v1 += 1,
            (200, Some("api-v2@12")) => v2 += 1,
            _ => other.push((a.status, a.body)),
        }
    }
    let share = 100.0 * f64::from(v2) / f64::from(n);
    println!(
        "api-v1 {v1}, api-v2 {v2} ({share:.1} % canary), other {}",
        other.len()
    );
    assert!(other.is_empty(), "requests that did not succeed: {other:?}");
    assert!((7.0..=13.0).contains(&share), "canary share {share:.1} %");
    // The route matches GET only: another method matches no rule.
    let mut s = tokio::net::TcpStream::connect(via).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"DELETE /x HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(head.contains("x-meshfed-response-flags: nr"), "{head}");
}

/// Send a raw request and read the answer's head and body.
async fn raw(to: std::net::SocketAddr, request: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(to).await?;
    s.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_proxy_listener_routes_by_host_to_any_mesh_service() {
    let test = "the_http_proxy_listener_routes_by_host_to_any_mesh_service";
    let mut web = Workload::new("web", 10);
    web.http_proxy_port = Some(15001);
    let workloads = [web, Workload::new("api", 11), Workload::new("billing", 12)];
    let mesh = Sidecars::start(test, FILE, 49, 1, DAY, &workloads)
        .await
        .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow api");
    mesh.allow("web", "billing").await.expect("allow billing");
    let proxy = mesh.upstream(0, 15001);
    for (target, app) in [("api", "api@11"), ("billing.default.svc", "billing@12")] {
        let req = format!(
            "GET http://{target}/via-proxy HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n"
        );
        let mut answer = String::new();
        for _ in 0..100 {
            answer = raw(proxy, &req).await.expect("proxy request");
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
        assert!(answer.contains(&format!("\"app\":\"{app}\"")), "{answer}");
        assert!(
            answer.contains(&mesh.id("web")),
            "the app saw web's identity: {answer}"
        );
    }
    let none = raw(
        proxy,
        "GET / HTTP/1.1\r\nhost: 10.1.2.3\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("request");
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let unknown = raw(
        proxy,
        "GET / HTTP/1.1\r\nhost: nosuch\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("request");
    assert!(unknown.starts_with("HTTP/1.1 503"), "{unknown}");
    assert!(
        unknown
            .to_ascii_lowercase()
            .contains("x-meshfed-response-flags: uh"),
        "{unknown}"
    );
}
