//! Value checks of an `AuthorizationPolicy` spec: principals are full SPIFFE IDs, trust domains
//! are bare names or `*`, and paths are canonical, optionally ending in `/*` for a prefix.
//!
//! Empty rules, sources and operations are refused where they would silently match everything:
//! a policy should say what it allows.

use mesh_proto::resource::AuthzSource;
use mesh_proto::resource::{AuthorizationPolicySpec, AuthzAction, AuthzOperation, AuthzRule};
use mesh_proto::{SpiffeId, TrustDomain};

use super::common::{bound, canonical_path, header_matches, method, service_ref};
use super::{Report, field_index, field_key};

const MAX_RULES: usize = 128;
const MAX_ITEMS: usize = 256;

pub(super) fn check(report: &mut Report, spec: &AuthorizationPolicySpec) {
    service_ref(report, "spec.targetRef", &spec.target_ref);
    bound(report, "spec.rules", spec.rules.len(), MAX_RULES, "rules");
    for (i, rule) in spec.rules.iter().enumerate() {
        check_rule(report, &field_index("spec.rules", i), spec.action, rule);
    }
}

fn check_rule(report: &mut Report, at: &str, action: AuthzAction, rule: &AuthzRule) {
    if action == AuthzAction::Allow && rule.from.is_empty() && rule.to.is_empty() {
        report.add(
            at,
            "an empty rule allows everything; write from/to explicitly",
        );
    }
    let from_at = field_key(at, "from");
    bound(report, &from_at, rule.from.len(), MAX_ITEMS, "sources");
    for (i, source) in rule.from.iter().enumerate() {
        check_source(report, &field_index(&from_at, i), source);
    }
    let to_at = field_key(at, "to");
    bound(report, &to_at, rule.to.len(), MAX_ITEMS, "operations");
    for (i, op) in rule.to.iter().enumerate() {
        check_operation(report, &field_index(&to_at, i), op);
    }
}

fn check_source(report: &mut Report, at: &str, source: &AuthzSource) {
    if source.principals.is_empty() && source.trust_domains.is_empty() {
        report.add(
            at,
            "a source must list principals or trustDomains; use trustDomains: [\"*\"] to mean \
             any federated workload",
        );
    }
    let principals_at = field_key(at, "principals");
    bound(
        report,
        &principals_at,
        source.principals.len(),
        MAX_ITEMS,
        "principals",
    );
    for (i, p) in source.principals.iter().enumerate() {
        let at = field_index(&principals_at, i);
        // `SpiffeId::parse` refuses non-canonical spellings (they could never match a peer).
        match SpiffeId::parse(p) {
            Ok(_) => {}
            Err(e) => report.add(
                at,
                format!("{e}; write a full SPIFFE ID, e.g. spiffe://east.mesh/ns/default/sa/web"),
            ),
        }
    }
    let domains_at = field_key(at, "trustDomains");
    bound(
        report,
        &domains_at,
        source.trust_domains.len(),
        MAX_ITEMS,
        "trustDomains",
    );
    for (i, td) in source.trust_domains.iter().enumerate() {
        if td != "*" && TrustDomain::new(td.as_str()).is_err() {
            report.add(
                field_index(&domains_at, i),
                format!(
                    "trust domain {td:?} is invalid; write a bare lowercase name such as \
                     east.mesh, or \"*\" for any"
                ),
            );
        }
    }
}

fn check_operation(report: &mut Report, at: &str, op: &AuthzOperation) {
    if op.methods.is_empty() && op.paths.is_empty() && op.headers.is_empty() {
        report.add(
            at,
            "an empty operation matches every request; list methods, paths or headers, or leave \
             out `to`",
        );
    }
    let methods_at = field_key(at, "methods");
    for (i, m) in op.methods.iter().enumerate() {
        method(report, &field_index(&methods_at, i), m);
    }
    let paths_at = field_key(at, "paths");
    bound(report, &paths_at, op.paths.len(), MAX_ITEMS, "paths");
    for (i, p) in op.paths.iter().enumerate() {
        if let Err(why) = policy_path(p) {
            report.add(field_index(&paths_at, i), why);
        }
    }
    header_matches(report, &field_key(at, "headers"), &op.headers);
}

/// An exact canonical path, or a prefix written as a canonical path followed by `/*`.
fn policy_path(path: &str) -> Result<(), String> {
    let exact = match path.strip_suffix("/*") {
        Some("") => "/",
        Some(prefix) => prefix,
        None => path,
    };
    if exact.contains('*') {
        return Err(format!(
            "path {path:?} has a '*' that is not a trailing \"/*\"; write an exact path or a \
             prefix such as \"/api/*\""
        ));
    }
    canonical_path(exact).map_err(|why| why.replace(&format!("{exact:?}"), &format!("{path:?}")))
}
