//! `meshd demo-app`: a tiny HTTP/1.1 app for tests and demos. Every request gets a JSON echo of
//! what the app saw, including the `x-meshfed-peer-identity` its sidecar set; `/status/<code>`
//! answers with that status, for exercising retries and failure metrics.
//!
//! It is plain HTTP on loopback and trusts its sidecar; it is not part of the mesh's security
//! boundary and makes no decisions of its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// Why the demo app stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoAppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serve on `listen` as app `name` until SIGTERM or Ctrl-C.
pub async fn run(listen: SocketAddr, name: String) -> Result<(), DemoAppError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| DemoAppError::Bind {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, app = %name, "demo app listening");
    let name: Arc<str> = Arc::from(name);
    let serve = async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let out = answer(&name, &req);
                    async move { Ok::<_, Infallible>(out) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    };
    tokio::select! {
        () = serve => {}
        () = crate::signals::shutdown() => {}
    }
    Ok(())
}

fn answer(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let path = req.uri().path();
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let body = serde_json::json!({
        "app": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map_or(path, |p| p.as_str()),
        "peer_identity": header("x-meshfed-peer-identity"),
        "request_id": header("x-request-id"),
        "traceparent": header("traceparent"),
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
