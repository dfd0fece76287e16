//! Value checks shared by several kinds: names, service references, HTTP methods, header
//! matches, request paths, durations and list bounds.
//!
//! Each check either returns why a value is wrong (for callers that phrase the message) or adds
//! a problem to a [`Report`] at the path it is given. None of them decodes anything.

use std::collections::BTreeMap;

use mesh_proto::resource::{HeaderMatch, ServiceRef};
use mesh_proto::{ClusterName, ServiceName};

use super::{Report, field_index, field_key, parse_duration};
use crate::http::{PathOptions, canonicalize_path};

/// The HTTP methods a route or policy may match.
pub(super) const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Longest header name or request path a match may name.
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 4096;
const MAX_PATH: usize = 1024;

/// A DNS-label-like name: 1 to 63 of `[a-z0-9-]`, not starting or ending with `-`.
pub(super) fn dns_label(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 63 {
        return Err("must be 1 to 63 characters long");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may contain only lowercase letters, digits and '-'; rename it");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err("must not start or end with '-'; rename it");
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63 of
/// `[A-Za-z0-9._-]` that starts and ends alphanumeric (the Kubernetes rule).
pub(super) fn label_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| dns_label(part).is_ok());
        if !ok {
            return Err(
                "has an invalid prefix; write a lowercase DNS name before '/', \
                        e.g. example.com/tier",
            );
        }
    }
    if name.is_empty() {
        return Err("has an empty name; write e.g. app or example.com/app");
    }
    label_value(name)
}

/// A label value: empty, or up to 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
pub(super) fn label_value(value: &str) -> Result<(), &'static str> {
    if value.len() > 63 {
        return Err("is longer than 63 characters; shorten it");
    }
    let inner = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let edge = |b: Option<&u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    if !value.bytes().all(inner)
        || !edge(value.as_bytes().first())
        || !edge(value.as_bytes().last())
    {
        return Err(
            "may contain only letters, digits, '-', '_' and '.', and must start and end \
                    with a letter or digit",
        );
    }
    Ok(())
}

pub(super) fn service_name(report: &mut Report, at: &str, name: &str) {
    if let Err(e) = ServiceName::new(name) {
        report.add(at, format!("{e}; name a mesh service, e.g. api"));
    }
}

pub(super) fn cluster_name(report: &mut Report, at: &str, name: &str) {
    if let Err(e) = ClusterName::new(name) {
        report.add(at, format!("{e}; name a peer cluster, e.g. west"));
    }
}

/// A `targetRef` or `parentRef`: it must name a Service.
pub(super) fn service_ref(report: &mut Report, at: &str, r: &ServiceRef) {
    if r.kind != "Service" {
        report.add(
            field_key(at, "kind"),
            format!(
                "kind {:?} cannot be referenced here; refer to a Service (kind: Service)",
                r.kind
            ),
        );
    }
    service_name(report, &field_key(at, "name"), &r.name);
}

pub(super) fn method(report: &mut Report, at: &str, method: &str) {
    if METHODS.contains(&method) {
        return;
    }
    let upper = method.to_ascii_uppercase();
    let message = if METHODS.contains(&upper.as_str()) {
        format!("method {method:?} must be upper case; write {upper}")
    } else {
        format!(
            "unknown method {method:?}; use one of {}",
            METHODS.join(", ")
        )
    };
    report.add(at, message);
}

/// Header matches of one route match or policy operation. The same header named twice (in any
/// case) is ambiguous and refused (DESIGN §8).
pub(super) fn header_matches(report: &mut Report, at: &str, headers: &[HeaderMatch]) {
    bound(report, at, headers.len(), 32, "header matches");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        let at = field_index(at, i);
        let name_at = field_key(&at, "name");
        if let Err(why) = header_name(&h.name) {
            report.add(name_at.clone(), format!("header name {:?} {why}", h.name));
        }
        if let Some(first) = seen.insert(h.name.to_ascii_lowercase(), i) {
            report.add(
                name_at,
                format!(
                    "header {:?} is already matched by item {first}; a request carries one value \
                     per header, so merge them into one match",
                    h.name
                ),
            );
        }
        if let Err(why) = header_value(&h.value) {
            report.add(
                field_key(&at, "value"),
                format!("header value {:?} {why}", h.value),
            );
        }
    }
}

/// An HTTP field name: a non-empty token (RFC 9110 §5.6.2).
pub(super) fn header_name(name: &str) -> Result<(), &'static str> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > MAX_HEADER_NAME {
        return Err("must be 1 to 256 characters long");
    }
    if !name.bytes().all(tchar) {
        return Err("is not a valid header name; use letters, digits and '-', e.g. x-user-id");
    }
    Ok(())
}

fn header_value(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_HEADER_VALUE {
        return Err("is longer than 4096 bytes; shorten it");
    }
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err("contains control characters; remove them");
    }
    if value.trim() != value {
        return Err("has spaces around it, which a request's value never has; remove them");
    }
    Ok(())
}

/// Why a request path is not canonical, if it is not. The proxy canonicalises request paths
/// once, the same way for routing and for policy (DESIGN §8), with
/// [`crate::http::canonicalize_path`]; a path is canonical when that function returns it
/// unchanged, so a rule written in any other form could never match. Config paths are also
/// written decoded (no `%`), without query or fragment. A trailing `/` is allowed.
pub(super) fn canonical_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    if path.len() > MAX_PATH {
        return Err(format!("path is longer than {MAX_PATH} bytes; shorten it"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '%' | '?' | '#') || c.is_control())
    {
        let what = match c {
            '%' => "percent-encoding",
            '?' => "a query",
            '#' => "a fragment",
            _ => "a control character",
        };
        return Err(format!(
            "path {path:?} contains {what}; write the canonical path (decoded, without query or \
             fragment)"
        ));
    }
    let opts = PathOptions {
        case_insensitive: false,
        max_len: MAX_PATH,
    };
    match canonicalize_path(path, opts) {
        Ok(canonical) if canonical.as_str() == path => Ok(()),
        Ok(canonical) => Err(format!(
            "path {path:?} is not canonical; write the canonical path {:?}",
            canonical.as_str()
        )),
        Err(refusal) => Err(format!(
            "path {path:?} is refused: {refusal}; write the canonical path"
        )),
    }
}

/// A duration field: it must parse and be above zero.
pub(super) fn positive_duration(report: &mut Report, at: &str, value: &str) {
    match parse_duration(value) {
        Ok(d) if d.is_zero() => {
            report.add(
                at,
                format!("duration {value:?} must be above zero, e.g. \"5s\""),
            );
        }
        Ok(_) => {}
        Err(why) => report.add(at, why),
    }
}

/// A list that must hold at least one item.
pub(super) fn non_empty(report: &mut Report, at: &str, len: usize, what: &str) {
    if len == 0 {
        report.add(at, format!("at least one {what} is required; add one"));
    }
}

/// A list with an upper bound, so no spec grows without limit.
pub(super) fn bound(report: &mut Report, at: &str, len: usize, max: usize, what: &str) {
    if len > max {
        report.add(at, format!("{len} {what} are too many; use at most {max}"));
    }
}

/// Cluster names that must be distinct, e.g. the peers of an export.
pub(super) fn distinct_clusters(report: &mut Report, at: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        cluster_name(report, &field_index(at, i), name);
        if names[..i].contains(name) {
            report.add(
                field_index(at, i),
                format!("{name:?} is listed twice; remove the duplicate"),
            );
        }
    }
}

/// The candidate closest to `input`, if it is close enough to be a likely typo.
pub(super) fn suggest<'c>(input: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let input = input.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&input, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
