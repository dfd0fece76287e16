//! The outbound listener of one declared upstream: plain HTTP from the local app on loopback,
//! routed, balanced and retried by the core [`Upstream`], and sent over mTLS (HTTP/2 when the
//! peer offers it) to a sidecar of the chosen backend, presenting this service's SVID and
//! accepting only the backend's workload identity.
//!
//! ```text
//!  app ─► 127.0.0.1:<listen> ─► request_facts (refuse ambiguity: 400 DPE)
//!      ─► Upstream::start ─Reply─► local answer (404 NR, FI, 503 UO / UH)
//!            │ Forward(InFlight { backend, endpoint, timeouts, delay })
//!            ▼
//!      pool of backend (pins spiffe://<td>/ns/default/sa/<backend>) ─► send
//!      outcome ─► Upstream::handle_outcome ─► Done | Retry { backoff } | GiveUp
//!  snapshot (routes, TrafficPolicies, endpoints) ─► Upstream::handle_config / handle_endpoints
//! ```
//!
//! The first bytes pick the protocol (`mesh_core::http::detect`): HTTP/1.1 and h2c are
//! handled here at L7; anything else goes to `tcp` as opaque bytes.
//!
//! Every decision is the core's (STYLE "compute a plan, then act"); this file turns I/O into
//! its inputs. Bodies up to [`MAX_REPLAY_BYTES`] are buffered so a retry can resend them;
//! larger or unbounded bodies stream through and are retried only when never sent. Endpoints
//! of each backend come from `Discovery` (the services file's static list and the catalog)
//! with their locality tiers; the core keeps traffic in the nearest tier that has an
//! endpoint not ejected.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderName;
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_core::balance::EndpointId;
use mesh_core::endpoints::{Endpoints, Tier};
use mesh_core::http::detect::{Detected, H2_PREFACE, detect};
use mesh_core::http::{PathOptions, request_facts};
use mesh_core::identity::{
    PeerPolicy, SpiffeServerVerifier, SvidSlot, TrustBundles, client_config_with_slot,
};
use mesh_core::resilience::AttemptOutcome;
use mesh_core::rng::SplitMix64;
use mesh_core::upstream::{GiveUp, InFlight, Next, Start, Upstream};
use mesh_proto::resource::{HttpRouteSpec, Kind, TrafficPolicySpec};
use mesh_proto::{Locality, ServiceName, SpiffeId, TrustDomain};
use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Limits;
use super::config::Protocol;
use super::metrics::{Hop, Metrics};
use super::pool::{ALPN_H1, ALPN_H2, Connector, Pool, PoolLimits, SendError};
use super::proxy::{
    AccessLog, PEER_IDENTITY, ProxyBody, local_reply, stamp_trace_headers, strip_hop_by_hop,
};
use super::watch::Snapshot;

/// Largest request body kept for resending on retry (Linkerd buffers 64 KiB).
pub(crate) const MAX_REPLAY_BYTES: u64 = 64 * 1024;
/// How long a new connection may stay silent before it is taken for a server-first protocol.
const DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The namespace of every meshfed workload today.
const NAMESPACE: &str = "default";

/// What the outbound listener of one upstream needs.
pub(crate) struct Outbound {
    /// The local service calling out.
    pub(crate) service: ServiceName,
    pub(crate) upstream: ServiceName,
    /// `tcp` skips detection; `http` never falls back to opaque TCP.
    pub(crate) protocol: Protocol,
    pub(crate) trust_domain: TrustDomain,
    /// Where endpoints come from: the services file's static ones and the catalog.
    pub(crate) discovery: Arc<super::discovery::Discovery>,
    /// The calling service's locality, which ranks endpoints.
    pub(crate) locality: Locality,
    pub(crate) state: Mutex<Upstream>,
    pub(crate) rng: Mutex<SplitMix64>,
    /// One pool per backend service, each pinning that service's identity.
    pub(crate) pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// TLS configs of opaque TCP, per backend.
    pub(crate) tcp_configs: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    pub(crate) bundles: Arc<TrustBundles>,
    pub(crate) svid: Arc<SvidSlot>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: Limits,
    pub(crate) system_rng: SystemRandom,
}

/// Gives the breaker permit back however the request ends (answered, timed out, or dropped
/// because the app went away).
struct Finish<'a> {
    outbound: &'a Outbound,
    req: InFlight,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.outbound.with_state(|s| s.finish(&mut self.req));
    }
}

/// A request body as attempts need it.
enum Payload {
    /// Buffered: every attempt gets a copy.
    Replay(Parts, Bytes),
    /// Streamed: one attempt, or the request handed back unsent.
    Stream(Option<Request<ProxyBody>>),
}

impl Payload {
    fn next(&mut self) -> Option<Request<ProxyBody>> {
        match self {
            Payload::Replay(parts, bytes) => {
                let mut b = Request::builder()
                    .method(parts.method.clone())
                    .uri(parts.uri.clone())
                    .version(parts.version);
                if let Some(h) = b.headers_mut() {
                    *h = parts.headers.clone();
                }
                let body = Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed();
                b.body(body).ok()
            }
            Payload::Stream(req) => req.take(),
        }
    }

    fn hand_back(&mut self, req: Request<ProxyBody>) {
        if let Payload::Stream(slot) = self {
            *slot = Some(req);
        }
    }
}

impl Outbound {
    /// The TLS config of opaque TCP to `backend`, made on first use.
    pub(crate) fn tcp_config(&self, backend: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut configs = self
            .tcp_configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = configs.get(backend) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.client_config(backend, &[super::tcp::ALPN_TCP])?);
        configs.insert(backend.to_owned(), c.clone());
        Ok(c)
    }

    /// A client config presenting this service's SVID and pinning `backend`'s identity.
    fn client_config(&self, backend: &str, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
        let name = ServiceName::new(backend.to_owned()).map_err(|e| e.to_string())?;
        let expected = SpiffeId::workload(&self.trust_domain, NAMESPACE, &name);
        let verifier =
            SpiffeServerVerifier::new(self.bundles.clone(), PeerPolicy::Exactly(expected));
        client_config_with_slot(verifier, self.svid.clone(), alpn).map_err(|e| e.to_string())
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut Upstream) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The pool of `backend`, made on first use.
    fn pool(&self, backend: &str) -> Result<Arc<Pool>, String> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pools.get(backend) {
            return Ok(p.clone());
        }
        let tls = self.client_config(backend, &[ALPN_H2, ALPN_H1])?;
        let pool = Pool::new(
            Connector::Tls(Arc::new(tls)),
            PoolLimits {
                connect_timeout: self.limits.connect_timeout,
                // Below HEADER_READ_TIMEOUT, which closes idle inbound connections.
                idle_timeout: Duration::from_secs(20),
                max_idle_per_endpoint: 64,
            },
        );
        pools.insert(backend.to_owned(), pool.clone());
        Ok(pool)
    }

    /// Install the routes, policies and endpoints of a config snapshot.
    pub(crate) fn apply_snapshot(&self, snap: &Snapshot) {
        let mut routes: Vec<HttpRouteSpec> = Vec::new();
        let mut policies: BTreeMap<String, TrafficPolicySpec> = BTreeMap::new();
        for r in snap.resources.values() {
            if r.key.namespace != NAMESPACE {
                continue;
            }
            match r.key.kind {
                Kind::HTTPRoute => match serde_json::from_str::<HttpRouteSpec>(&r.spec_json) {
                    Ok(spec)
                        if spec
                            .parent_refs
                            .iter()
                            .any(|p| p.name == *self.upstream.as_str()) =>
                    {
                        routes.push(spec);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(route = %r.key.name, error = %e, "ignoring an HTTPRoute this agent cannot read")
                    }
                },
                Kind::TrafficPolicy => {
                    match serde_json::from_str::<TrafficPolicySpec>(&r.spec_json) {
                        Ok(spec) => {
                            policies.insert(spec.target_ref.name.clone(), spec);
                        }
                        Err(e) => {
                            tracing::warn!(policy = %r.key.name, error = %e, "ignoring a TrafficPolicy this agent cannot read")
                        }
                    }
                }
                _ => {}
            }
        }
        self.with_state(|s| {
            s.handle_config(&routes, &policies);
            let backends: Vec<String> = s.backends().map(str::to_owned).collect();
            for b in backends {
                let ranked: Vec<(EndpointId, u8)> = match ServiceName::new(b.clone()) {
                    // Every healthy endpoint with its locality tier: the core keeps traffic
                    // in the nearest tier that has one not ejected.
                    Ok(name) => match self.discovery.endpoints(&name, &self.locality) {
                        Endpoints::Ready(list) => list
                            .iter()
                            .map(|e| (EndpointId::new(&e.address.to_string()), tier_rank(e.tier)))
                            .collect(),
                        Endpoints::NoHealthyEndpoint { .. } => Vec::new(),
                    },
                    Err(_) => Vec::new(),
                };
                s.handle_ranked_endpoints(&b, ranked);
            }
        });
    }
}

/// The core's tier number of a locality tier (0 = nearest).
fn tier_rank(t: Tier) -> u8 {
    match t {
        Tier::SameZone => 0,
        Tier::SameRegion => 1,
        Tier::Other => 2,
    }
}

/// Follow config snapshots into the upstream's state until the task is dropped.
pub(crate) async fn follow_config(
    outbound: Arc<Outbound>,
    mut snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
) {
    loop {
        let snap = snapshots.borrow_and_update().clone();
        outbound.apply_snapshot(&snap);
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// Accept connections from the local app and serve them until the task is dropped: HTTP/1.1
/// and h2c at L7, anything else as opaque TCP.
pub(crate) async fn serve(listener: TcpListener, outbound: Arc<Outbound>) {
    let slots = Arc::new(Semaphore::new(outbound.limits.max_connections));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "outbound accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, upstream = %outbound.upstream, "too many outbound connections; refusing");
            continue;
        };
        let outbound = outbound.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let protocol = match outbound.protocol {
                Protocol::Tcp => Detected::Opaque,
                Protocol::Auto => sniff(&tcp).await,
                Protocol::Http => match sniff(&tcp).await {
                    Detected::H2c => Detected::H2c,
                    _ => Detected::Http1,
                },
            };
            let ob = outbound.clone();
            let svc = hyper::service::service_fn(move |req| {
                let ob = ob.clone();
                async move { Ok::<_, Infallible>(handle(&ob, req).await) }
            });
            let served = match protocol {
                Detected::Opaque => {
                    super::tcp::outbound(&outbound, tcp, remote).await;
                    return;
                }
                Detected::H2c => {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .max_header_list_size(super::MAX_HEADER_BYTES as u32)
                        .max_concurrent_streams(super::MAX_STREAMS_PER_CONNECTION)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await
                }
                Detected::Http1 | Detected::NeedMore => {
                    hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(super::HEADER_READ_TIMEOUT)
                        .max_buf_size(super::MAX_HEADER_BYTES)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "outbound connection ended");
            }
        });
    }
}

/// Peek at the first bytes until they tell the protocol. A client that sends nothing within
/// [`DETECT_TIMEOUT`] speaks a server-first protocol: opaque TCP. A closed connection is handed
/// to HTTP/1.1, which closes it.
async fn sniff(tcp: &tokio::net::TcpStream) -> Detected {
    let mut buf = [0u8; H2_PREFACE.len()];
    let deadline = tokio::time::Instant::now() + DETECT_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(0)) => return Detected::Http1,
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Detected::Http1,
            Err(_) => return Detected::Opaque,
        };
        match detect(&buf[..n]) {
            Detected::NeedMore if n < buf.len() => {
                // peek returns at once while bytes are buffered; wait for more to arrive.
                if tokio::time::Instant::now() >= deadline {
                    return Detected::Opaque;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Detected::NeedMore => return Detected::Opaque,
            other => return other,
        }
    }
}

/// The outcome of one request, for metrics and the access log.
struct Outcome {
    resp: Response<ProxyBody>,
    flags: &'static str,
    backend: Option<String>,
    endpoint: Option<SocketAddr>,
}

impl Outcome {
    fn local(status: StatusCode, flags: &'static str, msg: String) -> Self {
        Self {
            resp: local_reply(status, flags, msg),
            flags,
            backend: None,
            endpoint: None,
        }
    }
}

pub(crate) async fn handle(outbound: &Outbound, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let done = route_and_send(outbound, req, &path).await;
    let status = done.resp.status();
    let backend = done
        .backend
        .clone()
        .unwrap_or_else(|| outbound.upstream.to_string());
    let hop = Hop::outbound(&outbound.service, &backend, &outbound.trust_domain);
    outbound.metrics.request(&hop);
    outbound.metrics.response(&hop, status, started.elapsed());
    let peer = format!(
        "spiffe://{}/ns/{NAMESPACE}/sa/{backend}",
        outbound.trust_domain
    );
    AccessLog {
        direction: "outbound",
        method: &method,
        path: &path,
        status,
        flags: done.flags,
        duration: started.elapsed(),
        peer: &peer,
        service: outbound.service.as_str(),
        upstream: done.endpoint,
    }
    .emit();
    done.resp
}

async fn route_and_send(outbound: &Outbound, mut req: Request<Incoming>, path: &str) -> Outcome {
    // Sidecars speak origin-form to each other; an absolute-form target (or an h2c request's
    // :authority) keeps its authority as `host`, and the hop to the peer is versioned afresh.
    if let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned())
        && !req.headers().contains_key(http::header::HOST)
        && let Ok(v) = http::HeaderValue::from_str(&authority)
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if let Ok(uri) = Uri::try_from(path) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_11;
    let headers: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let facts = match request_facts(
        req.method().as_str(),
        path,
        &headers,
        &[],
        PathOptions::default(),
    ) {
        Ok(f) => f,
        Err(refusal) => {
            return Outcome::local(
                StatusCode::BAD_REQUEST,
                "DPE",
                format!("bad request: {refusal}"),
            );
        }
    };
    // Send the canonical path the route was chosen on, so the peer's policy sees the same
    // request (it canonicalises again, with the same function, and gets the same result).
    let canonical = match path.split_once('?') {
        Some((_, q)) => format!("{}?{q}", facts.path.as_str()),
        None => facts.path.as_str().to_owned(),
    };
    match Uri::try_from(canonical) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => {
            return Outcome::local(StatusCode::BAD_REQUEST, "DPE", format!("bad request: {e}"));
        }
    }
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    h.remove(HeaderName::from_static(PEER_IDENTITY));
    stamp_trace_headers(h, &outbound.system_rng);

    let start = {
        let mut rng = outbound.rng.lock().unwrap_or_else(PoisonError::into_inner);
        outbound.with_state(|s| s.start(Instant::now(), &facts, &mut *rng))
    };
    let in_flight = match start {
        Start::Reply(r) => {
            if let Some(d) = r.delay {
                tokio::time::sleep(d).await;
            }
            let status =
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Outcome::local(status, r.flags, r.message);
        }
        Start::Forward(f) => f,
    };
    let mut finish = Finish {
        outbound,
        req: in_flight,
    };
    if let Some(d) = finish.req.delay {
        tokio::time::sleep(d).await;
    }
    let timeout = finish
        .req
        .timeout
        .unwrap_or(outbound.limits.request_timeout);
    let payload = match payload(req).await {
        Ok(p) => p,
        Err(msg) => return Outcome::local(StatusCode::BAD_REQUEST, "DPE", msg),
    };
    match tokio::time::timeout(timeout, attempts(outbound, &mut finish.req, payload)).await {
        Ok(done) => done,
        Err(_) => {
            let mut o = Outcome::local(
                StatusCode::GATEWAY_TIMEOUT,
                "UT",
                format!("{} did not answer within {timeout:?}", finish.req.backend),
            );
            o.backend = Some(finish.req.backend.clone());
            o
        }
    }
}

/// Buffer a body that is known to be small, so it can be resent; stream anything else.
async fn payload(req: Request<Incoming>) -> Result<Payload, String> {
    let small = req
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_REPLAY_BYTES);
    if !small {
        return Ok(Payload::Stream(Some(req.map(BodyExt::boxed))));
    }
    let (parts, body) = req.into_parts();
    let limit = usize::try_from(MAX_REPLAY_BYTES).unwrap_or(usize::MAX);
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| format!("cannot read the request body: {e}"))?
        .to_bytes();
    Ok(Payload::Replay(parts, bytes))
}

async fn attempts(outbound: &Outbound, req: &mut InFlight, mut payload: Payload) -> Outcome {
    let mut failures: Vec<String> = Vec::new();
    loop {
        let backend = req.backend.clone();
        let endpoint = req.endpoint.clone();
        let Ok(addr) = endpoint.as_str().parse::<SocketAddr>() else {
            return Outcome::local(
                StatusCode::SERVICE_UNAVAILABLE,
                "UH",
                format!("endpoint {endpoint} of {backend} is not an address"),
            );
        };
        let pool = match outbound.pool(&backend) {
            Ok(p) => p,
            Err(e) => {
                return Outcome::local(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "NR",
                    format!("no TLS config for {backend}: {e}"),
                );
            }
        };
        let Some(attempt) = payload.next() else {
            return Outcome::local(
                StatusCode::BAD_GATEWAY,
                "UC",
                format!("{backend}: the streamed request cannot be resent"),
            );
        };
        let sent_at = Instant::now();
        let send = pool.send(addr, attempt, req.connect_timeout);
        let result = match req.per_try_timeout {
            Some(d) => tokio::time::timeout(d, send).await.ok(),
            None => Some(send.await),
        };
        let (outcome, response) = match result {
            Some(Ok(resp)) => (AttemptOutcome::Status(resp.status().as_u16()), Some(resp)),
            Some(Err(SendError::Connect { request, reason })) => {
                failures.push(format!("{addr}: {reason}"));
                payload.hand_back(*request);
                (AttemptOutcome::ConnectFailure, None)
            }
            Some(Err(SendError::Exchange { reason })) => {
                failures.push(format!("{addr}: {reason}"));
                (AttemptOutcome::Reset, None)
            }
            None => {
                failures.push(format!("{addr}: no answer within the per-try timeout"));
                (AttemptOutcome::Timeout, None)
            }
        };
        let next = {
            let mut rng = outbound.rng.lock().unwrap_or_else(PoisonError::into_inner);
            outbound.with_state(|s| {
                let next =
                    s.handle_outcome(Instant::now(), req, outcome, sent_at.elapsed(), &mut *rng);
                while let Some((b, event)) = s.poll_event() {
                    tracing::info!(backend = %b, ?event, "outlier detection");
                }
                next
            })
        };
        match next {
            Next::Retry { backoff } => {
                tracing::debug!(%addr, %backend, ?outcome, ?backoff, "retrying");
                tokio::time::sleep(backoff).await;
            }
            Next::Done | Next::GiveUp { .. } => {
                let flags = match next {
                    Next::GiveUp {
                        reason: GiveUp::Retry(_),
                    } if req.attempt > 1 => "URX",
                    _ => "-",
                };
                return finish_attempt(
                    outbound, &backend, addr, response, outcome, flags, &failures,
                );
            }
        }
    }
}

/// The answer of the last attempt: the upstream's response, or a local one naming the failure.
fn finish_attempt(
    outbound: &Outbound,
    backend: &str,
    addr: SocketAddr,
    response: Option<Response<Incoming>>,
    outcome: AttemptOutcome,
    flags: &'static str,
    failures: &[String],
) -> Outcome {
    if let Some(resp) = response {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Outcome {
            resp: Response::from_parts(parts, body.boxed()),
            flags,
            backend: Some(backend.to_owned()),
            endpoint: Some(addr),
        };
    }
    let (status, flag) = match outcome {
        AttemptOutcome::ConnectFailure => (StatusCode::SERVICE_UNAVAILABLE, "UF"),
        AttemptOutcome::Timeout => (StatusCode::GATEWAY_TIMEOUT, "UT"),
        _ => (StatusCode::BAD_GATEWAY, "UC"),
    };
    let msg = format!(
        "cannot reach {backend} of {} (expecting spiffe://{}/ns/{NAMESPACE}/sa/{backend}): {}",
        outbound.upstream,
        outbound.trust_domain,
        failures.join("; ")
    );
    tracing::warn!("{msg}");
    Outcome {
        resp: local_reply(status, flag, msg),
        flags: flag,
        backend: Some(backend.to_owned()),
        endpoint: Some(addr),
    }
}
