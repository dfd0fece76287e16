//! Federation token rules: text round trip, the redeemer's checks and the issuer's redeem
//! rule, each refusal distinct.

use mesh_proto::command::RedeemRefusal;
use mesh_proto::federation::{FederationToken, PendingToken};
use mesh_proto::{ClusterName, TrustDomain};

use super::*;

fn cluster(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

fn token() -> FederationToken {
    let ca = identity::generate_ca(&cluster("east"), &TrustDomain::new("east.mesh").unwrap(), 0)
        .unwrap();
    FederationToken {
        v: TOKEN_VERSION,
        cluster: cluster("east"),
        trust_domain: TrustDomain::new("east.mesh").unwrap(),
        peer: cluster("west"),
        ca_fingerprint: ca.fingerprint.clone(),
        ca_pem: ca.cert_pem,
        api: vec!["127.0.1.1:7443".into()],
        gateways: vec![],
        secret: "s3cret".into(),
        expires_unix_ms: 10_000,
    }
}

#[test]
fn a_token_round_trips_through_its_text_form() {
    let t = token();
    let text = encode_token(&t);
    assert!(text.starts_with("meshfed1."));
    assert_eq!(decode_token(&format!("  {text}\n")).unwrap(), t);
}

#[test]
fn malformed_text_is_refused_with_what_is_wrong() {
    for (text, needle) in [
        ("hello", "does not start with meshfed1."),
        ("meshfed1.!!!", "base64"),
        ("meshfed1.e30", "JSON"),
    ] {
        match decode_token(text) {
            Err(TokenError::Malformed(why)) => assert!(why.contains(needle), "{text}: {why}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    let big = format!("meshfed1.{}", "A".repeat(MAX_TOKEN_BYTES));
    assert!(matches!(decode_token(&big), Err(TokenError::Malformed(_))));
    let mut t = token();
    t.v = 9;
    assert_eq!(decode_token(&encode_token(&t)), Err(TokenError::Version(9)));
}

#[test]
fn the_redeemer_refuses_another_peers_its_own_an_expired_and_a_tampered_token() {
    let t = token();
    assert_eq!(check_before_join(&t, &cluster("west"), 9_999), Ok(()));
    assert!(matches!(
        check_before_join(&t, &cluster("south"), 0),
        Err(TokenError::WrongPeer { .. })
    ));
    assert!(matches!(
        check_before_join(&t, &cluster("east"), 0),
        Err(TokenError::SelfPeer(_))
    ));
    let e = check_before_join(&t, &cluster("west"), 10_000).unwrap_err();
    assert!(
        e.to_string().contains("expired at 1970-01-01T00:00:10Z"),
        "{e}"
    );
    let mut tampered = t.clone();
    let other = identity::generate_ca(&cluster("evil"), &TrustDomain::new("east.mesh").unwrap(), 0)
        .unwrap();
    tampered.ca_pem = other.cert_pem;
    assert_eq!(
        check_before_join(&tampered, &cluster("west"), 0),
        Err(TokenError::Tampered(cluster("east")))
    );
}

#[test]
fn the_issuer_redeems_a_token_once_in_time_for_its_peer() {
    let p = PendingToken {
        peer: cluster("west"),
        created_unix_ms: 0,
        expires_unix_ms: 100,
        used_unix_ms: None,
    };
    assert_eq!(redeem(Some(&p), &cluster("west"), 50), Ok(()));
    assert_eq!(
        redeem(None, &cluster("west"), 50),
        Err(RedeemRefusal::Unknown)
    );
    assert_eq!(
        redeem(Some(&p), &cluster("west"), 100),
        Err(RedeemRefusal::Expired { at_unix_ms: 100 })
    );
    assert!(matches!(
        redeem(Some(&p), &cluster("south"), 50),
        Err(RedeemRefusal::WrongPeer { .. })
    ));
    let used = PendingToken {
        used_unix_ms: Some(60),
        ..p
    };
    assert_eq!(
        redeem(Some(&used), &cluster("west"), 70),
        Err(RedeemRefusal::Used { at_unix_ms: 60 })
    );
    let msgs: Vec<String> = [
        RedeemRefusal::Unknown,
        RedeemRefusal::Used { at_unix_ms: 0 },
        RedeemRefusal::Expired { at_unix_ms: 0 },
        RedeemRefusal::WrongPeer {
            issued_for: cluster("west"),
            redeemer: cluster("south"),
        },
    ]
    .iter()
    .map(|r| refusal_message(r, "east"))
    .collect();
    for (m, needle) in msgs
        .iter()
        .zip(["never issued", "already used", "expired", "not south"])
    {
        assert!(m.contains(needle), "{m}");
    }
}

#[test]
fn rfc3339_is_the_civil_utc_time() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_796_190_816_000), "2026-12-02T05:53:36Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
}
