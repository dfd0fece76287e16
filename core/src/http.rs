//! The facts of an HTTP request that routing and authorization decide on, computed once
//! (DESIGN §8: "a path is canonicalised exactly once, the same way for the policy check and for
//! routing; duplicate or ambiguous headers are refused").
//!
//! ```text
//!  shell (hyper)                         mesh-core
//!  method, target, headers as received ─► request_facts ─► RequestFacts ─► router, Authorizer
//!                                              │
//!                                              └─► Refusal (answer 400, forward nothing)
//! ```
//!
//! Every rule errs towards refusing what two servers could read differently; see [`Refusal`]
//! for the list and `path` for the path rules. The shell forwards the canonical path, so the
//! backend sees what the policy saw. This module does not route, authorize, read bodies or
//! parse absolute-form targets: the shell splits `http://host/path` into an authority and an
//! origin-form target before calling in.

pub mod detect;
mod headers;
mod path;

use std::fmt;

pub use headers::{HeaderValue, Headers};
pub use path::{CanonicalPath, DEFAULT_MAX_PATH_LEN, PathOptions, canonicalize_path};

pub(crate) use path::fold_case;

/// Longest method token accepted.
const MAX_METHOD_LEN: usize = 32;

/// Why a request was refused before any routing or policy decision. Each variant is one
/// distinct ambiguity; its message says what is wrong with the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "invalid percent-encoding at byte {at} of the path; '%' must be followed by two hex digits"
    )]
    InvalidPercentEncoding { at: usize },
    #[error("the path contains an encoded slash (%2F), which servers disagree on decoding")]
    EncodedSlash,
    #[error("the path contains an encoded backslash (%5C), which some servers read as '/'")]
    EncodedBackslash,
    #[error("the path contains a backslash, which some servers read as '/'")]
    Backslash,
    #[error("the path contains an encoded '%' (%25), which a server that decodes twice misreads")]
    EncodedPercent,
    #[error("the path contains a NUL byte (raw or %00)")]
    NulByte,
    #[error("the request target contains control character 0x{byte:02X} (raw or percent-encoded)")]
    ControlChar { byte: u8 },
    #[error(
        "the request target contains raw byte 0x{byte:02X}; percent-encode non-ASCII characters"
    )]
    NonAscii { byte: u8 },
    #[error("the path contains {ch:?}, which must be percent-encoded in a path")]
    InvalidChar { ch: char },
    #[error("the path's percent-encoded bytes are not valid UTF-8 (e.g. an overlong encoding)")]
    InvalidUtf8,
    #[error(
        "the path contains ';' (raw or %3B); path parameters are refused because servers \
         disagree on where they end"
    )]
    PathParameter,
    #[error("a path segment begins or ends with an encoded space (%20), which some servers trim")]
    SegmentEdgeWhitespace,
    #[error("the request target must be an absolute path starting with '/' (origin-form)")]
    NotAbsolute,
    #[error("the path is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("the path's '..' segments climb above '/'")]
    DotSegmentEscapesRoot,
    #[error("the request target contains '#'; clients must not send a fragment")]
    Fragment,
    #[error("method {method:?} is not an upper-case token of at most 32 characters")]
    InvalidMethod { method: String },
    #[error("header name {name:?} is not a valid token")]
    HeaderNameInvalid { name: String },
    #[error("header {name:?} appears more than once; send it once")]
    DuplicateHeader { name: String },
    #[error("header {name:?} has an invalid value (a control character, or not valid text)")]
    HeaderValueInvalid { name: String },
    #[error(
        "the request carries both content-length and transfer-encoding, or two different \
         content-lengths"
    )]
    AmbiguousLength,
    #[error("host and :authority name different authorities")]
    AmbiguousAuthority,
}

/// A request method. Methods are case-sensitive (RFC 9110 §9.1); one that is not an upper-case
/// token is refused rather than kept, because some servers upper-case methods themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    /// Any other upper-case token, e.g. `PROPFIND`.
    Other(String),
}

/// The facts of an HTTP request that routing and authorization decide on, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub method: Method,
    pub path: CanonicalPath,
    pub headers: Headers,
    /// From `:authority` or `host`, lower-cased.
    pub authority: Option<String>,
}

impl Method {
    pub fn parse(method: &str) -> Result<Self, Refusal> {
        let known = match method {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "CONNECT" => Self::Connect,
            "OPTIONS" => Self::Options,
            "TRACE" => Self::Trace,
            "PATCH" => Self::Patch,
            other => {
                let tchar = |b: u8| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
                };
                if other.is_empty() || other.len() > MAX_METHOD_LEN || !other.bytes().all(tchar) {
                    return Err(Refusal::InvalidMethod {
                        method: other.escape_debug().take(MAX_METHOD_LEN).collect(),
                    });
                }
                Self::Other(other.to_owned())
            }
        };
        Ok(known)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
            Self::Other(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Canonicalise a request once. `headers` are as received, in order; `policy_headers` are the
/// header names the service's policies and routes match on (`Authorizer::header_names`), whose
/// duplicates are refused. Returns the first refusal found: method, then target, then headers.
pub fn request_facts(
    method: &str,
    raw_target: &str,
    headers: &[(String, Vec<u8>)],
    policy_headers: &[String],
    opts: PathOptions,
) -> Result<RequestFacts, Refusal> {
    let method = Method::parse(method)?;
    let path = canonicalize_path(raw_target, opts)?;
    let headers = headers::collect(headers, policy_headers)?;
    let authority = headers::authority(&headers)?;
    Ok(RequestFacts {
        method,
        path,
        headers,
        authority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<RequestFacts, Refusal> {
        let headers: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect();
        request_facts(method, target, &headers, &[], PathOptions::default())
    }

    #[test]
    fn methods() {
        for (input, expected) in [
            ("GET", Ok(Method::Get)),
            ("PATCH", Ok(Method::Patch)),
            ("PROPFIND", Ok(Method::Other("PROPFIND".to_owned()))),
            ("M-SEARCH", Ok(Method::Other("M-SEARCH".to_owned()))),
            (
                "get",
                Err(Refusal::InvalidMethod {
                    method: "get".to_owned(),
                }),
            ),
            (
                "",
                Err(Refusal::InvalidMethod {
                    method: String::new(),
                }),
            ),
            (
                "GE T",
                Err(Refusal::InvalidMethod {
                    method: "GE T".to_owned(),
                }),
            ),
        ] {
            assert_eq!(Method::parse(input), expected, "{input:?}");
        }
        assert_eq!(Method::Other("X".to_owned()).to_string(), "X");
        assert!(Method::parse(&"A".repeat(MAX_METHOD_LEN + 1)).is_err());
    }

    #[test]
    fn facts_are_computed_once_for_all_parts() {
        let f = facts("DELETE", "//api/./v1/../v2?x=1", &[("Host", "API.east")]).unwrap();
        assert_eq!(f.method, Method::Delete);
        assert_eq!(f.path.as_str(), "/api/v2");
        assert_eq!(f.authority.as_deref(), Some("api.east"));
        assert_eq!(f.headers.get("host"), HeaderValue::One("API.east"));
    }

    #[test]
    fn first_refusal_wins_in_order() {
        assert!(matches!(
            facts("get", "%2F", &[("host", "a"), ("host", "b")]),
            Err(Refusal::InvalidMethod { .. })
        ));
        assert_eq!(
            facts("GET", "%2F", &[("host", "a"), ("host", "b")]),
            Err(Refusal::EncodedSlash)
        );
        assert_eq!(
            facts("GET", "/", &[("host", "a"), ("host", "b")]),
            Err(Refusal::DuplicateHeader {
                name: "host".to_owned()
            })
        );
    }

    #[test]
    fn refusal_messages_are_lowercase_sentences() {
        for r in [
            Refusal::EncodedSlash,
            Refusal::TooLong { len: 9, max: 8 },
            Refusal::DuplicateHeader {
                name: "host".to_owned(),
            },
            Refusal::AmbiguousLength,
        ] {
            let m = r.to_string();
            assert!(m.starts_with(|c: char| c.is_lowercase()), "{m}");
            assert!(!m.ends_with('.'), "{m}");
        }
    }
}
