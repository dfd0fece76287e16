//! The local side: tunnels from this cluster's sidecars in, streams to peer gateways out.
//!
//! ```text
//!  TCP accept (≤ max_tunnels) ─► outer mTLS (deadline; the sidecar's workload SVID, local
//!  bundle only) ─► read preamble (deadline) ─► core dispatch_tunnel(caller id, preamble)
//!    Refuse{reason} ─► status byte to the sidecar, close
//!    Forward        ─► peer link's connection ─► open stream ─► preamble ─► peer's status
//!                      (deadline) ─► same status to the sidecar ─► relay if OK
//! ```
//!
//! The outer TLS ends here; what the sidecar sends inside it (its own TLS session with the
//! target) is copied as is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use mesh_core::identity::spiffe_id_of;
use mesh_core::tunnel::{Dispatch, dispatch_tunnel};
use mesh_proto::tunnel::{Preamble, Refusal, Status};
use mesh_proto::{SpiffeId, TrustDomain};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::Limits;
use crate::peers::PeerLink;
use crate::relay::{RelayTap, TapPoint, relay};
use crate::wire;

pub(crate) struct Local {
    pub(crate) trust_domain: TrustDomain,
    pub(crate) peers: BTreeMap<TrustDomain, Arc<PeerLink>>,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) limits: Limits,
    pub(crate) tap: Option<Arc<dyn RelayTap>>,
}

impl Local {
    pub(crate) async fn accept_forever(self: Arc<Self>, listener: TcpListener) {
        let tunnels = Arc::new(Semaphore::new(self.limits.max_tunnels));
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "tunnel accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = tunnels.clone().try_acquire_owned() else {
                tracing::warn!(%from, "tunnel limit reached; connection closed");
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                this.serve(tcp, from).await;
            });
        }
    }

    async fn serve(&self, tcp: TcpStream, from: std::net::SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let tls =
            match tokio::time::timeout(self.limits.handshake_timeout, self.acceptor.accept(tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%from, error = %e, "tunnel handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%from, "tunnel handshake timed out");
                    return;
                }
            };
        let Some(caller) = caller_id(&tls) else {
            return;
        };
        let mut tls = tls;
        let preamble = wire::read_preamble(&mut tls, self.limits.preamble_timeout).await;
        let peers: BTreeSet<TrustDomain> = self.peers.keys().cloned().collect();
        let forward = match dispatch_tunnel(&self.trust_domain, &peers, &caller, &preamble) {
            Dispatch::Forward { preamble } => preamble,
            Dispatch::Refuse { reason } => {
                tracing::info!(%from, %caller, %reason, "tunnel refused");
                let _ = wire::write_status(&mut tls, Status::Refused(reason)).await;
                let _ = tls.shutdown().await;
                return;
            }
        };
        match self.open_stream(&forward).await {
            Ok((send, recv)) => {
                if wire::write_status(&mut tls, Status::Ok).await.is_err() {
                    return;
                }
                let stream = tokio::io::join(recv, send);
                let tap = self
                    .tap
                    .as_deref()
                    .map(|t| (t, TapPoint::LocalOutbound, TapPoint::LocalInbound));
                match relay(tls, stream, self.limits.relay_buffer_bytes, tap).await {
                    Ok(n) => {
                        tracing::debug!(%caller, out = n.a_to_b, back = n.b_to_a, "tunnel done")
                    }
                    Err(e) => tracing::debug!(%caller, error = %e, "tunnel ended with an error"),
                }
            }
            Err(reason) => {
                tracing::info!(%from, %caller, %reason, "tunnel not forwarded");
                let _ = wire::write_status(&mut tls, Status::Refused(reason)).await;
                let _ = tls.shutdown().await;
            }
        }
    }

    /// A stream to the target cluster's gateway that answered OK to `preamble`.
    async fn open_stream(
        &self,
        preamble: &Preamble,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), Refusal> {
        let mesh_proto::tunnel::Target::Service { trust_domain, .. } = &preamble.target else {
            return Err(Refusal::Malformed);
        };
        let link = self
            .peers
            .get(trust_domain)
            .ok_or(Refusal::UnknownTargetCluster)?;
        let conn = link
            .connection(self.limits.peer_wait)
            .await
            .ok_or(Refusal::PeerUnreachable)?;
        let frame = preamble.to_frame().map_err(|_| Refusal::Malformed)?;
        let exchange = async {
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|_| Refusal::PeerUnreachable)?;
            send.write_all(&frame)
                .await
                .map_err(|_| Refusal::PeerUnreachable)?;
            match wire::read_status(&mut recv, self.limits.status_timeout).await {
                Some(Status::Ok) => Ok((send, recv)),
                Some(Status::Refused(r)) => Err(r),
                None => Err(Refusal::PeerTimeout),
            }
        };
        tokio::time::timeout(self.limits.status_timeout, exchange)
            .await
            .unwrap_or(Err(Refusal::PeerTimeout))
    }
}

fn caller_id(tls: &TlsStream<TcpStream>) -> Option<SpiffeId> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    spiffe_id_of(leaf.as_ref()).ok()
}
