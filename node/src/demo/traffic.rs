//! The demo's load: closed-loop GETs through a sidecar's upstream listener, with per-request
//! outcome, latency, the app that answered and the peer identity it saw, kept in a bounded
//! sample for percentiles and a per-second window for the live view.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Latency samples kept for percentiles; later ones replace earlier ones round-robin.
const MAX_SAMPLES: usize = 100_000;
/// Deadline of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One request's result.
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    pub(crate) latency: Duration,
    pub(crate) app: Option<String>,
    pub(crate) peer_identity: Option<String>,
}

/// What the load saw so far.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) total: u64,
    pub(crate) failed: u64,
    latencies_us: Vec<u64>,
    pub(crate) by_app: BTreeMap<String, u64>,
    pub(crate) peer_identity: Option<String>,
    /// Times of failed requests, for the failover window.
    pub(crate) first_failure: Option<Instant>,
    pub(crate) last_failure: Option<Instant>,
}

impl Stats {
    pub(crate) fn record(&mut self, at: Instant, o: Outcome) {
        self.total += 1;
        let us = u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX);
        if self.latencies_us.len() < MAX_SAMPLES {
            self.latencies_us.push(us);
        } else {
            let i = usize::try_from(self.total).unwrap_or(0) % MAX_SAMPLES;
            self.latencies_us[i] = us;
        }
        if o.ok {
            if let Some(app) = o.app {
                *self.by_app.entry(app).or_default() += 1;
            }
            if o.peer_identity.is_some() {
                self.peer_identity = o.peer_identity;
            }
        } else {
            self.failed += 1;
            self.first_failure.get_or_insert(at);
            self.last_failure = Some(at);
        }
    }

    /// The `q` quantile (0..=1) of latency, in milliseconds.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    }
}

/// One GET of `path` through `via`.
pub(crate) async fn request(via: SocketAddr, path: &str) -> Outcome {
    let started = Instant::now();
    let exchange = async {
        let mut s = TcpStream::connect(via).await?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await?;
        std::io::Result::Ok(buf)
    };
    let raw = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(raw)) => raw,
        _ => {
            return Outcome {
                ok: false,
                latency: started.elapsed(),
                app: None,
                peer_identity: None,
            };
        }
    };
    let latency = started.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let ok = text.starts_with("HTTP/1.1 200");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The demo app answers JSON, possibly chunked: find the object.
    let json = body
        .find('{')
        .and_then(|a| body.rfind('}').map(|b| &body[a..=b]))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok());
    Outcome {
        ok,
        latency,
        app: json
            .as_ref()
            .and_then(|v| v["app"].as_str().map(str::to_owned)),
        peer_identity: json
            .as_ref()
            .and_then(|v| v["peer_identity"].as_str().map(str::to_owned)),
    }
}
