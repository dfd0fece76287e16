//! The gateway's own identity, `spiffe://<td>/mesh/gateway/<name>`: obtained from the control
//! plane's CA with the operator credential in `--token-file`, cached in the data directory,
//! renewed at half its lifetime into the `SvidSlot` the gateway's TLS configs read.
//!
//! ```text
//!  start: cached SVID valid and for this id? ──yes──► SvidSlot (no control plane needed)
//!               │ no
//!               ▼  status (trust domain) ─► generate_csr ─► sign ─► persist ─► SvidSlot
//!  renew: sleep until renewal_due_at ─► same fetch ─► SvidSlot::replace (retry, capped backoff)
//! ```
//!
//! Mirrors the agent's workload identity (`agent/identity.rs`) for one role identity; it does
//! not decide who may hold it (core's CSR checks do, on the control node).
//!
//! Files under `<data-dir>`: `ca.pem`, `svid/gateway.pem` (leaf then CA), `svid/gateway.key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::{self, SvidSlot};
use mesh_proto::api::SignRequest;
use mesh_proto::{NodeName, SpiffeId, TrustDomain};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::backoff::retrying;
use crate::client::{ApiClient, ClientError};
use crate::clock;
use crate::paths::write_atomic;

const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Why the gateway's SVID could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum GatewayCertError {
    #[error(
        "cannot reach the control plane to learn the trust domain: {0}; check --control and \
         --ca-fingerprint"
    )]
    Status(Box<ClientError>),
    #[error("the control plane reports an invalid trust domain {0:?}")]
    BadTrustDomain(String),
    #[error(
        "the control plane refused to sign {id}: {source}; --token-file must hold an operator \
         token (the one printed at bootstrap)"
    )]
    Refused {
        id: SpiffeId,
        source: Box<ClientError>,
    },
    #[error("the control plane signed {got:?} when {want} was asked for")]
    WrongIdentity { want: SpiffeId, got: String },
    #[error("certificate material for {id} is unusable: {source}")]
    Material {
        id: SpiffeId,
        source: identity::IdentityError,
    },
    #[error("cannot persist {path}: {message}")]
    Persist { path: PathBuf, message: String },
}

impl crate::backoff::Transient for GatewayCertError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::Refused { source, .. } | Self::Status(source) => {
                matches!(**source, ClientError::Api { status, .. } if status.is_client_error())
            }
            Self::BadTrustDomain(_) | Self::WrongIdentity { .. } => true,
            Self::Material { .. } | Self::Persist { .. } => false,
        }
    }
}

/// The gateway's SVID and its cluster's CA.
pub(crate) struct GatewaySvid {
    pub(crate) id: SpiffeId,
    pub(crate) slot: Arc<SvidSlot>,
    pub(crate) ca_pem: String,
}

fn paths(data: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        data.join("ca.pem"),
        data.join("svid").join("gateway.pem"),
        data.join("svid").join("gateway.key"),
    )
}

fn load_cached(data: &Path, name: &NodeName) -> Option<GatewaySvid> {
    let (ca, cert, key) = paths(data);
    let ca_pem = std::fs::read_to_string(ca).ok()?;
    let chain = std::fs::read_to_string(cert).ok()?;
    let key = std::fs::read_to_string(key).ok()?;
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()?
        .ok()?;
    let id = identity::spiffe_id_of(leaf.as_ref()).ok()?;
    if id != SpiffeId::gateway(id.trust_domain(), name) {
        return None;
    }
    let slot = SvidSlot::from_pem(&chain, &key).ok()?;
    (clock::now_unix() < slot.validity().1).then_some(GatewaySvid { id, slot, ca_pem })
}

/// The cached SVID when still valid, else a fresh one (waiting for the control plane).
pub(crate) async fn start(
    client: &ApiClient,
    data: &Path,
    name: &NodeName,
    ttl: Duration,
) -> Result<GatewaySvid, GatewayCertError> {
    if let Some(cached) = load_cached(data, name) {
        tracing::info!(id = %cached.id, "serving with the cached gateway SVID");
        return Ok(cached);
    }
    let td = retrying("learn the trust domain", MAX_RETRY_DELAY, || {
        learn_trust_domain(client)
    })
    .await?;
    let id = SpiffeId::gateway(&td, name);
    let (chain, key, ca_pem) = retrying(&format!("obtain {id}"), MAX_RETRY_DELAY, || {
        fetch(client, data, &id, ttl)
    })
    .await?;
    let slot = SvidSlot::from_pem(&chain, &key).map_err(|source| GatewayCertError::Material {
        id: id.clone(),
        source,
    })?;
    Ok(GatewaySvid { id, slot, ca_pem })
}

async fn learn_trust_domain(client: &ApiClient) -> Result<TrustDomain, GatewayCertError> {
    let status = client
        .status()
        .await
        .map_err(|e| GatewayCertError::Status(Box::new(e)))?;
    TrustDomain::new(status.trust_domain.clone())
        .map_err(|_| GatewayCertError::BadTrustDomain(status.trust_domain))
}

/// Key + CSR, signed by the CA, persisted (key first). Returns (chain, key, CA) PEMs.
async fn fetch(
    client: &ApiClient,
    data: &Path,
    id: &SpiffeId,
    ttl: Duration,
) -> Result<(String, String, String), GatewayCertError> {
    let kc = identity::generate_csr(id).map_err(|source| GatewayCertError::Material {
        id: id.clone(),
        source,
    })?;
    let signed = client
        .sign(&SignRequest {
            csr_pem: kc.csr_pem,
            ttl_secs: Some(ttl.as_secs()),
        })
        .await
        .map_err(|e| GatewayCertError::Refused {
            id: id.clone(),
            source: Box::new(e),
        })?;
    if signed.spiffe_id != id.to_string() {
        return Err(GatewayCertError::WrongIdentity {
            want: id.clone(),
            got: signed.spiffe_id,
        });
    }
    let chain = format!("{}{}", signed.cert_pem, signed.ca_pem);
    let (ca, cert, key) = paths(data);
    persist(&key, &kc.key_pem, 0o600)?;
    persist(&cert, &chain, 0o644)?;
    persist(&ca, &signed.ca_pem, 0o644)?;
    Ok((chain, kc.key_pem, signed.ca_pem))
}

fn persist(path: &Path, text: &str, mode: u32) -> Result<(), GatewayCertError> {
    write_atomic(path, text.as_bytes(), mode).map_err(|e| GatewayCertError::Persist {
        path: path.to_owned(),
        message: format!("{e:#}"),
    })
}

/// Renews the SVID at half its lifetime, forever; failures keep the current one in use.
pub(crate) async fn renew_forever(
    client: Arc<ApiClient>,
    data: PathBuf,
    id: SpiffeId,
    slot: Arc<SvidSlot>,
    ttl: Duration,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let (not_before, not_after) = slot.validity();
        let due = identity::renewal_due_at(not_before, not_after);
        let now = clock::now_unix();
        if now < due {
            tokio::time::sleep(Duration::from_secs((due - now).min(3600))).await;
            continue;
        }
        let renewed = match fetch(&client, &data, &id, ttl).await {
            Ok((chain, key, _)) => slot.replace(&chain, &key).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match renewed {
            Ok(()) => {
                delay = Duration::from_secs(1);
                tracing::info!(%id, not_after = slot.validity().1, "gateway SVID renewed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                tracing::warn!(%id, %error, retry_in = ?delay, "gateway SVID renewal failed; the current one stays in use");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}
