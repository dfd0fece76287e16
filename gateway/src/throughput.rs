//! Throughput helpers for the benchmark harness (DESIGN §10 "QUIC tunnel throughput"): one bulk
//! transfer through a sidecar tunnel and two in-process gateways, and the same transfer over
//! one raw quinn stream with the same TLS and transport settings, so the two figures are
//! comparable within one run. Not timed tests: `bench/` calls these.
//!
//! ```text
//!  tunnel: client ─TLS─► gateway A ══QUIC══► gateway B ─TCP─► sink (counts, answers 8 bytes)
//!  raw:    client ══QUIC (same configs)══► sink stream (counts, answers 8 bytes)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_core::identity::IdentityError;
use mesh_proto::tunnel::Preamble;
use mesh_proto::{NodeName, ServiceName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::config::{GatewayConfig, Limits};
use crate::gateway::{Gateway, GatewayError};
use crate::sidecar::{TunnelError, open_tunnel, tunnel_client_config};
use crate::testkit::{Pki, free_udp_addr};
use crate::tls::{self, TlsError};

/// Why a measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    #[error("fixture: {0}")]
    Identity(#[from] IdentityError),
    #[error("gateway: {0}")]
    Gateway(#[from] GatewayError),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("tunnel: {0}")]
    Tunnel(#[from] TunnelError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("quic: {0}")]
    Quic(String),
    #[error("the sink counted {got} bytes, {sent} were sent")]
    Short { got: u64, sent: u64 },
}

const CHUNK: usize = 64 * 1024;
const DEADLINE: Duration = Duration::from_secs(10);

fn node(s: &str) -> Result<NodeName, ThroughputError> {
    NodeName::new(s).map_err(|e| ThroughputError::Quic(e.to_string()))
}

/// Sends `bytes` through a tunnel (client → gateway A → gateway B → TCP sink) and returns
/// Gbit/s measured from the first byte written to the sink's count arriving back.
pub async fn measure_tunnel_gbps(bytes: u64) -> Result<f64, ThroughputError> {
    let (east, west) = (Pki::new("east")?, Pki::new("west")?);
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = sink.accept().await {
            tokio::spawn(count_and_answer(s));
        }
    });
    let svc = ServiceName::new("sink").map_err(|e| ThroughputError::Quic(e.to_string()))?;
    let (a_addr, b_addr) = (free_udp_addr()?, free_udp_addr()?);
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let a = Gateway::start(GatewayConfig {
        identity: east.gateway_identity(&node("gw-a")?)?,
        quic_listen: a_addr,
        tunnel_listen: loopback,
        peers: vec![west.as_peer(b_addr)],
        exports: BTreeMap::new(),
        limits: Limits::default(),
        tap: None,
    })
    .await?;
    let _b = Gateway::start(GatewayConfig {
        identity: west.gateway_identity(&node("gw-b")?)?,
        quic_listen: b_addr,
        tunnel_listen: loopback,
        peers: vec![east.as_peer(a_addr)],
        exports: [(svc.clone(), vec![sink_addr])].into(),
        limits: Limits::default(),
        tap: None,
    })
    .await?;
    let client = tunnel_client_config(
        east.slot(&east.workload_id(
            &ServiceName::new("bench").map_err(|e| ThroughputError::Quic(e.to_string()))?,
        ))?,
        east.bundles()?,
        &east.trust_domain,
    )?;
    let preamble = Preamble::service(west.trust_domain.clone(), svc, None);
    let tunnel = open_tunnel(a.tunnel_addr(), client, &preamble, DEADLINE).await?;
    let (mut r, mut w) = tokio::io::split(tunnel);
    timed_transfer(&mut r, &mut w, bytes).await
}

/// Sends `bytes` over one stream of one quinn connection, with the gateways' TLS and transport
/// configs, and returns Gbit/s measured the same way as [`measure_tunnel_gbps`].
pub async fn raw_quinn_gbps(bytes: u64) -> Result<f64, ThroughputError> {
    let (east, west) = (Pki::new("east")?, Pki::new("west")?);
    let limits = Limits::default();
    let server_cfg = tls::quic_server(
        west.slot(&west.gateway_id(&node("gw-b")?))?,
        east.bundles()?,
        &limits,
    )?;
    let server = quinn::Endpoint::server(server_cfg, ([127, 0, 0, 1], 0).into())?;
    let server_addr = server.local_addr()?;
    let accept = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            tokio::spawn(async move {
                let Ok(connecting) = incoming.accept() else {
                    return;
                };
                let Ok(conn) = connecting.await else {
                    return;
                };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(count_and_answer(tokio::io::join(recv, send)));
                }
            });
        }
    });
    let client_cfg = tls::quic_client(
        east.slot(&east.gateway_id(&node("gw-a")?))?,
        west.bundles()?,
        &west.trust_domain,
        &limits,
    )?;
    let client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into())?;
    let conn = client
        .connect_with(client_cfg, server_addr, west.trust_domain.as_str())
        .map_err(|e| ThroughputError::Quic(e.to_string()))?
        .await
        .map_err(|e| ThroughputError::Quic(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ThroughputError::Quic(e.to_string()))?;
    timed_transfer(&mut recv, &mut send, bytes).await
}

async fn timed_transfer<R, W>(r: &mut R, w: &mut W, bytes: u64) -> Result<f64, ThroughputError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        w.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    w.shutdown().await?;
    let mut count = [0u8; 8];
    r.read_exact(&mut count).await?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let got = u64::from_be_bytes(count);
    if got != bytes {
        return Err(ThroughputError::Short { got, sent: bytes });
    }
    Ok(bytes as f64 * 8.0 / secs / 1e9)
}

/// Reads to EOF, then answers the byte count (8 bytes, big-endian).
async fn count_and_answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = s.write_all(&total.to_be_bytes()).await;
    let _ = s.shutdown().await;
}
