//! A hot-swappable SVID for rustls, and the renewal schedule.
//!
//! [`SvidSlot`] holds the current certificate and key. Configs built on it
//! ([`server_config_with_slot`], [`client_config_with_slot`]) ask the slot on every handshake,
//! so replacing the SVID affects new connections only: established ones keep their session.
//! [`renewal_due_at`] is the one rule for when to renew: at 50 % of the lifetime (DESIGN §3).
//!
//! The slot does not fetch or sign certificates; the shell does, then calls [`SvidSlot::replace`].

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::tls_config::{cert_chain, private_key, provider};
use super::{CLOCK_SKEW_SECS, IdentityError};

/// When an SVID valid from `not_before` to `not_after` (Unix seconds) should be renewed: half
/// way through its lifetime, counted from when it was issued. meshfed's CA back-dates
/// `not_before` by [`CLOCK_SKEW_SECS`] for skewed peers; counting from `not_before` would make a
/// short-lived SVID (a 20 s test TTL) due the moment it is issued.
pub fn renewal_due_at(not_before_unix: u64, not_after_unix: u64) -> u64 {
    let issued = (not_before_unix + CLOCK_SKEW_SECS).min(not_after_unix);
    issued + not_after_unix.saturating_sub(issued) / 2
}

struct Current {
    key: Arc<CertifiedKey>,
    not_before_unix: u64,
    not_after_unix: u64,
}

/// The SVID a process presents, replaceable while connections are open.
pub struct SvidSlot {
    current: RwLock<Current>,
}

impl fmt::Debug for SvidSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (nb, na) = self.validity();
        f.debug_struct("SvidSlot")
            .field("not_before", &nb)
            .field("not_after", &na)
            .finish()
    }
}

fn load(chain_pem: &str, key_pem: &str) -> Result<Current, IdentityError> {
    let chain = cert_chain(chain_pem, "certificate chain")?;
    let leaf = X509Certificate::from_der(chain[0].as_ref()).map_err(|e| IdentityError::Pem {
        what: "certificate chain",
        reason: format!("the leaf does not parse: {e}"),
    })?;
    let (not_before_unix, not_after_unix) = (
        u64::try_from(leaf.1.validity().not_before.timestamp()).unwrap_or(0),
        u64::try_from(leaf.1.validity().not_after.timestamp()).unwrap_or(0),
    );
    let key = provider()
        .key_provider
        .load_private_key(private_key(key_pem)?)
        .map_err(|source| IdentityError::Tls { source })?;
    let key = Arc::new(CertifiedKey::new(chain, key));
    key.keys_match()
        .map_err(|source| IdentityError::Tls { source })?;
    Ok(Current {
        key,
        not_before_unix,
        not_after_unix,
    })
}

impl SvidSlot {
    /// A slot holding `chain_pem` (leaf first, then the CA) and its key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Arc<Self>, IdentityError> {
        Ok(Arc::new(Self {
            current: RwLock::new(load(chain_pem, key_pem)?),
        }))
    }

    /// Swap in a new SVID; the next handshake uses it. A bad one leaves the old in place.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), IdentityError> {
        let next = load(chain_pem, key_pem)?;
        let mut cur = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cur = next;
        Ok(())
    }

    /// (not_before, not_after) of the current SVID, Unix seconds.
    pub fn validity(&self) -> (u64, u64) {
        let cur = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (cur.not_before_unix, cur.not_after_unix)
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .key
            .clone()
    }
}

impl ResolvesServerCert for SvidSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for SvidSlot {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS 1.3 server config presenting whatever `slot` holds at handshake time.
pub fn server_config_with_slot(
    slot: Arc<SvidSlot>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, IdentityError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| IdentityError::Tls { source })?;
    let builder = match client_verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(slot);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS 1.3 client config presenting whatever `slot` holds at handshake time.
pub fn client_config_with_slot(
    verifier: Arc<dyn ServerCertVerifier>,
    slot: Arc<SvidSlot>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, IdentityError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| IdentityError::Tls { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(slot);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use mesh_proto::{ClusterName, NodeName, SpiffeId, TrustDomain};

    use super::*;
    use crate::identity::{
        PeerPolicy, Requester, SpiffeClientVerifier, SpiffeServerVerifier, TrustBundles, check_csr,
        generate_ca, generate_csr, sign_svid,
    };

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn renewal_is_due_half_way() {
        // Issued at 1060 (back-dated 60 s), valid to 2060: due at 1560.
        assert_eq!(renewal_due_at(1000, 2060), 1560);
        // A 20 s SVID issued at 1060 is due at 1070, not at once.
        assert_eq!(renewal_due_at(1000, 1080), 1070);
        assert_eq!(renewal_due_at(1000, 1000), 1000);
        assert_eq!(
            renewal_due_at(2000, 1000),
            1000,
            "inverted validity is due at once"
        );
    }

    #[test]
    fn replace_swaps_the_presented_certificate_and_refuses_garbage() {
        let td = TrustDomain::new("east.mesh").unwrap();
        let ca = generate_ca(&ClusterName::new("east").unwrap(), &td, NOW).unwrap();
        let node = NodeName::new("n1").unwrap();
        let issue = |ttl| {
            let kc = generate_csr(&SpiffeId::control(&td, &node)).unwrap();
            let id =
                check_csr(&kc.csr_pem, &td, &Requester::Control { node: node.clone() }).unwrap();
            let svid = sign_svid(&ca, &kc.csr_pem, &id, ttl, NOW).unwrap();
            (format!("{}{}", svid.cert_pem, ca.cert_pem), kc.key_pem)
        };
        let (c1, k1) = issue(3600);
        let slot = SvidSlot::from_pem(&c1, &k1).unwrap();
        let (_, na1) = slot.validity();
        let (c2, k2) = issue(7200);
        slot.replace(&c2, &k2).unwrap();
        let (_, na2) = slot.validity();
        assert_eq!(na2 - na1, 3600);
        assert!(
            slot.replace(&c2, &k1).is_err(),
            "a key that does not match is refused"
        );
        assert_eq!(
            slot.validity().1,
            na2,
            "a refused replacement keeps the old SVID"
        );
        let mut bundles = TrustBundles::new();
        bundles.insert_pem(td.clone(), &ca.cert_pem).unwrap();
        let bundles = Arc::new(bundles);
        let v =
            SpiffeClientVerifier::new(bundles.clone(), PeerPolicy::RoleControl(td.clone()), true);
        assert!(server_config_with_slot(slot.clone(), Some(v), &[]).is_ok());
        let sv = SpiffeServerVerifier::new(bundles, PeerPolicy::RoleControl(td));
        assert!(client_config_with_slot(sv, slot, &[]).is_ok());
    }
}
