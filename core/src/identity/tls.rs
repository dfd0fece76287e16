//! rustls glue: certificate verifiers that accept X.509-SVIDs by SPIFFE ID instead of hostname.
//! The config builders that install them are in `tls_config.rs`.
//!
//! Every verifier runs [`verify_svid`] at the time rustls passes in, then applies a
//! [`PeerPolicy`]. A refusal reaches rustls as `CertificateError::Other` wrapping the
//! [`SvidError`], which [`svid_error_of`] recovers for logs. This file opens no sockets, and
//! verifies handshake signatures with the ring provider's algorithms, named explicitly.

use std::sync::Arc;

use mesh_proto::{Role, SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{SvidError, TrustBundles, Usage, fingerprint, spiffe_id_of, verify_svid};

/// Which verified SPIFFE IDs a connection accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Only this identity.
    Exactly(SpiffeId),
    /// Any identity in this trust domain.
    AnyInTrustDomain(TrustDomain),
    /// Any control node (`spiffe://<td>/mesh/control/*`) of this trust domain.
    RoleControl(TrustDomain),
    /// Any identity whose trust domain has a bundle.
    AnyKnown,
    /// Any gateway (`spiffe://<td>/mesh/gateway/*`) of this trust domain.
    RoleGateway(TrustDomain),
    /// Any gateway of any trust domain that has a bundle (a gateway's QUIC server, whose bundles
    /// are exactly its federated peers').
    AnyGateway,
}

/// Verifies a server's X.509-SVID. The `ServerName` is ignored: SPIFFE names peers by URI SAN.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundles: Arc<TrustBundles>,
    policy: PeerPolicy,
    algs: WebPkiSupportedAlgorithms,
}

/// Verifies a client's X.509-SVID; client auth is mandatory unless built with `mandatory: false`.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundles: Arc<TrustBundles>,
    policy: PeerPolicy,
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
}

/// First contact (meshctl, a joining node): trusts a server whose chain carries a CA certificate
/// with fingerprint `pin`, whose leaf verifies against that CA, and whose id is a control role.
#[derive(Debug)]
pub struct PinnedCaServerVerifier {
    pin: String,
    algs: WebPkiSupportedAlgorithms,
}

impl PeerPolicy {
    /// Whether an already-verified id is acceptable.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exactly(want) => id == want,
            Self::AnyInTrustDomain(td) => id.trust_domain() == td,
            Self::RoleControl(td) => {
                id.trust_domain() == td && matches!(id.role(), Role::Control(_))
            }
            Self::AnyKnown => true,
            Self::RoleGateway(td) => {
                id.trust_domain() == td && matches!(id.role(), Role::Gateway(_))
            }
            Self::AnyGateway => matches!(id.role(), Role::Gateway(_)),
        }
    }

    fn check(&self, id: SpiffeId) -> Result<SpiffeId, SvidError> {
        if self.allows(&id) {
            return Ok(id);
        }
        Err(SvidError::NotAllowedByPolicy {
            id,
            policy: self.to_string(),
        })
    }
}

impl std::fmt::Display for PeerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exactly(id) => write!(f, "{id}"),
            Self::AnyInTrustDomain(td) => write!(f, "identities of trust domain {td}"),
            Self::RoleControl(td) => write!(f, "control nodes of trust domain {td}"),
            Self::AnyKnown => f.write_str("identities of a federated trust domain"),
            Self::RoleGateway(td) => write!(f, "gateways of trust domain {td}"),
            Self::AnyGateway => f.write_str("gateways of a federated trust domain"),
        }
    }
}

impl SpiffeServerVerifier {
    pub fn new(bundles: Arc<TrustBundles>, policy: PeerPolicy) -> Arc<Self> {
        Arc::new(Self {
            bundles,
            policy,
            algs: sig_algs(),
        })
    }
}

impl SpiffeClientVerifier {
    pub fn new(bundles: Arc<TrustBundles>, policy: PeerPolicy, mandatory: bool) -> Arc<Self> {
        Arc::new(Self {
            bundles,
            policy,
            mandatory,
            algs: sig_algs(),
        })
    }
}

impl PinnedCaServerVerifier {
    /// `pin` is a [`fingerprint`] (`sha256:<hex>`); hex case is ignored.
    pub fn new(pin: String) -> Arc<Self> {
        Arc::new(Self {
            pin,
            algs: sig_algs(),
        })
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, SvidError> {
        let pinned = intermediates
            .iter()
            .find(|c| fingerprint(c).eq_ignore_ascii_case(&self.pin))
            .ok_or_else(|| SvidError::PinnedCaNotPresented {
                pin: self.pin.clone(),
            })?;
        let id = spiffe_id_of(end_entity)?;
        let mut bundles = TrustBundles::new();
        bundles
            .insert_der(id.trust_domain().clone(), vec![pinned.clone().into_owned()])
            .map_err(|e| SvidError::UntrustedIssuer {
                id: id.clone(),
                reason: e.to_string(),
            })?;
        let id = verify_svid(
            &chain(end_entity, intermediates),
            &bundles,
            Usage::Server,
            now.as_secs(),
        )?;
        PeerPolicy::RoleControl(id.trust_domain().clone()).check(id)
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = chain(end_entity, intermediates);
        verify_svid(&chain, &self.bundles, Usage::Server, now.as_secs())
            .and_then(|id| self.policy.check(id))
            .map(|_| ServerCertVerified::assertion())
            .map_err(to_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ServerCertVerifier for PinnedCaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(to_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No CA hints: a meshfed client holds exactly one SVID, so there is nothing to choose.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain = chain(end_entity, intermediates);
        verify_svid(&chain, &self.bundles, Usage::Client, now.as_secs())
            .and_then(|id| self.policy.check(id))
            .map(|_| ClientCertVerified::assertion())
            .map_err(to_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The [`SvidError`] behind a handshake failure, if a meshfed verifier refused the peer.
pub fn svid_error_of(err: &rustls::Error) -> Option<&SvidError> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<SvidError>()
        }
        _ => None,
    }
}

fn sig_algs() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

fn chain<'a>(
    end_entity: &CertificateDer<'a>,
    rest: &[CertificateDer<'a>],
) -> Vec<CertificateDer<'a>> {
    std::iter::once(end_entity).chain(rest).cloned().collect()
}

fn to_rustls(e: SvidError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_proto::command::CaMaterial;
    use mesh_proto::{ClusterName, NodeName};
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::identity::{generate_ca, generate_csr, sign_svid};

    const NOW: u64 = 1_750_000_000;

    struct Fixture {
        ca: CaMaterial,
        bundles: Arc<TrustBundles>,
        td: TrustDomain,
    }

    /// (chain PEM = leaf + CA, key PEM) for `id`.
    fn issue(f: &Fixture, id: &SpiffeId) -> (String, String) {
        let kc = generate_csr(id).unwrap();
        let svid = sign_svid(&f.ca, &kc.csr_pem, id, 3600, NOW).unwrap();
        (format!("{}{}", svid.cert_pem, f.ca.cert_pem), kc.key_pem)
    }

    fn fixture() -> Fixture {
        let td = TrustDomain::new("east.mesh").unwrap();
        let ca = generate_ca(&ClusterName::new("east").unwrap(), &td, NOW).unwrap();
        let mut bundles = TrustBundles::new();
        bundles.insert_pem(td.clone(), &ca.cert_pem).unwrap();
        Fixture {
            ca,
            bundles: Arc::new(bundles),
            td,
        }
    }

    fn ders(chain_pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect()
    }

    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(NOW))
    }

    fn as_server(
        v: &dyn ServerCertVerifier,
        chain: &[CertificateDer<'_>],
    ) -> Result<(), SvidError> {
        let name = ServerName::try_from("name.is.ignored").unwrap();
        v.verify_server_cert(&chain[0], &chain[1..], &name, &[], now())
            .map(|_| ())
            .map_err(|e| svid_error_of(&e).cloned().unwrap())
    }

    #[test]
    fn server_verifier_applies_policy_after_verification() {
        let f = fixture();
        let control = SpiffeId::control(&f.td, &NodeName::new("c1").unwrap());
        let agent = SpiffeId::agent(&f.td, &NodeName::new("a1").unwrap());
        let control_chain = ders(&issue(&f, &control).0);
        let agent_chain = ders(&issue(&f, &agent).0);

        let v = SpiffeServerVerifier::new(f.bundles.clone(), PeerPolicy::RoleControl(f.td.clone()));
        assert_eq!(as_server(v.as_ref(), &control_chain), Ok(()));
        assert!(matches!(
            as_server(v.as_ref(), &agent_chain),
            Err(SvidError::NotAllowedByPolicy { id, .. }) if id == agent
        ));
        let v = SpiffeServerVerifier::new(f.bundles.clone(), PeerPolicy::AnyKnown);
        assert_eq!(as_server(v.as_ref(), &agent_chain), Ok(()));
        let gateway = SpiffeId::gateway(&f.td, &NodeName::new("gw1").unwrap());
        let gateway_chain = ders(&issue(&f, &gateway).0);
        for policy in [
            PeerPolicy::AnyGateway,
            PeerPolicy::RoleGateway(f.td.clone()),
        ] {
            let v = SpiffeServerVerifier::new(f.bundles.clone(), policy);
            assert_eq!(as_server(v.as_ref(), &gateway_chain), Ok(()));
            assert!(matches!(
                as_server(v.as_ref(), &agent_chain),
                Err(SvidError::NotAllowedByPolicy { .. })
            ));
        }
        let other_td = TrustDomain::new("west.mesh").unwrap();
        assert!(!PeerPolicy::RoleGateway(other_td).allows(&gateway));
        assert!(!v.supported_verify_schemes().is_empty());
    }

    #[test]
    fn client_verifier_checks_client_usage_and_policy() {
        let f = fixture();
        let agent = SpiffeId::agent(&f.td, &NodeName::new("a1").unwrap());
        let chain = ders(&issue(&f, &agent).0);
        let v = SpiffeClientVerifier::new(f.bundles.clone(), PeerPolicy::Exactly(agent), true);
        assert!(v.client_auth_mandatory());
        assert!(v.verify_client_cert(&chain[0], &chain[1..], now()).is_ok());
        let other = SpiffeId::agent(&f.td, &NodeName::new("a2").unwrap());
        let v = SpiffeClientVerifier::new(f.bundles.clone(), PeerPolicy::Exactly(other), false);
        assert!(!v.client_auth_mandatory());
        let err = v
            .verify_client_cert(&chain[0], &chain[1..], now())
            .unwrap_err();
        assert!(matches!(
            svid_error_of(&err),
            Some(SvidError::NotAllowedByPolicy { .. })
        ));
    }

    #[test]
    fn pinned_verifier_needs_the_pinned_ca_and_a_control_leaf() {
        let f = fixture();
        let control = SpiffeId::control(&f.td, &NodeName::new("c1").unwrap());
        let agent = SpiffeId::agent(&f.td, &NodeName::new("a1").unwrap());
        let control_chain = ders(&issue(&f, &control).0);

        let v = PinnedCaServerVerifier::new(f.ca.fingerprint.clone());
        assert_eq!(as_server(v.as_ref(), &control_chain), Ok(()));
        let upper = PinnedCaServerVerifier::new(f.ca.fingerprint.to_uppercase());
        assert_eq!(as_server(upper.as_ref(), &control_chain), Ok(()));
        assert!(matches!(
            as_server(v.as_ref(), &control_chain[..1]),
            Err(SvidError::PinnedCaNotPresented { .. })
        ));
        assert!(matches!(
            as_server(v.as_ref(), &ders(&issue(&f, &agent).0)),
            Err(SvidError::NotAllowedByPolicy { .. })
        ));
        let other = fixture();
        let wrong = PinnedCaServerVerifier::new(other.ca.fingerprint);
        assert!(matches!(
            as_server(wrong.as_ref(), &control_chain),
            Err(SvidError::PinnedCaNotPresented { .. })
        ));
    }
}
