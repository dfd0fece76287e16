//! Table tests of config validation: each bad document must yield exactly the expected field
//! paths, with messages that say what is wrong.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// A document of `kind` around `spec`, otherwise valid.
fn doc(kind: &str, spec: Value) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": spec,
    })
}

fn problems_of(document: &Value) -> Vec<FieldProblem> {
    match parse_resource(0, document) {
        Ok(res) => validate(0, &res).err().unwrap_or_default(),
        Err(problems) => problems,
    }
}

/// Assert that `document` yields exactly the `expected` (field, message fragment) problems, in
/// that order.
#[track_caller]
fn check(document: Value, expected: &[(&str, &str)]) {
    let got = problems_of(&document);
    let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|(f, _)| *f).collect();
    assert_eq!(fields, want, "problems: {got:#?}");
    for (p, (_, fragment)) in got.iter().zip(expected) {
        assert!(
            p.message.contains(fragment),
            "{:?} lacks {fragment:?}",
            p.message
        );
        assert!(
            !p.message.ends_with('.'),
            "{:?} ends with a period",
            p.message
        );
    }
}

fn route(rules: Value) -> Value {
    doc(
        "HTTPRoute",
        json!({ "parentRefs": [{ "name": "web" }], "rules": rules }),
    )
}

fn backend(name: &str, weight: u64) -> Value {
    json!({ "backendRefs": [{ "name": name, "weight": weight }] })
}

fn traffic(extra: Value) -> Value {
    let mut spec = json!({ "targetRef": { "kind": "Service", "name": "api" } });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    doc("TrafficPolicy", spec)
}

fn authz(action: &str, rules: Value) -> Value {
    doc(
        "AuthorizationPolicy",
        json!({ "targetRef": { "name": "api" }, "action": action, "rules": rules }),
    )
}

#[test]
fn valid_documents_of_every_kind_pass() {
    let docs = [
        route(json!([{
            "matches": [{ "path": { "type": "PathPrefix", "value": "/api/" },
                          "headers": [{ "name": "x-canary", "value": "1" }], "method": "GET" }],
            "backendRefs": [{ "name": "api-v1", "weight": 90 }, { "name": "api-v2", "port": 8080, "weight": 10 }],
            "timeouts": { "request": "1.5s" },
        }])),
        traffic(json!({
            "timeouts": { "request": "5s", "connect": "250ms" },
            "retries": { "attempts": 3, "perTryTimeout": "1s", "retryOn": ["5xx", "reset"],
                         "budget": { "ratio": 0.2, "minPerSecond": 10 } },
            "circuitBreaker": { "maxConnections": 100, "maxPendingRequests": 10 },
            "outlierDetection": { "consecutive5xx": 5, "baseEjectionTime": "30s", "maxEjectionPercent": 50 },
            "loadBalancer": { "policy": "consistentHash", "hashHeader": "x-user-id" },
            "rateLimit": { "requestsPerSecond": 100, "burst": 20 },
            "faultInjection": { "delay": { "percent": 1.5, "duration": "100ms" },
                                "abort": { "percent": 0.1, "status": 503 } },
        })),
        authz(
            "ALLOW",
            json!([
                { "from": [{ "principals": ["spiffe://east.mesh/ns/shop/sa/web"] }],
                  "to": [{ "methods": ["GET"], "paths": ["/api/*", "/health", "/*"] }] },
                { "from": [{ "trustDomains": ["west.mesh", "*"] }] },
            ]),
        ),
        authz("DENY", json!([{}])),
        doc(
            "FailoverPolicy",
            json!({ "service": "api", "targets": [
                { "region": "eu-west", "zone": "eu-west-1a" }, { "region": "eu-west" }, { "cluster": "west" },
            ]}),
        ),
        doc(
            "ServiceExport",
            json!({ "service": "api", "peers": ["west", "north"] }),
        ),
    ];
    for d in docs {
        check(d, &[]);
    }
}

#[test]
fn spec_json_is_the_canonical_typed_spec_with_defaults() {
    let d = route(json!([{ "backendRefs": [{ "name": "api" }] }]));
    let res = parse_resource(0, &d).unwrap();
    let valid = validate(0, &res).unwrap();
    assert_eq!(valid.key.kind, Kind::HTTPRoute);
    assert_eq!(
        (valid.key.namespace.as_str(), valid.key.name.as_str()),
        ("shop", "web")
    );
    assert_eq!(
        valid.spec_json,
        r#"{"parentRefs":[{"kind":"Service","name":"web"}],"rules":[{"matches":[],"backendRefs":[{"name":"api","weight":1}]}]}"#
    );
    assert!(matches!(valid.spec, Spec::HttpRoute(_)));
}

#[test]
fn envelope_problems() {
    let mut d = doc("HTTPRout", json!({}));
    d["apiVersion"] = json!("meshfed.io/v1");
    d["metadata"] = json!({ "name": "Web_1", "namespace": "-x", "labels": { "app": "ok", "bad key": "v", "tier": "-no" } });
    check(
        d,
        &[
            ("apiVersion", "use meshfed.io/v1alpha1"),
            (
                "kind",
                "unknown kind \"HTTPRout\"; expected one of HTTPRoute, TrafficPolicy, AuthorizationPolicy, FailoverPolicy, ServiceExport",
            ),
            ("metadata.name", "lowercase"),
            ("metadata.namespace", "must not start or end with '-'"),
            ("metadata.labels[\"bad key\"]", "label key"),
            ("metadata.labels.tier", "label value"),
        ],
    );
    check(
        doc("httproute", json!({})),
        &[("kind", "did you mean HTTPRoute?")],
    );
}

#[test]
fn structural_problems_are_all_reported_with_paths() {
    let d = json!({
        "apiVersion": API_VERSION, "kind": "HTTPRoute", "specs": {},
        "metadata": { "name": "web", "lables": {} },
    });
    check(
        d,
        &[
            ("specs", "unknown field \"specs\"; did you mean \"spec\"?"),
            ("metadata.lables", "did you mean \"labels\"?"),
            ("spec", "missing required field \"spec\""),
        ],
    );
    check(
        route(json!([{
            "backendRefs": [{ "name": "a", "wieght": 5 }, { "name": "b", "weight": -5 }, { "name": 7, "port": 70000 }],
            "matches": [{ "path": { "type": "Prefix", "value": "/" } }],
        }])),
        &[
            (
                "spec.rules[0].backendRefs[0].wieght",
                "did you mean \"weight\"?",
            ),
            (
                "spec.rules[0].backendRefs[1].weight",
                "-5 is out of range; use a whole number from 0 to 4294967295",
            ),
            (
                "spec.rules[0].backendRefs[2].name",
                "expected a string, found the number 7; put it in quotes",
            ),
            ("spec.rules[0].backendRefs[2].port", "70000 is out of range"),
            (
                "spec.rules[0].matches[0].path.type",
                "unknown value \"Prefix\"; use one of Exact, PathPrefix",
            ),
        ],
    );
}

#[test]
fn missing_fields_are_reported_once_each_and_placeholders_add_no_noise() {
    check(
        doc(
            "HTTPRoute",
            json!({ "rules": [{ "matches": [] }, { "backendRefs": "api" }] }),
        ),
        &[
            ("spec.rules[1].backendRefs", "expected a list"),
            (
                "spec.rules[0].backendRefs",
                "missing required field \"backendRefs\"",
            ),
            ("spec.parentRefs", "missing required field \"parentRefs\""),
        ],
    );
    check(
        traffic(json!({ "retries": 3, "rateLimit": { "burst": 0 } })),
        &[
            ("spec.retries", "expected a mapping, found the number 3"),
            ("spec.rateLimit.requestsPerSecond", "missing required field"),
            ("spec.rateLimit.burst", "burst 0"),
        ],
    );
    check(
        doc("ServiceExport", json!(null)),
        &[("spec", "expected a mapping, found nothing")],
    );
}

#[test]
fn http_route_values() {
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            doc("HTTPRoute", json!({ "parentRefs": [], "rules": [] })),
            vec![
                ("spec.parentRefs", "at least one parentRef"),
                ("spec.rules", "at least one rule"),
            ],
        ),
        (
            doc(
                "HTTPRoute",
                json!({ "parentRefs": [{ "kind": "Deployment", "name": "Web" }], "rules": [backend("a", 1)] }),
            ),
            vec![
                ("spec.parentRefs[0].kind", "refer to a Service"),
                ("spec.parentRefs[0].name", "service name \"Web\" is invalid"),
            ],
        ),
        (
            route(
                json!([{ "backendRefs": [] }, { "backendRefs": [{ "name": "a", "weight": 0 }, { "name": "b", "weight": 0 }] }]),
            ),
            vec![
                ("spec.rules[0].backendRefs", "at least one backendRef"),
                ("spec.rules[1].backendRefs", "every backendRef has weight 0"),
            ],
        ),
        (
            route(json!([{ "backendRefs": [{ "name": "a", "weight": 1_000_001, "port": 0 }] }])),
            vec![
                ("spec.rules[0].backendRefs[0].port", "port 0 is invalid"),
                (
                    "spec.rules[0].backendRefs[0].weight",
                    "weight 1000001 is out of range; use 0 to 1000000",
                ),
            ],
        ),
        (
            route(json!([{
                "matches": [
                    { "path": { "value": "api" } },
                    { "path": { "value": "/a/../b" } },
                    { "path": { "value": "/a%2Fb" } },
                    { "path": { "value": "/a?x=1" } },
                    { "path": { "type": "Exact", "value": "/a#frag" } },
                    { "path": { "value": "/api/*" } },
                ],
                "backendRefs": [{ "name": "a" }],
            }])),
            vec![
                ("spec.rules[0].matches[0].path.value", "must start with '/'"),
                (
                    "spec.rules[0].matches[1].path.value",
                    "write the canonical path",
                ),
                ("spec.rules[0].matches[2].path.value", "percent-encoding"),
                ("spec.rules[0].matches[3].path.value", "a query"),
                ("spec.rules[0].matches[4].path.value", "a fragment"),
                (
                    "spec.rules[0].matches[5].path.value",
                    "use type: PathPrefix",
                ),
            ],
        ),
        (
            route(json!([{
                "matches": [{
                    "headers": [{ "name": "x user", "value": "1" }, { "name": "X-A", "value": "1" },
                                { "name": "x-a", "value": " 2" }],
                    "method": "get",
                }, { "method": "FETCH" }],
                "backendRefs": [{ "name": "a" }],
                "timeouts": { "request": "5" },
            }])),
            vec![
                (
                    "spec.rules[0].matches[0].headers[0].name",
                    "not a valid header name",
                ),
                (
                    "spec.rules[0].matches[0].headers[2].name",
                    "already matched by item 1",
                ),
                (
                    "spec.rules[0].matches[0].headers[2].value",
                    "spaces around it",
                ),
                (
                    "spec.rules[0].matches[0].method",
                    "must be upper case; write GET",
                ),
                (
                    "spec.rules[0].matches[1].method",
                    "unknown method \"FETCH\"; use one of GET",
                ),
                ("spec.rules[0].timeouts.request", "has no unit"),
            ],
        ),
    ];
    for (d, expected) in cases {
        check(d, &expected);
    }
}

#[test]
fn traffic_policy_values() {
    check(
        traffic(json!({
            "timeouts": { "request": "0s", "connect": "fast" },
            "retries": { "attempts": 11, "perTryTimeout": "-1s", "retryOn": ["5xx", "timeout", "5xx"],
                         "budget": { "ratio": 1.5 } },
            "circuitBreaker": { "maxConnections": 0 },
            "outlierDetection": { "consecutive5xx": 0, "consecutiveConnectFailures": 0, "maxEjectionPercent": 101 },
            "rateLimit": { "requestsPerSecond": 0 },
            "faultInjection": { "delay": { "percent": 100.5, "duration": "1s" },
                                "abort": { "percent": -1, "status": 600 } },
        })),
        &[
            ("spec.timeouts.request", "must be above zero"),
            ("spec.timeouts.connect", "must start with a number"),
            (
                "spec.retries.attempts",
                "attempts 11 is out of range; use 1 to 10",
            ),
            ("spec.retries.perTryTimeout", "is negative"),
            (
                "spec.retries.retryOn[1]",
                "unknown retry condition \"timeout\"",
            ),
            ("spec.retries.retryOn[2]", "listed twice"),
            ("spec.retries.budget.ratio", "use 0.0 to 1.0"),
            ("spec.circuitBreaker.maxConnections", "use 1 or more"),
            ("spec.outlierDetection.consecutive5xx", "use 1 or more"),
            (
                "spec.outlierDetection.consecutiveConnectFailures",
                "use 1 or more",
            ),
            ("spec.outlierDetection.maxEjectionPercent", "use 0 to 100"),
            ("spec.rateLimit.requestsPerSecond", "use 1 or more"),
            ("spec.faultInjection.delay.percent", "use 0 to 100"),
            ("spec.faultInjection.abort.percent", "use 0 to 100"),
            (
                "spec.faultInjection.abort.status",
                "use an HTTP status from 200 to 599",
            ),
        ],
    );
    check(
        traffic(json!({ "loadBalancer": { "policy": "consistentHash" } })),
        &[("spec.loadBalancer.hashHeader", "needs hashHeader")],
    );
    check(
        traffic(json!({ "loadBalancer": { "policy": "roundRobin", "hashHeader": "x-user" } })),
        &[(
            "spec.loadBalancer.hashHeader",
            "applies only to policy consistentHash",
        )],
    );
    check(
        traffic(json!({ "loadBalancer": { "policy": "random" } })),
        &[(
            "spec.loadBalancer.policy",
            "use one of p2c, roundRobin, consistentHash",
        )],
    );
}

#[test]
fn authorization_policy_values() {
    check(
        authz(
            "ALLOW",
            json!([
                {},
                { "from": [{}], "to": [{}] },
                { "from": [{ "principals": ["spiffe://East.mesh/ns/a/sa/b", "web"],
                             "trustDomains": ["spiffe://east.mesh", "*"] }] },
                { "to": [{ "methods": ["GET", "BREW"],
                           "paths": ["/api/*", "/a*", "/a/*/b", "api", "/a//b", "/a/./b", "/a%20b", "/*/"] }] },
            ]),
        ),
        &[
            (
                "spec.rules[0]",
                "an empty rule allows everything; write from/to explicitly",
            ),
            (
                "spec.rules[1].from[0]",
                "must list principals or trustDomains",
            ),
            (
                "spec.rules[1].to[0]",
                "an empty operation matches every request",
            ),
            (
                "spec.rules[2].from[0].principals[0]",
                "write it in canonical form: spiffe://east.mesh/ns/a/sa/b",
            ),
            (
                "spec.rules[2].from[0].principals[1]",
                "write a full SPIFFE ID",
            ),
            (
                "spec.rules[2].from[0].trustDomains[0]",
                "bare lowercase name",
            ),
            ("spec.rules[3].to[0].methods[1]", "unknown method \"BREW\""),
            ("spec.rules[3].to[0].paths[1]", "not a trailing \"/*\""),
            ("spec.rules[3].to[0].paths[2]", "not a trailing \"/*\""),
            (
                "spec.rules[3].to[0].paths[3]",
                "path \"api\" must start with '/'",
            ),
            ("spec.rules[3].to[0].paths[4]", "write the canonical path"),
            ("spec.rules[3].to[0].paths[5]", "write the canonical path"),
            ("spec.rules[3].to[0].paths[6]", "write the canonical path"),
            ("spec.rules[3].to[0].paths[7]", "not a trailing \"/*\""),
        ],
    );
    check(
        authz("PERMIT", json!([])),
        &[(
            "spec.action",
            "unknown value \"PERMIT\"; use one of ALLOW, DENY",
        )],
    );
}

#[test]
fn failover_and_export_values() {
    check(
        doc("FailoverPolicy", json!({ "service": "API", "targets": [] })),
        &[
            ("spec.service", "service name \"API\" is invalid"),
            ("spec.targets", "at least one target"),
        ],
    );
    check(
        doc(
            "FailoverPolicy",
            json!({ "service": "api", "targets": [
                { "cluster": "west", "region": "eu" }, {}, { "zone": "eu-1a" }, { "cluster": "West" },
                { "region": "eu", "zone": "EU_1" }, { "cluster": "north" }, { "cluster": "north" },
            ]}),
        ),
        &[
            ("spec.targets[0]", "not both"),
            ("spec.targets[1]", "needs a cluster"),
            ("spec.targets[2]", "needs a cluster"),
            ("spec.targets[2].zone", "zone needs region"),
            (
                "spec.targets[3].cluster",
                "cluster name \"West\" is invalid",
            ),
            ("spec.targets[4].zone", "zone \"EU_1\""),
            ("spec.targets[6]", "listed twice"),
        ],
    );
    check(
        doc("ServiceExport", json!({ "service": "api", "peers": [] })),
        &[("spec.peers", "at least one peer")],
    );
    check(
        doc(
            "ServiceExport",
            json!({ "service": "api", "peers": ["west", "West", "west", "*"] }),
        ),
        &[
            ("spec.peers[1]", "cluster name \"West\" is invalid"),
            ("spec.peers[2]", "listed twice"),
            ("spec.peers[3]", "cluster name \"*\" is invalid"),
        ],
    );
}

#[test]
fn batch_reports_every_document_and_refuses_duplicates() {
    let good = route(json!([backend("a", 1)]));
    let bad = route(json!([backend("a", 0)]));
    let mut other_ns = good.clone();
    other_ns["metadata"]["namespace"] = json!("default");
    let docs = [good.clone(), bad, good.clone(), other_ns, good];
    let res: Vec<Resource> = docs.iter().map(|d| parse_resource(0, d).unwrap()).collect();
    let problems = validate_batch(&res).unwrap_err();
    let got: Vec<(usize, &str)> = problems
        .iter()
        .map(|p| (p.document, p.field.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "spec.rules[0].backendRefs"),
            (1, "metadata.name"),
            (2, "metadata.name"),
            (4, "metadata.name"),
        ]
    );
    assert!(
        problems[1]
            .message
            .contains("HTTPRoute shop/web is also defined by an earlier document (index 0)")
    );
    let ok = validate_batch(&res[3..4]).unwrap();
    assert_eq!(ok.len(), 1);
}

#[test]
fn field_paths_quote_keys_that_are_not_identifiers() {
    assert_eq!(field_key("", "spec"), "spec");
    assert_eq!(field_key("spec", "parentRefs"), "spec.parentRefs");
    assert_eq!(
        field_key("metadata.labels", "app.io/x"),
        r#"metadata.labels["app.io/x"]"#
    );
    assert_eq!(field_index("spec.rules", 3), "spec.rules[3]");
}

#[test]
fn durations() {
    let ok = [
        ("250ms", Duration::from_millis(250)),
        ("5s", Duration::from_secs(5)),
        ("1m", Duration::from_secs(60)),
        ("1h", Duration::from_secs(3600)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.1s", Duration::from_millis(100)),
        ("1m30s", Duration::from_secs(90)),
        ("0s", Duration::ZERO),
    ];
    for (s, want) in ok {
        assert_eq!(parse_duration(s), Ok(want), "{s}");
    }
    let bad = [
        ("", "empty"),
        ("5", "no unit"),
        ("-1s", "negative"),
        ("5x", "unknown unit \"x\""),
        ("s", "must start with a number"),
        ("1.s", "malformed"),
        (".5s", "malformed"),
        ("1.2.3s", "malformed"),
        ("1.0000000001s", "decimal places"),
        ("99999999999h", "too large"),
        ("5124096h", "too large"),
        ("99999999999999999999999999999999999999999s", "too large"),
        ("5 s", "unknown unit"),
    ];
    for (s, why) in bad {
        let err = parse_duration(s).unwrap_err();
        assert!(err.contains(why), "{s:?}: {err}");
    }
}
