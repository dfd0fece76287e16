//! Route table tests: a `check(request, expect)` table over Gateway API match semantics and
//! precedence, and a statistical test of weighted backend selection.

use std::time::Duration;

use mesh_proto::resource::HttpRouteSpec;
use serde_json::json;

use super::*;
use crate::rng::SplitMix64;

fn spec(rules: serde_json::Value) -> HttpRouteSpec {
    serde_json::from_value(json!({
        "parentRefs": [{ "name": "api" }],
        "rules": rules,
    }))
    .unwrap()
}

fn to(backend: &str) -> serde_json::Value {
    json!([{ "name": backend }])
}

/// Routes where each rule sends to a backend named after what it tests.
fn table() -> RouteTable {
    let first = spec(json!([
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/v1" } }], "backendRefs": to("prefix-v1") },
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/v1/users/" } }], "backendRefs": to("prefix-v1-users") },
        { "matches": [{ "path": { "type": "Exact", "value": "/v1/users/me" } }], "backendRefs": to("exact-me") },
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/v1" }, "method": "POST" }], "backendRefs": to("post-v1") },
        { "matches": [
            { "path": { "value": "/v1" }, "headers": [{ "name": "X-Canary", "value": "yes" }] },
            { "path": { "value": "/beta" } },
          ], "backendRefs": to("canary") },
        { "matches": [{ "path": { "value": "/v1" }, "headers": [
            { "name": "x-canary", "value": "yes" }, { "name": "x-tenant", "value": "acme" }] }],
          "backendRefs": to("canary-acme") },
    ]));
    let second = spec(json!([
        // Same precedence as the first route's `/v1` prefix: the earlier route wins.
        { "matches": [{ "path": { "value": "/v1" } }], "backendRefs": to("shadowed") },
        { "matches": [{ "method": "DELETE" }], "backendRefs": to("any-delete") },
        { "backendRefs": to("catch-all") },
    ]));
    RouteTable::from_specs(&[first, second])
}

/// `(method, path, headers, expected backend or None for no route)`.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);

fn check(method: &str, path: &str, headers: &[(&str, &str)], expect: Option<&str>) {
    let input = RouteInput {
        method,
        path,
        headers,
    };
    let got = match table().pick(&input, &mut SplitMix64::new(1)) {
        RouteDecision::Backend { backend, .. } => Some(backend),
        RouteDecision::NoBackend { .. } => Some("<no backend>".to_owned()),
        RouteDecision::NoRoute => None,
    };
    assert_eq!(
        got.as_deref(),
        expect,
        "{method} {path} {headers:?} routed to {got:?}, expected {expect:?}"
    );
}

#[test]
fn match_semantics_and_precedence() {
    let canary = [("x-canary", "yes")];
    let canary_upper = [("X-CANARY", "yes")];
    let canary_wrong_case_value = [("x-canary", "YES")];
    let canary_acme = [("x-canary", "yes"), ("x-tenant", "acme")];
    let cases: &[Case] = &[
        // Prefix matches whole segments only.
        ("GET", "/v1", &[], Some("prefix-v1")),
        ("GET", "/v1/", &[], Some("prefix-v1")),
        ("GET", "/v1/x", &[], Some("prefix-v1")),
        ("GET", "/v10", &[], Some("catch-all")),
        // A trailing `/` in the prefix is ignored; the longer prefix wins.
        ("GET", "/v1/users", &[], Some("prefix-v1-users")),
        ("GET", "/v1/users/42", &[], Some("prefix-v1-users")),
        ("GET", "/v1/usersx", &[], Some("prefix-v1")),
        // Exact beats any prefix, even with a method or headers on the prefix rule.
        ("GET", "/v1/users/me", &[], Some("exact-me")),
        ("POST", "/v1/users/me", &canary, Some("exact-me")),
        ("GET", "/v1/users/me/", &[], Some("prefix-v1-users")),
        // Same prefix: a method match beats header matches.
        ("POST", "/v1/x", &canary_acme, Some("post-v1")),
        // Same prefix, no method: more header matches win.
        ("GET", "/v1/x", &canary, Some("canary")),
        ("GET", "/v1/x", &canary_acme, Some("canary-acme")),
        // Header names are case-insensitive, values exact.
        ("GET", "/v1/x", &canary_upper, Some("canary")),
        ("GET", "/v1/x", &canary_wrong_case_value, Some("prefix-v1")),
        // Any match of a rule selects it.
        ("GET", "/beta/x", &[], Some("canary")),
        // Methods are case-sensitive.
        ("post", "/v1/x", &[], Some("prefix-v1")),
        // A method-only match is a `/` prefix with a method.
        ("DELETE", "/other", &[], Some("any-delete")),
        ("DELETE", "/v1/x", &[], Some("prefix-v1")),
        // A rule without matches catches everything else.
        ("GET", "/", &[], Some("catch-all")),
        ("PUT", "/anything/else", &[], Some("catch-all")),
    ];
    for (method, path, headers, expect) in cases {
        check(method, path, headers, *expect);
    }
}

#[test]
fn no_rule_matches_is_no_route() {
    let t = RouteTable::from_specs(&[spec(json!([
        { "matches": [{ "path": { "type": "Exact", "value": "/only" } }], "backendRefs": to("a") },
    ]))]);
    let input = RouteInput {
        method: "GET",
        path: "/other",
        headers: &[],
    };
    assert_eq!(
        t.pick(&input, &mut SplitMix64::new(0)),
        RouteDecision::NoRoute
    );
    assert!(RouteTable::from_specs(&[]).is_empty());
    assert_eq!(
        RouteTable::from_specs(&[]).pick(&input, &mut SplitMix64::new(0)),
        RouteDecision::NoRoute
    );
}

#[test]
fn decision_carries_rule_port_and_timeout() {
    let t = RouteTable::from_specs(&[
        spec(json!([{ "matches": [{ "path": { "value": "/a" } }], "backendRefs": to("a") }])),
        spec(json!([
            { "matches": [{ "path": { "value": "/x" } }], "backendRefs": to("x") },
            { "matches": [{ "path": { "value": "/b" } }],
              "backendRefs": [{ "name": "b", "port": 8080 }],
              "timeouts": { "request": "1.5s" } },
        ])),
    ]);
    let input = RouteInput {
        method: "GET",
        path: "/b/c",
        headers: &[],
    };
    assert_eq!(
        t.pick(&input, &mut SplitMix64::new(0)),
        RouteDecision::Backend {
            rule: RuleRef { route: 1, rule: 1 },
            backend: "b".to_owned(),
            port: Some(8080),
            timeout: Some(Duration::from_millis(1500)),
        }
    );
}

#[test]
fn odd_values_do_not_panic() {
    let t = RouteTable::from_specs(&[spec(json!([
        { "matches": [{ "path": { "value": "/zero" } }],
          "backendRefs": [{ "name": "a", "weight": 0 }, { "name": "b", "weight": 0 }] },
        { "backendRefs": to("c"), "timeouts": { "request": "not a duration" } },
    ]))]);
    let mut rng = SplitMix64::new(0);
    let zero = RouteInput {
        method: "GET",
        path: "/zero",
        headers: &[],
    };
    assert_eq!(
        t.pick(&zero, &mut rng),
        RouteDecision::NoBackend {
            rule: RuleRef { route: 0, rule: 0 }
        }
    );
    let other = RouteInput { path: "/", ..zero };
    assert!(matches!(
        t.pick(&other, &mut rng),
        RouteDecision::Backend { timeout: None, .. }
    ));
}

#[test]
fn weighted_split_90_10_within_one_percent() {
    let t = RouteTable::from_specs(&[spec(json!([{ "backendRefs": [
        { "name": "stable", "weight": 90 },
        { "name": "canary", "weight": 10 },
        { "name": "drained", "weight": 0 },
    ] }]))]);
    let input = RouteInput {
        method: "GET",
        path: "/",
        headers: &[],
    };
    let mut rng = SplitMix64::new(0x5eed);
    let (mut stable, mut canary) = (0u32, 0u32);
    for _ in 0..20_000 {
        match t.pick(&input, &mut rng) {
            RouteDecision::Backend { backend, .. } if backend == "stable" => stable += 1,
            RouteDecision::Backend { backend, .. } if backend == "canary" => canary += 1,
            other => panic!("unexpected decision {other:?}"),
        }
    }
    assert_eq!(stable + canary, 20_000);
    let share = f64::from(canary) / 20_000.0;
    assert!((0.09..=0.11).contains(&share), "canary share {share}");
}
