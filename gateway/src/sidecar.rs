//! The sidecar's end of a tunnel: what a local sidecar (or a test, or the benchmark) calls to
//! send one cross-cluster connection through its local gateway.
//!
//! ```text
//!  TCP connect tunnel_addr ─► TLS 1.3, ALPN meshfed-tunnel/1, the sidecar's workload SVID;
//!  the gateway must be spiffe://<local td>/mesh/gateway/* ─► preamble frame ─► status byte
//!  ─► Ok(stream): run the inner TLS session with the target over it
//! ```
//!
//! This file does not run the inner TLS session; the caller does, with the target's identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::{
    self, IdentityError, PeerPolicy, SpiffeServerVerifier, SvidSlot, TrustBundles,
};
use mesh_proto::TrustDomain;
use mesh_proto::tunnel::{ALPN_TUNNEL, Preamble, Refusal, Status};
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::wire;

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot connect to the local gateway at {addr}: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("the local gateway at {addr} did not answer within {deadline:?}")]
    Timeout {
        addr: SocketAddr,
        deadline: Duration,
    },
    #[error("the tunnel was refused: {0}")]
    Refused(Refusal),
    #[error("the local gateway sent no valid status byte")]
    NoStatus,
    #[error("tunnel client config: {0}")]
    Config(#[from] IdentityError),
}

/// The outer TLS client config of a sidecar's tunnel: presents `slot`, accepts only a gateway
/// of `local` verified against `local_bundles`.
pub fn tunnel_client_config(
    slot: Arc<SvidSlot>,
    local_bundles: Arc<TrustBundles>,
    local: &TrustDomain,
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let verifier = SpiffeServerVerifier::new(local_bundles, PeerPolicy::RoleGateway(local.clone()));
    Ok(Arc::new(identity::client_config_with_slot(
        verifier,
        slot,
        &[ALPN_TUNNEL],
    )?))
}

/// Opens a tunnel through the gateway at `addr` to `preamble`'s target, within `deadline`
/// (connect, handshake, preamble and status). On `Ok`, bytes written reach the target's
/// endpoint and its bytes come back, untouched.
pub async fn open_tunnel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    preamble: &Preamble,
    deadline: Duration,
) -> Result<TlsStream<TcpStream>, TunnelError> {
    let frame = preamble
        .to_frame()
        .map_err(|_| TunnelError::Refused(Refusal::Malformed))?;
    open_with_frame(addr, config, &frame, deadline).await
}

/// [`open_tunnel`] with the preamble frame given as bytes (tests send broken ones).
pub async fn open_with_frame(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    frame: &[u8],
    deadline: Duration,
) -> Result<TlsStream<TcpStream>, TunnelError> {
    let run = async {
        let connect_err = |e: std::io::Error| TunnelError::Connect {
            addr,
            message: e.to_string(),
        };
        let tcp = TcpStream::connect(addr).await.map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        // Not checked by the SPIFFE verifier; any valid name will do.
        let name = ServerName::try_from("gateway.meshfed").map_err(|e| TunnelError::Connect {
            addr,
            message: e.to_string(),
        })?;
        let mut tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(connect_err)?;
        tls.write_all(frame).await.map_err(connect_err)?;
        tls.flush().await.map_err(connect_err)?;
        match wire::read_status(&mut tls, deadline).await {
            Some(Status::Ok) => Ok(tls),
            Some(Status::Refused(r)) => Err(TunnelError::Refused(r)),
            None => Err(TunnelError::NoStatus),
        }
    };
    tokio::time::timeout(deadline, run)
        .await
        .unwrap_or(Err(TunnelError::Timeout { addr, deadline }))
}
