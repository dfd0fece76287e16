//! Config validation: the one function (DESIGN §8) that `meshctl apply`, the API server and the
//! dashboard share to turn a user-written [`Resource`] into a typed, checked [`ValidResource`].
//!
//! Validation reports every problem it finds, each with a dotted field path spelled the way the
//! user wrote it (`spec.rules[0].backendRefs[1].weight`), never only the first one:
//!
//! ```text
//!  Resource ─► apiVersion, kind, metadata ─► decode spec (typed) ─► value checks ─► ValidResource
//!                   │                           │ wrong type,           │ ranges, ids,
//!                   │                           │ unknown/missing field │ paths, durations
//!                   └───────────────────────────┴───────────────────────┴─► Vec<FieldProblem>
//! ```
//!
//! Decoding is lenient (see `decode`): a mistyped field is reported and replaced by a
//! placeholder so decoding goes on, and value checks on placeholders are dropped.
//!
//! This module does no I/O and knows nothing of YAML or line numbers: readers such as meshctl map
//! field paths back to source locations, using [`field_key`] and [`field_index`] to spell paths
//! the same way. It does not check references between resources (a route naming a service no
//! one runs); those depend on the store, not on one document.

use std::collections::BTreeMap;

use mesh_proto::api::FieldProblem;
use mesh_proto::resource::{
    API_VERSION, AuthorizationPolicySpec, FailoverPolicySpec, HttpRouteSpec, Kind, Metadata,
    Resource, ResourceKey, ServiceExportSpec, TrafficPolicySpec, WorkloadEndpointSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod authz;
mod common;
mod decode;
mod duration;
mod endpoint;
mod federation;
mod route;
mod traffic;

pub use duration::parse_duration;
pub use endpoint::locality_problems;

/// Most labels one resource may carry.
pub const MAX_LABELS: usize = 64;

/// A typed, checked spec.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per document and matched by value; boxing would only add indirection"
)]
pub enum Spec {
    HttpRoute(HttpRouteSpec),
    TrafficPolicy(TrafficPolicySpec),
    AuthorizationPolicy(AuthorizationPolicySpec),
    FailoverPolicy(FailoverPolicySpec),
    ServiceExport(ServiceExportSpec),
    WorkloadEndpoint(WorkloadEndpointSpec),
}

/// A resource that passed [`validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidResource {
    pub key: ResourceKey,
    pub labels: BTreeMap<String, String>,
    pub spec: Spec,
    /// Canonical JSON of the typed spec (`serde_json::to_string` of the typed struct, defaults
    /// filled in), as kept in `StoredResource::spec_json`.
    pub spec_json: String,
}

/// Validate one document of a batch; `document` is its index, copied into every problem.
///
/// Returns every problem found, in document order (apiVersion, kind, metadata, spec).
pub fn validate(document: usize, res: &Resource) -> Result<ValidResource, Vec<FieldProblem>> {
    let mut report = Report::default();
    if res.api_version != API_VERSION {
        report.add(
            "apiVersion",
            format!(
                "unknown apiVersion {:?}; use {API_VERSION}",
                res.api_version
            ),
        );
    }
    let kind = check_kind(&mut report, &res.kind);
    if kind == Some(Kind::WorkloadEndpoint) {
        endpoint::check_metadata(&mut report, &res.metadata);
        check_labels(&mut report, &res.metadata);
    } else {
        check_metadata(&mut report, &res.metadata);
    }
    let spec = kind.and_then(|kind| typed_spec(&mut report, kind, &res.metadata, &res.spec));
    match (kind, spec) {
        (Some(kind), Some((spec, spec_json))) if report.is_empty() => Ok(ValidResource {
            key: ResourceKey {
                kind,
                namespace: res.metadata.namespace.clone(),
                name: res.metadata.name.clone(),
            },
            labels: res.metadata.labels.clone(),
            spec,
            spec_json,
        }),
        _ => Err(report.into_problems(document)),
    }
}

/// Validate a batch: every document, and that no two documents name the same resource
/// (kind, namespace, name). Returns all problems of all documents, or every resource.
pub fn validate_batch(res: &[Resource]) -> Result<Vec<ValidResource>, Vec<FieldProblem>> {
    let mut valid = Vec::with_capacity(res.len());
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(Kind, &str, &str), usize> = BTreeMap::new();
    for (document, r) in res.iter().enumerate() {
        match validate(document, r) {
            Ok(v) => valid.push(v),
            Err(p) => problems.extend(p),
        }
        let Some(kind) = exact_kind(&r.kind) else {
            continue;
        };
        let key = (
            kind,
            r.metadata.namespace.as_str(),
            r.metadata.name.as_str(),
        );
        if let Some(first) = seen.get(&key) {
            problems.push(FieldProblem {
                document,
                field: "metadata.name".to_owned(),
                message: format!(
                    "{kind} {}/{} is also defined by an earlier document (index {first}) of \
                     this batch; keep only one",
                    key.1, key.2
                ),
            });
        } else {
            seen.insert(key, document);
        }
    }
    if problems.is_empty() {
        Ok(valid)
    } else {
        Err(problems)
    }
}

/// Turn an untyped document (as read from YAML or JSON) into a [`Resource`], reporting every
/// structural problem: unknown top-level or metadata fields, missing `kind`/`metadata`/`spec`,
/// values of the wrong type. Readers call this before [`validate_batch`].
pub fn parse_resource(
    document: usize,
    value: &serde_json::Value,
) -> Result<Resource, Vec<FieldProblem>> {
    let decoded = decode::decode::<Resource>(value, "");
    let mut report = Report::default();
    for (field, message) in decoded.problems {
        report.add(field, message);
    }
    match decoded.value {
        Some(res) if report.is_empty() => Ok(res),
        _ => Err(report.into_problems(document)),
    }
}

/// The path of `key` inside the mapping at `parent`: `parent.key`, or `parent["some/key"]`
/// when the key is not a plain identifier. The root is the empty path.
pub fn field_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match (plain, parent.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{parent}.{key}"),
        (false, _) => {
            // A JSON string literal is unambiguous and always serializable.
            let quoted = serde_json::Value::from(key).to_string();
            format!("{parent}[{quoted}]")
        }
    }
}

/// The path of item `index` of the list at `parent`: `parent[index]`.
pub fn field_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Problems found in one document, as (field, message), in the order found.
#[derive(Debug, Default)]
struct Report {
    problems: Vec<(String, String)>,
}

impl Report {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push((field.into(), message.into()));
    }

    fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    fn into_problems(self, document: usize) -> Vec<FieldProblem> {
        self.problems
            .into_iter()
            .map(|(field, message)| FieldProblem {
                document,
                field,
                message,
            })
            .collect()
    }
}

fn exact_kind(kind: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.as_str() == kind)
}

fn check_kind(report: &mut Report, kind: &str) -> Option<Kind> {
    let found = exact_kind(kind);
    if found.is_none() {
        let expected: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        let hint = match Kind::parse_loose(kind) {
            Some(k) => format!(" (did you mean {k}?)"),
            None => String::new(),
        };
        report.add(
            "kind",
            format!(
                "unknown kind {kind:?}; expected one of {}{hint}",
                expected.join(", ")
            ),
        );
    }
    found
}

fn check_metadata(report: &mut Report, meta: &Metadata) {
    if let Err(why) = common::dns_label(&meta.name) {
        report.add("metadata.name", format!("name {:?} {why}", meta.name));
    }
    if let Err(why) = common::dns_label(&meta.namespace) {
        report.add(
            "metadata.namespace",
            format!("namespace {:?} {why}", meta.namespace),
        );
    }
    check_labels(report, meta);
}

fn check_labels(report: &mut Report, meta: &Metadata) {
    if meta.labels.len() > MAX_LABELS {
        report.add(
            "metadata.labels",
            format!(
                "{} labels is too many; use at most {MAX_LABELS}",
                meta.labels.len()
            ),
        );
    }
    for (key, value) in &meta.labels {
        let at = field_key("metadata.labels", key);
        if let Err(why) = common::label_key(key) {
            report.add(at.clone(), format!("label key {key:?} {why}"));
        }
        if let Err(why) = common::label_value(value) {
            report.add(at, format!("label value {value:?} {why}"));
        }
    }
}

/// Decode the spec of `kind` and check its values. Returns the spec and its canonical JSON when
/// the spec has no problem.
fn typed_spec(
    report: &mut Report,
    kind: Kind,
    meta: &Metadata,
    spec: &serde_json::Value,
) -> Option<(Spec, String)> {
    match kind {
        Kind::HTTPRoute => checked(report, spec, route::check, Spec::HttpRoute),
        Kind::TrafficPolicy => checked(report, spec, traffic::check, Spec::TrafficPolicy),
        Kind::AuthorizationPolicy => checked(report, spec, authz::check, Spec::AuthorizationPolicy),
        Kind::FailoverPolicy => checked(
            report,
            spec,
            federation::check_failover,
            Spec::FailoverPolicy,
        ),
        Kind::ServiceExport => checked(report, spec, federation::check_export, Spec::ServiceExport),
        Kind::WorkloadEndpoint => checked(
            report,
            spec,
            |r, s| endpoint::check(r, &meta.name, s),
            Spec::WorkloadEndpoint,
        ),
    }
}

fn checked<T: DeserializeOwned + Serialize>(
    report: &mut Report,
    spec: &serde_json::Value,
    check: impl Fn(&mut Report, &T),
    wrap: fn(T) -> Spec,
) -> Option<(Spec, String)> {
    let decoded = decode::decode::<T>(spec, "spec");
    let clean = decoded.problems.is_empty();
    for (field, message) in decoded.problems {
        report.add(field, message);
    }
    let typed = decoded.value?;
    let mut values = Report::default();
    check(&mut values, &typed);
    // A value check on a placeholder, or on a list holding one, restates a problem already
    // reported: drop it.
    for (field, message) in values.problems {
        if !decoded.poisoned.iter().any(|p| related(p, &field)) {
            report.add(field, message);
        }
    }
    if !clean || !report.is_empty() {
        return None;
    }
    match serde_json::to_string(&typed) {
        Ok(json) => Some((wrap(typed), json)),
        Err(e) => {
            report.add("spec", format!("spec cannot be stored as JSON: {e}"));
            None
        }
    }
}

/// Whether one path is the other, or contains it.
fn related(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long.strip_prefix(short)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests;
