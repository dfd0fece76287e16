//! Two in-process gateways with two CAs (east.mesh, west.mesh) on loopback, real QUIC and real
//! mTLS: a tunnel from an east sidecar reaches a TLS echo service behind the west gateway, the
//! inner TLS session runs end to end, and neither gateway ever relays the inner plaintext.
//! Then each refusal a user could hit, with its own reason.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_core::identity::{
    PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier, TrustBundles, client_config_with_slot,
    server_config_with_slot,
};
use mesh_gateway::sidecar::{TunnelError, open_tunnel, open_with_frame, tunnel_client_config};
use mesh_gateway::testkit::{Pki, RecordingTap, free_udp_addr};
use mesh_gateway::{Gateway, GatewayConfig, Limits};
use mesh_proto::tunnel::{ALPN_GATEWAY, Preamble, Refusal, Status};
use mesh_proto::{NodeName, ServiceName, TrustDomain};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MARKER: &[u8] = b"INNER-PLAINTEXT-MARKER-7f3a9c";
const DEADLINE: Duration = Duration::from_secs(10);

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}
fn node(s: &str) -> NodeName {
    NodeName::new(s).unwrap()
}

struct Fixture {
    east: Pki,
    west: Pki,
    a: Gateway,
    b: Gateway,
    tap_a: Arc<RecordingTap>,
    tap_b: Arc<RecordingTap>,
    echo_calls: Arc<std::sync::atomic::AtomicUsize>,
}

/// A TLS echo server with the west workload SVID of `echo`; it accepts east workloads.
async fn tls_echo(west: &Pki, east: &Pki) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let slot = west.slot(&west.workload_id(&svc("echo"))).unwrap();
    let verifier = SpiffeClientVerifier::new(east.bundles().unwrap(), PeerPolicy::AnyKnown, true);
    let cfg = server_config_with_slot(slot, Some(verifier), &[b"echo/1"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = tls.flush().await;
                }
            });
        }
    });
    (addr, calls)
}

async fn fixture() -> Fixture {
    let (east, west) = (Pki::new("east").unwrap(), Pki::new("west").unwrap());
    let (echo, echo_calls) = tls_echo(&west, &east).await;
    let (a_addr, b_addr) = (free_udp_addr().unwrap(), free_udp_addr().unwrap());
    let (tap_a, tap_b) = (
        Arc::new(RecordingTap::default()),
        Arc::new(RecordingTap::default()),
    );
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let limits = Limits {
        probe_interval: Duration::from_millis(100),
        ..Limits::default()
    };
    let a = Gateway::start(GatewayConfig {
        identity: east.gateway_identity(&node("gw-a")).unwrap(),
        quic_listen: a_addr,
        tunnel_listen: loopback,
        peers: vec![west.as_peer(b_addr)],
        exports: BTreeMap::new(),
        limits,
        tap: Some(tap_a.clone()),
    })
    .await
    .unwrap();
    let b = Gateway::start(GatewayConfig {
        identity: west.gateway_identity(&node("gw-b")).unwrap(),
        quic_listen: b_addr,
        tunnel_listen: loopback,
        peers: vec![east.as_peer(a_addr)],
        exports: [
            (svc("echo"), vec![echo]),
            (svc("dead"), vec!["127.0.0.1:1".parse().unwrap()]),
        ]
        .into(),
        limits,
        tap: Some(tap_b.clone()),
    })
    .await
    .unwrap();
    Fixture {
        east,
        west,
        a,
        b,
        tap_a,
        tap_b,
        echo_calls,
    }
}

impl Fixture {
    fn sidecar(&self, service: &str) -> Arc<rustls::ClientConfig> {
        let slot = self
            .east
            .slot(&self.east.workload_id(&svc(service)))
            .unwrap();
        tunnel_client_config(slot, self.east.bundles().unwrap(), &self.east.trust_domain).unwrap()
    }

    async fn open(&self, td: &TrustDomain, service: &str) -> Result<(), TunnelError> {
        let preamble = Preamble::service(td.clone(), svc(service), None);
        open_tunnel(
            self.a.tunnel_addr(),
            self.sidecar("web"),
            &preamble,
            DEADLINE,
        )
        .await
        .map(|_| ())
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_tls_runs_end_to_end_and_gateways_relay_only_ciphertext() {
    let f = fixture().await;
    let tunnel = open_tunnel(
        f.a.tunnel_addr(),
        f.sidecar("web"),
        &Preamble::service(f.west.trust_domain.clone(), svc("echo"), None),
        DEADLINE,
    )
    .await
    .expect("tunnel opens");

    // The inner session: east/web ⇄ west/echo, verified end to end; the gateways see it only
    // as bytes inside the tunnel.
    let inner_slot = f.east.slot(&f.east.workload_id(&svc("web"))).unwrap();
    let want = f.west.workload_id(&svc("echo"));
    let verifier = SpiffeServerVerifier::new(f.west.bundles().unwrap(), PeerPolicy::Exactly(want));
    let inner_cfg = client_config_with_slot(verifier, inner_slot, &[b"echo/1"]).unwrap();
    let mut inner = tokio_rustls::TlsConnector::from(Arc::new(inner_cfg))
        .connect(ServerName::try_from("echo").unwrap(), tunnel)
        .await
        .expect("inner TLS handshake through both gateways");
    for round in 0..3 {
        let msg = [MARKER, format!(" round {round}").as_bytes()].concat();
        inner.write_all(&msg).await.unwrap();
        inner.flush().await.unwrap();
        let mut back = vec![0u8; msg.len()];
        inner.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg, "echo through the tunnel");
    }
    drop(inner);

    for (name, tap) in [("gateway A", &f.tap_a), ("gateway B", &f.tap_b)] {
        let seen = tap.bytes();
        assert!(
            tap.total() > 3 * MARKER.len(),
            "{name} relayed the session ({} bytes)",
            tap.total()
        );
        assert_eq!(
            seen.len(),
            2,
            "{name} relayed both directions: {:?}",
            seen.iter().map(|s| s.0).collect::<Vec<_>>()
        );
        for (point, bytes) in seen {
            assert!(
                !contains(&bytes, MARKER),
                "{name} saw the inner plaintext at {point:?}"
            );
        }
    }

    // Probes measure the RTT of the pooled connection, both ways.
    wait_for("probe RTTs", || {
        let a = f.a.peer_health(&f.west.trust_domain).unwrap();
        let b = f.b.peer_health(&f.east.trust_domain).unwrap();
        a.up && a.last_rtt.is_some() && b.up && b.last_rtt.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_names_its_reason() {
    let f = fixture().await;
    let west = f.west.trust_domain.clone();
    let refused = |r: Result<(), TunnelError>| match r {
        Err(TunnelError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Remote side: the service is not exported by west.
    assert_eq!(
        refused(f.open(&west, "db").await),
        Refusal::ServiceNotExported
    );
    // Remote side: exported, but its endpoint is down.
    assert_eq!(refused(f.open(&west, "dead").await), Refusal::NoEndpoint);
    // Local side: no gateway serves that trust domain (not federated with east).
    let north = TrustDomain::new("north.mesh").unwrap();
    assert_eq!(
        refused(f.open(&north, "echo").await),
        Refusal::UnknownTargetCluster
    );
    // Local side: a malformed preamble, and one of another protocol version.
    let garbage = [0, 0, 0, 3, 1, 0xff, 0xff];
    let r = open_with_frame(f.a.tunnel_addr(), f.sidecar("web"), &garbage, DEADLINE).await;
    assert_eq!(refused(r.map(|_| ())), Refusal::Malformed);
    let mut v2 = Preamble::service(west.clone(), svc("echo"), None)
        .to_frame()
        .unwrap();
    v2[4] = 2;
    let r = open_with_frame(f.a.tunnel_addr(), f.sidecar("web"), &v2, DEADLINE).await;
    assert_eq!(refused(r.map(|_| ())), Refusal::VersionMismatch);
    let huge = 5000u32.to_be_bytes();
    let r = open_with_frame(f.a.tunnel_addr(), f.sidecar("web"), &huge, DEADLINE).await;
    assert_eq!(refused(r.map(|_| ())), Refusal::Malformed);
    // Local side: an east gateway identity may not open a sidecar tunnel.
    let gw_slot = f.east.slot(&f.east.gateway_id(&node("gw-x"))).unwrap();
    let gw_cfg =
        tunnel_client_config(gw_slot, f.east.bundles().unwrap(), &f.east.trust_domain).unwrap();
    let preamble = Preamble::service(west.clone(), svc("echo"), None);
    let r = open_tunnel(f.a.tunnel_addr(), gw_cfg, &preamble, DEADLINE).await;
    assert_eq!(refused(r.map(|_| ())), Refusal::WrongRole);
    assert_eq!(
        f.echo_calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no refused tunnel reached the service"
    );
}

/// A QUIC client straight at gateway B: `id_of` picks the identity it presents.
async fn quic_to_b(
    f: &Fixture,
    pki: &Pki,
    id: mesh_proto::SpiffeId,
) -> Result<quinn::Connection, String> {
    let mut bundles = TrustBundles::new();
    bundles
        .insert_pem(f.west.trust_domain.clone(), &f.west.ca.cert_pem)
        .unwrap();
    let verifier = SpiffeServerVerifier::new(Arc::new(bundles), PeerPolicy::AnyKnown);
    let tls = client_config_with_slot(verifier, pki.slot(&id).unwrap(), &[ALPN_GATEWAY]).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = client
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            f.b.quic_addr(),
            "west.mesh",
        )
        .unwrap()
        .await
        .map_err(|e| e.to_string())?;
    // The server's verdict on our certificate arrives after our side of the handshake ends:
    // a refused client sees its first stream fail.
    let why = |e: &dyn std::fmt::Display| match conn.close_reason() {
        Some(reason) => reason.to_string(),
        None => e.to_string(),
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| why(&e))?;
    send.write_all(&[0, 0, 0, 3, 1, 0xff, 0xff])
        .await
        .map_err(|e| why(&e))?;
    let mut b = [0u8; 1];
    recv.read_exact(&mut b).await.map_err(|e| why(&e))?;
    assert_eq!(
        Status::from_byte(b[0]),
        Some(Status::Refused(Refusal::Malformed))
    );
    Ok(conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_federated_gateways_may_open_streams() {
    let f = fixture().await;
    // A second east gateway is a federated gateway: it gets as far as the preamble check.
    quic_to_b(&f, &f.east, f.east.gateway_id(&node("gw-other")))
        .await
        .expect("a federated gateway's stream is answered");
    // An east workload acting as a gateway is refused in the handshake.
    let err = quic_to_b(&f, &f.east, f.east.workload_id(&svc("web")))
        .await
        .unwrap_err();
    assert!(
        err.contains("handshake failed"),
        "workload as gateway: {err}"
    );
    // A gateway of an unfederated trust domain is refused in the handshake too.
    let north = Pki::new("north").unwrap();
    let err = quic_to_b(&f, &north, north.gateway_id(&node("gw-n")))
        .await
        .unwrap_err();
    assert!(
        err.contains("handshake failed"),
        "unfederated trust domain: {err}"
    );
}
