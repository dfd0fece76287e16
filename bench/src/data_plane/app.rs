//! The benchmark's upstream app (`mesh-bench serve-app --listen ADDR`): HTTP/1.1 with hyper on a
//! current-thread runtime, answering every request with `200` and a fixed 1 KiB body, the
//! payload of Istio's latency test. It is started as its own process so it can be pinned next to
//! the proxies; every configuration, direct or proxied, reaches this same process.
//!
//! `meshd demo-app` is not used because it answers a ~200-byte JSON echo. This module does no
//! measuring and keeps no state.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Size of every response body.
pub(crate) const BODY_BYTES: usize = 1024;

/// Serve until killed.
pub(crate) fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        eprintln!("bench app listening on {listen}");
        let body = Bytes::from(vec![b'x'; BODY_BYTES]);
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or similar: say so and keep serving the others.
                    eprintln!("accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let mut r = Response::new(Full::new(body.clone()));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/octet-stream"),
                    );
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}
