//! Request headers as routing and authorization see them: names lower-cased, values trimmed of
//! surrounding whitespace, and at most one value per security-relevant name (DESIGN §8:
//! "duplicate or ambiguous headers are refused").
//!
//! A header is security-relevant when it frames the request (`content-length`,
//! `transfer-encoding`), names its authority (`host`, `:authority`), carries identity
//! (`authorization`, `x-forwarded-for`, `x-forwarded-client-cert`, `x-meshfed-*`), or is named
//! by a policy or route (the caller's list). A duplicate of one is refused, because RBAC engines
//! have matched only the first of several values (Istio CVE-2026-26308). Any other header that
//! repeats is kept as [`HeaderValue::Repeated`], and one whose value is not UTF-8 as
//! [`HeaderValue::NotText`], so a matcher that does name it can fail closed.
//!
//! This module does not parse header values beyond `content-length` and the authority, and it
//! does not bound the header count: the HTTP codec in the shell does (hyper's limits).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::Refusal;

/// Headers whose duplicates are always refused, whatever the policies say.
const SECURITY_HEADERS: [&str; 7] = [
    "host",
    ":authority",
    "content-length",
    "transfer-encoding",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-client-cert",
];

/// Headers meshfed itself sets between sidecars; a client never gets to repeat them.
const MESH_HEADER_PREFIX: &str = "x-meshfed-";

/// Longest `content-length` accepted, in digits (fits a u64).
const MAX_LENGTH_DIGITS: usize = 19;

/// Lower-cased header names to their one value. Built by [`super::request_facts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    map: BTreeMap<String, Slot>,
}

/// What a request says about one header name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Absent,
    /// Sent once (or, for `cookie`, split and rejoined with `"; "` as RFC 9113 §8.2.3 says).
    One(&'a str),
    /// Sent more than once; never security-relevant, or the request would have been refused.
    Repeated,
    /// Sent with bytes that are not UTF-8; never security-relevant, likewise.
    NotText,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    One(String),
    Repeated,
    NotText,
}

impl Headers {
    /// The value of header `name`, matched case-insensitively.
    pub fn get(&self, name: &str) -> HeaderValue<'_> {
        match self.map.get(name.to_ascii_lowercase().as_str()) {
            None => HeaderValue::Absent,
            Some(Slot::One(v)) => HeaderValue::One(v),
            Some(Slot::Repeated) => HeaderValue::Repeated,
            Some(Slot::NotText) => HeaderValue::NotText,
        }
    }

    /// Lower-cased names present, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn one(&self, name: &str) -> Option<&str> {
        match self.map.get(name) {
            Some(Slot::One(v)) => Some(v),
            _ => None,
        }
    }
}

/// Collect headers as received, in order. `policy_headers` are the names policies and routes
/// match on; their duplicates are refused like those of [`SECURITY_HEADERS`].
pub(super) fn collect(
    raw: &[(String, Vec<u8>)],
    policy_headers: &[String],
) -> Result<Headers, Refusal> {
    let mut map = BTreeMap::new();
    for (name, value) in raw {
        let name = field_name(name)?;
        let value = field_value(&name, value)?;
        let relevant = is_relevant(&name, policy_headers);
        if relevant && value.is_none() {
            return Err(Refusal::HeaderValueInvalid { name });
        }
        if name == "content-length" && !value.as_deref().is_some_and(is_length) {
            return Err(Refusal::HeaderValueInvalid { name });
        }
        let slot = value.map_or(Slot::NotText, Slot::One);
        match map.entry(name) {
            Entry::Vacant(e) => {
                e.insert(slot);
            }
            Entry::Occupied(mut e) => {
                let merged = merge(e.key(), e.get(), slot, relevant)?;
                e.insert(merged);
            }
        }
    }
    let headers = Headers { map };
    if headers.one("content-length").is_some() && headers.one("transfer-encoding").is_some() {
        return Err(Refusal::AmbiguousLength);
    }
    Ok(headers)
}

/// The request's authority, from `:authority` or `host`, lower-cased; `None` when neither is
/// sent or it is empty. Both sent with different values is ambiguous and refused.
pub(super) fn authority(headers: &Headers) -> Result<Option<String>, Refusal> {
    let mut found: Option<String> = None;
    for name in [":authority", "host"] {
        let Some(value) = headers.one(name) else {
            continue;
        };
        let value = value.to_ascii_lowercase();
        let valid = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b));
        if !valid {
            return Err(Refusal::HeaderValueInvalid {
                name: name.to_owned(),
            });
        }
        match &found {
            Some(first) if *first != value => return Err(Refusal::AmbiguousAuthority),
            _ => found = Some(value),
        }
    }
    Ok(found.filter(|a| !a.is_empty()))
}

/// A second occurrence of a header: refused when relevant, else remembered as repeated.
/// `cookie` is the exception: HTTP/2 clients split it, and RFC 9113 §8.2.3 says to rejoin it.
fn merge(name: &str, first: &Slot, second: Slot, relevant: bool) -> Result<Slot, Refusal> {
    match (first, second) {
        (Slot::One(a), Slot::One(b)) if name == "content-length" && *a != b => {
            Err(Refusal::AmbiguousLength)
        }
        (Slot::One(a), Slot::One(b)) if name == "cookie" => Ok(Slot::One(format!("{a}; {b}"))),
        _ if relevant => Err(Refusal::DuplicateHeader {
            name: name.to_owned(),
        }),
        _ => Ok(Slot::Repeated),
    }
}

fn is_relevant(name: &str, policy_headers: &[String]) -> bool {
    SECURITY_HEADERS.contains(&name)
        || name.starts_with(MESH_HEADER_PREFIX)
        || policy_headers.iter().any(|p| p.eq_ignore_ascii_case(name))
}

fn is_length(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LENGTH_DIGITS
        && value.bytes().all(|b| b.is_ascii_digit())
}

/// A field name (RFC 9110 §5.1 token), or an HTTP/2 pseudo-header `:token`; lower-cased.
fn field_name(name: &str) -> Result<String, Refusal> {
    let token = name.strip_prefix(':').unwrap_or(name);
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if token.is_empty() || !token.bytes().all(tchar) {
        return Err(Refusal::HeaderNameInvalid {
            name: name.escape_debug().to_string(),
        });
    }
    Ok(name.to_ascii_lowercase())
}

/// A field value without surrounding whitespace. CR, LF, NUL and other control characters
/// (except tab) are refused (RFC 9110 §5.5); `None` means the bytes are not UTF-8.
fn field_value(name: &str, value: &[u8]) -> Result<Option<String>, Refusal> {
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Refusal::HeaderValueInvalid {
            name: name.to_owned(),
        });
    }
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    Ok(std::str::from_utf8(&value[start..end])
        .ok()
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers as a test writes them: name and raw value bytes.
    type Given<'a> = &'a [(&'a str, &'a [u8])];

    fn raw(headers: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
            .collect()
    }

    fn check(headers: &[(&str, &[u8])], expected: Result<&[(&str, HeaderValue<'_>)], Refusal>) {
        let got = collect(&raw(headers), &["x-role".to_owned()]);
        match (got, expected) {
            (Ok(got), Ok(expected)) => {
                for (name, value) in expected {
                    assert_eq!(got.get(name), *value, "{headers:?}: header {name}");
                }
            }
            (got, expected) => assert_eq!(got.map(|_| ()), expected.map(|_| ()), "{headers:?}"),
        }
    }

    #[test]
    fn accepted_headers() {
        use HeaderValue::*;
        let cases: &[(Given<'_>, &[(&str, HeaderValue<'_>)])] = &[
            (
                &[("Host", b"api")],
                &[("host", One("api")), ("HOST", One("api"))],
            ),
            (&[("x-role", b"  admin\t")], &[("x-role", One("admin"))]),
            (
                &[("accept", b"a"), ("Accept", b"b")],
                &[("accept", Repeated)],
            ),
            (&[("x-blob", b"\xff")], &[("x-blob", NotText)]),
            (
                &[("cookie", b"a=1"), ("cookie", b"b=2")],
                &[("cookie", One("a=1; b=2"))],
            ),
            (
                &[("content-length", b"12")],
                &[("content-length", One("12"))],
            ),
            (
                &[("x-empty", b"")],
                &[("x-empty", One("")), ("x-other", Absent)],
            ),
        ];
        for (headers, expected) in cases {
            check(headers, Ok(expected));
        }
    }

    #[test]
    fn refused_headers() {
        use Refusal::*;
        let dup = |name: &str| DuplicateHeader {
            name: name.to_owned(),
        };
        let invalid = |name: &str| HeaderValueInvalid {
            name: name.to_owned(),
        };
        let cases: &[(Given<'_>, Refusal)] = &[
            (&[("host", b"a"), ("Host", b"a")], dup("host")),
            (
                &[("authorization", b"x"), ("authorization", b"y")],
                dup("authorization"),
            ),
            (
                &[("x-forwarded-for", b"1"), ("x-forwarded-for", b"2")],
                dup("x-forwarded-for"),
            ),
            (
                &[("X-Meshfed-Peer", b"a"), ("x-meshfed-peer", b"b")],
                dup("x-meshfed-peer"),
            ),
            (&[("x-role", b"user"), ("X-Role", b"admin")], dup("x-role")),
            (
                &[("content-length", b"5"), ("content-length", b"5")],
                dup("content-length"),
            ),
            (
                &[("content-length", b"5"), ("content-length", b"6")],
                AmbiguousLength,
            ),
            (
                &[("content-length", b"5"), ("transfer-encoding", b"chunked")],
                AmbiguousLength,
            ),
            (&[("content-length", b"5, 5")], invalid("content-length")),
            (&[("content-length", b"-1")], invalid("content-length")),
            (&[("x-a", b"a\r\nx-b: c")], invalid("x-a")),
            (&[("x-a", b"a\nb")], invalid("x-a")),
            (&[("x-a", b"a\0")], invalid("x-a")),
            (&[("x-role", b"\xff")], invalid("x-role")),
            (
                &[("bad name", b"a")],
                HeaderNameInvalid {
                    name: "bad name".to_owned(),
                },
            ),
            (
                &[("", b"a")],
                HeaderNameInvalid {
                    name: String::new(),
                },
            ),
            (
                &[(":", b"a")],
                HeaderNameInvalid {
                    name: ":".to_owned(),
                },
            ),
        ];
        for (headers, expected) in cases {
            check(headers, Err(expected.clone()));
        }
    }

    #[test]
    fn authority_from_host_or_pseudo_header() {
        let authority_of =
            |headers: &[(&str, &[u8])]| collect(&raw(headers), &[]).and_then(|h| authority(&h));
        assert_eq!(authority_of(&[]), Ok(None));
        assert_eq!(authority_of(&[("host", b"")]), Ok(None));
        assert_eq!(
            authority_of(&[("Host", b"API:80")]),
            Ok(Some("api:80".to_owned()))
        );
        assert_eq!(
            authority_of(&[(":authority", b"api"), ("host", b"API")]),
            Ok(Some("api".to_owned()))
        );
        assert_eq!(
            authority_of(&[(":authority", b"api"), ("host", b"admin")]),
            Err(Refusal::AmbiguousAuthority)
        );
        assert_eq!(
            authority_of(&[("host", b"user@api")]),
            Err(Refusal::HeaderValueInvalid {
                name: "host".to_owned()
            })
        );
    }
}
