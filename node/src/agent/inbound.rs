//! The inbound listener of one local service: STRICT mTLS (a client SVID of this trust domain
//! is mandatory), then per request canonicalise, authorize and forward to the local app.
//!
//! ```text
//!  TLS 1.3 accept (SpiffeClientVerifier, mandatory) ─► peer SpiffeId from the verified leaf
//!  request ─► request_facts ─Refusal─► 400
//!                  │
//!                  ▼
//!            Authz::decide(peer, facts) ─Deny─► 403 (names the reason)
//!                  │ Allow
//!                  ▼
//!  canonical path, x-meshfed-peer-identity = peer, traceparent / x-request-id ─► 127.0.0.1:<port>
//! ```
//!
//! The app sees exactly the path the policy saw. A client-supplied `x-meshfed-peer-identity`
//! never reaches the app. This module does not decide anything itself: refusals come from
//! `mesh_core::http`, verdicts from `mesh_core::authz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_core::authz::Verdict;
use mesh_core::http::{PathOptions, request_facts};
use mesh_core::identity;
use mesh_proto::{ServiceName, SpiffeId, TrustDomain};
use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Limits;
use super::metrics::{Hop, Metrics};
use super::pool::{ALPN_H2, Pool, SendError};
use super::proxy::{
    AccessLog, PEER_IDENTITY, ProxyBody, local_reply, stamp_trace_headers, strip_hop_by_hop,
};
use super::watch::Policies;

/// What the inbound listener of one service needs.
pub(crate) struct Inbound {
    pub(crate) service: ServiceName,
    pub(crate) trust_domain: TrustDomain,
    pub(crate) app: SocketAddr,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) policies: Arc<Policies>,
    pub(crate) rate_limits: Arc<super::ratelimit::RateLimits>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) app_pool: Arc<Pool>,
    pub(crate) limits: Limits,
    pub(crate) rng: SystemRandom,
}

/// Accept mTLS connections and serve them until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, inbound: Arc<Inbound>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(inbound.tls.clone());
    let slots = Arc::new(Semaphore::new(inbound.limits.max_connections));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "inbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, service = %inbound.service, "too many inbound connections; refusing");
            continue;
        };
        let (acceptor, inbound) = (acceptor.clone(), inbound.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let timeout = inbound.limits.handshake_timeout;
            let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    let why = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                        .and_then(identity::svid_error_of)
                        .map_or_else(|| e.to_string(), ToString::to_string);
                    tracing::info!(%remote, service = %inbound.service, error = %why, "inbound TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, service = %inbound.service, "inbound TLS handshake timed out");
                    return;
                }
            };
            // The verifier made a client certificate mandatory and verified it.
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| identity::spiffe_id_of(leaf.as_ref()).ok());
            let Some(peer) = peer else {
                tracing::warn!(%remote, "inbound connection without a usable client SVID; closing");
                return;
            };
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            if alpn.as_deref() == Some(super::tcp::ALPN_TCP) {
                super::tcp::inbound(&inbound, &peer, tls).await;
                return;
            }
            let svc = hyper::service::service_fn(move |req| {
                let (inbound, peer) = (inbound.clone(), peer.clone());
                async move { Ok::<_, Infallible>(handle(&inbound, &peer, req).await) }
            });
            let h2 = alpn.as_deref() == Some(ALPN_H2);
            let io = TokioIo::new(tls);
            let served = if h2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_header_list_size(super::MAX_HEADER_BYTES as u32)
                    .max_concurrent_streams(super::MAX_STREAMS_PER_CONNECTION)
                    .serve_connection(io, svc)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(super::HEADER_READ_TIMEOUT)
                    .max_buf_size(super::MAX_HEADER_BYTES)
                    .serve_connection(io, svc)
                    .await
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "inbound connection ended");
            }
        });
    }
}

async fn handle(inbound: &Inbound, peer: &SpiffeId, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let hop = Hop::inbound(peer, &inbound.service, &inbound.trust_domain);
    inbound.metrics.request(&hop);
    let method = req.method().as_str().to_owned();
    let raw_path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_owned());
    let (resp, flags, upstream) = decide_and_forward(inbound, peer, req).await;
    let status = resp.status();
    inbound.metrics.response(&hop, status, started.elapsed());
    AccessLog {
        direction: "inbound",
        method: &method,
        path: &raw_path,
        status,
        flags,
        duration: started.elapsed(),
        peer: &peer.to_string(),
        service: inbound.service.as_str(),
        upstream,
    }
    .emit();
    resp
}

async fn decide_and_forward(
    inbound: &Inbound,
    peer: &SpiffeId,
    mut req: Request<Incoming>,
) -> (Response<ProxyBody>, &'static str, Option<SocketAddr>) {
    let Some(authz) = inbound.policies.authz(&inbound.service) else {
        let r = local_reply(
            StatusCode::FORBIDDEN,
            "RBAC",
            "RBAC: access denied: no policy state".into(),
        );
        return (r, "RBAC", None);
    };
    let mut headers: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    // An absolute-form target names an authority too; let the core compare it with `host`.
    if let Some(a) = req.uri().authority() {
        headers.push((":authority".to_owned(), a.as_str().as_bytes().to_vec()));
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let facts = match request_facts(
        req.method().as_str(),
        &target,
        &headers,
        authz.header_names(),
        PathOptions::default(),
    ) {
        Ok(f) => f,
        Err(refusal) => {
            let r = local_reply(
                StatusCode::BAD_REQUEST,
                "DPE",
                format!("bad request: {refusal}"),
            );
            return (r, "DPE", None);
        }
    };
    if let Verdict::Deny { reason } = authz.decide(peer, &facts) {
        tracing::debug!(%peer, service = %inbound.service, %reason, "request denied");
        let r = local_reply(
            StatusCode::FORBIDDEN,
            "RBAC",
            format!("RBAC: access denied: {reason}"),
        );
        return (r, "RBAC", None);
    }
    if let Err(wait) = inbound.rate_limits.admit(&inbound.service, Instant::now()) {
        let mut r = local_reply(
            StatusCode::TOO_MANY_REQUESTS,
            "RL",
            format!("{} is over its local rate limit", inbound.service),
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return (r, "RL", None);
    }
    // Forward the canonical path, so the app sees what the policy saw.
    let query = target.split_once('?').map(|(_, q)| q);
    let path = match query {
        Some(q) => format!("{}?{q}", facts.path.as_str()),
        None => facts.path.as_str().to_owned(),
    };
    match Uri::try_from(path) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => {
            let r = local_reply(StatusCode::BAD_REQUEST, "DPE", format!("bad request: {e}"));
            return (r, "DPE", None);
        }
    }
    // The app is spoken to in HTTP/1.1, whatever the peer sidecar used.
    *req.version_mut() = http::Version::HTTP_11;
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    h.remove(PEER_IDENTITY);
    if let Ok(v) = HeaderValue::from_str(&peer.to_string()) {
        h.insert(HeaderName::from_static(PEER_IDENTITY), v);
    }
    stamp_trace_headers(h, &inbound.rng);
    forward(inbound, req).await
}

async fn forward(
    inbound: &Inbound,
    req: Request<Incoming>,
) -> (Response<ProxyBody>, &'static str, Option<SocketAddr>) {
    let app = inbound.app;
    let timeout = inbound.limits.request_timeout;
    match tokio::time::timeout(
        timeout,
        inbound.app_pool.send(app, req.map(BodyExt::boxed), None),
    )
    .await
    {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            (Response::from_parts(parts, body.boxed()), "-", Some(app))
        }
        Ok(Err(SendError::Connect { reason, .. })) => {
            let msg = format!(
                "local app of {} at {app} is unreachable: {reason}",
                inbound.service
            );
            tracing::warn!("{msg}");
            (
                local_reply(StatusCode::SERVICE_UNAVAILABLE, "UF", msg),
                "UF",
                Some(app),
            )
        }
        Ok(Err(SendError::Exchange { reason })) => {
            let msg = format!("local app of {} at {app} failed: {reason}", inbound.service);
            (
                local_reply(StatusCode::BAD_GATEWAY, "UC", msg),
                "UC",
                Some(app),
            )
        }
        Err(_) => {
            let msg = format!(
                "local app of {} did not answer within {timeout:?}",
                inbound.service
            );
            (
                local_reply(StatusCode::GATEWAY_TIMEOUT, "UT", msg),
                "UT",
                Some(app),
            )
        }
    }
}
