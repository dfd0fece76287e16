//! HTTP plumbing both proxy directions share: the response body type, locally generated
//! answers with Envoy-style response flags, hop-by-hop header removal, W3C `traceparent` and
//! `x-request-id` stamping, and the access log line.
//!
//! None of this decides whether or where a request goes; `inbound` and `outbound` ask the
//! mesh-core authorizer and balancer for that.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use ring::rand::{SecureRandom, SystemRandom};

/// The body of every response a sidecar returns: streamed from the other side, or local.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Header naming why a sidecar answered itself (`UF`, `UT`, `RBAC`, ...).
pub(crate) const RESPONSE_FLAGS: &str = "x-meshfed-response-flags";
/// Header carrying the verified SPIFFE ID of the calling workload to the local app.
pub(crate) const PEER_IDENTITY: &str = "x-meshfed-peer-identity";
const TRACEPARENT: &str = "traceparent";
const REQUEST_ID: &str = "x-request-id";

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// A response the sidecar makes itself, with a one-line text body and its response flags.
pub(crate) fn local_reply(
    status: StatusCode,
    flags: &'static str,
    body: String,
) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(body + "\n"))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        HeaderName::from_static(RESPONSE_FLAGS),
        HeaderValue::from_static(flags),
    );
    r
}

/// Remove hop-by-hop headers, including those the `connection` header names. Hyper frames the
/// body again on the next hop, so `transfer-encoding` goes too.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Keep a well-formed W3C `traceparent` as it is; replace a missing or malformed one with a new
/// trace. Set `x-request-id` if absent. Ids are random (ring's system RNG).
pub(crate) fn stamp_trace_headers(headers: &mut HeaderMap, rng: &SystemRandom) {
    let valid = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_traceparent);
    if !valid {
        let mut ids = [0u8; 24];
        if rng.fill(&mut ids).is_ok() {
            let tp = format!("00-{}-{}-01", hex(&ids[..16]), hex(&ids[16..]));
            if let Ok(v) = HeaderValue::from_str(&tp) {
                headers.insert(TRACEPARENT, v);
            }
        }
    }
    if !headers.contains_key(REQUEST_ID) {
        let mut id = [0u8; 16];
        if rng.fill(&mut id).is_ok() {
            // UUID version 4, variant 1.
            id[6] = (id[6] & 0x0f) | 0x40;
            id[8] = (id[8] & 0x3f) | 0x80;
            let h = hex(&id);
            let uuid = format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            );
            if let Ok(v) = HeaderValue::from_str(&uuid) {
                headers.insert(REQUEST_ID, v);
            }
        }
    }
}

/// `version-traceid-parentid-flags`, lower-case hex, ids not all zero, version not `ff`.
fn is_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex_of = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex_of(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex_of(trace, 32)
                && trace.bytes().any(|b| b != b'0')
                && hex_of(parent, 16)
                && parent.bytes().any(|b| b != b'0')
                && hex_of(flags, 2)
        }
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One access log line, Envoy-like:
/// `inbound "GET /hello" 200 - 3ms peer=spiffe://.. dst=api upstream=127.0.0.1:8080`.
pub(crate) struct AccessLog<'a> {
    pub(crate) direction: &'static str,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: StatusCode,
    pub(crate) flags: &'a str,
    pub(crate) duration: Duration,
    pub(crate) peer: &'a str,
    pub(crate) service: &'a str,
    pub(crate) upstream: Option<SocketAddr>,
}

impl AccessLog<'_> {
    pub(crate) fn emit(&self) {
        let upstream = self
            .upstream
            .map_or_else(|| "-".to_owned(), |a| a.to_string());
        tracing::info!(
            target: "meshfed::access",
            "{} \"{} {}\" {} {} {}ms peer={} service={} upstream={}",
            self.direction,
            self.method,
            self.path.chars().take(256).collect::<String>(),
            self.status.as_u16(),
            self.flags,
            self.duration.as_millis(),
            self.peer,
            self.service,
            upstream,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_kept_when_valid_and_made_otherwise() {
        let rng = SystemRandom::new();
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(good));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        stamp_trace_headers(&mut h, &rng);
        assert_eq!(h[TRACEPARENT], good);
        assert_eq!(h[REQUEST_ID], "abc");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, HeaderValue::from_static(bad));
            stamp_trace_headers(&mut h, &rng);
            let made = h[TRACEPARENT].to_str().unwrap();
            assert!(is_traceparent(made), "{made}");
            assert_eq!(h[REQUEST_ID].len(), 36);
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
