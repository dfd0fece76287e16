//! Verifying presented X.509-SVIDs: per-trust-domain root bundles and the leaf and chain rules.
//!
//! A bundle is picked by the *leaf's* trust domain and the chain is validated against that
//! bundle only; bundles are never merged (DESIGN §3), so one peer's CA can never vouch for
//! another trust domain. This file does not decide which verified ids a connection accepts
//! (that is `PeerPolicy` in `tls.rs`) nor what the CA issues (`ca.rs`).
//!
//! ```text
//! chain --parse leaf--> one URI SAN --> SPIFFE ID --> CA:false, digitalSignature only
//!       --> within validity --> bundle for id's trust domain --> webpki path + EKU --> SpiffeId
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mesh_proto::{SpiffeId, TrustDomain};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::{IdentityError, fingerprint};

/// The most roots one trust domain holds: rotation needs old + new, with room for a retry.
pub const MAX_ROOTS_PER_TRUST_DOMAIN: usize = 4;
/// The longest chain (leaf included) a verifier reads. meshfed sends leaf + root.
pub const MAX_CHAIN_LEN: usize = 4;

/// meshfed's CAs are ECDSA P-256 and its leaves ECDSA or Ed25519; nothing else signs a chain.
static CHAIN_SIG_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// What the verified certificate will be used for: the peer acting as a TLS server or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// One root set per trust domain, never merged (DESIGN §3). A trust domain may hold several
/// roots at once while a cross-signed rotation is in progress.
#[derive(Debug, Clone, Default)]
pub struct TrustBundles {
    by_td: BTreeMap<TrustDomain, Bundle>,
}

/// Why a presented certificate chain is not an acceptable X.509-SVID. Each rule has its own
/// variant, so a refusal names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("peer certificate chain is malformed: {reason}")]
    Malformed { reason: String },
    #[error("peer certificate has no URI SAN, so it names no SPIFFE ID")]
    NoUriSan,
    #[error("peer certificate has {count} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans { count: usize },
    #[error("peer URI SAN {uri:?} is not a SPIFFE ID: {reason}")]
    InvalidSpiffeId { uri: String, reason: String },
    #[error("no trust bundle for trust domain {td}; federate with it first")]
    UnknownTrustDomain { td: TrustDomain },
    #[error("leaf certificate for {id} is a CA (basicConstraints CA:true)")]
    LeafIsCa { id: SpiffeId },
    #[error("leaf certificate for {id} has an unacceptable keyUsage: {reason}")]
    LeafKeyUsage { id: SpiffeId, reason: &'static str },
    #[error("certificate for {id} expired at unix {not_after_unix} (now {now_unix})")]
    Expired {
        id: SpiffeId,
        not_after_unix: i64,
        now_unix: u64,
    },
    #[error("certificate for {id} is not valid before unix {not_before_unix} (now {now_unix})")]
    NotYetValid {
        id: SpiffeId,
        not_before_unix: i64,
        now_unix: u64,
    },
    #[error("certificate for {id} does not chain to a root of {}: {reason}", .id.trust_domain())]
    UntrustedIssuer { id: SpiffeId, reason: String },
    #[error("certificate for {id} is not valid for TLS {usage} authentication (EKU)")]
    WrongUsage { id: SpiffeId, usage: Usage },
    #[error("{id} is a valid SVID but this connection accepts only {policy}")]
    NotAllowedByPolicy { id: SpiffeId, policy: String },
    #[error("no certificate in the server's chain has the pinned fingerprint {pin}")]
    PinnedCaNotPresented { pin: String },
}

#[derive(Debug, Clone, Default)]
struct Bundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every certificate in `ca_pem` as a root of `td`. Each must be a CA certificate.
    /// Re-adding a root is a no-op; the whole PEM is refused if any certificate is unusable.
    pub fn insert_pem(&mut self, td: TrustDomain, ca_pem: &str) -> Result<(), IdentityError> {
        let ders = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Pem {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
        self.insert_der(td, ders)
    }

    /// [`Self::insert_pem`] for certificates already decoded from PEM.
    pub fn insert_der(
        &mut self,
        td: TrustDomain,
        ders: Vec<CertificateDer<'static>>,
    ) -> Result<(), IdentityError> {
        let pem_err = |reason: String| IdentityError::Pem {
            what: "trust bundle",
            reason,
        };
        if ders.is_empty() {
            return Err(pem_err("no CERTIFICATE section".into()));
        }
        let mut new = Vec::with_capacity(ders.len());
        for der in ders {
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| pem_err(format!("certificate DER: {e}")))?;
            if !cert.is_ca() {
                return Err(IdentityError::InvalidCa {
                    reason: format!("bundle certificate {} is not a CA", fingerprint(&der)),
                });
            }
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| pem_err(format!("not a usable trust anchor: {e}")))?
                .to_owned();
            new.push((der, anchor));
        }
        let bundle = self.by_td.entry(td.clone()).or_default();
        let mut fresh: Vec<(CertificateDer<'static>, TrustAnchor<'static>)> = Vec::new();
        for (der, anchor) in new {
            if !bundle.roots.contains(&der) && !fresh.iter().any(|(d, _)| *d == der) {
                fresh.push((der, anchor));
            }
        }
        if bundle.roots.len() + fresh.len() > MAX_ROOTS_PER_TRUST_DOMAIN {
            if bundle.roots.is_empty() {
                self.by_td.remove(&td);
            }
            return Err(IdentityError::TooManyRoots {
                td,
                max: MAX_ROOTS_PER_TRUST_DOMAIN,
            });
        }
        for (der, anchor) in fresh {
            bundle.roots.push(der);
            bundle.anchors.push(anchor);
        }
        Ok(())
    }

    /// Drops the root with this fingerprint (the last step of a rotation). Returns whether it
    /// was present. A trust domain left with no roots is forgotten.
    pub fn remove_root(&mut self, td: &TrustDomain, root_fingerprint: &str) -> bool {
        let Some(bundle) = self.by_td.get_mut(td) else {
            return false;
        };
        let Some(i) = bundle
            .roots
            .iter()
            .position(|r| fingerprint(r) == root_fingerprint)
        else {
            return false;
        };
        bundle.roots.remove(i);
        bundle.anchors.remove(i);
        if bundle.roots.is_empty() {
            self.by_td.remove(td);
        }
        true
    }

    /// Forgets a trust domain and all its roots (e.g. when a federation peer is removed).
    pub fn remove_trust_domain(&mut self, td: &TrustDomain) -> bool {
        self.by_td.remove(td).is_some()
    }

    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.by_td.keys()
    }

    /// The roots held for `td`, DER, in insertion order.
    pub fn roots(&self, td: &TrustDomain) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.by_td.get(td).into_iter().flat_map(|b| b.roots.iter())
    }
}

/// Verifies a presented chain (leaf first, then intermediates) as an X.509-SVID at `now_unix`,
/// for `usage`, against the bundle of the leaf's trust domain only. Returns the leaf's id.
pub fn verify_svid(
    chain: &[CertificateDer<'_>],
    bundles: &TrustBundles,
    usage: Usage,
    now_unix: u64,
) -> Result<SpiffeId, SvidError> {
    let malformed = |reason: String| SvidError::Malformed { reason };
    let Some((leaf_der, intermediates)) = chain.split_first() else {
        return Err(malformed("empty certificate chain".into()));
    };
    if chain.len() > MAX_CHAIN_LEN {
        return Err(malformed(format!(
            "{} certificates, limit {MAX_CHAIN_LEN}",
            chain.len()
        )));
    }
    let leaf = parse(leaf_der)?;
    let id = id_of(&leaf)?;
    check_leaf(&leaf, &id, now_unix)?;

    let bundle =
        bundles
            .by_td
            .get(id.trust_domain())
            .ok_or_else(|| SvidError::UnknownTrustDomain {
                td: id.trust_domain().clone(),
            })?;
    let ee = webpki::EndEntityCert::try_from(leaf_der).map_err(|e| malformed(e.to_string()))?;
    let eku = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now_unix));
    ee.verify_for_usage(
        CHAIN_SIG_ALGS,
        &bundle.anchors,
        intermediates,
        time,
        eku,
        None,
        None,
    )
    .map_err(|e| chain_error(e, id.clone(), usage, now_unix))?;
    Ok(id)
}

/// The SPIFFE ID of a leaf certificate, without verifying anything else. Servers use it after
/// the handshake (which already verified the chain) to learn who the peer is.
pub fn spiffe_id_of(cert_der: &[u8]) -> Result<SpiffeId, SvidError> {
    id_of(&parse(cert_der)?)
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server => "server",
            Self::Client => "client",
        })
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| SvidError::Malformed {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed {
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(cert)
}

/// The one URI SAN, parsed. Other SAN types are allowed on a presented SVID (the SPIFFE spec
/// permits them); only URIs count.
fn id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::Malformed {
            reason: format!("subjectAltName: {e}"),
        })?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [uri] => *uri,
        many => return Err(SvidError::MultipleUriSans { count: many.len() }),
    };
    SpiffeId::parse(uri).map_err(|e| SvidError::InvalidSpiffeId {
        uri: uri.to_owned(),
        reason: e.to_string(),
    })
}

/// The X.509-SVID leaf rules webpki does not enforce: CA:false, a keyUsage with
/// digitalSignature and without keyCertSign/cRLSign, and the validity window.
fn check_leaf(leaf: &X509Certificate<'_>, id: &SpiffeId, now_unix: u64) -> Result<(), SvidError> {
    let malformed = |what: &str, e| SvidError::Malformed {
        reason: format!("{what}: {e}"),
    };
    let bc = leaf
        .basic_constraints()
        .map_err(|e| malformed("basicConstraints", e))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa { id: id.clone() });
    }
    let key_usage = leaf.key_usage().map_err(|e| malformed("keyUsage", e))?;
    let bad_usage = |reason| {
        Err(SvidError::LeafKeyUsage {
            id: id.clone(),
            reason,
        })
    };
    match key_usage.map(|ku| ku.value) {
        None => return bad_usage("no keyUsage extension"),
        Some(ku) if !ku.digital_signature() => return bad_usage("digitalSignature is not set"),
        Some(ku) if ku.key_cert_sign() || ku.crl_sign() => {
            return bad_usage("keyCertSign or cRLSign is set");
        }
        Some(_) => {}
    }
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    let not_before_unix = leaf.validity().not_before.timestamp();
    let not_after_unix = leaf.validity().not_after.timestamp();
    if now < not_before_unix {
        return Err(SvidError::NotYetValid {
            id: id.clone(),
            not_before_unix,
            now_unix,
        });
    }
    if now > not_after_unix {
        return Err(SvidError::Expired {
            id: id.clone(),
            not_after_unix,
            now_unix,
        });
    }
    Ok(())
}

/// Maps webpki's verdict on the path. Validity problems here are an intermediate's (the leaf's
/// were checked first); everything not about time, CA use or EKU means "not from these roots".
fn chain_error(e: webpki::Error, id: SpiffeId, usage: Usage, now_unix: u64) -> SvidError {
    let secs = |t: UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    match e {
        webpki::Error::CertExpired { not_after, .. } => SvidError::Expired {
            id,
            not_after_unix: secs(not_after),
            now_unix,
        },
        webpki::Error::CertNotValidYet { not_before, .. } => SvidError::NotYetValid {
            id,
            not_before_unix: secs(not_before),
            now_unix,
        },
        webpki::Error::CaUsedAsEndEntity => SvidError::LeafIsCa { id },
        webpki::Error::RequiredEkuNotFoundContext(_) => SvidError::WrongUsage { id, usage },
        other => SvidError::UntrustedIssuer {
            id,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::{ClusterName, NodeName};

    use super::*;
    use crate::identity::{generate_ca, generate_csr, sign_svid};

    const NOW: u64 = 1_750_000_000;

    fn der_of(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn issued_svid_verifies_for_both_usages_until_it_expires() {
        let td = TrustDomain::new("east.mesh").unwrap();
        let ca = generate_ca(&ClusterName::new("east").unwrap(), &td, NOW).unwrap();
        let id = SpiffeId::agent(&td, &NodeName::new("a1").unwrap());
        let kc = generate_csr(&id).unwrap();
        let svid = sign_svid(&ca, &kc.csr_pem, &id, 3600, NOW).unwrap();
        let mut bundles = TrustBundles::new();
        bundles.insert_pem(td.clone(), &ca.cert_pem).unwrap();
        bundles.insert_pem(td.clone(), &ca.cert_pem).unwrap();
        assert_eq!(bundles.roots(&td).count(), 1, "re-adding a root is a no-op");

        let chain = [der_of(&svid.cert_pem), der_of(&ca.cert_pem)];
        for usage in [Usage::Server, Usage::Client] {
            assert_eq!(verify_svid(&chain, &bundles, usage, NOW), Ok(id.clone()));
            assert_eq!(
                verify_svid(&chain[..1], &bundles, usage, NOW + 3600),
                Ok(id.clone())
            );
        }
        assert!(matches!(
            verify_svid(&chain, &bundles, Usage::Server, NOW + 3601),
            Err(SvidError::Expired { .. })
        ));
        assert_eq!(spiffe_id_of(&chain[0]), Ok(id));
    }

    #[test]
    fn bundle_refuses_non_ca_and_garbage_and_forgets_removed_roots() {
        let td = TrustDomain::new("east.mesh").unwrap();
        let ca = generate_ca(&ClusterName::new("east").unwrap(), &td, NOW).unwrap();
        let id = SpiffeId::agent(&td, &NodeName::new("a1").unwrap());
        let kc = generate_csr(&id).unwrap();
        let leaf = sign_svid(&ca, &kc.csr_pem, &id, 3600, NOW).unwrap();
        let mut bundles = TrustBundles::new();
        assert!(matches!(
            bundles.insert_pem(td.clone(), &leaf.cert_pem),
            Err(IdentityError::InvalidCa { .. })
        ));
        assert!(matches!(
            bundles.insert_pem(td.clone(), "garbage"),
            Err(IdentityError::Pem { .. })
        ));
        assert_eq!(bundles.trust_domains().count(), 0);
        bundles.insert_pem(td.clone(), &ca.cert_pem).unwrap();
        assert!(bundles.remove_root(&td, &ca.fingerprint));
        assert_eq!(bundles.trust_domains().count(), 0);
        let chain = [der_of(&leaf.cert_pem)];
        assert_eq!(
            verify_svid(&chain, &bundles, Usage::Client, NOW),
            Err(SvidError::UnknownTrustDomain { td })
        );
        assert!(matches!(
            verify_svid(&[], &bundles, Usage::Client, NOW),
            Err(SvidError::Malformed { .. })
        ));
    }
}
