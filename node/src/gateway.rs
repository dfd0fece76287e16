//! `meshd gateway`: the east-west gateway role of a cluster (DESIGN §6 "Cross-cluster path").
//!
//! ```text
//!  --config ─► config::load ─► peers (trust domain, QUIC address, CA bundle), exports
//!  --token-file, --control ─► ApiClient ─► identity::start (cached SVID, else CSR ─► sign)
//!                                  └─► identity::renew_forever ─► SvidSlot::replace
//!  mesh_gateway::Gateway::start: QUIC on --listen, sidecar tunnels on --tunnel-addr
//! ```
//!
//! This file wires flags, files and the control API to `mesh-gateway`; the data path and its
//! decisions live there and in `mesh_core::tunnel`. Peers come from the config file until
//! federation tokens replace it; exported endpoints are static until the catalog wiring.

mod config;
mod identity;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_gateway::{Gateway, GatewayConfig, GatewayIdentity, Limits};
use mesh_proto::NodeName;

pub use config::{GatewayConfigError, GatewayFile};
pub use identity::GatewayCertError;

use crate::client::{ApiClient, ClientError, Trust};

/// How long one control API call retries refused connections and leader changes.
const CONTROL_RETRY_FOR: Duration = Duration::from_secs(3);

/// Flags of `meshd gateway`, checked.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub name: NodeName,
    pub data_dir: PathBuf,
    pub control: Vec<String>,
    pub ca_fingerprint: String,
    pub token_file: PathBuf,
    pub listen: SocketAddr,
    pub tunnel_addr: SocketAddr,
    pub config_file: PathBuf,
    pub svid_ttl: Duration,
}

/// Why the gateway role could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayRoleError {
    #[error(transparent)]
    Config(#[from] GatewayConfigError),
    #[error("cannot read --token-file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--token-file {path} is empty; put the operator token in it")]
    EmptyToken { path: PathBuf },
    #[error("control API client: {0}")]
    Client(#[from] ClientError),
    #[error(transparent)]
    Cert(#[from] GatewayCertError),
    #[error(transparent)]
    Gateway(#[from] mesh_gateway::GatewayError),
}

/// Runs the gateway until SIGTERM or Ctrl-C.
pub async fn run(opts: GatewayOptions) -> Result<(), GatewayRoleError> {
    let file = config::load(&opts.config_file)?;
    let token = std::fs::read_to_string(&opts.token_file)
        .map_err(|source| GatewayRoleError::TokenFile {
            path: opts.token_file.clone(),
            source,
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(GatewayRoleError::EmptyToken {
            path: opts.token_file.clone(),
        });
    }
    let mut client = ApiClient::new(
        opts.control.clone(),
        Trust::PinnedCa(opts.ca_fingerprint.clone()),
        Some(token),
    )?;
    client.retry_for = CONTROL_RETRY_FOR;
    let client = Arc::new(client);
    tracing::info!(control = ?opts.control, "gateway starting; loading its SVID");
    let svid = identity::start(&client, &opts.data_dir, &opts.name, opts.svid_ttl).await?;
    let renew = tokio::spawn(identity::renew_forever(
        client.clone(),
        opts.data_dir.clone(),
        svid.id.clone(),
        svid.slot.clone(),
        opts.svid_ttl,
    ));
    let gateway = Gateway::start(GatewayConfig {
        identity: GatewayIdentity {
            id: svid.id,
            slot: svid.slot,
            local_ca_pem: svid.ca_pem,
        },
        quic_listen: opts.listen,
        tunnel_listen: opts.tunnel_addr,
        peers: file.peers,
        exports: file.exports,
        limits: Limits::default(),
        tap: None,
    })
    .await?;
    // The line tests and operators wait for.
    println!(
        "gateway ready: quic {} tunnel {}",
        gateway.quic_addr(),
        gateway.tunnel_addr()
    );
    tokio::select! {
        () = gateway.run() => tracing::error!("gateway endpoint closed"),
        () = crate::signals::shutdown() => tracing::info!("gateway stopping"),
    }
    renew.abort();
    Ok(())
}
