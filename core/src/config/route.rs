//! Value checks of an `HTTPRoute` spec (Gateway API names, GAMMA `parentRefs` to a Service).
//!
//! It checks each rule on its own; whether rules of different routes overlap is a question for
//! the route table, not for validation.

use mesh_proto::resource::{BackendRef, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, PathMatch};

use super::common::{
    bound, canonical_path, header_matches, method, non_empty, positive_duration, service_name,
    service_ref,
};
use super::{Report, field_index, field_key};

/// Largest `backendRefs[].weight`.
pub(super) const MAX_WEIGHT: u32 = 1_000_000;

const MAX_RULES: usize = 128;
const MAX_MATCHES: usize = 64;
const MAX_BACKENDS: usize = 64;
const MAX_PARENTS: usize = 16;

pub(super) fn check(report: &mut Report, spec: &HttpRouteSpec) {
    let at = "spec.parentRefs";
    if spec.parent_refs.is_empty() {
        report.add(
            at,
            "at least one parentRef is required; name the Service this route attaches to",
        );
    }
    bound(
        report,
        at,
        spec.parent_refs.len(),
        MAX_PARENTS,
        "parentRefs",
    );
    for (i, parent) in spec.parent_refs.iter().enumerate() {
        service_ref(report, &field_index(at, i), parent);
    }
    non_empty(report, "spec.rules", spec.rules.len(), "rule");
    bound(report, "spec.rules", spec.rules.len(), MAX_RULES, "rules");
    for (i, rule) in spec.rules.iter().enumerate() {
        check_rule(report, &field_index("spec.rules", i), rule);
    }
}

fn check_rule(report: &mut Report, at: &str, rule: &HttpRouteRule) {
    let matches_at = field_key(at, "matches");
    bound(
        report,
        &matches_at,
        rule.matches.len(),
        MAX_MATCHES,
        "matches",
    );
    for (i, m) in rule.matches.iter().enumerate() {
        check_match(report, &field_index(&matches_at, i), m);
    }
    let backends_at = field_key(at, "backendRefs");
    non_empty(report, &backends_at, rule.backend_refs.len(), "backendRef");
    bound(
        report,
        &backends_at,
        rule.backend_refs.len(),
        MAX_BACKENDS,
        "backendRefs",
    );
    for (i, backend) in rule.backend_refs.iter().enumerate() {
        check_backend(report, &field_index(&backends_at, i), backend);
    }
    if !rule.backend_refs.is_empty() && rule.backend_refs.iter().all(|b| b.weight == 0) {
        report.add(
            backends_at,
            "every backendRef has weight 0, so this rule can send traffic nowhere; give at least \
             one a weight above 0",
        );
    }
    if let Some(request) = rule.timeouts.as_ref().and_then(|t| t.request.as_deref()) {
        positive_duration(report, &format!("{at}.timeouts.request"), request);
    }
}

fn check_match(report: &mut Report, at: &str, m: &HttpRouteMatch) {
    if let Some(path) = &m.path {
        check_path(report, &field_key(at, "path"), path);
    }
    header_matches(report, &field_key(at, "headers"), &m.headers);
    if let Some(m) = &m.method {
        method(report, &field_key(at, "method"), m);
    }
}

fn check_path(report: &mut Report, at: &str, path: &PathMatch) {
    let at = field_key(at, "value");
    if let Err(why) = canonical_path(&path.value) {
        report.add(at, why);
    } else if path.value.contains('*') {
        report.add(
            at,
            format!(
                "path {:?} contains '*', which routes match literally; use type: PathPrefix \
                 with the part before '*'",
                path.value
            ),
        );
    }
}

fn check_backend(report: &mut Report, at: &str, backend: &BackendRef) {
    service_name(report, &field_key(at, "name"), &backend.name);
    if backend.port == Some(0) {
        report.add(field_key(at, "port"), "port 0 is invalid; use 1 to 65535");
    }
    if backend.weight > MAX_WEIGHT {
        report.add(
            field_key(at, "weight"),
            format!(
                "weight {} is out of range; use 0 to {MAX_WEIGHT}",
                backend.weight
            ),
        );
    }
}
