//! The gateway's TLS configs, all TLS 1.3 on the ring provider, all presenting the gateway's
//! hot-swappable SVID, all verifying peers by SPIFFE ID against per-trust-domain bundles:
//!
//! | config | peer must be | bundles | ALPN |
//! |---|---|---|---|
//! | QUIC server | a gateway of a federated trust domain | peers' only | `meshfed/1` |
//! | QUIC client, per peer | a gateway of exactly that peer's trust domain | peers' only | `meshfed/1` |
//! | tunnel server (TCP) | any identity of the local trust domain (role checked in core) | local only | `meshfed-tunnel/1` |
//!
//! No 0-RTT: the server keeps rustls' `max_early_data_size = 0` and the client never enables
//! early data, so no tunnel byte can be replayed.

use std::sync::Arc;

use mesh_core::identity::{
    self, IdentityError, PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier, SvidSlot,
    TrustBundles,
};
use mesh_proto::TrustDomain;
use mesh_proto::tunnel::{ALPN_GATEWAY, ALPN_TUNNEL};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::config::Limits;

/// Why a TLS or QUIC config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls config: {0}")]
    Identity(#[from] IdentityError),
    #[error("the rustls config is not usable for QUIC: {0}")]
    Quic(String),
}

/// Transport parameters shared by both directions of a peer connection.
pub(crate) fn transport(limits: &Limits) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(limits.keep_alive))
        .max_idle_timeout(quinn::IdleTimeout::try_from(limits.idle_timeout).ok())
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.max_streams_per_peer))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

pub(crate) fn quic_server(
    slot: Arc<SvidSlot>,
    peer_bundles: Arc<TrustBundles>,
    limits: &Limits,
) -> Result<quinn::ServerConfig, TlsError> {
    let verifier = SpiffeClientVerifier::new(peer_bundles, PeerPolicy::AnyGateway, true);
    let tls = identity::server_config_with_slot(slot, Some(verifier), &[ALPN_GATEWAY])?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(limits));
    Ok(config)
}

pub(crate) fn quic_client(
    slot: Arc<SvidSlot>,
    peer_bundles: Arc<TrustBundles>,
    peer: &TrustDomain,
    limits: &Limits,
) -> Result<quinn::ClientConfig, TlsError> {
    let verifier = SpiffeServerVerifier::new(peer_bundles, PeerPolicy::RoleGateway(peer.clone()));
    let tls = identity::client_config_with_slot(verifier, slot, &[ALPN_GATEWAY])?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(limits));
    Ok(config)
}

pub(crate) fn tunnel_server(
    slot: Arc<SvidSlot>,
    local_bundles: Arc<TrustBundles>,
    local: &TrustDomain,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = SpiffeClientVerifier::new(
        local_bundles,
        PeerPolicy::AnyInTrustDomain(local.clone()),
        true,
    );
    Ok(identity::server_config_with_slot(
        slot,
        Some(verifier),
        &[ALPN_TUNNEL],
    )?)
}
