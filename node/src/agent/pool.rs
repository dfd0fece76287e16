//! Idle HTTP/1.1 connections per endpoint, for both hops of the sidecar: plain TCP to the local
//! app, and TLS 1.3 (presenting the service's SVID, verifying the peer's) to upstream sidecars.
//!
//! ```text
//!  send(addr, req) ─► idle sender? ─yes─► try_send_request ─► response ─► back to idle once
//!        │ no                               │ failed before writing       the body is read
//!        ▼                                  ▼
//!  connect (deadline) ─► handshake      retry once on a fresh connection
//!        │ failed
//!        ▼
//!  SendError::Connect { request }  (the caller may try another endpoint with it)
//! ```
//!
//! A request is only ever retried when hyper hands it back unsent, so nothing is sent twice.
//! This module does not choose endpoints (the core balancer does) and does not read bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How a pool reaches its endpoints.
pub(crate) enum Connector {
    /// Plain TCP (the local app on loopback).
    Plain,
    /// TLS with this config (an upstream sidecar; the verifier pins the expected identity).
    Tls(Arc<rustls::ClientConfig>),
}

/// Deadlines and caps of one pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolLimits {
    pub(crate) connect_timeout: Duration,
    /// An idle connection older than this is closed rather than reused, so it is dropped
    /// before the server's own idle timeout races a new request.
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle_per_endpoint: usize,
}

/// Why a request could not be exchanged.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect {
        request: Box<Request<Incoming>>,
        reason: String,
    },
    /// The request may have been sent, but the exchange failed.
    Exchange { reason: String },
}

/// A connection ready for a request, and since when it has been idle.
type IdleConn = (Instant, SendRequest<Incoming>);

/// A connection pool over any number of endpoints.
pub(crate) struct Pool {
    connector: Connector,
    limits: PoolLimits,
    idle: Mutex<HashMap<SocketAddr, Vec<IdleConn>>>,
}

impl Pool {
    pub(crate) fn new(connector: Connector, limits: PoolLimits) -> Arc<Self> {
        Arc::new(Self {
            connector,
            limits,
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// Send `req` to `addr` and wait for the response headers. Deadlines beyond the connect
    /// timeout are the caller's.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut retried = false;
        loop {
            let (mut sender, pooled) = match self.take(addr) {
                Some(s) => (s, true),
                None => match self.connect(addr).await {
                    Ok(s) => (s, false),
                    Err(reason) => {
                        return Err(SendError::Connect {
                            request: Box::new(req),
                            reason,
                        });
                    }
                },
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.release(addr, sender);
                    return Ok(resp);
                }
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

    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&addr)?;
        while let Some((since, s)) = list.pop() {
            if s.is_ready() && since.elapsed() < self.limits.idle_timeout {
                return Some(s);
            }
        }
        None
    }

    /// Return `sender` to the pool once its response body has been read (HTTP/1.1 carries one
    /// exchange at a time), unless that takes longer than the idle timeout.
    fn release(self: &Arc<Self>, addr: SocketAddr, mut sender: SendRequest<Incoming>) {
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

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Incoming>, String> {
        let timeout = self.limits.connect_timeout;
        tokio::time::timeout(timeout, self.connect_inner(addr))
            .await
            .map_err(|_| format!("no connection within {timeout:?}"))?
    }

    async fn connect_inner(&self, addr: SocketAddr) -> Result<SendRequest<Incoming>, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.connector {
            Connector::Plain => handshake(TokioIo::new(tcp)).await,
            Connector::Tls(config) => {
                // SPIFFE verifiers ignore the name; the identity is pinned in the config.
                let name = ServerName::try_from("sidecar.meshfed.invalid")
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}
