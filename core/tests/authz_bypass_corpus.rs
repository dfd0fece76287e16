//! Corpus of path and header encodings that have bypassed mesh authorization elsewhere
//! (reliability.md §3.3: Istio CVE-2021-31920 `//` `%2F` `%5C`, CVE-2021-39156 `#`, Envoy
//! CVE-2019-9901 `/../`, Tomcat/Envoy `;` path parameters, duplicate and comma-joined headers).
//!
//! Property: with a DENY on `/admin` and `/admin/*` for everyone and an ALLOW for the client's
//! trust domain, no spelling of an admin path is ever allowed. Each is either denied by the DENY
//! rule (it canonicalises to an admin path) or refused by `request_facts` with the stated
//! `Refusal`. Benign neighbours (`/administrator`, `/admin/..`) are allowed, so the rules do not
//! over-block. The policy goes through config validation first, as stored policies do. This
//! file does not test the canonical forms themselves; `src/http/path.rs` does.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

use mesh_core::authz::{Authorizer, DenyReason, Verdict};
use mesh_core::config::{Spec, validate};
use mesh_core::http::{PathOptions, Refusal, request_facts};
use mesh_proto::SpiffeId;
use mesh_proto::resource::Resource;
use serde_json::json;

use Outcome::{Allowed, Denied, Refused};

const CLIENT: &str = "spiffe://east.mesh/ns/default/sa/web";

/// What must happen to a request.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Allowed,
    Denied,
    Refused(Refusal),
}

/// Which path options a row runs under.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Both case-sensitive and case-insensitive: the outcome must not depend on it.
    Both,
    /// Only with `case_insensitive: true` (a case-sensitive backend has no `/ADMIN` problem).
    CaseInsensitive,
}

fn authorizer() -> Authorizer {
    let resource = |name: &str, action: &str, rules: serde_json::Value| -> Resource {
        serde_json::from_value(json!({
            "apiVersion": "meshfed.io/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": { "name": name, "namespace": "default" },
            "spec": { "targetRef": { "name": "api" }, "action": action, "rules": rules },
        }))
        .unwrap()
    };
    let docs = [
        resource(
            "deny-admin",
            "DENY",
            json!([{ "from": [{ "trustDomains": ["*"] }],
                     "to": [{ "paths": ["/admin", "/admin/*"] }] }]),
        ),
        resource(
            "allow-east",
            "ALLOW",
            json!([{ "from": [{ "trustDomains": ["east.mesh"] }] }]),
        ),
    ];
    let policies: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| match validate(i, doc).unwrap().spec {
            Spec::AuthorizationPolicy(spec) => (doc.metadata.name.clone(), spec),
            other => panic!("not a policy: {other:?}"),
        })
        .collect();
    Authorizer::compile("api", &policies)
}

fn outcome(a: &Authorizer, target: &str, headers: &[(&str, &str)], insensitive: bool) -> Outcome {
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
        .collect();
    let opts = PathOptions {
        case_insensitive: insensitive,
        ..PathOptions::default()
    };
    let facts = match request_facts("GET", target, &headers, a.header_names(), opts) {
        Ok(facts) => facts,
        Err(refusal) => return Refused(refusal),
    };
    match a.decide(&SpiffeId::parse(CLIENT).unwrap(), &facts) {
        Verdict::Allow { .. } => Allowed,
        Verdict::Deny {
            reason: DenyReason::DenyRule { policy, rule: 0 },
        } if policy == "deny-admin" => Denied,
        Verdict::Deny { reason } => panic!("{target}: denied for an unexpected reason: {reason}"),
    }
}

fn modes(mode: Mode) -> &'static [bool] {
    match mode {
        Mode::Both => &[false, true],
        Mode::CaseInsensitive => &[true],
    }
}

#[rustfmt::skip]
fn bad_targets() -> Vec<(&'static str, Mode, Outcome)> {
    use Mode::{Both, CaseInsensitive};
    use Refusal::*;
    vec![
        ("/admin", Both, Denied),
        ("//admin", Both, Denied),
        ("///admin//", Both, Denied),
        ("/./admin", Both, Denied),
        ("/x/../admin", Both, Denied),
        ("/a/b/../../admin", Both, Denied),
        ("/admin?", Both, Denied),
        ("/admin?x=/../../public", Both, Denied),
        ("/admin/", Both, Denied),
        ("/admin/.", Both, Denied),
        ("/admin/%2e", Both, Denied),
        ("/admin/x", Both, Denied),
        ("/%61dmin", Both, Denied),
        ("/adm%69n/x", Both, Denied),
        ("/x/%2e%2e/admin", Both, Denied),
        ("/x/%2E./admin", Both, Denied),
        ("/ADMIN", CaseInsensitive, Denied),
        ("/Admin/Users", CaseInsensitive, Denied),
        ("/%41DMIN", CaseInsensitive, Denied),
        ("%2Fadmin", Both, Refused(EncodedSlash)),
        ("/%2Fadmin", Both, Refused(EncodedSlash)),
        ("/%2fadmin", Both, Refused(EncodedSlash)),
        ("%2fadmin", Both, Refused(EncodedSlash)),
        ("/x/..%2fadmin", Both, Refused(EncodedSlash)),
        ("%2e%2e%2fadmin", Both, Refused(EncodedSlash)),
        ("/admin%2F", Both, Refused(EncodedSlash)),
        ("/%5cadmin", Both, Refused(EncodedBackslash)),
        ("/x/..%5Cadmin", Both, Refused(EncodedBackslash)),
        ("\\admin", Both, Refused(Backslash)),
        ("/x\\..\\admin", Both, Refused(Backslash)),
        ("/admin%00", Both, Refused(NulByte)),
        ("/admin%09", Both, Refused(ControlChar { byte: 0x09 })),
        ("/admin%0d%0a", Both, Refused(ControlChar { byte: 0x0d })),
        ("/admin#", Both, Refused(Fragment)),
        ("/public#/../admin", Both, Refused(Fragment)),
        ("/admin;x", Both, Refused(PathParameter)),
        ("/admin;/", Both, Refused(PathParameter)),
        ("/public/..;/admin", Both, Refused(PathParameter)),
        ("/admin%3Bx", Both, Refused(PathParameter)),
        ("/admin%20", Both, Refused(SegmentEdgeWhitespace)),
        ("/%20admin", Both, Refused(SegmentEdgeWhitespace)),
        ("/%2e%2e/admin", Both, Refused(DotSegmentEscapesRoot)),
        ("/../admin", Both, Refused(DotSegmentEscapesRoot)),
        ("/%u0061dmin", Both, Refused(InvalidPercentEncoding { at: 1 })),
        ("/admin%", Both, Refused(InvalidPercentEncoding { at: 6 })),
        ("/%2561dmin", Both, Refused(EncodedPercent)),
        ("/%252e%252e/admin", Both, Refused(EncodedPercent)),
        ("/%C0%AE%C0%AE/admin", Both, Refused(InvalidUtf8)),
        ("/%c0%afadmin", Both, Refused(InvalidUtf8)),
        ("/admin\u{ff0f}x", Both, Refused(NonAscii { byte: 0xef })),
        ("admin", Both, Refused(NotAbsolute)),
        ("http://api/admin", Both, Refused(NotAbsolute)),
    ]
}

#[test]
fn no_spelling_of_an_admin_path_is_allowed() {
    let a = authorizer();
    let mut checked = 0;
    let mut accepted = Vec::new();
    for (target, mode, expected) in bad_targets() {
        assert_ne!(
            expected, Allowed,
            "{target}: the bad set must not expect Allow"
        );
        for &insensitive in modes(mode) {
            let got = outcome(&a, target, &[("host", "api")], insensitive);
            if got == Allowed {
                accepted.push((target, insensitive));
            }
            assert_eq!(
                got, expected,
                "{target:?} (case_insensitive: {insensitive})"
            );
            checked += 1;
        }
    }
    assert!(accepted.is_empty(), "allowed: {accepted:?}");
    assert!(checked >= 90, "only {checked} cases ran");
}

#[test]
fn benign_neighbours_are_allowed() {
    let a = authorizer();
    for target in [
        "/",
        "/api/v1",
        "/api/v1?admin=true",
        "/administrator",
        "/admin-panel",
        "/api/admin",
        "/api/%61dmin",
        "/admin/..",
        "/admin/x/../..",
        "/x/../api",
        "/a%3Ab",
        "/files/my%20report.pdf",
    ] {
        for insensitive in [false, true] {
            assert_eq!(outcome(&a, target, &[], insensitive), Allowed, "{target:?}");
        }
    }
    // Case matters when the backend's paths do.
    assert_eq!(outcome(&a, "/ADMIN", &[], false), Allowed);
}

#[test]
fn ambiguous_headers_are_refused() {
    let a = authorizer();
    let dup = |name: &str| {
        Refused(Refusal::DuplicateHeader {
            name: name.to_owned(),
        })
    };
    let rows: &[(&[(&str, &str)], Outcome)] = &[
        (&[("host", "api"), ("host", "admin")], dup("host")),
        (&[("Host", "api"), ("HOST", "api")], dup("host")),
        (
            &[("content-length", "0"), ("content-length", "5")],
            Refused(Refusal::AmbiguousLength),
        ),
        (
            &[("content-length", "0"), ("transfer-encoding", "chunked")],
            Refused(Refusal::AmbiguousLength),
        ),
        (
            &[(":authority", "api"), ("host", "admin")],
            Refused(Refusal::AmbiguousAuthority),
        ),
        (
            &[("authorization", "a"), ("Authorization", "b")],
            dup("authorization"),
        ),
        (
            &[("x-meshfed-peer", "a"), ("x-meshfed-peer", "b")],
            dup("x-meshfed-peer"),
        ),
        (
            &[("x-forwarded-client-cert", "a\r\nx-forwarded-client-cert: b")],
            Refused(Refusal::HeaderValueInvalid {
                name: "x-forwarded-client-cert".to_owned(),
            }),
        ),
        (
            &[("host", "api"), ("accept", "a"), ("accept", "b")],
            Allowed,
        ),
    ];
    for (headers, expected) in rows {
        assert_eq!(
            &outcome(&a, "/api", headers, false),
            expected,
            "{headers:?}"
        );
    }
}
