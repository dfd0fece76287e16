//! Corpus of malformed and foreign CSRs and certificates (DESIGN §3: "the CSR signer and the TLS
//! verifiers reject every malformed or foreign SVID"), each refused with its own error variant,
//! plus in-memory rustls handshakes through the SPIFFE verifiers.
//!
//! Property: every input here is refused, and refused for the stated reason. Certificates are
//! built directly with rcgen so the corpus can hold what meshfed's CA would never issue. This
//! file does not test the happy-path certificate profile; the unit tests in `identity/` do.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

use std::sync::Arc;

use base64::Engine as _;
use mesh_core::identity::{
    CsrError, PeerPolicy, PinnedCaServerVerifier, Requester, SpiffeClientVerifier,
    SpiffeServerVerifier, SvidError, TrustBundles, Usage, check_csr, client_config, generate_ca,
    generate_csr, server_config, sign_svid, spiffe_id_of, svid_error_of, verify_svid,
};
use mesh_proto::command::CaMaterial;
use mesh_proto::{ClusterName, NodeName, ServiceName, SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use x509_parser::time::ASN1Time;

const NOW: u64 = 1_750_000_000;

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}
fn node(name: &str) -> NodeName {
    NodeName::new(name).unwrap()
}
fn east() -> TrustDomain {
    td("east.mesh")
}
fn ca(cluster: &str, td: &TrustDomain) -> CaMaterial {
    generate_ca(&ClusterName::new(cluster).unwrap(), td, NOW).unwrap()
}
fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
fn uri(s: &str) -> SanType {
    SanType::URI(s.to_owned().try_into().unwrap())
}

// ---- CSRs ----------------------------------------------------------------------------------

fn csr_with(
    alg: &'static rcgen::SignatureAlgorithm,
    edit: impl FnOnce(&mut CertificateParams),
) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    edit(&mut params);
    params.serialize_request(&key).unwrap().pem().unwrap()
}
fn csr_sans(sans: Vec<SanType>) -> String {
    csr_with(&PKCS_ECDSA_P256_SHA256, |p| p.subject_alt_names = sans)
}
fn csr_der_of(pem_str: &str) -> Vec<u8> {
    rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem_str.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// One row: what is sent, who sends it, and the only acceptable refusal.
fn check(name: &str, csr_pem: &str, requester: &Requester, expect: fn(&CsrError) -> bool) {
    match check_csr(csr_pem, &east(), requester) {
        Ok(id) => panic!("{name}: accepted as {id}"),
        Err(e) => assert!(
            expect(&e),
            "{name}: refused for the wrong reason: {e:?} ({e})"
        ),
    }
}

#[test]
fn csr_corpus_is_refused_with_distinct_reasons() {
    let agent = Requester::Agent {
        node: node("a1"),
        services: vec![ServiceName::new("api").unwrap()],
    };
    let join = Requester::ControlJoin { node: node("c1") };
    let op = Requester::Operator;
    let agent_id = SpiffeId::agent(&east(), &node("a1"));
    let good = generate_csr(&agent_id).unwrap().csr_pem;
    let good_der = csr_der_of(&good);

    let mut bad_sig = good_der.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    let mut trailing = good_der.clone();
    trailing.push(0);

    type Expect = fn(&CsrError) -> bool;
    let cases: Vec<(&str, String, &Requester, Expect)> = vec![
        ("no PEM at all", "hello".into(), &op, |e| {
            matches!(e, CsrError::MalformedPem { .. })
        }),
        (
            "garbage PEM body",
            "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n".into(),
            &op,
            |e| matches!(e, CsrError::MalformedPem { .. }),
        ),
        (
            "truncated DER",
            pem("CERTIFICATE REQUEST", &good_der[..good_der.len() / 2]),
            &op,
            |e| matches!(e, CsrError::MalformedDer { .. }),
        ),
        (
            "trailing bytes after DER",
            pem("CERTIFICATE REQUEST", &trailing),
            &op,
            |e| matches!(e, CsrError::MalformedDer { .. }),
        ),
        (
            "flipped signature byte",
            pem("CERTIFICATE REQUEST", &bad_sig),
            &agent,
            |e| matches!(e, CsrError::BadSignature { .. }),
        ),
        (
            "P-384 key",
            csr_with(&PKCS_ECDSA_P384_SHA384, |p| {
                p.subject_alt_names = vec![uri(&agent_id.to_string())]
            }),
            &agent,
            |e| matches!(e, CsrError::UnsupportedKey { .. }),
        ),
        ("no SAN", csr_sans(vec![]), &op, |e| {
            matches!(e, CsrError::NoUriSan)
        }),
        (
            "two URI SANs",
            csr_sans(vec![
                uri("spiffe://east.mesh/mesh/agent/a1"),
                uri("spiffe://east.mesh/ns/default/sa/api"),
            ]),
            &agent,
            |e| matches!(e, CsrError::MultipleUriSans { count: 2 }),
        ),
        (
            "URI and DNS SAN",
            csr_sans(vec![
                uri("spiffe://east.mesh/mesh/agent/a1"),
                SanType::DnsName("a1.east.mesh".try_into().unwrap()),
            ]),
            &agent,
            |e| matches!(e, CsrError::UnexpectedSan { kind: "DNS" }),
        ),
        (
            "non-spiffe URI",
            csr_sans(vec![uri("https://east.mesh/mesh/agent/a1")]),
            &agent,
            |e| matches!(e, CsrError::InvalidSpiffeId { uri, .. } if uri.starts_with("https://")),
        ),
        (
            "wrong trust domain",
            csr_sans(vec![uri("spiffe://west.mesh/mesh/agent/a1")]),
            &agent,
            |e| matches!(e, CsrError::ForeignTrustDomain { got, .. } if got.as_str() == "west.mesh"),
        ),
        (
            "CA:true requested",
            csr_with(&PKCS_ECDSA_P256_SHA256, |p| {
                p.subject_alt_names = vec![uri("spiffe://east.mesh/mesh/agent/a1")];
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }),
            &agent,
            |e| matches!(e, CsrError::RequestsCa),
        ),
        (
            "keyCertSign requested",
            csr_with(&PKCS_ECDSA_P256_SHA256, |p| {
                p.subject_alt_names = vec![uri("spiffe://east.mesh/mesh/agent/a1")];
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            }),
            &agent,
            |e| matches!(e, CsrError::RequestsCa),
        ),
        (
            "unknown path /foo",
            csr_sans(vec![uri("spiffe://east.mesh/foo")]),
            &op,
            |e| matches!(e, CsrError::UnknownIdentityPath { .. }),
        ),
        (
            "control id requested by an agent",
            csr_sans(vec![uri("spiffe://east.mesh/mesh/control/a1")]),
            &agent,
            |e| matches!(e, CsrError::NotPermitted { requester, .. } if requester == "agent a1"),
        ),
        (
            "another agent's id requested by an agent",
            csr_sans(vec![uri("spiffe://east.mesh/mesh/agent/a2")]),
            &agent,
            |e| matches!(e, CsrError::NotPermitted { .. }),
        ),
        (
            "another service's workload id requested by an agent",
            csr_sans(vec![uri("spiffe://east.mesh/ns/default/sa/billing")]),
            &agent,
            |e| matches!(e, CsrError::NotPermitted { .. }),
        ),
        (
            "own service in another namespace requested by an agent",
            csr_sans(vec![uri("spiffe://east.mesh/ns/prod/sa/api")]),
            &agent,
            |e| matches!(e, CsrError::NotPermitted { .. }),
        ),
        (
            "another node's control id requested with a join token",
            csr_sans(vec![uri("spiffe://east.mesh/mesh/control/c2")]),
            &join,
            |e| matches!(e, CsrError::NotPermitted { .. }),
        ),
        (
            "agent id requested with a join token",
            csr_sans(vec![uri("spiffe://east.mesh/mesh/agent/c1")]),
            &join,
            |e| matches!(e, CsrError::NotPermitted { .. }),
        ),
        (
            "control id requested by the operator",
            csr_sans(vec![uri("spiffe://east.mesh/mesh/control/c1")]),
            &op,
            |e| matches!(e, CsrError::NotPermitted { requester, .. } if requester == "operator"),
        ),
    ];
    for (name, csr, requester, expect) in &cases {
        check(name, csr, requester, *expect);
    }
}

#[test]
fn ed25519_csr_is_accepted_and_issued() {
    let id = SpiffeId::agent(&east(), &node("a1"));
    let csr = csr_with(&PKCS_ED25519, |p| {
        p.subject_alt_names = vec![uri(&id.to_string())]
    });
    let requester = Requester::Agent {
        node: node("a1"),
        services: vec![],
    };
    assert_eq!(check_csr(&csr, &east(), &requester), Ok(id.clone()));
    let ca = ca("east", &east());
    let svid = sign_svid(&ca, &csr, &id, 3600, NOW).unwrap();
    let mut bundles = TrustBundles::new();
    bundles.insert_pem(east(), &ca.cert_pem).unwrap();
    let chain = [der(&svid.cert_pem)];
    assert_eq!(verify_svid(&chain, &bundles, Usage::Client, NOW), Ok(id));
}

// ---- certificates --------------------------------------------------------------------------

fn issuer_of(ca: &CaMaterial) -> Issuer<'static, KeyPair> {
    Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem).unwrap()).unwrap()
}

fn at(unix: u64) -> ASN1Time {
    ASN1Time::from_timestamp(unix as i64).unwrap()
}

/// A leaf with meshfed's SVID profile for `id`, after `edit`, signed by `issuer`.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    id: &str,
    edit: impl FnOnce(&mut CertificateParams),
) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![uri(id)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = at(NOW - 60).to_datetime();
    p.not_after = at(NOW + 3600).to_datetime();
    edit(&mut p);
    (p.signed_by(&key, issuer).unwrap().der().clone(), key)
}

#[test]
fn certificate_corpus_is_refused_with_distinct_reasons() {
    let east_ca = ca("east", &east());
    let impostor_ca = ca("east", &east()); // same trust domain name, different key
    let west_ca = ca("west", &td("west.mesh"));
    let east_issuer = issuer_of(&east_ca);
    let mut bundles = TrustBundles::new();
    bundles.insert_pem(east(), &east_ca.cert_pem).unwrap();
    bundles
        .insert_pem(td("west.mesh"), &west_ca.cert_pem)
        .unwrap();
    let a1 = "spiffe://east.mesh/mesh/agent/a1";
    let plain = |_: &mut CertificateParams| {};

    // A valid agent SVID used as an issuer: a sidecar or agent can never sign for another id.
    let (agent_der, agent_key) = leaf(&east_issuer, a1, plain);
    let agent_issuer = Issuer::from_ca_cert_der(&agent_der, agent_key).unwrap();
    let (forged, _) = leaf(&agent_issuer, "spiffe://east.mesh/mesh/control/c1", plain);

    type Expect = fn(&SvidError) -> bool;
    let one = |c: (CertificateDer<'static>, KeyPair)| vec![c.0];
    let cases: Vec<(&str, Vec<CertificateDer<'static>>, Usage, Expect)> = vec![
        ("empty chain", vec![], Usage::Client, |e| {
            matches!(e, SvidError::Malformed { .. })
        }),
        (
            "garbage DER",
            vec![CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02])],
            Usage::Client,
            |e| matches!(e, SvidError::Malformed { .. }),
        ),
        (
            "signed by another CA with the same trust domain name",
            one(leaf(&issuer_of(&impostor_ca), a1, plain)),
            Usage::Client,
            |e| matches!(e, SvidError::UntrustedIssuer { .. }),
        ),
        (
            "east id signed by the west CA (bundles are never merged)",
            one(leaf(&issuer_of(&west_ca), a1, plain)),
            Usage::Client,
            |e| matches!(e, SvidError::UntrustedIssuer { .. }),
        ),
        (
            "signed by an agent SVID",
            vec![forged, agent_der.clone()],
            Usage::Server,
            |e| matches!(e, SvidError::UntrustedIssuer { .. }),
        ),
        (
            "foreign trust domain with no bundle",
            one(leaf(
                &issuer_of(&ca("north", &td("north.mesh"))),
                "spiffe://north.mesh/mesh/agent/a1",
                plain,
            )),
            Usage::Client,
            |e| matches!(e, SvidError::UnknownTrustDomain { td } if td.as_str() == "north.mesh"),
        ),
        (
            "leaf with CA:true",
            one(leaf(&east_issuer, a1, |p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0))
            })),
            Usage::Client,
            |e| matches!(e, SvidError::LeafIsCa { .. }),
        ),
        (
            "leaf with keyCertSign",
            one(leaf(&east_issuer, a1, |p| {
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyCertSign,
                ]
            })),
            Usage::Client,
            |e| matches!(e, SvidError::LeafKeyUsage { .. }),
        ),
        (
            "leaf without keyUsage",
            one(leaf(&east_issuer, a1, |p| p.key_usages = vec![])),
            Usage::Client,
            |e| matches!(e, SvidError::LeafKeyUsage { .. }),
        ),
        (
            "two URI SANs",
            one(leaf(&east_issuer, a1, |p| {
                p.subject_alt_names
                    .push(uri("spiffe://east.mesh/mesh/agent/a2"))
            })),
            Usage::Client,
            |e| matches!(e, SvidError::MultipleUriSans { count: 2 }),
        ),
        (
            "no URI SAN",
            one(leaf(&east_issuer, a1, |p| {
                p.subject_alt_names = vec![SanType::DnsName("a1.east.mesh".try_into().unwrap())]
            })),
            Usage::Client,
            |e| matches!(e, SvidError::NoUriSan),
        ),
        (
            "non-spiffe URI SAN",
            one(leaf(&east_issuer, "https://east.mesh/mesh/agent/a1", plain)),
            Usage::Client,
            |e| matches!(e, SvidError::InvalidSpiffeId { .. }),
        ),
        (
            "expired",
            one(leaf(&east_issuer, a1, |p| {
                p.not_before = at(NOW - 7200).to_datetime();
                p.not_after = at(NOW - 1).to_datetime();
            })),
            Usage::Client,
            |e| matches!(e, SvidError::Expired { now_unix: NOW, .. }),
        ),
        (
            "not yet valid",
            one(leaf(&east_issuer, a1, |p| {
                p.not_before = at(NOW + 1).to_datetime();
                p.not_after = at(NOW + 7200).to_datetime();
            })),
            Usage::Client,
            |e| matches!(e, SvidError::NotYetValid { now_unix: NOW, .. }),
        ),
        (
            "clientAuth-only EKU verified for server use",
            one(leaf(&east_issuer, a1, |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
            })),
            Usage::Server,
            |e| {
                matches!(
                    e,
                    SvidError::WrongUsage {
                        usage: Usage::Server,
                        ..
                    }
                )
            },
        ),
    ];
    for (name, chain, usage, expect) in &cases {
        match verify_svid(chain, &bundles, *usage, NOW) {
            Ok(id) => panic!("{name}: accepted as {id}"),
            Err(e) => assert!(
                expect(&e),
                "{name}: refused for the wrong reason: {e:?} ({e})"
            ),
        }
    }
    // The control for the corpus: the same builder with no edit verifies.
    let (ok, _) = leaf(&east_issuer, a1, plain);
    assert_eq!(
        verify_svid(&[ok], &bundles, Usage::Server, NOW)
            .unwrap()
            .to_string(),
        a1
    );
}

// ---- handshakes ----------------------------------------------------------------------------

/// Which side of the in-memory handshake refused, and why.
#[derive(Debug)]
enum Refused {
    ByClient(rustls::Error),
    ByServer(rustls::Error),
}

impl Refused {
    fn svid_error(&self) -> Option<&SvidError> {
        match self {
            Self::ByClient(e) | Self::ByServer(e) => svid_error_of(e),
        }
    }
}

/// Drives a client and a server over in-memory buffers until both finish the handshake.
fn handshake(
    client: ClientConfig,
    server: ServerConfig,
) -> Result<(Connection, Connection), Refused> {
    let name = ServerName::try_from("ignored.invalid").unwrap();
    let mut c = Connection::Client(ClientConnection::new(Arc::new(client), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(Arc::new(server)).unwrap());
    for _ in 0..16 {
        transfer(&mut c, &mut s).map_err(Refused::ByServer)?;
        transfer(&mut s, &mut c).map_err(Refused::ByClient)?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish in 16 flights");
}

/// Moves every pending TLS byte from `from` to `to`; an error is `to` refusing them.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = buf.as_slice();
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

fn wall_clock_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Cluster {
    ca: CaMaterial,
    bundles: Arc<TrustBundles>,
}

impl Cluster {
    fn new(name: &str) -> Self {
        let ca = generate_ca(&ClusterName::new(name).unwrap(), &east(), wall_clock_unix()).unwrap();
        let mut bundles = TrustBundles::new();
        bundles.insert_pem(east(), &ca.cert_pem).unwrap();
        Self {
            ca,
            bundles: Arc::new(bundles),
        }
    }
    /// (leaf + CA chain PEM, key PEM), valid now: rustls checks validity with the wall clock.
    fn svid(&self, id: &SpiffeId) -> (String, String) {
        let kc = generate_csr(id).unwrap();
        let svid = sign_svid(&self.ca, &kc.csr_pem, id, 3600, wall_clock_unix()).unwrap();
        (format!("{}{}", svid.cert_pem, self.ca.cert_pem), kc.key_pem)
    }
}

const ALPN: &[&[u8]] = &[b"meshfed/1"];

#[test]
fn handshake_with_matching_svids_succeeds_and_names_both_peers() {
    let east_cluster = Cluster::new("east");
    let control = SpiffeId::control(&east(), &node("c1"));
    let agent = SpiffeId::agent(&east(), &node("a1"));
    let (s_chain, s_key) = east_cluster.svid(&control);
    let (c_chain, c_key) = east_cluster.svid(&agent);

    let client_v = SpiffeClientVerifier::new(
        east_cluster.bundles.clone(),
        PeerPolicy::AnyInTrustDomain(east()),
        true,
    );
    let server = server_config(&s_chain, &s_key, Some(client_v), ALPN).unwrap();
    let server_v = SpiffeServerVerifier::new(
        east_cluster.bundles.clone(),
        PeerPolicy::RoleControl(east()),
    );
    let client = client_config(server_v, Some((&c_chain, &c_key)), ALPN).unwrap();

    let (c, s) = handshake(client, server).unwrap();
    assert_eq!(c.alpn_protocol(), Some(&b"meshfed/1"[..]));
    let server_seen = &c.peer_certificates().unwrap()[0];
    let client_seen = &s.peer_certificates().unwrap()[0];
    assert_eq!(spiffe_id_of(server_seen), Ok(control));
    assert_eq!(spiffe_id_of(client_seen), Ok(agent));
    assert_eq!(
        c.peer_certificates().unwrap().len(),
        2,
        "server sends leaf + CA"
    );
}

#[test]
fn handshake_fails_with_a_cert_from_another_ca() {
    let east_cluster = Cluster::new("east");
    let impostor = Cluster::new("east"); // same trust domain name, other key
    let control = SpiffeId::control(&east(), &node("c1"));
    let agent = SpiffeId::agent(&east(), &node("a1"));

    // Impostor client against a genuine server: the server refuses.
    let (s_chain, s_key) = east_cluster.svid(&control);
    let (c_chain, c_key) = impostor.svid(&agent);
    let client_v =
        SpiffeClientVerifier::new(east_cluster.bundles.clone(), PeerPolicy::AnyKnown, true);
    let server = server_config(&s_chain, &s_key, Some(client_v), ALPN).unwrap();
    let server_v = SpiffeServerVerifier::new(east_cluster.bundles.clone(), PeerPolicy::AnyKnown);
    let client = client_config(server_v, Some((&c_chain, &c_key)), ALPN).unwrap();
    let err = handshake(client, server).map(|_| ()).unwrap_err();
    assert!(matches!(err, Refused::ByServer(_)), "{err:?}");
    assert!(
        matches!(err.svid_error(), Some(SvidError::UntrustedIssuer { .. })),
        "{err:?}"
    );

    // Genuine client against an impostor server: the client refuses.
    let (s_chain, s_key) = impostor.svid(&control);
    let (c_chain, c_key) = east_cluster.svid(&agent);
    let server = server_config(&s_chain, &s_key, None, ALPN).unwrap();
    let server_v = SpiffeServerVerifier::new(east_cluster.bundles.clone(), PeerPolicy::AnyKnown);
    let client = client_config(server_v, Some((&c_chain, &c_key)), ALPN).unwrap();
    let err = handshake(client, server).map(|_| ()).unwrap_err();
    assert!(matches!(err, Refused::ByClient(_)), "{err:?}");
    assert!(
        matches!(err.svid_error(), Some(SvidError::UntrustedIssuer { .. })),
        "{err:?}"
    );
}

#[test]
fn exactly_policy_rejects_a_different_valid_id() {
    let east_cluster = Cluster::new("east");
    let (s_chain, s_key) = east_cluster.svid(&SpiffeId::control(&east(), &node("c1")));
    let server = server_config(&s_chain, &s_key, None, ALPN).unwrap();
    let want = SpiffeId::control(&east(), &node("c2"));
    let server_v =
        SpiffeServerVerifier::new(east_cluster.bundles.clone(), PeerPolicy::Exactly(want));
    let client = client_config(server_v, None, ALPN).unwrap();
    let err = handshake(client, server).map(|_| ()).unwrap_err();
    assert!(
        matches!(err.svid_error(), Some(SvidError::NotAllowedByPolicy { id, .. })
            if id.to_string() == "spiffe://east.mesh/mesh/control/c1"),
        "{err:?}"
    );
}

#[test]
fn mandatory_client_auth_refuses_an_anonymous_client_and_optional_admits_it() {
    let east_cluster = Cluster::new("east");
    let (s_chain, s_key) = east_cluster.svid(&SpiffeId::control(&east(), &node("c1")));
    for mandatory in [true, false] {
        let client_v = SpiffeClientVerifier::new(
            east_cluster.bundles.clone(),
            PeerPolicy::AnyKnown,
            mandatory,
        );
        let server = server_config(&s_chain, &s_key, Some(client_v), ALPN).unwrap();
        let server_v =
            SpiffeServerVerifier::new(east_cluster.bundles.clone(), PeerPolicy::AnyKnown);
        let client = client_config(server_v, None, ALPN).unwrap();
        let result = handshake(client, server);
        match (mandatory, result) {
            (true, Err(Refused::ByServer(_))) => {}
            (false, Ok((_, s))) => assert!(s.peer_certificates().is_none()),
            (m, r) => panic!("mandatory={m}: unexpected {:?}", r.map(|_| ())),
        }
    }
}

#[test]
fn pinned_first_contact_trusts_only_the_pinned_cluster_control_node() {
    let east_cluster = Cluster::new("east");
    let (s_chain, s_key) = east_cluster.svid(&SpiffeId::control(&east(), &node("c1")));
    let server = server_config(&s_chain, &s_key, None, ALPN).unwrap();
    let pinned = PinnedCaServerVerifier::new(east_cluster.ca.fingerprint.clone());
    handshake(client_config(pinned, None, ALPN).unwrap(), server).unwrap();

    let impostor = Cluster::new("east");
    let (s_chain, s_key) = impostor.svid(&SpiffeId::control(&east(), &node("c1")));
    let server = server_config(&s_chain, &s_key, None, ALPN).unwrap();
    let pinned = PinnedCaServerVerifier::new(east_cluster.ca.fingerprint.clone());
    let err = handshake(client_config(pinned, None, ALPN).unwrap(), server)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            err.svid_error(),
            Some(SvidError::PinnedCaNotPresented { .. })
        ),
        "{err:?}"
    );
}
