//! The remote side: peer gateways' QUIC connections in, exported services' endpoints out.
//!
//! ```text
//!  accept ─► handshake (deadline; verifier: gateways of federated trust domains only)
//!   └─ per stream: read preamble (deadline, ≤ 1 KiB) ─► core admit_stream(peer id, preamble)
//!        Refuse{reason} ─► status byte, finish
//!        Probe          ─► status OK, finish
//!        Relay{service} ─► connect an endpoint (deadline, in order) ─► status ─► relay
//! ```
//!
//! Endpoints are the static `exports` map for now; the catalog wiring comes later.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::identity::spiffe_id_of;
use mesh_core::tunnel::{Admission, Admit, admit_stream};
use mesh_proto::tunnel::{Refusal, Status};
use mesh_proto::{ServiceName, SpiffeId};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::relay::{RelayTap, TapPoint, relay};
use crate::wire;

pub(crate) struct Remote {
    pub(crate) admission: Admission,
    pub(crate) exports: BTreeMap<ServiceName, Vec<SocketAddr>>,
    pub(crate) limits: Limits,
    pub(crate) tap: Option<Arc<dyn RelayTap>>,
    pub(crate) streams: Arc<Semaphore>,
}

impl Remote {
    pub(crate) async fn accept_forever(self: Arc<Self>, endpoint: quinn::Endpoint) {
        let connections = Arc::new(Semaphore::new(self.limits.max_peer_connections));
        while let Some(incoming) = endpoint.accept().await {
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(from = %incoming.remote_address(), "peer connection limit reached; refused");
                incoming.refuse();
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                this.serve_connection(incoming).await;
            });
        }
    }

    async fn serve_connection(self: Arc<Self>, incoming: quinn::Incoming) {
        let from = incoming.remote_address();
        let conn = match tokio::time::timeout(self.limits.handshake_timeout, async {
            incoming.accept()?.await
        })
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(%from, error = %e, "peer gateway handshake failed");
                return;
            }
            Err(_) => {
                tracing::warn!(%from, "peer gateway handshake timed out");
                return;
            }
        };
        let Some(peer) = peer_id(&conn) else {
            conn.close(quinn::VarInt::from_u32(1), b"no usable peer identity");
            return;
        };
        tracing::info!(%from, %peer, "peer gateway connected in");
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(%peer, reason = %e, "peer gateway connection closed");
                    return;
                }
            };
            let this = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move { this.serve_stream(peer, send, recv).await });
        }
    }

    async fn serve_stream(
        &self,
        peer: SpiffeId,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) {
        let Ok(_permit) = self.streams.clone().try_acquire_owned() else {
            let _ = wire::write_status(&mut send, Status::Refused(Refusal::Overloaded)).await;
            let _ = send.finish();
            return;
        };
        let preamble = wire::read_preamble(&mut recv, self.limits.preamble_timeout).await;
        let decision = admit_stream(&self.admission, &peer, &preamble);
        let (service, port) = match decision {
            Admit::Relay { service, port } => (service, port),
            Admit::Probe => {
                let _ = wire::write_status(&mut send, Status::Ok).await;
                let _ = send.finish();
                return;
            }
            Admit::Refuse { reason } => {
                tracing::info!(%peer, %reason, preamble = ?preamble, "stream refused");
                let _ = wire::write_status(&mut send, Status::Refused(reason)).await;
                let _ = send.finish();
                return;
            }
        };
        let Some(upstream) = self.connect(&service, port).await else {
            tracing::warn!(%peer, %service, "no endpoint of the service accepted a connection");
            let _ = wire::write_status(&mut send, Status::Refused(Refusal::NoEndpoint)).await;
            let _ = send.finish();
            return;
        };
        if wire::write_status(&mut send, Status::Ok).await.is_err() {
            return;
        }
        let _ = upstream.set_nodelay(true);
        let stream = tokio::io::join(recv, send);
        let tap = self
            .tap
            .as_deref()
            .map(|t| (t, TapPoint::RemoteToEndpoint, TapPoint::RemoteFromEndpoint));
        match relay(stream, upstream, self.limits.relay_buffer_bytes, tap).await {
            Ok(n) => {
                tracing::debug!(%peer, %service, to = n.a_to_b, from = n.b_to_a, "stream done")
            }
            Err(e) => tracing::debug!(%peer, %service, error = %e, "stream ended with an error"),
        }
    }

    /// The first endpoint of `service` (matching `port`) that accepts within the deadline.
    async fn connect(&self, service: &ServiceName, port: Option<u16>) -> Option<TcpStream> {
        let candidates = self.exports.get(service)?;
        for addr in candidates
            .iter()
            .filter(|a| port.is_none_or(|p| a.port() == p))
        {
            match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(addr)).await
            {
                Ok(Ok(s)) => return Some(s),
                Ok(Err(e)) => {
                    tracing::warn!(%service, %addr, error = %e, "endpoint connect failed")
                }
                Err(_) => tracing::warn!(%service, %addr, "endpoint connect timed out"),
            }
        }
        None
    }
}

/// The verified SPIFFE ID of the connection's peer (the verifier already checked the chain).
fn peer_id(conn: &quinn::Connection) -> Option<SpiffeId> {
    let any = conn.peer_identity()?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    spiffe_id_of(chain.first()?.as_ref()).ok()
}
