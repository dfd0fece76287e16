//! The cross-cluster path through real processes (issue D, DESIGN §6 "Cross-cluster path"):
//! two control clusters (61 and 62, one node each), one `meshd gateway` per cluster that
//! obtains its SVID from its own CA with the operator token, peers from a config file.
//!
//! Properties:
//! - a sidecar-like client in cluster 61 opens a tunnel at its local gateway and runs an inner
//!   TLS session, end to end, with a service behind cluster 62's gateway;
//! - the bytes leaving cluster 62's gateway towards the service never contain the inner
//!   plaintext (a recording hop sits in front of the service);
//! - an unexported service is refused with its own reason, without reaching anything.
//!
//! Reproduce: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test
//! gateway -- --nocapture`.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_chaos_tests::control::ControlCluster;
use mesh_chaos_tests::harness::{ProcSpec, bin_path};
use mesh_core::identity::{
    PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier, SvidSlot, TrustBundles,
    client_config_with_slot, generate_csr, server_config_with_slot,
};
use mesh_gateway::sidecar::{TunnelError, open_tunnel, tunnel_client_config};
use mesh_node::client::ApiClient;
use mesh_proto::api::SignRequest;
use mesh_proto::tunnel::{Preamble, Refusal};
use mesh_proto::{ServiceName, SpiffeId, TrustDomain};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MARKER: &[u8] = b"CHAOS-INNER-PLAINTEXT-5e1d";
const DEADLINE: Duration = Duration::from_secs(15);
const QUIC_PORT: u16 = 7600;
const TUNNEL_PORT: u16 = 7601;

fn gateway_ip(cluster: u8) -> [u8; 4] {
    [127, 0, cluster, 10]
}

/// An SVID for `id` signed by the cluster's CA through the API, and that CA's PEM.
async fn issue(client: &ApiClient, id: &SpiffeId) -> (Arc<SvidSlot>, String) {
    let kc = generate_csr(id).unwrap();
    let signed = client
        .sign(&SignRequest {
            csr_pem: kc.csr_pem,
            ttl_secs: Some(3600),
        })
        .await
        .unwrap();
    let chain = format!("{}{}", signed.cert_pem, signed.ca_pem);
    (
        SvidSlot::from_pem(&chain, &kc.key_pem).unwrap(),
        signed.ca_pem,
    )
}

fn bundles(td: &TrustDomain, ca_pem: &str) -> Arc<TrustBundles> {
    let mut b = TrustBundles::new();
    b.insert_pem(td.clone(), ca_pem).unwrap();
    Arc::new(b)
}

/// The service: TLS echo with `slot`, accepting clients of `client_bundles`.
async fn tls_echo(slot: Arc<SvidSlot>, client_bundles: Arc<TrustBundles>) -> SocketAddr {
    let verifier = SpiffeClientVerifier::new(client_bundles, PeerPolicy::AnyKnown, true);
    let cfg = server_config_with_slot(slot, Some(verifier), &[b"echo/1"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind(("127.0.62.20", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
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
    addr
}

/// A TCP hop in front of `to` that keeps every byte it forwards towards it.
async fn recording_hop(to: SocketAddr, seen: Arc<Mutex<Vec<u8>>>) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.62.21", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut ir, mut iw) = inbound.into_split();
                let (mut or, mut ow) = outbound.into_split();
                let up = async {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = ir.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.lock().unwrap().extend_from_slice(&buf[..n]);
                        if ow.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = ow.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut or, &mut iw).await;
                    let _ = iw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    addr
}

fn spawn_gateway(
    cl: &mut ControlCluster,
    peer: u8,
    peer_ca_pem: &str,
    exports: &str,
) -> anyhow::Result<()> {
    let dir = cl.env.data_dir("gateway");
    std::fs::create_dir_all(&dir)?;
    let peer_ca = dir.join(format!("c{peer}-ca.pem"));
    std::fs::write(&peer_ca, peer_ca_pem)?;
    let config = dir.join("gateway.yaml");
    let peer_addr = SocketAddr::from((gateway_ip(peer), QUIC_PORT));
    std::fs::write(
        &config,
        format!(
            "peers:\n  - trust_domain: c{peer}.mesh\n    address: \"{peer_addr}\"\n    ca_pem_file: {}\nexports:\n{exports}",
            peer_ca.display()
        ),
    )?;
    let token = dir.join("operator.token");
    std::fs::write(&token, &cl.token)?;
    let me = cl.cluster;
    let spec = ProcSpec::new(format!("gateway-c{me}"), bin_path("meshd")?).args([
        "gateway".to_string(),
        "--name".into(),
        "gw1".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--control".into(),
        cl.nodes[0].api.to_string(),
        "--ca-fingerprint".into(),
        cl.ca_fingerprint.clone(),
        "--token-file".into(),
        token.display().to_string(),
        "--listen".into(),
        SocketAddr::from((gateway_ip(me), QUIC_PORT)).to_string(),
        "--tunnel-addr".into(),
        SocketAddr::from((gateway_ip(me), TUNNEL_PORT)).to_string(),
        "--config".into(),
        config.display().to_string(),
    ]);
    let handle = cl.env.spawn(spec)?;
    cl.env
        .proc(handle)
        .wait_for_log("gateway ready", Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_tls_crosses_two_real_gateways_as_ciphertext() {
    let mut east = ControlCluster::start("gateway-east", 61, 1).unwrap();
    let mut west = ControlCluster::start("gateway-west", 62, 1).unwrap();
    east.env
        .set_reproduce("cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test gateway -- --nocapture");
    let (east_td, west_td) = (
        TrustDomain::new("c61.mesh").unwrap(),
        TrustDomain::new("c62.mesh").unwrap(),
    );
    let (web, echo) = (
        ServiceName::new("web").unwrap(),
        ServiceName::new("echo").unwrap(),
    );
    let east_api = east.client().unwrap();
    let west_api = west.client().unwrap();
    let (web_slot, east_ca) =
        issue(&east_api, &SpiffeId::workload(&east_td, "default", &web)).await;
    let (echo_slot, west_ca) =
        issue(&west_api, &SpiffeId::workload(&west_td, "default", &echo)).await;

    let service = tls_echo(echo_slot, bundles(&east_td, &east_ca)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hop = recording_hop(service, seen.clone()).await;

    spawn_gateway(&mut east, 62, &west_ca, "  []\n").unwrap();
    spawn_gateway(
        &mut west,
        61,
        &east_ca,
        &format!("  - name: echo\n    endpoints: [\"{hop}\"]\n"),
    )
    .unwrap();

    let tunnel_addr = SocketAddr::from((gateway_ip(61), TUNNEL_PORT));
    let sidecar =
        tunnel_client_config(web_slot.clone(), bundles(&east_td, &east_ca), &east_td).unwrap();
    // The gateways connect to each other in the background: retry until the tunnel opens.
    let preamble = Preamble::service(west_td.clone(), echo.clone(), None);
    let started = std::time::Instant::now();
    let tunnel = loop {
        match open_tunnel(tunnel_addr, sidecar.clone(), &preamble, DEADLINE).await {
            Ok(t) => break t,
            Err(TunnelError::Refused(Refusal::PeerUnreachable)) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("tunnel through the real gateways: {e}"),
        }
    };
    let verifier = SpiffeServerVerifier::new(
        bundles(&west_td, &west_ca),
        PeerPolicy::Exactly(SpiffeId::workload(&west_td, "default", &echo)),
    );
    let inner_cfg = client_config_with_slot(verifier, web_slot, &[b"echo/1"]).unwrap();
    let mut inner = tokio_rustls::TlsConnector::from(Arc::new(inner_cfg))
        .connect(ServerName::try_from("echo").unwrap(), tunnel)
        .await
        .expect("inner TLS handshake end to end");
    inner.write_all(MARKER).await.unwrap();
    inner.flush().await.unwrap();
    let mut back = vec![0u8; MARKER.len()];
    inner.read_exact(&mut back).await.unwrap();
    assert_eq!(back, MARKER);
    drop(inner);

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() > MARKER.len(),
        "the hop saw the session ({} bytes)",
        seen.len()
    );
    assert!(
        !seen.windows(MARKER.len()).any(|w| w == MARKER),
        "the inner plaintext left cluster 62's gateway"
    );

    let refused = open_tunnel(
        tunnel_addr,
        sidecar,
        &Preamble::service(west_td, ServiceName::new("db").unwrap(), None),
        DEADLINE,
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(TunnelError::Refused(Refusal::ServiceNotExported))
        ),
        "unexported service: {refused:?}"
    );
}
