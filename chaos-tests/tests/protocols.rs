//! Protocol detection in the real sidecar (issue B, DESIGN §6): what a local app sends to an
//! upstream listener is served as HTTP/1.1, as h2c (HTTP/2 with prior knowledge), or carried
//! as opaque TCP over mTLS and authorized per connection.
//!
//! Properties:
//! - an h2c client gets its answer through the mesh, with the caller's verified identity;
//! - bytes that are not HTTP reach the upstream app unchanged over mTLS (its answer comes
//!   back), are counted in the `tcp_*` families, and need an ALLOW rule without HTTP
//!   conditions: with none, the connection is closed without a byte.
//!
//! Reproduce one test: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests
//! --test protocols <name> -- --nocapture`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_chaos_tests::sidecars::{
    Sidecars, UpstreamSpec, Workload, get, inbound_of, sample, wait_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FILE: &str = "protocols";
const DAY: u64 = 24 * 3600;

fn web_and_api(cluster: u8) -> Vec<Workload> {
    let mut web = Workload::new("web", 10);
    web.upstreams.push(UpstreamSpec {
        service: "api".into(),
        port: 9001,
        endpoints: vec![inbound_of(cluster, 11)],
        protocol: None,
    });
    vec![web, Workload::new("api", 11)]
}

/// Write `bytes`, half-close, and read what comes back (bounded).
async fn opaque(to: std::net::SocketAddr, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(to).await?;
    s.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        s.take(1 << 16).read_to_end(&mut out),
    )
    .await;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_from_the_app_is_served_through_the_mesh() {
    let test = "h2c_from_the_app_is_served_through_the_mesh";
    let mesh = Sidecars::start(test, FILE, 45, 1, DAY, &web_and_api(45))
        .await
        .expect("start mesh");
    mesh.allow("web", "api").await.expect("allow");
    let via = mesh.upstream(0, 9001);
    mesh.first_200(via, "/warm").await.expect("policy arrived");
    let tcp = TcpStream::connect(via).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{via}/over-h2c"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("h2c request");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["path"], "/over-h2c", "{json}");
    assert_eq!(json["peer_identity"], mesh.id("web"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_carried_over_mtls_and_authorized_per_connection() {
    let test = "opaque_tcp_is_carried_over_mtls_and_authorized_per_connection";
    let mesh = Sidecars::start(test, FILE, 46, 1, DAY, &web_and_api(46))
        .await
        .expect("start mesh");
    let via = mesh.upstream(0, 9001);
    // Not HTTP: the first byte is a TLS record type. The app (an HTTP server) answers 400.
    let garbage = b"\x16\x03\x01 not http at all\r\n\r\n";
    // Default deny: closed without a byte.
    assert!(
        opaque(via, garbage).await.expect("connect").is_empty(),
        "a denied connection carried bytes"
    );
    // An ALLOW rule with HTTP conditions cannot allow an opaque connection.
    let http_only = serde_json::json!({
        "targetRef": {"kind": "Service", "name": "api"},
        "action": "ALLOW",
        "rules": [{"from": [{"principals": [mesh.id("web")]}], "to": [{"paths": ["/x"]}]}],
    });
    mesh.apply(&[("AuthorizationPolicy", "api-http-only", http_only)])
        .await
        .expect("apply");
    // A rule without them does, once it arrives.
    mesh.allow("web", "api").await.expect("allow");
    let mut answer = Vec::new();
    for _ in 0..100 {
        answer = opaque(via, garbage).await.expect("connect");
        if !answer.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 400"),
        "the app's own answer did not come back: {text:?}"
    );
    // The sidecar records a connection's bytes when it closes, just after the client is done.
    let admin = mesh.hosts[1].admin;
    let labels = [
        "direction=\"inbound\"",
        "src_workload=\"web\"",
        "dst_workload=\"api\"",
    ];
    wait_for("tcp_* metrics of the closed connection", || async move {
        let m = get(admin, "/metrics").await?;
        let opened = sample(&m.body, "tcp_open_total", &labels).unwrap_or(0.0);
        let read = sample(&m.body, "tcp_read_bytes_total", &labels).unwrap_or(0.0);
        Ok(opened >= 1.0 && read >= garbage.len() as f64)
    })
    .await
    .expect("tcp metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_first_tcp_upstream_declared_tcp_greets_without_waiting() {
    let test = "a_server_first_tcp_upstream_declared_tcp_greets_without_waiting";
    let mut web = Workload::new("web", 10);
    web.upstreams.push(UpstreamSpec {
        service: "echo".into(),
        port: 9002,
        endpoints: vec![inbound_of(50, 11)],
        protocol: Some("tcp"),
    });
    let mut echo = Workload::new("echo", 11);
    echo.tcp_app = true;
    let mesh = Sidecars::start(test, FILE, 50, 1, DAY, &[web, echo])
        .await
        .expect("start mesh");
    mesh.allow("web", "echo").await.expect("allow");
    let via = mesh.upstream(0, 9002);
    // The app speaks first; a declared `tcp` upstream is connected at once, with no detection
    // wait, so the greeting arrives well inside the 1 s detection timeout.
    let deadline = std::time::Instant::now() + mesh_chaos_tests::sidecars::DEADLINE;
    let (greeting, took) = loop {
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(via).await.expect("connect");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        if n > 0 {
            let took = started.elapsed();
            s.write_all(b"ping\n").await.expect("write");
            let mut echo = [0u8; 5];
            s.read_exact(&mut echo).await.expect("echo");
            assert_eq!(&echo, b"ping\n");
            break (String::from_utf8_lossy(&buf[..n]).into_owned(), took);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no greeting through the mesh"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("greeting {greeting:?} after {took:?}");
    assert_eq!(greeting, "echo@11\n");
    assert!(took < Duration::from_millis(900), "greeting took {took:?}");
}
