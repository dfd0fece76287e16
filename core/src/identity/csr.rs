//! The CSR side of issuance: making a key and CSR (client side), and the signer's check of a
//! CSR against the X.509-SVID rules and the requester's rights (CA side).
//!
//! This file decides *whether* an identity may be issued and to whom. It does not build
//! certificates (`ca.rs`), authenticate the requester (the API layer does, then names it with a
//! [`Requester`]), or verify presented certificates (`verify.rs`).
//!
//! ```text
//! pem --decode--> der --parse--> key alg --signature--> SANs --SPIFFE ID--> trust domain
//!     --> not a CA request --> known role path --> requester may hold it --> SpiffeId
//! ```

use std::fmt;

use mesh_proto::command::CredentialKind;
use mesh_proto::{NodeName, Role, ServiceName, SpiffeId, TrustDomain};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};
use x509_parser::prelude::FromDer;

use super::IdentityError;

/// The largest CSR PEM the signer reads. A P-256 CSR with one URI SAN is well under 1 KiB.
pub const MAX_CSR_PEM_BYTES: usize = 16 * 1024;

/// A fresh private key (PKCS#8 PEM) and the CSR for it. The key never leaves the requester.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

impl fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("key_pem", &"[elided]")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Who is asking the CA, as established by the API layer from a bearer token or client cert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// An operator token: workload, agent and gateway identities, never control identities.
    Operator,
    /// A join token holder joining as `node`: only `mesh/control/<node>`.
    ControlJoin { node: NodeName },
    /// A control node authenticated by its control SVID: only its own `mesh/control/<node>`.
    Control { node: NodeName },
    /// An agent token: `mesh/agent/<node>` and `ns/default/sa/<s>` for each of `services`.
    Agent {
        node: NodeName,
        services: Vec<ServiceName>,
    },
}

/// Why the signer refused a CSR. Each rule has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is {len} bytes, more than the {max} byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("CSR is not a PEM `CERTIFICATE REQUEST`: {reason}")]
    MalformedPem { reason: String },
    #[error("CSR is not a DER PKCS#10 request: {reason}")]
    MalformedDer { reason: String },
    #[error("CSR self-signature does not verify: {reason}")]
    BadSignature { reason: String },
    #[error("CSR key is {alg}; use ECDSA P-256 or Ed25519")]
    UnsupportedKey { alg: String },
    #[error("CSR has no URI SAN; request exactly one SPIFFE ID")]
    NoUriSan,
    #[error("CSR has {count} URI SANs; an X.509-SVID has exactly one")]
    MultipleUriSans { count: usize },
    #[error("CSR has a {kind} SAN; an X.509-SVID request carries only its URI SAN")]
    UnexpectedSan { kind: &'static str },
    #[error("CSR URI SAN {uri:?} is not a SPIFFE ID: {reason}")]
    InvalidSpiffeId { uri: String, reason: String },
    #[error("CSR is for trust domain {got}, but this CA signs for {expected}")]
    ForeignTrustDomain {
        got: TrustDomain,
        expected: TrustDomain,
    },
    #[error("CSR requests a CA certificate (CA:true, keyCertSign or cRLSign)")]
    RequestsCa,
    #[error(
        "{id} is not an identity meshfed issues (mesh/{{control,agent,gateway}}/<node> or ns/<ns>/sa/<sa>)"
    )]
    UnknownIdentityPath { id: SpiffeId },
    #[error("{requester} may not obtain {id}")]
    NotPermitted { requester: String, id: SpiffeId },
}

/// Makes a fresh ECDSA P-256 key and a PEM CSR whose only SAN is the URI `id`.
pub fn generate_csr(id: &SpiffeId) -> Result<KeyAndCsr, IdentityError> {
    let cert_err = |what| move |source| IdentityError::Certificate { what, source };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err("generate a key"))?;
    let uri = id
        .to_string()
        .try_into()
        .map_err(cert_err("encode the URI SAN"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .map_err(cert_err("serialize the CSR"))?;
    let csr_pem = csr.pem().map_err(cert_err("PEM-encode the CSR"))?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem,
    })
}

/// Checks a CSR against the X.509-SVID rules and `requester`'s rights, in the order drawn in the
/// module doc, and returns the one SPIFFE ID to put in the certificate.
pub fn check_csr(
    csr_pem: &str,
    td: &TrustDomain,
    requester: &Requester,
) -> Result<SpiffeId, CsrError> {
    let der = decode(csr_pem)?;
    let csr = parse_verified(&der)?;
    let asked = requested(&csr)?;

    let uri = match asked.uris.as_slice() {
        [] => return Err(CsrError::NoUriSan),
        [uri] => *uri,
        many => return Err(CsrError::MultipleUriSans { count: many.len() }),
    };
    let id = SpiffeId::parse(uri).map_err(|e| CsrError::InvalidSpiffeId {
        uri: uri.to_owned(),
        reason: e.to_string(),
    })?;
    if id.trust_domain() != td {
        return Err(CsrError::ForeignTrustDomain {
            got: id.trust_domain().clone(),
            expected: td.clone(),
        });
    }
    if asked.ca {
        return Err(CsrError::RequestsCa);
    }
    if id.role() == Role::Other {
        return Err(CsrError::UnknownIdentityPath { id });
    }
    if !requester.may_obtain(&id) {
        return Err(CsrError::NotPermitted {
            requester: requester.to_string(),
            id,
        });
    }
    Ok(id)
}

impl Requester {
    /// The requester a bearer token names. A `ControlJoin` token needs the node it joins as;
    /// without one there is no requester. `Control` never comes from a token, only from mTLS.
    pub fn from_credential(kind: &CredentialKind, join_node: Option<&NodeName>) -> Option<Self> {
        match kind {
            CredentialKind::Operator => Some(Self::Operator),
            CredentialKind::ControlJoin => {
                join_node.map(|node| Self::ControlJoin { node: node.clone() })
            }
            CredentialKind::Agent { node, services } => Some(Self::Agent {
                node: node.clone(),
                services: services.clone(),
            }),
        }
    }

    /// Whether this requester may hold `id` (DESIGN §3: a sidecar or gateway identity can never
    /// obtain a control identity, and a control node only its own).
    pub fn may_obtain(&self, id: &SpiffeId) -> bool {
        let td = id.trust_domain();
        match self {
            Self::Operator => {
                matches!(
                    id.role(),
                    Role::Workload { .. } | Role::Agent(_) | Role::Gateway(_)
                )
            }
            Self::ControlJoin { node } | Self::Control { node } => {
                *id == SpiffeId::control(td, node)
            }
            Self::Agent { node, services } => {
                *id == SpiffeId::agent(td, node)
                    || services
                        .iter()
                        .any(|s| *id == SpiffeId::workload(td, "default", s))
            }
        }
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operator => f.write_str("operator"),
            Self::ControlJoin { node } => write!(f, "join token for control node {node}"),
            Self::Control { node } => write!(f, "control node {node}"),
            Self::Agent { node, .. } => write!(f, "agent {node}"),
        }
    }
}

/// Decodes and verifies a CSR and returns its SubjectPublicKeyInfo DER, for `sign_svid`.
pub(super) fn verified_public_key(csr_pem: &str) -> Result<Vec<u8>, CsrError> {
    let der = decode(csr_pem)?;
    let csr = parse_verified(&der)?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// What the CSR's extension requests ask for, gathered across every extensionRequest attribute.
struct Requested<'a> {
    uris: Vec<&'a str>,
    ca: bool,
}

fn decode(csr_pem: &str) -> Result<CertificateSigningRequestDer<'static>, CsrError> {
    if csr_pem.len() > MAX_CSR_PEM_BYTES {
        return Err(CsrError::TooLarge {
            len: csr_pem.len(),
            max: MAX_CSR_PEM_BYTES,
        });
    }
    CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
        CsrError::MalformedPem {
            reason: e.to_string(),
        }
    })
}

/// Parses the DER, checks the key algorithm, then the self-signature. The key is checked first
/// so that the signature is only ever verified with an algorithm meshfed accepts.
fn parse_verified<'a>(der: &'a [u8]) -> Result<X509CertificationRequest<'a>, CsrError> {
    let malformed = |reason: String| CsrError::MalformedDer { reason };
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} trailing bytes", rest.len())));
    }
    let alg = &csr.certification_request_info.subject_pki.algorithm;
    let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
    let supported = (alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_EC_P256))
        || alg.algorithm == OID_SIG_ED25519;
    if !supported {
        let alg = match curve {
            Some(curve) => format!("{} on curve {curve}", alg.algorithm),
            None => alg.algorithm.to_string(),
        };
        return Err(CsrError::UnsupportedKey { alg });
    }
    csr.verify_signature().map_err(|e| CsrError::BadSignature {
        reason: e.to_string(),
    })?;
    Ok(csr)
}

fn requested<'a>(csr: &'a X509CertificationRequest<'_>) -> Result<Requested<'a>, CsrError> {
    let mut out = Requested {
        uris: Vec::new(),
        ca: false,
    };
    let attrs = csr.certification_request_info.iter_attributes();
    let requests = attrs.filter_map(|a| match a.parsed_attribute() {
        ParsedCriAttribute::ExtensionRequest(r) => Some(r),
        _ => None,
    });
    for ext in requests.flat_map(|r| r.extensions.iter()) {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(uri) => out.uris.push(uri),
                        other => {
                            return Err(CsrError::UnexpectedSan {
                                kind: san_kind(other),
                            });
                        }
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => out.ca |= bc.ca,
            ParsedExtension::KeyUsage(ku) => out.ca |= ku.key_cert_sign() || ku.crl_sign(),
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::MalformedDer {
                    reason: format!("requested extension {}: {error}", ext.oid),
                });
            }
            // Everything else is ignored: `sign_svid` copies nothing but the public key.
            _ => {}
        }
    }
    Ok(out)
}

fn san_kind(name: &GeneralName<'_>) -> &'static str {
    match name {
        GeneralName::DNSName(_) => "DNS",
        GeneralName::IPAddress(_) => "IP address",
        GeneralName::RFC822Name(_) => "email",
        GeneralName::URI(_) => "URI",
        GeneralName::DirectoryName(_) => "directory name",
        GeneralName::OtherName(..) => "otherName",
        GeneralName::RegisteredID(_) => "registeredID",
        GeneralName::X400Address(_) | GeneralName::EDIPartyName(_) | GeneralName::Invalid(..) => {
            "unsupported"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("east.mesh").unwrap()
    }
    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    #[test]
    fn generated_csr_passes_check_for_each_role() {
        let svc = ServiceName::new("api").unwrap();
        let agent = Requester::Agent {
            node: node("a1"),
            services: vec![svc.clone()],
        };
        let cases = [
            (
                SpiffeId::control(&td(), &node("c1")),
                Requester::ControlJoin { node: node("c1") },
            ),
            (
                SpiffeId::control(&td(), &node("c1")),
                Requester::Control { node: node("c1") },
            ),
            (SpiffeId::agent(&td(), &node("a1")), agent.clone()),
            (SpiffeId::workload(&td(), "default", &svc), agent),
            (SpiffeId::gateway(&td(), &node("g1")), Requester::Operator),
            (SpiffeId::workload(&td(), "prod", &svc), Requester::Operator),
        ];
        for (id, requester) in cases {
            let kc = generate_csr(&id).unwrap();
            assert!(kc.key_pem.contains("PRIVATE KEY"));
            assert_eq!(check_csr(&kc.csr_pem, &td(), &requester), Ok(id));
        }
    }

    #[test]
    fn requester_from_credential() {
        let n = node("c1");
        assert_eq!(
            Requester::from_credential(&CredentialKind::Operator, None),
            Some(Requester::Operator)
        );
        assert_eq!(
            Requester::from_credential(&CredentialKind::ControlJoin, None),
            None
        );
        assert_eq!(
            Requester::from_credential(&CredentialKind::ControlJoin, Some(&n)),
            Some(Requester::ControlJoin { node: n.clone() })
        );
        let kind = CredentialKind::Agent {
            node: n.clone(),
            services: vec![],
        };
        assert_eq!(
            Requester::from_credential(&kind, None),
            Some(Requester::Agent {
                node: n,
                services: vec![]
            })
        );
    }

    #[test]
    fn oversized_csr_is_refused_before_decoding() {
        let big = "A".repeat(MAX_CSR_PEM_BYTES + 1);
        assert!(matches!(
            check_csr(&big, &td(), &Requester::Operator),
            Err(CsrError::TooLarge { .. })
        ));
    }

    #[test]
    fn key_pem_is_not_debug_printed() {
        let kc = generate_csr(&SpiffeId::agent(&td(), &node("a1"))).unwrap();
        assert!(!format!("{kc:?}").contains("PRIVATE KEY"));
    }
}
