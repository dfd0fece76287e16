//! `meshd demo-app`: a tiny HTTP/1.1 app for tests and demos. Every request gets a JSON echo of
//! what the app saw, including the `x-meshfed-peer-identity` its sidecar set; `/status/<code>`
//! answers with that status, for exercising retries and failure metrics. With `--fail-percent N`
//! it answers N % of other requests with 503, spread evenly (request k fails when
//! `⌊(k+1)·N/100⌋ > ⌊k·N/100⌋`), and `/stats` reports how many requests it served and failed,
//! so a test can measure the load retries add. With `--tcp` it is an opaque TCP app instead:
//! it greets each connection with its name and a newline, then echoes.
//!
//! It is plain HTTP on loopback and trusts its sidecar; it is not part of the mesh's security
//! boundary and makes no decisions of its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// What the app has served, for `/stats`.
struct App {
    name: String,
    fail_percent: u64,
    served: AtomicU64,
    failed: AtomicU64,
}

/// How the demo app runs.
#[derive(Debug, Clone)]
pub struct DemoAppOptions {
    pub listen: SocketAddr,
    pub name: String,
    /// At most 100.
    pub fail_percent: u8,
    /// Serve opaque TCP instead of HTTP: greet with `<name>\n`, then echo every byte.
    pub tcp: bool,
}

/// Serve until SIGTERM or Ctrl-C.
pub async fn run(opts: DemoAppOptions) -> Result<(), DemoAppError> {
    let DemoAppOptions {
        listen,
        name,
        fail_percent,
        tcp,
    } = opts;
    if tcp {
        return run_tcp(listen, name).await;
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| DemoAppError::Bind {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, app = %name, "demo app listening");
    let app = Arc::new(App {
        name,
        fail_percent: u64::from(fail_percent.min(100)),
        served: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
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
            let app = app.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let out = app.answer(&req);
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

/// The TCP mode: a greeting line, then an echo, per connection (bounded in number).
async fn run_tcp(listen: SocketAddr, name: String) -> Result<(), DemoAppError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| DemoAppError::Bind {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, app = %name, "demo app (TCP echo) listening");
    let greeting: Arc<[u8]> = Arc::from(format!("{name}\n").into_bytes());
    let serve = async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let _permit = permit;
                use tokio::io::AsyncWriteExt;
                if tcp.write_all(&greeting).await.is_ok() {
                    let (mut r, mut w) = tcp.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    };
    tokio::select! {
        () = serve => {}
        () = crate::signals::shutdown() => {}
    }
    Ok(())
}

impl App {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path == "/stats" {
            let stats = serde_json::json!({
                "app": self.name,
                "served": self.served.load(Ordering::Relaxed),
                "failed": self.failed.load(Ordering::Relaxed),
            });
            return json(StatusCode::OK, &stats);
        }
        let k = self.served.fetch_add(1, Ordering::Relaxed);
        let injected = (k + 1) * self.fail_percent / 100 > k * self.fail_percent / 100;
        let status = if injected {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            path.strip_prefix("/status/")
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK)
        };
        if status.is_server_error() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        json(status, &echo(&self.name, req))
    }
}

fn echo(name: &str, req: &Request<Incoming>) -> serde_json::Value {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let path = req.uri().path();
    serde_json::json!({
        "app": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map_or(path, |p| p.as_str()),
        "peer_identity": header("x-meshfed-peer-identity"),
        "request_id": header("x-request-id"),
        "traceparent": header("traceparent"),
        "b3": header("x-b3-traceid"),
    })
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
