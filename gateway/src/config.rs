//! What a gateway is started with: its identity, listen addresses, peers, exported services
//! and limits. Already validated: the `meshd gateway` role parses and checks the YAML file and
//! flags and builds these; this file reads nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::SvidSlot;
use mesh_proto::{ServiceName, SpiffeId, TrustDomain};

use crate::relay::RelayTap;

/// The gateway's own SVID (`spiffe://<td>/mesh/gateway/<name>`) and its cluster's CA.
#[derive(Debug, Clone)]
pub struct GatewayIdentity {
    pub id: SpiffeId,
    /// Hot-swappable: renewals reach new handshakes without dropping connections.
    pub slot: Arc<SvidSlot>,
    /// PEM of the local cluster's root(s): local sidecars' SVIDs are verified against it only.
    pub local_ca_pem: String,
}

/// One federated cluster's gateway.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub trust_domain: TrustDomain,
    /// Its QUIC (UDP) address.
    pub address: SocketAddr,
    /// PEM of that cluster's root(s); kept in its own bundle, never merged with another's.
    pub ca_pem: String,
}

/// Caps and deadlines (STYLE "Put a limit on everything").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tunnels (local side) and relayed streams (remote side) open at once, each side.
    pub max_tunnels: usize,
    /// Concurrent bidirectional streams one peer gateway may open on its connection.
    pub max_streams_per_peer: u32,
    /// Peer gateway connections accepted at once.
    pub max_peer_connections: usize,
    /// TLS handshake of a sidecar's tunnel, and QUIC handshake with a peer gateway.
    pub handshake_timeout: Duration,
    /// From accept (or stream open) until the whole preamble has arrived.
    pub preamble_timeout: Duration,
    /// From sending the preamble to a peer gateway until its status byte arrives.
    pub status_timeout: Duration,
    /// Connecting to an exported service's endpoint.
    pub connect_timeout: Duration,
    /// How long a new tunnel waits for a (re)connecting peer link before refusing.
    pub peer_wait: Duration,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    pub probe_interval: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Per direction of each relayed connection.
    pub relay_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tunnels: 4096,
            max_streams_per_peer: 4096,
            max_peer_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            preamble_timeout: Duration::from_secs(5),
            status_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            peer_wait: Duration::from_secs(2),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            probe_interval: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            relay_buffer_bytes: 64 * 1024,
        }
    }
}

/// Everything a gateway runs with.
#[derive(Clone)]
pub struct GatewayConfig {
    pub identity: GatewayIdentity,
    /// UDP address of the QUIC endpoint (peer gateways connect here).
    pub quic_listen: SocketAddr,
    /// TCP address local sidecars open tunnels to.
    pub tunnel_listen: SocketAddr,
    pub peers: Vec<PeerConfig>,
    /// Exported services and their endpoints (static for now; the catalog comes later).
    pub exports: BTreeMap<ServiceName, Vec<SocketAddr>>,
    pub limits: Limits,
    /// Test hook: sees every byte the gateway relays after the preamble.
    pub tap: Option<Arc<dyn RelayTap>>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("identity", &self.identity.id)
            .field("quic_listen", &self.quic_listen)
            .field("tunnel_listen", &self.tunnel_listen)
            .field("peers", &self.peers)
            .field("exports", &self.exports)
            .field("limits", &self.limits)
            .field("tap", &self.tap.is_some())
            .finish()
    }
}
