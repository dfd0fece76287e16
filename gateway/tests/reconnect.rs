//! A peer gateway that goes away is reported down, new tunnels to it are refused with
//! `PeerUnreachable` (not left hanging), and when it comes back on the same address the
//! pooled connection is re-established without restarting the local gateway: the reconnect
//! gap users report for WAN gateways (mission.md §3 items 8 and 12).

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_gateway::sidecar::{TunnelError, open_tunnel, tunnel_client_config};
use mesh_gateway::testkit::{Pki, free_udp_addr};
use mesh_gateway::{Gateway, GatewayConfig, Limits};
use mesh_proto::tunnel::{Preamble, Refusal};
use mesh_proto::{NodeName, ServiceName};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(10);

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_peer_gateway_is_reported_down_and_reconnected() {
    let (east, west) = (Pki::new("east").unwrap(), Pki::new("west").unwrap());
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let svc = ServiceName::new("echo").unwrap();
    let (a_addr, b_addr) = (free_udp_addr().unwrap(), free_udp_addr().unwrap());
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let limits = Limits {
        probe_interval: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        ..Limits::default()
    };
    let a = Gateway::start(GatewayConfig {
        identity: east
            .gateway_identity(&NodeName::new("gw-a").unwrap())
            .unwrap(),
        quic_listen: a_addr,
        tunnel_listen: loopback,
        peers: vec![west.as_peer(b_addr)],
        exports: Default::default(),
        limits,
        tap: None,
    })
    .await
    .unwrap();
    let b_config = GatewayConfig {
        identity: west
            .gateway_identity(&NodeName::new("gw-b").unwrap())
            .unwrap(),
        quic_listen: b_addr,
        tunnel_listen: loopback,
        peers: vec![east.as_peer(a_addr)],
        exports: [(svc.clone(), vec![echo_addr])].into(),
        limits,
        tap: None,
    };
    let b = Gateway::start(b_config.clone()).await.unwrap();
    let slot = east
        .slot(&east.workload_id(&ServiceName::new("web").unwrap()))
        .unwrap();
    let sidecar = tunnel_client_config(slot, east.bundles().unwrap(), &east.trust_domain).unwrap();
    let preamble = Preamble::service(west.trust_domain.clone(), svc, None);
    let open = || open_tunnel(a.tunnel_addr(), sidecar.clone(), &preamble, DEADLINE);
    let up = || a.peer_health(&west.trust_domain).unwrap();

    open().await.expect("tunnel while the peer is up");
    wait_for("a first probe", || up().up && up().last_rtt.is_some()).await;

    b.shutdown();
    wait_for("the peer reported down", || !up().up).await;
    let refused = open().await;
    assert!(
        matches!(refused, Err(TunnelError::Refused(Refusal::PeerUnreachable))),
        "tunnel to a down peer: {refused:?}"
    );
    assert!(up().last_error.is_some(), "down comes with a reason");

    // Same address again; the UDP port may take a moment to be released.
    let started = Instant::now();
    let _b = loop {
        match Gateway::start(b_config.clone()).await {
            Ok(g) => break g,
            Err(_) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("restart the peer gateway: {e}"),
        }
    };
    wait_for("the peer reported up again", || up().up).await;
    open().await.expect("tunnel after the peer came back");
}
