//! Opaque TCP through the mesh: bytes the local app sends that are not HTTP are carried over
//! mTLS (ALPN [`ALPN_TCP`]) to a sidecar of the upstream, which authorizes the peer for a
//! connection and copies them to its app.
//!
//! ```text
//!  app ─► outbound listener ─(detect: Opaque)─► Upstream::start_connection ─► endpoint
//!      ─► TLS 1.3, ALPN meshfed-tcp/1, pinned backend identity ─► peer inbound
//!  peer inbound (ALPN meshfed-tcp/1) ─► Authorizer::decide_connection ─► 127.0.0.1:<app>
//!      ─► copy both ways until either side closes; tcp_* metrics on close
//! ```
//!
//! No bytes are ever replayed: a connect failure moves to one other endpoint (the core
//! decides), anything after the handshake ends the connection. This module does not detect
//! protocols (`mesh_core::http::detect` does) or decide anything itself.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use mesh_core::authz::Verdict;
use mesh_core::upstream::{InFlight, Start};
use mesh_proto::SpiffeId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::inbound::Inbound;
use super::metrics::Hop;
use super::outbound::Outbound;

/// ALPN of an opaque TCP connection between sidecars.
pub(crate) const ALPN_TCP: &[u8] = b"meshfed-tcp/1";

/// Carry one opaque connection from the local app to the upstream.
pub(crate) async fn outbound(outbound: &Outbound, app: TcpStream, remote: SocketAddr) {
    let start = {
        let mut rng = outbound.rng.lock().unwrap_or_else(PoisonError::into_inner);
        outbound.with_state(|s| s.start_connection(Instant::now(), &mut *rng))
    };
    let mut req = match start {
        Start::Forward(f) => f,
        Start::Reply(r) => {
            tracing::warn!(%remote, upstream = %outbound.upstream, flags = r.flags, "{}", r.message);
            return;
        }
    };
    let connected = connect(outbound, &mut req).await;
    let hop = Hop::outbound(&outbound.service, &req.backend, &outbound.trust_domain);
    outbound.with_state(|s| s.finish(&mut req));
    let Some(tls) = connected else {
        return;
    };
    copy(outbound.metrics.as_ref(), &hop, app, tls).await;
}

/// Connect to the current endpoint of `req`, moving to another once if the core allows.
async fn connect(
    outbound: &Outbound,
    req: &mut InFlight,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    loop {
        let result = match outbound.tcp_config(&req.backend) {
            Ok(config) => {
                let timeout = req
                    .connect_timeout
                    .unwrap_or(outbound.limits.connect_timeout);
                let endpoint = req.endpoint.as_str().to_owned();
                tokio::time::timeout(timeout, dial(config, &endpoint))
                    .await
                    .unwrap_or_else(|_| Err(format!("no connection within {timeout:?}")))
            }
            Err(e) => Err(e),
        };
        let ok = result.is_ok();
        let retry = {
            let mut rng = outbound.rng.lock().unwrap_or_else(PoisonError::into_inner);
            outbound.with_state(|s| s.handle_connect_result(Instant::now(), req, ok, &mut *rng))
        };
        match result {
            Ok(tls) => return Some(tls),
            Err(e) => {
                tracing::warn!(upstream = %outbound.upstream, backend = %req.backend, error = %e, retry, "TCP connect to the upstream failed");
                if !retry {
                    return None;
                }
            }
        }
    }
}

async fn dial(
    config: Arc<rustls::ClientConfig>,
    endpoint: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let addr: SocketAddr = endpoint
        .parse()
        .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("sidecar.meshfed.invalid").map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

/// Serve one opaque connection that arrived on the inbound listener from `peer`.
pub(crate) async fn inbound<S>(inbound: &Inbound, peer: &SpiffeId, tls: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hop = Hop::inbound(peer, &inbound.service, &inbound.trust_domain);
    let verdict = match inbound.policies.authz(&inbound.service) {
        Some(a) => a.decide_connection(peer),
        None => Verdict::Deny {
            reason: mesh_core::authz::DenyReason::NoAllowRule,
        },
    };
    if let Verdict::Deny { reason } = verdict {
        tracing::info!(%peer, service = %inbound.service, %reason, flags = "RBAC", "TCP connection denied");
        return;
    }
    let app = match tokio::time::timeout(
        inbound.limits.connect_timeout,
        TcpStream::connect(inbound.app),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(app = %inbound.app, error = %e, flags = "UF", "local app refused a TCP connection");
            return;
        }
        Err(_) => {
            tracing::warn!(app = %inbound.app, flags = "UF", "local app did not accept a TCP connection in time");
            return;
        }
    };
    let _ = app.set_nodelay(true);
    copy(inbound.metrics.as_ref(), &hop, tls, app).await;
}

/// Copy both ways between `source` (the side that opened) and `dest`, counting bytes.
async fn copy<A, B>(metrics: &super::metrics::Metrics, hop: &Hop, mut source: A, mut dest: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    metrics.tcp_open(hop);
    let (read, written) = match tokio::io::copy_bidirectional(&mut source, &mut dest).await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::debug!(error = %e, "TCP connection ended with an error");
            (0, 0)
        }
    };
    metrics.tcp_close(hop, read, written);
}
