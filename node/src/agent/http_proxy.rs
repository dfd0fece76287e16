//! The `Host`-routing HTTP proxy listener of one local service (`httpProxy:` in the services
//! file): an app configured with `HTTP_PROXY=http://127.0.0.1:15001` reaches any mesh service
//! as `http://<service>/...`, without declaring it as an upstream.
//!
//! ```text
//!  app ─► GET http://api/x (or Host: api) ─► service_of_host ─┬─► no service: 400 NR
//!                                                             └─► Outbound of `api` (made on
//!        first use, following config like a declared upstream) ─► outbound::handle
//! ```
//!
//! The authority names the service: its first DNS label (`api`, `api.default`,
//! `api.default.svc.cluster.local` all mean `api`), any port ignored. Everything after that is
//! the declared-upstream path (routes, policies, endpoints, identity pinning); this module only
//! maps names to upstreams, at most [`MAX_UPSTREAMS`] of them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use mesh_proto::ServiceName;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Limits;
use super::outbound::{self, Outbound};
use super::proxy::{ProxyBody, local_reply};

/// Most distinct services one proxy listener keeps state for.
pub(crate) const MAX_UPSTREAMS: usize = 256;

/// Builds the outbound state of a service the first time a request names it.
pub(crate) type MakeOutbound =
    Box<dyn Fn(&ServiceName) -> Result<Arc<Outbound>, String> + Send + Sync>;

/// The proxy listener's upstreams, by service.
pub(crate) struct HttpProxy {
    pub(crate) service: ServiceName,
    pub(crate) make: MakeOutbound,
    pub(crate) upstreams: Mutex<HashMap<ServiceName, Arc<Outbound>>>,
    pub(crate) limits: Limits,
}

/// The mesh service an authority names, if it names one.
pub(crate) fn service_of_host(authority: &str) -> Option<ServiceName> {
    let host = match authority.rsplit_once(':') {
        // A bracketed IPv6 literal is not a service; `host:port` drops the port.
        Some((h, port))
            if !authority.starts_with('[') && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            h
        }
        _ => authority,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return None;
    }
    let label = host.split('.').next()?;
    ServiceName::new(label.to_owned()).ok()
}

impl HttpProxy {
    fn upstream(&self, name: &ServiceName) -> Result<Arc<Outbound>, String> {
        let mut upstreams = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = upstreams.get(name) {
            return Ok(o.clone());
        }
        if upstreams.len() >= MAX_UPSTREAMS {
            return Err(format!(
                "this proxy already serves {MAX_UPSTREAMS} services; declare {name} as an upstream"
            ));
        }
        let o = (self.make)(name)?;
        upstreams.insert(name.clone(), o.clone());
        Ok(o)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        let Some(name) = authority.as_deref().and_then(service_of_host) else {
            let msg = format!(
                "HTTP proxy of {}: {:?} does not name a mesh service; call http://<service>/...",
                self.service,
                authority.unwrap_or_default()
            );
            return local_reply(StatusCode::BAD_REQUEST, "NR", msg);
        };
        match self.upstream(&name) {
            Ok(o) => outbound::handle(&o, req).await,
            Err(e) => local_reply(StatusCode::SERVICE_UNAVAILABLE, "NR", e),
        }
    }
}

/// Serve the proxy listener until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, proxy: Arc<HttpProxy>) {
    let slots = Arc::new(Semaphore::new(proxy.limits.max_connections));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, service = %proxy.service, "too many HTTP proxy connections; refusing");
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let svc = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(super::HEADER_READ_TIMEOUT)
                .max_buf_size(super::MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                tracing::debug!(%remote, error = %e, "HTTP proxy connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_label_of_the_authority_names_the_service() {
        for (authority, want) in [
            ("api", Some("api")),
            ("api:8080", Some("api")),
            ("API.default.svc.cluster.local.", Some("api")),
            ("billing.default", Some("billing")),
            ("127.0.0.1:80", None),
            ("[::1]:80", None),
            ("", None),
            ("bad_name", None),
        ] {
            assert_eq!(
                service_of_host(authority).as_ref().map(ServiceName::as_str),
                want,
                "{authority:?}"
            );
        }
    }
}
