//! Connections per endpoint, for both hops of the sidecar: plain HTTP/1.1 to the local app, and
//! TLS 1.3 (presenting the service's SVID, verifying the peer's) to upstream sidecars, where
//! ALPN picks HTTP/2 and one multiplexed connection carries every request to that endpoint.
//!
//! ```text
//!  send(addr, req) ─► shared h2 sender open? ─yes─► clone, send (multiplexed)
//!        │ no            idle h1 sender? ─yes─► try_send_request ─► back to idle once the
//!        ▼                                        │ stale, unsent        body is read
//!  connect (deadline) ─► TLS, ALPN h2 | http/1.1 ─┘◄── retry once on a fresh connection
//!        │ failed
//!        ▼
//!  SendError::Connect { request }  (the caller may try another endpoint with it)
//! ```
//!
//! A request is only ever re-sent here when hyper hands it back unsent, so nothing is sent
//! twice. This module does not choose endpoints (the core `Upstream` does) and does not read
//! bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::proxy::ProxyBody;

/// ALPN of sidecar-to-sidecar HTTP, preferred first.
pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_H1: &[u8] = b"http/1.1";

/// How a pool reaches its endpoints.
pub(crate) enum Connector {
    /// Plain TCP, HTTP/1.1 (the local app on loopback).
    Plain,
    /// TLS with this config (an upstream sidecar; the verifier pins the expected identity).
    Tls(Arc<rustls::ClientConfig>),
}

/// Deadlines and caps of one pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolLimits {
    pub(crate) connect_timeout: Duration,
    /// An idle HTTP/1.1 connection older than this is closed rather than reused, so it is
    /// dropped before the server's own idle timeout races a new request.
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle_per_endpoint: usize,
}

/// Why a request could not be exchanged.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect {
        request: Box<Request<ProxyBody>>,
        reason: String,
    },
    /// The request may have been sent, but the exchange failed.
    Exchange { reason: String },
}

/// A connection ready for a request, and since when it has been idle.
type IdleConn = (Instant, http1::SendRequest<ProxyBody>);

enum Conn {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// A connection pool over any number of endpoints.
pub(crate) struct Pool {
    connector: Connector,
    limits: PoolLimits,
    idle: Mutex<HashMap<SocketAddr, Vec<IdleConn>>>,
    shared: Mutex<HashMap<SocketAddr, http2::SendRequest<ProxyBody>>>,
}

impl Pool {
    pub(crate) fn new(connector: Connector, limits: PoolLimits) -> Arc<Self> {
        Arc::new(Self {
            connector,
            limits,
            idle: Mutex::new(HashMap::new()),
            shared: Mutex::new(HashMap::new()),
        })
    }

    /// Send `req` to `addr` and wait for the response headers. `connect_timeout` overrides the
    /// pool's for a new connection; deadlines beyond it are the caller's.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<ProxyBody>,
        connect_timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut retried = false;
        loop {
            let (conn, pooled) = match self.take(addr) {
                Some(c) => (c, true),
                None => match self.connect(addr, connect_timeout).await {
                    Ok(c) => (c, false),
                    Err(reason) => {
                        return Err(SendError::Connect {
                            request: Box::new(req),
                            reason,
                        });
                    }
                },
            };
            let result = match conn {
                Conn::H1(mut sender) => match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.release(addr, sender);
                        Ok(resp)
                    }
                    Err(e) => Err(e),
                },
                Conn::H2(mut sender) => {
                    if !pooled {
                        self.share(addr, sender.clone());
                    }
                    sender.try_send_request(req).await
                }
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    // A stale pooled connection refused the request unsent: use a fresh one.
                    Some(unsent) if pooled && !retried => {
                        req = unsent;
                        retried = true;
                    }
                    _ => {
                        return Err(SendError::Exchange {
                            reason: e.into_error().to_string(),
                        });
                    }
                },
            }
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<Conn> {
        {
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            match shared.get(&addr) {
                Some(s) if !s.is_closed() => return Some(Conn::H2(s.clone())),
                Some(_) => {
                    shared.remove(&addr);
                }
                None => {}
            }
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&addr)?;
        while let Some((since, s)) = list.pop() {
            if s.is_ready() && since.elapsed() < self.limits.idle_timeout {
                return Some(Conn::H1(s));
            }
        }
        None
    }

    fn share(&self, addr: SocketAddr, sender: http2::SendRequest<ProxyBody>) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        // Two requests may race to connect; keep the first open connection.
        if shared.get(&addr).is_none_or(http2::SendRequest::is_closed) {
            shared.insert(addr, sender);
        }
    }

    /// Return `sender` to the pool once its response body has been read (HTTP/1.1 carries one
    /// exchange at a time), unless that takes longer than the idle timeout.
    fn release(self: &Arc<Self>, addr: SocketAddr, mut sender: http1::SendRequest<ProxyBody>) {
        let pool = self.clone();
        tokio::spawn(async move {
            let ready = tokio::time::timeout(pool.limits.idle_timeout, sender.ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                return;
            }
            let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let list = idle.entry(addr).or_default();
            if list.len() < pool.limits.max_idle_per_endpoint {
                list.push((Instant::now(), sender));
            }
        });
    }

    async fn connect(&self, addr: SocketAddr, timeout: Option<Duration>) -> Result<Conn, String> {
        let timeout = timeout.unwrap_or(self.limits.connect_timeout);
        tokio::time::timeout(timeout, self.connect_inner(addr))
            .await
            .map_err(|_| format!("no connection within {timeout:?}"))?
    }

    async fn connect_inner(&self, addr: SocketAddr) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.connector {
            Connector::Plain => handshake_h1(TokioIo::new(tcp)).await,
            Connector::Tls(config) => {
                // SPIFFE verifiers ignore the name; the identity is pinned in the config.
                let name = ServerName::try_from("sidecar.meshfed.invalid")
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                if tls.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
                    handshake_h2(TokioIo::new(tls)).await
                } else {
                    handshake_h1(TokioIo::new(tls)).await
                }
            }
        }
    }
}

async fn handshake_h1<T>(io: TokioIo<T>) -> Result<Conn, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(Conn::H1(sender))
}

async fn handshake_h2<T>(io: TokioIo<T>) -> Result<Conn, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // A dead peer is noticed within ~30 s even when no request is in flight.
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Conn::H2(sender))
}
