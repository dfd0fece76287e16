//! Starting a gateway: bundles, TLS configs, the QUIC endpoint, the tunnel listener, one link
//! and one probe loop per peer. [`Gateway`] owns every task; dropping it stops them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::identity::{IdentityError, TrustBundles};
use mesh_core::tunnel::Admission;
use mesh_proto::TrustDomain;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::GatewayConfig;
use crate::local::Local;
use crate::peers::{PeerHealth, PeerLink};
use crate::remote::Remote;
use crate::tls::{self, TlsError};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot bind the {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the CA bundle of trust domain {trust_domain} is unusable: {source}")]
    Bundle {
        trust_domain: TrustDomain,
        source: IdentityError,
    },
    #[error("peer trust domain {trust_domain} is listed twice, or is this gateway's own")]
    DuplicatePeer { trust_domain: TrustDomain },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A running gateway.
pub struct Gateway {
    quic_addr: SocketAddr,
    tunnel_addr: SocketAddr,
    peers: BTreeMap<TrustDomain, Arc<PeerLink>>,
    endpoint: quinn::Endpoint,
    tasks: JoinSet<()>,
}

impl Gateway {
    /// Binds both listeners and starts connecting to every peer. Returns once listening.
    pub async fn start(config: GatewayConfig) -> Result<Self, GatewayError> {
        let local_td = config.identity.id.trust_domain().clone();
        let mut local_bundles = TrustBundles::new();
        local_bundles
            .insert_pem(local_td.clone(), &config.identity.local_ca_pem)
            .map_err(|source| GatewayError::Bundle {
                trust_domain: local_td.clone(),
                source,
            })?;
        let mut peer_bundles = TrustBundles::new();
        let mut federated = BTreeSet::new();
        for p in &config.peers {
            if p.trust_domain == local_td || !federated.insert(p.trust_domain.clone()) {
                return Err(GatewayError::DuplicatePeer {
                    trust_domain: p.trust_domain.clone(),
                });
            }
            peer_bundles
                .insert_pem(p.trust_domain.clone(), &p.ca_pem)
                .map_err(|source| GatewayError::Bundle {
                    trust_domain: p.trust_domain.clone(),
                    source,
                })?;
        }
        let peer_bundles = Arc::new(peer_bundles);
        let slot = config.identity.slot.clone();
        let limits = config.limits;

        let server = tls::quic_server(slot.clone(), peer_bundles.clone(), &limits)?;
        let endpoint = quinn::Endpoint::server(server, config.quic_listen).map_err(|source| {
            GatewayError::Bind {
                what: "QUIC endpoint (UDP)",
                addr: config.quic_listen,
                source,
            }
        })?;
        let quic_addr = endpoint.local_addr().unwrap_or(config.quic_listen);
        let listener = TcpListener::bind(config.tunnel_listen)
            .await
            .map_err(|source| GatewayError::Bind {
                what: "tunnel listener (TCP)",
                addr: config.tunnel_listen,
                source,
            })?;
        let tunnel_addr = listener.local_addr().unwrap_or(config.tunnel_listen);

        let mut tasks = JoinSet::new();
        let mut peers = BTreeMap::new();
        for p in &config.peers {
            let link = PeerLink::new(p.trust_domain.clone(), p.address);
            let client =
                tls::quic_client(slot.clone(), peer_bundles.clone(), &p.trust_domain, &limits)?;
            tasks.spawn(
                link.clone()
                    .connect_forever(endpoint.clone(), client, limits),
            );
            tasks.spawn(link.clone().probe_forever(limits));
            peers.insert(p.trust_domain.clone(), link);
        }

        let exported = config
            .exports
            .iter()
            .map(|(s, addrs)| (s.clone(), addrs.iter().map(|a| a.port()).collect()))
            .collect();
        let remote = Arc::new(Remote {
            admission: Admission {
                local: local_td.clone(),
                federated,
                exported,
            },
            exports: config.exports.clone(),
            limits,
            tap: config.tap.clone(),
            streams: Arc::new(Semaphore::new(limits.max_tunnels)),
        });
        tasks.spawn(remote.accept_forever(endpoint.clone()));

        let tunnel_tls = tls::tunnel_server(slot, Arc::new(local_bundles), &local_td)?;
        let local = Arc::new(Local {
            trust_domain: local_td,
            peers: peers.clone(),
            acceptor: TlsAcceptor::from(Arc::new(tunnel_tls)),
            limits,
            tap: config.tap.clone(),
        });
        tasks.spawn(local.accept_forever(listener));
        tracing::info!(id = %config.identity.id, %quic_addr, %tunnel_addr, peers = peers.len(), "gateway listening");
        Ok(Self {
            quic_addr,
            tunnel_addr,
            peers,
            endpoint,
            tasks,
        })
    }

    /// The bound QUIC (UDP) address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The bound tunnel (TCP) address.
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.tunnel_addr
    }

    /// Last probe RTT and up/down of the peer gateway of `trust_domain`, if it is a peer.
    pub fn peer_health(&self, trust_domain: &TrustDomain) -> Option<PeerHealth> {
        self.peers.get(trust_domain).map(|l| l.health())
    }

    /// Every peer's health, by trust domain.
    pub fn peers_health(&self) -> BTreeMap<TrustDomain, PeerHealth> {
        self.peers
            .iter()
            .map(|(td, l)| (td.clone(), l.health()))
            .collect()
    }

    /// Runs until one of the gateway's tasks ends (which only happens if the endpoint closed).
    pub async fn run(mut self) {
        let _ = self.tasks.join_next().await;
    }

    /// Closes every QUIC connection with code 0 and stops every task.
    pub fn shutdown(mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"gateway shutting down");
        self.tasks.abort_all();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"gateway stopped");
    }
}
