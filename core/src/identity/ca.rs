//! The cluster root CA: making it, fingerprinting certificates, and issuing leaf X.509-SVIDs
//! for CSRs that `check_csr` has already approved.
//!
//! This file decides what goes *into* a certificate. It does not decide *whether* a requester
//! may have an identity (that is `csr.rs`) nor whether a presented certificate is acceptable
//! (that is `verify.rs`). Nothing from a CSR except its public key reaches an issued cert.

use mesh_proto::command::CaMaterial;
use mesh_proto::{ClusterName, SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use ring::rand::SecureRandom;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::time::ASN1Time;

use super::csr::verified_public_key;
use super::{CA_TTL_SECS, CLOCK_SKEW_SECS, IdentityError, MAX_SVID_TTL_SECS, MIN_SVID_TTL_SECS};

/// A freshly issued leaf: its PEM and the moment it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSvid {
    pub cert_pem: String,
    pub not_after_unix: u64,
}

/// Serial numbers are 16 random bytes: unpredictable serials are what CAs use against
/// chosen-prefix collisions, and uniqueness needs no shared counter in Raft.
const SERIAL_LEN: usize = 16;

/// Makes the cluster root CA: ECDSA P-256, CA:true with pathlen 0 (it signs leaves only),
/// keyCertSign and cRLSign, subject CN `meshfed <cluster> root CA`, and the URI SAN
/// `spiffe://<td>` naming the trust domain it anchors.
pub fn generate_ca(
    cluster: &ClusterName,
    td: &TrustDomain,
    now_unix: u64,
) -> Result<CaMaterial, IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
        IdentityError::Certificate {
            what: "generate the CA key",
            source,
        }
    })?;
    let not_after_unix = now_unix.saturating_add(CA_TTL_SECS);

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshfed");
    dn.push(DnType::CommonName, format!("meshfed {cluster} root CA"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![uri_san(&format!("spiffe://{td}"))?];
    set_validity(
        &mut params,
        now_unix.saturating_sub(CLOCK_SKEW_SECS),
        not_after_unix,
    )?;
    params.serial_number = Some(random_serial()?);

    let cert = params
        .self_signed(&key)
        .map_err(|source| IdentityError::Certificate {
            what: "self-sign the CA",
            source,
        })?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        fingerprint: fingerprint(cert.der()),
        not_after_unix,
    })
}

/// The [`fingerprint`] of the first certificate in `pem`.
pub fn fingerprint_of_pem(pem: &str) -> Result<String, IdentityError> {
    let der =
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| IdentityError::InvalidCa {
            reason: format!("certificate PEM: {e}"),
        })?;
    Ok(fingerprint(der.as_ref()))
}

/// `sha256:<lowercase hex>` of a DER certificate: the form operators and joining nodes pin.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Issues a leaf X.509-SVID for `id` over the CSR's public key, signed by `ca`.
///
/// The leaf carries exactly one URI SAN (`id`), CA:false (critical), keyUsage digitalSignature
/// (critical), EKU serverAuth+clientAuth, a random serial and an authority key identifier (so
/// chains build during root rotation). `ttl_secs` is clamped to
/// `[MIN_SVID_TTL_SECS, MAX_SVID_TTL_SECS]`, and never runs past the CA's own expiry.
/// The CSR's signature is re-verified, but its requested extensions and subject are ignored.
pub fn sign_svid(
    ca: &CaMaterial,
    csr_pem: &str,
    id: &SpiffeId,
    ttl_secs: u64,
    now_unix: u64,
) -> Result<SignedSvid, IdentityError> {
    let spki_der = verified_public_key(csr_pem)?;
    let public_key =
        SubjectPublicKeyInfo::from_der(&spki_der).map_err(|source| IdentityError::Certificate {
            what: "read the CSR public key",
            source,
        })?;
    let (issuer, ca_not_after) = load_issuer(ca)?;

    let ttl = ttl_secs.clamp(MIN_SVID_TTL_SECS, MAX_SVID_TTL_SECS);
    let not_after_unix = now_unix.saturating_add(ttl).min(ca_not_after);

    let mut params = CertificateParams::default();
    // An empty subject makes rcgen mark the SAN critical, as RFC 5280 §4.2.1.6 requires.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri_san(&id.to_string())?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(
        &mut params,
        now_unix.saturating_sub(CLOCK_SKEW_SECS),
        not_after_unix,
    )?;
    params.serial_number = Some(random_serial()?);

    let cert =
        params
            .signed_by(&public_key, &issuer)
            .map_err(|source| IdentityError::Certificate {
                what: "sign the SVID",
                source,
            })?;
    Ok(SignedSvid {
        cert_pem: cert.pem(),
        not_after_unix,
    })
}

/// Reads the CA certificate and key from Raft-held material, returning the issuer and the CA's
/// `not_after`. The key must be the certificate's key, so a mixed-up `CaMaterial` cannot mint
/// leaves that would never verify.
fn load_issuer(ca: &CaMaterial) -> Result<(Issuer<'static, KeyPair>, u64), IdentityError> {
    let invalid = |reason: String| IdentityError::InvalidCa { reason };
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| invalid(format!("key: {e}")))?;
    let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
        .map_err(|e| invalid(format!("certificate PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| invalid(format!("certificate DER: {e}")))?;
    if !cert.is_ca() {
        return Err(invalid(
            "certificate is not a CA (basicConstraints CA:false)".into(),
        ));
    }
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(invalid("key does not match the certificate".into()));
    }
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    let issuer = Issuer::from_ca_cert_der(&der, key)
        .map_err(|e| invalid(format!("certificate as issuer: {e}")))?;
    Ok((issuer, not_after))
}

fn uri_san(uri: &str) -> Result<SanType, IdentityError> {
    let ia5 = uri
        .to_owned()
        .try_into()
        .map_err(|e| IdentityError::Certificate {
            what: "encode the URI SAN",
            source: e,
        })?;
    Ok(SanType::URI(ia5))
}

/// Writes the validity window. `time` is not a dependency of this crate, so its
/// `OffsetDateTime` is reached through x509-parser's `ASN1Time` rather than named.
fn set_validity(
    params: &mut CertificateParams,
    not_before_unix: u64,
    not_after_unix: u64,
) -> Result<(), IdentityError> {
    let at = |unix: u64| {
        i64::try_from(unix)
            .ok()
            .and_then(|secs| ASN1Time::from_timestamp(secs).ok())
            .ok_or(IdentityError::TimeOutOfRange { unix })
    };
    params.not_before = at(not_before_unix)?.to_datetime();
    params.not_after = at(not_after_unix)?.to_datetime();
    Ok(())
}

fn random_serial() -> Result<SerialNumber, IdentityError> {
    let mut bytes = [0u8; SERIAL_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| IdentityError::Rng)?;
    // Positive and exactly SERIAL_LEN bytes long once DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use mesh_proto::NodeName;
    use rcgen::PKCS_ED25519;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::GeneralName;
    use x509_parser::oid_registry::{
        OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
    };

    use super::*;
    use crate::identity::{
        DEFAULT_SVID_TTL_SECS, Requester, TrustBundles, Usage, check_csr, generate_csr, verify_svid,
    };

    const NOW: u64 = 1_750_000_000;
    /// authorityKeyIdentifier, subjectAltName, keyUsage, extKeyUsage, subjectKeyIdentifier,
    /// basicConstraints.
    const LEAF_EXTENSIONS: [&str; 6] = [
        "2.5.29.35",
        "2.5.29.17",
        "2.5.29.15",
        "2.5.29.37",
        "2.5.29.14",
        "2.5.29.19",
    ];

    fn td() -> TrustDomain {
        TrustDomain::new("east.mesh").unwrap()
    }
    fn ca() -> CaMaterial {
        generate_ca(&ClusterName::new("east").unwrap(), &td(), NOW).unwrap()
    }
    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
    fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a GeneralName<'a>> {
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value.general_names.iter().collect()
    }
    fn critical(cert: &X509Certificate<'_>, oid: &x509_parser::der_parser::Oid<'_>) -> bool {
        cert.get_extension_unique(oid).unwrap().unwrap().critical
    }

    #[test]
    fn fingerprint_is_prefixed_lowercase_sha256() {
        assert_eq!(
            fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn ca_has_the_design_properties() {
        let ca = ca();
        let der = der(&ca.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "meshfed east root CA");
        assert_eq!(
            uri_sans(&cert),
            vec![&GeneralName::URI("spiffe://east.mesh")]
        );
        assert_eq!(cert.validity().not_before.timestamp(), (NOW - 60) as i64);
        assert_eq!(
            cert.validity().not_after.timestamp(),
            (NOW + CA_TTL_SECS) as i64
        );
        assert_eq!(ca.not_after_unix, NOW + CA_TTL_SECS);
        assert_eq!(ca.fingerprint, fingerprint(&der));
        assert!(ca.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn issued_svid_has_exactly_the_design_properties() {
        let ca = ca();
        let id = SpiffeId::agent(&td(), &NodeName::new("a1").unwrap());
        let kc = generate_csr(&id).unwrap();
        let requester = Requester::Agent {
            node: NodeName::new("a1").unwrap(),
            services: vec![],
        };
        let checked = check_csr(&kc.csr_pem, &td(), &requester).unwrap();
        let svid = sign_svid(&ca, &kc.csr_pem, &checked, DEFAULT_SVID_TTL_SECS, NOW).unwrap();
        assert_eq!(svid.not_after_unix, NOW + DEFAULT_SVID_TTL_SECS);

        let leaf = der(&svid.cert_pem);
        let mut bundles = TrustBundles::new();
        bundles.insert_pem(td(), &ca.cert_pem).unwrap();
        let chain = [leaf.clone(), der(&ca.cert_pem)];
        assert_eq!(
            verify_svid(&chain, &bundles, Usage::Server, NOW),
            Ok(id.clone())
        );
        assert_eq!(
            verify_svid(&chain, &bundles, Usage::Client, NOW),
            Ok(id.clone())
        );

        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        assert!(critical(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS));
        assert_eq!(uri_sans(&cert), vec![&GeneralName::URI(&id.to_string())]);
        assert!(
            critical(&cert, &OID_X509_EXT_SUBJECT_ALT_NAME),
            "empty subject needs it"
        );
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert_eq!(ku.flags, 1, "digitalSignature only");
        assert!(critical(&cert, &OID_X509_EXT_KEY_USAGE));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth && !eku.any && eku.other.is_empty());
        let validity = cert.validity();
        assert_eq!(validity.not_before.timestamp(), (NOW - 60) as i64);
        assert_eq!(
            validity.not_after.timestamp(),
            (NOW + DEFAULT_SVID_TTL_SECS) as i64
        );
        assert_eq!(cert.serial.to_bytes_be().len(), SERIAL_LEN);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        let csr_key = verified_public_key(&kc.csr_pem).unwrap();
        assert_eq!(cert.public_key().raw, csr_key.as_slice());
    }

    #[test]
    fn ttl_is_clamped_to_limits_and_to_ca_expiry() {
        let ca = ca();
        let id = SpiffeId::agent(&td(), &NodeName::new("a1").unwrap());
        let csr = generate_csr(&id).unwrap().csr_pem;
        let ttl = |ttl, now| sign_svid(&ca, &csr, &id, ttl, now).unwrap().not_after_unix - now;
        assert_eq!(ttl(0, NOW), MIN_SVID_TTL_SECS);
        assert_eq!(ttl(20, NOW), 20);
        assert_eq!(ttl(u64::MAX, NOW), MAX_SVID_TTL_SECS);
        let late = ca.not_after_unix - 100;
        assert_eq!(ttl(3600, late), 100);
    }

    #[test]
    fn nothing_but_the_public_key_is_copied_from_the_csr() {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let id = SpiffeId::agent(&td(), &NodeName::new("a1").unwrap());
        let svid = sign_svid(&ca(), &csr, &id, 3600, NOW).unwrap();
        let leaf = der(&svid.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        assert!(!cert.is_ca());
        assert_eq!(uri_sans(&cert), vec![&GeneralName::URI(&id.to_string())]);
        assert_eq!(cert.key_usage().unwrap().unwrap().value.flags, 1);
        let ekus = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(!ekus.code_signing);
        assert!(cert.subject().iter().next().is_none(), "subject not copied");
        let oids: Vec<String> = cert
            .extensions()
            .iter()
            .map(|e| e.oid.to_id_string())
            .collect();
        assert_eq!(
            oids, LEAF_EXTENSIONS,
            "no extension beyond the SVID profile"
        );
    }

    #[test]
    fn mismatched_ca_material_is_refused() {
        let mut ca = ca();
        ca.key_pem = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem();
        let id = SpiffeId::agent(&td(), &NodeName::new("a1").unwrap());
        let csr = generate_csr(&id).unwrap().csr_pem;
        assert!(matches!(
            sign_svid(&ca, &csr, &id, 3600, NOW),
            Err(IdentityError::InvalidCa { .. })
        ));
        assert!(matches!(
            sign_svid(&ca, "not a csr", &id, 3600, NOW),
            Err(IdentityError::Csr(_))
        ));
    }
}
