//! The agent's workload identities: for each local service, an X.509-SVID for
//! `spiffe://<td>/ns/default/sa/<service>`, fetched from the control plane's CA, cached in the
//! data directory, and renewed at 50 % of its lifetime (DESIGN §3).
//!
//! ```text
//!  start:  cached cert still valid? ──yes──► SvidSlot from cache (no control plane needed)
//!                  │ no
//!                  ▼
//!          generate_csr ─► ApiClient::sign ─► persist (key 0600, cert, CA) ─► SvidSlot
//!  renew:  sleep until renewal_due_at(not_before, not_after) ─► same fetch ─► SvidSlot::replace
//!          (failures retry with capped backoff until the control plane answers)
//! ```
//!
//! The hot swap is `mesh_core::identity::SvidSlot`: TLS configs built on it ask the slot at
//! every handshake, so open connections keep their session and new ones get the new SVID. This
//! module decides nothing about which identities are acceptable (the core verifiers do) and
//! does not rotate trust bundles: the CA certificate is read once at start.
//!
//! Files under `<data-dir>`: `ca.pem`, `svid/<service>.pem` (leaf then CA), `svid/<service>.key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::{self, SvidSlot, TrustBundles};
use mesh_proto::api::SignRequest;
use mesh_proto::{ServiceName, SpiffeId, TrustDomain};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::metrics::Metrics;
use crate::backoff::retrying;
use crate::client::{ApiClient, ClientError};
use crate::clock;
use crate::paths::write_atomic;

/// Longest wait between two attempts to reach the CA.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Shortest time between two successful renewals of one SVID.
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// The SVID of one local service, presented by its inbound and outbound listeners.
#[derive(Debug, Clone)]
pub(crate) struct WorkloadSvid {
    pub(crate) service: ServiceName,
    pub(crate) id: SpiffeId,
    pub(crate) slot: Arc<SvidSlot>,
}

/// Every identity of this agent, and the trust they verify peers against.
#[derive(Debug)]
pub(crate) struct Identities {
    pub(crate) trust_domain: TrustDomain,
    pub(crate) bundles: Arc<TrustBundles>,
    pub(crate) svids: Vec<WorkloadSvid>,
}

/// Why an identity could not be obtained or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "cannot learn the trust domain from the control plane: {source}; check --control, \
         --ca-fingerprint and that the token in --token-file is valid"
    )]
    TrustDomain { source: Box<ClientError> },
    #[error("the control plane reports trust domain {value:?}, which is not valid: {reason}")]
    BadTrustDomain { value: String, reason: String },
    #[error(
        "the control plane refused to sign {id}: {source}; check that the credential in \
         --token-file was created for this service (`meshctl credential create --node N \
         --service S`)"
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
    #[error("the CA certificate from the control plane or the cache is unusable: {source}")]
    BadCa { source: identity::IdentityError },
    #[error("cannot persist {path}: {message}")]
    Persist { path: PathBuf, message: String },
}

impl crate::backoff::Transient for CertError {
    /// True if retrying cannot help: the control plane answered and said no.
    fn is_permanent(&self) -> bool {
        match self {
            Self::Refused { source, .. } | Self::TrustDomain { source } => {
                matches!(**source, ClientError::Api { status, .. } if status.is_client_error())
            }
            Self::BadTrustDomain { .. } | Self::WrongIdentity { .. } => true,
            Self::BadCa { .. } => true,
            Self::Material { .. } | Self::Persist { .. } => false,
        }
    }
}

struct Cached {
    ca_pem: String,
    slot: Arc<SvidSlot>,
    id: SpiffeId,
}

fn ca_path(data: &Path) -> PathBuf {
    data.join("ca.pem")
}

fn cert_path(data: &Path, svc: &ServiceName) -> PathBuf {
    data.join("svid").join(format!("{svc}.pem"))
}

fn key_path(data: &Path, svc: &ServiceName) -> PathBuf {
    data.join("svid").join(format!("{svc}.key"))
}

/// A cached SVID for `svc` that is still valid now, if there is one.
fn load_cached(data: &Path, svc: &ServiceName) -> Option<Cached> {
    let ca_pem = std::fs::read_to_string(ca_path(data)).ok()?;
    let chain = std::fs::read_to_string(cert_path(data, svc)).ok()?;
    let key = std::fs::read_to_string(key_path(data, svc)).ok()?;
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()?
        .ok()?;
    let id = identity::spiffe_id_of(leaf.as_ref()).ok()?;
    let slot = SvidSlot::from_pem(&chain, &key)
        .map_err(|e| tracing::warn!(service = %svc, error = %e, "cached SVID is unusable"))
        .ok()?;
    let (_, not_after) = slot.validity();
    (clock::now_unix() < not_after).then_some(Cached { ca_pem, slot, id })
}

impl Identities {
    /// Every service's SVID, from the cache when still valid, else from the CA. Waits for the
    /// control plane (retrying with backoff) only for services without a usable cached SVID.
    pub(crate) async fn start(
        client: &ApiClient,
        data: &Path,
        services: &[ServiceName],
        ttl: Duration,
    ) -> Result<Self, CertError> {
        let cached: Vec<Option<Cached>> = services.iter().map(|s| load_cached(data, s)).collect();
        let mut trust_domain = cached
            .iter()
            .flatten()
            .next()
            .map(|c| c.id.trust_domain().clone());
        let mut ca_pem = cached.iter().flatten().next().map(|c| c.ca_pem.clone());
        let mut svids = Vec::new();
        for (svc, cached) in services.iter().zip(cached) {
            let td = match &trust_domain {
                Some(td) => td.clone(),
                None => {
                    retrying("learn the trust domain", MAX_RETRY_DELAY, || {
                        learn_trust_domain(client)
                    })
                    .await?
                }
            };
            let id = SpiffeId::workload(&td, "default", svc);
            let slot = match cached {
                Some(c) if c.id == id => {
                    tracing::info!(%id, "serving with the cached SVID");
                    c.slot
                }
                _ => {
                    let fresh = retrying(&format!("obtain {id}"), MAX_RETRY_DELAY, || {
                        fetch(client, data, svc, &id, ttl)
                    })
                    .await?;
                    ca_pem.get_or_insert(fresh.ca_pem);
                    fresh.slot
                }
            };
            trust_domain = Some(td);
            svids.push(WorkloadSvid {
                service: svc.clone(),
                id,
                slot,
            });
        }
        let (Some(trust_domain), Some(ca_pem)) = (trust_domain, ca_pem) else {
            return Err(CertError::Persist {
                path: data.to_owned(),
                message: "no service configured, so no CA certificate was obtained".into(),
            });
        };
        let mut bundles = TrustBundles::new();
        bundles
            .insert_pem(trust_domain.clone(), &ca_pem)
            .map_err(|source| CertError::BadCa { source })?;
        Ok(Self {
            trust_domain,
            bundles: Arc::new(bundles),
            svids,
        })
    }
}

async fn learn_trust_domain(client: &ApiClient) -> Result<TrustDomain, CertError> {
    let status = client.status().await.map_err(|e| CertError::TrustDomain {
        source: Box::new(e),
    })?;
    TrustDomain::new(status.trust_domain.clone()).map_err(|e| CertError::BadTrustDomain {
        value: status.trust_domain,
        reason: e.to_string(),
    })
}

struct Fresh {
    ca_pem: String,
    slot: Arc<SvidSlot>,
    chain_pem: String,
    key_pem: String,
}

/// Make a key and CSR for `id`, have the CA sign it, and persist key, chain and CA.
async fn fetch(
    client: &ApiClient,
    data: &Path,
    svc: &ServiceName,
    id: &SpiffeId,
    ttl: Duration,
) -> Result<Fresh, CertError> {
    let material = |source| CertError::Material {
        id: id.clone(),
        source,
    };
    let kc = identity::generate_csr(id).map_err(material)?;
    let signed = client
        .sign(&SignRequest {
            csr_pem: kc.csr_pem,
            ttl_secs: Some(ttl.as_secs()),
        })
        .await
        .map_err(|e| CertError::Refused {
            id: id.clone(),
            source: Box::new(e),
        })?;
    if signed.spiffe_id != id.to_string() {
        return Err(CertError::WrongIdentity {
            want: id.clone(),
            got: signed.spiffe_id,
        });
    }
    let chain_pem = format!("{}{}", signed.cert_pem, signed.ca_pem);
    let slot = SvidSlot::from_pem(&chain_pem, &kc.key_pem).map_err(material)?;
    // Key first: a crash between the writes leaves a key that does not match the old cert,
    // which the next start refuses and replaces, rather than a cert without its key.
    persist(&key_path(data, svc), &kc.key_pem, 0o600)?;
    persist(&cert_path(data, svc), &chain_pem, 0o644)?;
    persist(&ca_path(data), &signed.ca_pem, 0o644)?;
    Ok(Fresh {
        ca_pem: signed.ca_pem,
        slot,
        chain_pem,
        key_pem: kc.key_pem,
    })
}

fn persist(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    write_atomic(path, text.as_bytes(), mode).map_err(|e| CertError::Persist {
        path: path.to_owned(),
        message: format!("{e:#}"),
    })
}

/// Keep `svid` fresh forever: renew at half its lifetime, retrying with capped backoff while
/// the control plane is unreachable. A refused renewal is logged and retried too, since an
/// operator may fix the credential while the old SVID is still valid.
pub(crate) async fn renew_forever(
    client: Arc<ApiClient>,
    data: PathBuf,
    svid: WorkloadSvid,
    ttl: Duration,
    metrics: Arc<Metrics>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let (not_before, not_after) = svid.slot.validity();
        metrics.cert_expiry(&svid.service, not_after);
        let due = identity::renewal_due_at(not_before, not_after);
        let now = clock::now_unix();
        if now < due {
            // Bounded steps, so a wall-clock jump is noticed within the hour.
            tokio::time::sleep(Duration::from_secs((due - now).min(3600))).await;
            continue;
        }
        match fetch(&client, &data, &svid.service, &svid.id, ttl).await {
            Ok(fresh) => match svid.slot.replace(&fresh.chain_pem, &fresh.key_pem) {
                Ok(()) => {
                    delay = Duration::from_secs(1);
                    let (_, not_after) = svid.slot.validity();
                    tracing::info!(id = %svid.id, not_after, "SVID renewed");
                    // Bound the loop even if a CA hands out SVIDs that are due at once.
                    tokio::time::sleep(MIN_RENEW_INTERVAL).await;
                }
                Err(e) => {
                    tracing::error!(id = %svid.id, error = %e, "renewed SVID refused");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            },
            Err(e) => {
                let left = not_after.saturating_sub(clock::now_unix());
                tracing::warn!(
                    id = %svid.id, error = %e, retry_in = ?delay, expires_in_secs = left,
                    "SVID renewal failed; the current one stays in use"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::ClusterName;

    use super::*;

    #[test]
    fn a_cached_svid_is_used_only_while_valid_and_matching() {
        let dir = tempfile::tempdir().unwrap();
        let svc = ServiceName::new("api").unwrap();
        assert!(load_cached(dir.path(), &svc).is_none());
        let td = TrustDomain::new("c1.mesh").unwrap();
        let now = clock::now_unix();
        let ca =
            identity::generate_ca(&ClusterName::new("c1").unwrap(), &td, now - 10_000).unwrap();
        let id = SpiffeId::workload(&td, "default", &svc);
        let write = |ttl: u64, start: u64| {
            let kc = identity::generate_csr(&id).unwrap();
            let svid = identity::sign_svid(&ca, &kc.csr_pem, &id, ttl, start).unwrap();
            let chain = format!("{}{}", svid.cert_pem, ca.cert_pem);
            persist(&key_path(dir.path(), &svc), &kc.key_pem, 0o600).unwrap();
            persist(&cert_path(dir.path(), &svc), &chain, 0o644).unwrap();
            persist(&ca_path(dir.path()), &ca.cert_pem, 0o644).unwrap();
        };
        write(3600, now);
        let c = load_cached(dir.path(), &svc).expect("valid cache is used");
        assert_eq!(c.id, id);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key_path(dir.path(), &svc))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        write(60, now - 7200);
        assert!(
            load_cached(dir.path(), &svc).is_none(),
            "an expired SVID is not served"
        );
    }
}
