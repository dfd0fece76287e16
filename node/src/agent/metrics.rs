//! The agent's Prometheus metrics and its admin listener (DESIGN §9).
//!
//! Families follow Linkerd's names: `request_total`, `response_total` and the
//! `response_latency_ms` histogram, labelled by `direction`, `src_workload`, `dst_workload`, `src_cluster`, `dst_cluster` (trust domains),
//! `status_code`, `classification` and `tls`; the `tcp_*` families for opaque TCP; plus
//! `identity_cert_expiration_timestamp_seconds` per workload. The admin listener serves `GET /metrics` and `GET /ready` over plain HTTP on a
//! loopback address only. This module records what the proxies report; it decides nothing about
//! requests, and it does not log (the proxies write the access log).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_proto::{Role, ServiceName, SpiffeId, TrustDomain};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Admin connections served at once; scrapes are rare.
const MAX_ADMIN_CONNECTIONS: usize = 16;

/// Which way a request crossed the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From a peer sidecar to the local app.
    Inbound,
    /// From the local app to an upstream.
    Outbound,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    src_workload: String,
    dst_workload: String,
    src_cluster: String,
    dst_cluster: String,
    tls: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    direction: &'static str,
    src_workload: String,
    dst_workload: String,
    src_cluster: String,
    dst_cluster: String,
    status_code: u16,
    classification: &'static str,
    tls: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpLabels {
    direction: &'static str,
    src_workload: String,
    dst_workload: String,
    src_cluster: String,
    dst_cluster: String,
    tls: &'static str,
}

/// The Linkerd `tcp_*` families, for opaque TCP connections.
#[derive(Default)]
struct TcpFamilies {
    open: Family<TcpLabels, Counter>,
    close: Family<TcpLabels, Counter>,
    open_connections: Family<TcpLabels, Gauge>,
    read_bytes: Family<TcpLabels, Counter>,
    write_bytes: Family<TcpLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    workload: String,
}

type LatencyFamily = Family<ResponseLabels, Histogram, fn() -> Histogram>;

/// The agent's metric families, shared by every listener.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    latency: LatencyFamily,
    cert_expiry: Family<WorkloadLabels, Gauge>,
    tcp: TcpFamilies,
}

/// The two workloads of one request, as metric labels.
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    pub(crate) direction: Direction,
    pub(crate) src_workload: String,
    pub(crate) dst_workload: String,
    /// Clusters are labelled by trust domain, one per cluster (e.g. `east.mesh`).
    pub(crate) src_cluster: String,
    pub(crate) dst_cluster: String,
}

impl Hop {
    /// A request or connection from verified `peer` to local `service` of `cluster`.
    pub(crate) fn inbound(peer: &SpiffeId, service: &ServiceName, cluster: &TrustDomain) -> Self {
        let src_workload = match peer.role() {
            Role::Workload {
                service_account, ..
            } => service_account,
            _ => peer.path().to_owned(),
        };
        Self {
            direction: Direction::Inbound,
            src_workload,
            dst_workload: service.to_string(),
            src_cluster: peer.trust_domain().to_string(),
            dst_cluster: cluster.to_string(),
        }
    }

    /// A request or connection from local `service` to `backend`, both in `cluster`.
    pub(crate) fn outbound(service: &ServiceName, backend: &str, cluster: &TrustDomain) -> Self {
        Self {
            direction: Direction::Outbound,
            src_workload: service.to_string(),
            dst_workload: backend.to_owned(),
            src_cluster: cluster.to_string(),
            dst_cluster: cluster.to_string(),
        }
    }
}

fn tcp_labels(hop: &Hop) -> TcpLabels {
    TcpLabels {
        direction: hop.direction.as_str(),
        src_workload: hop.src_workload.clone(),
        dst_workload: hop.dst_workload.clone(),
        src_cluster: hop.src_cluster.clone(),
        dst_cluster: hop.dst_cluster.clone(),
        tls: "true",
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(1.0, 2.0, 17))
}

impl Metrics {
    /// The families, plus the gossip member's once it has joined.
    pub(crate) fn new(gossip: super::gossip::Member) -> Self {
        let mut registry = Registry::default();
        crate::gossip::metrics::register_later(&mut registry, gossip);
        let requests = Family::<RequestLabels, Counter>::default();
        let responses = Family::<ResponseLabels, Counter>::default();
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        let cert_expiry = Family::<WorkloadLabels, Gauge>::default();
        registry.register("request", "Requests received", requests.clone());
        registry.register("response", "Responses sent", responses.clone());
        registry.register(
            "response_latency_ms",
            "Time to the response headers, in milliseconds",
            latency.clone(),
        );
        registry.register(
            "identity_cert_expiration_timestamp_seconds",
            "When the workload's current X.509-SVID expires (Unix seconds)",
            cert_expiry.clone(),
        );
        let tcp = TcpFamilies::default();
        registry.register("tcp_open", "TCP connections opened", tcp.open.clone());
        registry.register("tcp_close", "TCP connections closed", tcp.close.clone());
        registry.register(
            "tcp_open_connections",
            "TCP connections open now",
            tcp.open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Bytes read from the connection's source",
            tcp.read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to the connection's source",
            tcp.write_bytes.clone(),
        );
        Self {
            registry,
            requests,
            responses,
            latency,
            cert_expiry,
            tcp,
        }
    }

    pub(crate) fn request(&self, hop: &Hop) {
        self.requests
            .get_or_create(&RequestLabels {
                direction: hop.direction.as_str(),
                src_workload: hop.src_workload.clone(),
                dst_workload: hop.dst_workload.clone(),
                src_cluster: hop.src_cluster.clone(),
                dst_cluster: hop.dst_cluster.clone(),
                tls: "true",
            })
            .inc();
    }

    /// A response with `status` was sent `latency` after the request arrived. 5xx is a failure,
    /// as Linkerd classifies it.
    pub(crate) fn response(&self, hop: &Hop, status: StatusCode, latency: Duration) {
        let labels = ResponseLabels {
            direction: hop.direction.as_str(),
            src_workload: hop.src_workload.clone(),
            dst_workload: hop.dst_workload.clone(),
            src_cluster: hop.src_cluster.clone(),
            dst_cluster: hop.dst_cluster.clone(),
            status_code: status.as_u16(),
            classification: if status.is_server_error() {
                "failure"
            } else {
                "success"
            },
            tls: "true",
        };
        self.responses.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64() * 1000.0);
    }

    /// An opaque TCP connection was opened.
    pub(crate) fn tcp_open(&self, hop: &Hop) {
        let l = tcp_labels(hop);
        self.tcp.open.get_or_create(&l).inc();
        self.tcp.open_connections.get_or_create(&l).inc();
    }

    /// An opaque TCP connection closed after moving `read` bytes from its source and `written`
    /// bytes back.
    pub(crate) fn tcp_close(&self, hop: &Hop, read: u64, written: u64) {
        let l = tcp_labels(hop);
        self.tcp.close.get_or_create(&l).inc();
        self.tcp.open_connections.get_or_create(&l).dec();
        self.tcp.read_bytes.get_or_create(&l).inc_by(read);
        self.tcp.write_bytes.get_or_create(&l).inc_by(written);
    }

    pub(crate) fn cert_expiry(&self, workload: &ServiceName, not_after_unix: u64) {
        self.cert_expiry
            .get_or_create(&WorkloadLabels {
                workload: workload.to_string(),
            })
            .set(i64::try_from(not_after_unix).unwrap_or(i64::MAX));
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Serve `/metrics` and `/ready` until the task is dropped. `ready` turns true once every
/// listener is up with an SVID.
pub(crate) async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let out = admin(&metrics, &ready, &req);
                async move { Ok::<_, Infallible>(out) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

fn admin(metrics: &Metrics, ready: &AtomicBool, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ctype),
        );
        r
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/ready" if ready.load(Ordering::Acquire) => reply(StatusCode::OK, TEXT, "ready\n".into()),
        "/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "not ready: waiting for SVIDs and listeners\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics or /ready\n".into(),
        ),
    }
}

/// Whether `addr` may serve the admin endpoints.
pub(crate) fn admin_addr_allowed(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_use_linkerd_names_and_labels() {
        let m = Metrics::new(Default::default());
        let hop = Hop {
            direction: Direction::Inbound,
            src_workload: "web".into(),
            dst_workload: "api".into(),
            src_cluster: "east.mesh".into(),
            dst_cluster: "east.mesh".into(),
        };
        m.request(&hop);
        m.response(&hop, StatusCode::OK, Duration::from_millis(3));
        m.response(
            &hop,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(3),
        );
        m.cert_expiry(&ServiceName::new("api").unwrap(), 1_900_000_000);
        let text = m.encode();
        assert!(
            text.contains(
                "request_total{direction=\"inbound\",src_workload=\"web\",dst_workload=\"api\",\
             src_cluster=\"east.mesh\",dst_cluster=\"east.mesh\",tls=\"true\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("status_code=\"200\",classification=\"success\""),
            "{text}"
        );
        assert!(
            text.contains("status_code=\"503\",classification=\"failure\""),
            "{text}"
        );
        assert!(text.contains("response_latency_ms_bucket"), "{text}");
        assert!(
            text.contains(
                "identity_cert_expiration_timestamp_seconds{workload=\"api\"} 1900000000"
            ),
            "{text}"
        );
    }
}
