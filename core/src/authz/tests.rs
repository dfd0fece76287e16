//! Decision tables for [`Authorizer`]: peer × request × policies → verdict, one row per
//! behaviour a user would notice. The bypass corpus lives in `tests/authz_bypass_corpus.rs`.

use serde_json::json;

use super::*;
use crate::http::{PathOptions, request_facts};

const WEB: &str = "spiffe://east.mesh/ns/default/sa/web";
const OPS: &str = "spiffe://east.mesh/ns/ops/sa/admin";
const WEST: &str = "spiffe://west.mesh/ns/default/sa/web";

fn policy(
    name: &str,
    service: &str,
    action: &str,
    rules: serde_json::Value,
) -> (String, AuthorizationPolicySpec) {
    let spec = json!({ "targetRef": { "name": service }, "action": action, "rules": rules });
    (name.to_owned(), serde_json::from_value(spec).unwrap())
}

fn policies() -> Vec<(String, AuthorizationPolicySpec)> {
    vec![
        policy(
            "allow-web-read",
            "api",
            "ALLOW",
            json!([
                { "from": [{ "principals": [WEB] }],
                  "to": [{ "methods": ["GET", "HEAD"], "paths": ["/api/*", "/health"] }] },
            ]),
        ),
        policy(
            "allow-ops",
            "api",
            "ALLOW",
            json!([
                { "from": [{ "principals": [OPS] }], "to": [{ "headers": [{ "name": "X-Role", "value": "admin" }] }] },
                { "from": [{ "trustDomains": ["*"] }], "to": [{ "paths": ["/public/*"] }] },
            ]),
        ),
        policy(
            "deny-debug",
            "api",
            "DENY",
            json!([
                { "to": [{ "paths": ["/api/debug/*"] }] },
                { "from": [{ "trustDomains": ["west.mesh"] }], "to": [{ "methods": ["DELETE"] }] },
                { "to": [{ "headers": [{ "name": "x-tenant", "value": "blocked" }] }] },
            ]),
        ),
        policy(
            "other-service",
            "billing",
            "ALLOW",
            json!([
                { "from": [{ "trustDomains": ["*"] }] },
            ]),
        ),
    ]
}

fn decide(
    authorizer: &Authorizer,
    peer: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    case_insensitive: bool,
) -> Verdict {
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
        .collect();
    let opts = PathOptions {
        case_insensitive,
        ..PathOptions::default()
    };
    // No policy header list: the authorizer's own backstop must catch repeated headers.
    let facts = request_facts(method, target, &headers, &[], opts).unwrap();
    authorizer.decide(&SpiffeId::parse(peer).unwrap(), &facts)
}

fn allow(policy: &str, rule: usize) -> Verdict {
    Verdict::Allow {
        policy: policy.to_owned(),
        rule,
    }
}
fn denied_by(policy: &str, rule: usize) -> Verdict {
    Verdict::Deny {
        reason: DenyReason::DenyRule {
            policy: policy.to_owned(),
            rule,
        },
    }
}
fn default_deny() -> Verdict {
    Verdict::Deny {
        reason: DenyReason::NoAllowRule,
    }
}

#[test]
fn decision_table() {
    let a = Authorizer::compile("api", &policies());
    type Row<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], Verdict);
    let rows: &[Row<'_>] = &[
        (WEB, "GET", "/api/users", &[], allow("allow-web-read", 0)),
        (WEB, "HEAD", "/api", &[], allow("allow-web-read", 0)),
        (WEB, "GET", "/health", &[], allow("allow-web-read", 0)),
        (WEB, "GET", "/health/", &[], default_deny()),
        (WEB, "GET", "/apiary", &[], default_deny()),
        (WEB, "POST", "/api/users", &[], default_deny()),
        (WEST, "GET", "/api/users", &[], default_deny()),
        (WEST, "GET", "/public/logo.png", &[], allow("allow-ops", 1)),
        (
            OPS,
            "POST",
            "/anything",
            &[("x-role", "admin")],
            allow("allow-ops", 0),
        ),
        (
            OPS,
            "POST",
            "/anything",
            &[("x-role", "Admin")],
            default_deny(),
        ),
        (
            OPS,
            "POST",
            "/anything",
            &[("x-role", "user,admin")],
            default_deny(),
        ),
        (OPS, "POST", "/anything", &[], default_deny()),
        (
            WEB,
            "GET",
            "/api/debug/vars",
            &[],
            denied_by("deny-debug", 0),
        ),
        (WEB, "GET", "/api/debug", &[], denied_by("deny-debug", 0)),
        (WEST, "DELETE", "/public/x", &[], denied_by("deny-debug", 1)),
        (WEB, "DELETE", "/public/x", &[], allow("allow-ops", 1)),
        (
            WEB,
            "GET",
            "/api/x",
            &[("x-tenant", "blocked")],
            denied_by("deny-debug", 2),
        ),
        // A DENY header match also matches one element of a comma-separated list.
        (
            WEB,
            "GET",
            "/api/x",
            &[("x-tenant", "ok, blocked")],
            denied_by("deny-debug", 2),
        ),
        (
            WEB,
            "GET",
            "/api/x",
            &[("x-tenant", "ok")],
            allow("allow-web-read", 0),
        ),
    ];
    for (peer, method, target, headers, expected) in rows {
        let got = decide(&a, peer, method, target, headers, false);
        assert_eq!(&got, expected, "{peer} {method} {target} {headers:?}");
    }
}

#[test]
fn no_policies_means_deny() {
    let a = Authorizer::compile("api", &[]);
    assert_eq!(decide(&a, WEB, "GET", "/", &[], false), default_deny());
    // Policies for other services do not apply.
    let a = Authorizer::compile("nothing-targets-me", &policies());
    assert_eq!(decide(&a, WEB, "GET", "/", &[], false), default_deny());
}

#[test]
fn empty_from_and_to_match_any_peer_and_request() {
    let p = [policy(
        "open",
        "api",
        "ALLOW",
        json!([{ "to": [{ "methods": ["GET"] }] }, {}]),
    )];
    let a = Authorizer::compile("api", &p);
    assert_eq!(decide(&a, WEST, "GET", "/x", &[], false), allow("open", 0));
    assert_eq!(decide(&a, WEST, "PUT", "/x", &[], false), allow("open", 1));
}

#[test]
fn repeated_header_named_by_a_policy_denies() {
    let a = Authorizer::compile("api", &policies());
    assert_eq!(a.header_names(), ["x-role", "x-tenant"]);
    let headers = [("x-tenant", "ok"), ("X-Tenant", "blocked")];
    let got = decide(&a, WEB, "GET", "/api/x", &headers, false);
    let reason = DenyReason::UnusableHeader {
        name: "x-tenant".to_owned(),
    };
    assert_eq!(got, Verdict::Deny { reason });
}

#[test]
fn case_insensitive_paths_fold_policy_paths_too() {
    let p = [
        policy(
            "deny",
            "api",
            "DENY",
            json!([{ "to": [{ "paths": ["/Admin/*"] }] }]),
        ),
        policy(
            "allow",
            "api",
            "ALLOW",
            json!([{ "from": [{ "trustDomains": ["east.mesh"] }] }]),
        ),
    ];
    let a = Authorizer::compile("api", &p);
    for target in ["/admin", "/ADMIN/x", "/aDmIn/"] {
        assert_eq!(
            decide(&a, WEB, "GET", target, &[], true),
            denied_by("deny", 0),
            "{target}"
        );
    }
    assert_eq!(
        decide(&a, WEB, "GET", "/Admin", &[], false),
        denied_by("deny", 0)
    );
    assert_eq!(
        decide(&a, WEB, "GET", "/admin", &[], false),
        allow("allow", 0)
    );
}

#[test]
fn unusable_policy_denies_everything_for_its_service() {
    for (paths, problem) in [
        (json!(["/a//b"]), "not canonical"),
        (json!(["/a%2Fb"]), "encoded slash"),
        (json!(["/a*"]), "not a trailing"),
    ] {
        let mut p = policies();
        p.push(policy(
            "broken",
            "api",
            "DENY",
            json!([{ "to": [{ "paths": paths }] }]),
        ));
        let a = Authorizer::compile("api", &p);
        let Verdict::Deny { reason } = decide(&a, WEB, "GET", "/api/users", &[], false) else {
            panic!("{paths} was allowed");
        };
        assert!(matches!(&reason, DenyReason::UnusablePolicy { policy, .. } if policy == "broken"));
        assert!(reason.to_string().contains(problem), "{reason}");
    }
    let p = [policy(
        "bad-principal",
        "api",
        "ALLOW",
        json!([{ "from": [{ "principals": ["web"] }] }]),
    )];
    let a = Authorizer::compile("api", &p);
    assert!(matches!(
        decide(&a, WEB, "GET", "/", &[], false),
        Verdict::Deny {
            reason: DenyReason::UnusablePolicy { .. }
        }
    ));
}

#[test]
fn prefix_patterns() {
    for (pattern, path, expected) in [
        ("/*", "/", true),
        ("/*", "/anything/at/all", true),
        ("/admin/*", "/admin", true),
        ("/admin/*", "/admin/", true),
        ("/admin/*", "/admin/x/y", true),
        ("/admin/*", "/administrator", false),
        ("/admin/*", "/api/admin", false),
        ("/admin/", "/admin", false),
        ("/admin//*", "/admin/x", true),
        ("/admin", "/admin/", false),
    ] {
        let compiled = compile_path(pattern).unwrap();
        let path = canonicalize_path(path, PathOptions::default()).unwrap();
        assert_eq!(compiled.matches(&path), expected, "{pattern} vs {path}");
    }
}

#[test]
fn a_tcp_connection_is_allowed_only_by_rules_without_http_conditions_and_denied_on_from() {
    let id = |s: &str| SpiffeId::parse(s).unwrap();
    // deny-debug's first rule has no `from`: on TCP it denies every peer.
    let a = Authorizer::compile("api", &policies());
    assert_eq!(a.decide_connection(&id(WEB)), denied_by("deny-debug", 0));
    // allow-web-read has `to`: it cannot allow an opaque connection.
    let a = Authorizer::compile("api", &policies()[..1]);
    assert_eq!(a.decide_connection(&id(WEB)), default_deny());
    let tcp = vec![
        policy(
            "allow-web",
            "api",
            "ALLOW",
            json!([{ "from": [{ "principals": [WEB] }] }]),
        ),
        policy(
            "deny-west-admin",
            "api",
            "DENY",
            json!([{ "from": [{ "trustDomains": ["west.mesh"] }], "to": [{ "paths": ["/admin"] }] }]),
        ),
    ];
    let a = Authorizer::compile("api", &tcp);
    assert_eq!(a.decide_connection(&id(WEB)), allow("allow-web", 0));
    assert_eq!(a.decide_connection(&id(OPS)), default_deny());
    // The DENY rule's path cannot be checked on TCP, so it denies on `from` alone.
    assert_eq!(
        a.decide_connection(&id(WEST)),
        denied_by("deny-west-admin", 0)
    );
}
