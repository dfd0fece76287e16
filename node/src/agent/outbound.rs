//! The outbound listener of one declared upstream: plain HTTP/1.1 from the local app on
//! loopback, forwarded over mTLS to one of the upstream's sidecars, presenting this service's
//! SVID and accepting only the upstream's workload identity.
//!
//! ```text
//!  app ─► 127.0.0.1:<listen> ─► Plan { upstream, expect spiffe://<td>/ns/default/sa/<up>,
//!                                      endpoints: [balancer pick, next pick], timeout }
//!        ─► pool.send(endpoint 1) ─connect failed─► pool.send(endpoint 2) ─failed─► 503 UF
//! ```
//!
//! The plan is computed before any connection is made (STYLE "compute a plan, then act"); the
//! endpoint order comes from the core `Balancer` (round robin). Endpoints are static from the
//! services file for now: no catalog, routes, retries on 5xx or outlier detection yet.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::HeaderName;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_core::balance::{Balancer, EndpointId, Selection, Strategy};
use mesh_core::rng::SplitMix64;
use mesh_proto::{ServiceName, SpiffeId};
use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Limits;
use super::metrics::{Direction, Hop, Metrics};
use super::pool::{Pool, SendError};
use super::proxy::{
    AccessLog, PEER_IDENTITY, ProxyBody, local_reply, stamp_trace_headers, strip_hop_by_hop,
};

/// Endpoints one request may try: the pick, then one more after a connect failure.
const MAX_ATTEMPTS: usize = 2;

/// What the outbound listener of one upstream needs.
pub(crate) struct Outbound {
    /// The local service calling out.
    pub(crate) service: ServiceName,
    pub(crate) upstream: ServiceName,
    /// The identity every endpoint must present; the pool's TLS verifier enforces it.
    pub(crate) expected: SpiffeId,
    pub(crate) pool: Arc<Pool>,
    pub(crate) balancer: Mutex<Balancer>,
    pub(crate) rng: Mutex<SplitMix64>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: Limits,
    pub(crate) system_rng: SystemRandom,
}

/// How one request will be sent, decided before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) upstream: ServiceName,
    pub(crate) expected_identity: SpiffeId,
    /// In the order to try; empty when the balancer has no endpoint.
    pub(crate) endpoints: Vec<SocketAddr>,
    pub(crate) timeout: Duration,
}

impl Outbound {
    pub(crate) fn new_balancer(endpoints: &[SocketAddr]) -> Balancer {
        let mut b = Balancer::new(Strategy::RoundRobin);
        b.handle_endpoints(endpoints.iter().map(|a| EndpointId::new(&a.to_string())));
        b
    }

    fn plan(&self, now: Instant) -> Plan {
        let mut balancer = self.balancer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let mut chosen: Vec<EndpointId> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            match balancer.pick(now, None, &mut *rng, |e| !chosen.contains(e)) {
                Selection::Endpoint(e) => chosen.push(e),
                Selection::NoHealthyEndpoint { .. } => break,
            }
        }
        Plan {
            upstream: self.upstream.clone(),
            expected_identity: self.expected.clone(),
            endpoints: chosen
                .iter()
                .filter_map(|e| e.as_str().parse().ok())
                .collect(),
            timeout: self.limits.request_timeout,
        }
    }
}

/// Accept plain HTTP from the local app and serve it until the task is dropped.
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
            let svc = hyper::service::service_fn(move |req| {
                let outbound = outbound.clone();
                async move { Ok::<_, Infallible>(handle(&outbound, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(super::HEADER_READ_TIMEOUT)
                .max_buf_size(super::MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(%remote, error = %e, "outbound connection ended");
            }
        });
    }
}

async fn handle(outbound: &Outbound, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let hop = Hop {
        direction: Direction::Outbound,
        src_workload: outbound.service.to_string(),
        dst_workload: outbound.upstream.to_string(),
    };
    outbound.metrics.request(&hop);
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    // Sidecars speak origin-form to each other; an absolute-form target keeps its path.
    if let Ok(uri) = Uri::try_from(path.as_str()) {
        *req.uri_mut() = uri;
    }
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    h.remove(HeaderName::from_static(PEER_IDENTITY));
    stamp_trace_headers(h, &outbound.system_rng);
    let plan = outbound.plan(started);
    let (resp, flags, upstream) =
        match tokio::time::timeout(plan.timeout, execute(outbound, &plan, req)).await {
            Ok(done) => done,
            Err(_) => {
                let msg = format!("{} did not answer within {:?}", plan.upstream, plan.timeout);
                (
                    local_reply(StatusCode::GATEWAY_TIMEOUT, "UT", msg),
                    "UT",
                    None,
                )
            }
        };
    let status = resp.status();
    outbound.metrics.response(&hop, status, started.elapsed());
    AccessLog {
        direction: "outbound",
        method: &method,
        path: &path,
        status,
        flags,
        duration: started.elapsed(),
        peer: &plan.expected_identity.to_string(),
        service: outbound.service.as_str(),
        upstream,
    }
    .emit();
    resp
}

async fn execute(
    outbound: &Outbound,
    plan: &Plan,
    mut req: Request<Incoming>,
) -> (Response<ProxyBody>, &'static str, Option<SocketAddr>) {
    if plan.endpoints.is_empty() {
        let msg = format!("no endpoint of {} is available", plan.upstream);
        return (
            local_reply(StatusCode::SERVICE_UNAVAILABLE, "UH", msg),
            "UH",
            None,
        );
    }
    let mut failures = Vec::new();
    for &addr in &plan.endpoints {
        let id = EndpointId::new(&addr.to_string());
        let attempt_started = Instant::now();
        outbound.balancer_call(|b| b.handle_start(&id));
        let res = outbound.pool.send(addr, req).await;
        outbound.balancer_call(|b| b.handle_end(&id, Instant::now(), attempt_started.elapsed()));
        match res {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return (Response::from_parts(parts, body.boxed()), "-", Some(addr));
            }
            Err(SendError::Connect { request, reason }) => {
                tracing::debug!(%addr, upstream = %plan.upstream, %reason, "upstream connect failed");
                failures.push(format!("{addr}: {reason}"));
                req = *request;
            }
            Err(SendError::Exchange { reason }) => {
                let msg = format!("{} at {addr} failed mid-request: {reason}", plan.upstream);
                return (
                    local_reply(StatusCode::BAD_GATEWAY, "UC", msg),
                    "UC",
                    Some(addr),
                );
            }
        }
    }
    let msg = format!(
        "cannot reach {} (expecting {}): {}",
        plan.upstream,
        plan.expected_identity,
        failures.join("; ")
    );
    tracing::warn!("{msg}");
    (
        local_reply(StatusCode::SERVICE_UNAVAILABLE, "UF", msg),
        "UF",
        None,
    )
}

impl Outbound {
    fn balancer_call(&self, f: impl FnOnce(&mut Balancer)) {
        f(&mut self.balancer.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balancer_pick_then_a_different_endpoint() {
        let eps: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let mut b = Outbound::new_balancer(&eps);
        let mut rng = SplitMix64::new(7);
        let now = Instant::now();
        let first = b.pick(now, None, &mut rng, |_| true);
        let Selection::Endpoint(first) = first else {
            panic!("no pick")
        };
        let second = b.pick(now, None, &mut rng, |e| *e != first);
        assert!(matches!(second, Selection::Endpoint(e) if e != first));
    }
}
