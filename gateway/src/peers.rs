//! Links to peer gateways: one pooled QUIC connection per peer trust domain, reconnected with
//! capped exponential backoff, and a probe loop that measures the RTT of a full stream round
//! trip (open, preamble, status) every `probe_interval`.
//!
//! ```text
//!  connect_forever: connect ─ok─► publish Some(conn) ─► wait closed ─► publish None ─┐
//!        ▲             └─err──────────────────────────────────────────────────────────┤
//!        └──────────────── sleep(backoff: reconnect_min doubling to reconnect_max) ◄──┘
//!  probe_forever: every probe_interval on the current conn: Probe preamble ─► status ─► RTT
//! ```
//!
//! Tunnels borrow the current connection (`connection`); they never open their own. This file
//! decides nothing about admission.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_proto::TrustDomain;
use mesh_proto::tunnel::{Preamble, Status, TUNNEL_VERSION, Target};
use tokio::sync::watch;

use crate::config::Limits;
use crate::wire;

/// What the gateway knows about one peer gateway right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerHealth {
    /// A QUIC connection is established and the last probe (if any yet) succeeded.
    pub up: bool,
    /// Round trip of the last successful probe stream.
    pub last_rtt: Option<Duration>,
    /// Why the peer is down, when it is.
    pub last_error: Option<String>,
}

pub(crate) struct PeerLink {
    pub(crate) trust_domain: TrustDomain,
    address: SocketAddr,
    conn: watch::Sender<Option<quinn::Connection>>,
    health: Mutex<PeerHealth>,
}

impl PeerLink {
    pub(crate) fn new(trust_domain: TrustDomain, address: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            trust_domain,
            address,
            conn: watch::Sender::new(None),
            health: Mutex::new(PeerHealth::default()),
        })
    }

    pub(crate) fn health(&self) -> PeerHealth {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_health(&self, f: impl FnOnce(&mut PeerHealth)) {
        f(&mut self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// The current connection, waiting up to `wait` for one while the link (re)connects.
    pub(crate) async fn connection(&self, wait: Duration) -> Option<quinn::Connection> {
        let mut rx = self.conn.subscribe();
        let found = tokio::time::timeout(wait, rx.wait_for(|c| c.is_some())).await;
        match found {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    }

    /// Keeps one connection to the peer open for as long as the gateway runs.
    pub(crate) async fn connect_forever(
        self: Arc<Self>,
        endpoint: quinn::Endpoint,
        config: quinn::ClientConfig,
        limits: Limits,
    ) {
        let mut delay = limits.reconnect_min;
        loop {
            match self.connect_once(&endpoint, &config, &limits).await {
                Ok(conn) => {
                    tracing::info!(peer = %self.trust_domain, addr = %self.address, "peer gateway connected");
                    delay = limits.reconnect_min;
                    self.set_health(|h| {
                        h.up = true;
                        h.last_error = None;
                    });
                    self.conn.send_replace(Some(conn.clone()));
                    let reason = conn.closed().await;
                    self.conn.send_replace(None);
                    tracing::warn!(peer = %self.trust_domain, %reason, "peer gateway connection lost");
                    self.set_health(|h| {
                        h.up = false;
                        h.last_error = Some(reason.to_string());
                    });
                }
                Err(message) => {
                    tracing::warn!(peer = %self.trust_domain, addr = %self.address, %message, retry_in = ?delay, "cannot reach peer gateway");
                    self.set_health(|h| {
                        h.up = false;
                        h.last_error = Some(message);
                    });
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(limits.reconnect_max);
        }
    }

    async fn connect_once(
        &self,
        endpoint: &quinn::Endpoint,
        config: &quinn::ClientConfig,
        limits: &Limits,
    ) -> Result<quinn::Connection, String> {
        // The server name is not checked (SPIFFE verifiers match the URI SAN); it only has to
        // be a valid name, and the trust domain is one.
        let connecting = endpoint
            .connect_with(config.clone(), self.address, self.trust_domain.as_str())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(limits.handshake_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no QUIC handshake within {:?}",
                limits.handshake_timeout
            )),
        }
    }

    /// Probes the peer every `probe_interval` and records RTT and up/down.
    pub(crate) async fn probe_forever(self: Arc<Self>, limits: Limits) {
        let mut nonce = 0u64;
        loop {
            tokio::time::sleep(limits.probe_interval).await;
            let current = self.conn.borrow().clone();
            let Some(conn) = current else {
                continue;
            };
            nonce = nonce.wrapping_add(1);
            match probe(&conn, nonce, limits.status_timeout).await {
                Ok(rtt) => self.set_health(|h| {
                    h.up = true;
                    h.last_rtt = Some(rtt);
                    h.last_error = None;
                }),
                Err(message) => {
                    tracing::warn!(peer = %self.trust_domain, %message, "peer gateway probe failed");
                    self.set_health(|h| {
                        h.up = false;
                        h.last_error = Some(message);
                    });
                }
            }
        }
    }
}

/// One probe: a stream carrying a `Probe` preamble, answered by a status byte.
pub(crate) async fn probe(
    conn: &quinn::Connection,
    nonce: u64,
    deadline: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let frame = Preamble {
        version: TUNNEL_VERSION,
        target: Target::Probe { nonce },
    }
    .to_frame()
    .map_err(|e| e.to_string())?;
    let run = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        match wire::read_status(&mut recv, deadline).await {
            Some(Status::Ok) => Ok(start.elapsed()),
            other => Err(format!("probe answered {other:?}")),
        }
    };
    tokio::time::timeout(deadline, run)
        .await
        .unwrap_or_else(|_| Err(format!("no probe answer within {deadline:?}")))
}
