//! Peak-EWMA load of one endpoint (Finagle's `PeakEwma`, as Linkerd and tower use it): a
//! latency estimate that jumps up to any slower sample at once and decays toward faster ones
//! (and toward zero while idle) with a time constant, times the requests in flight.
//!
//! It only scores endpoints; choosing between two scores is the balancer's job.

use std::time::{Duration, Instant};

/// Latency assumed for an endpoint before its first response (Linkerd's default).
pub(super) const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast old samples lose weight: after this long a sample weighs 1/e.
pub(super) const DECAY: Duration = Duration::from_secs(10);

/// Call order: `start` when a request is sent, `end` with its latency when it completes;
/// `cost` at any time.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PeakEwma {
    rtt_ns: f64,
    /// When `rtt_ns` was last updated; `None` before the first response.
    updated: Option<Instant>,
    outstanding: u32,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            rtt_ns: DEFAULT_RTT.as_nanos() as f64,
            updated: None,
            outstanding: 0,
        }
    }
}

impl PeakEwma {
    pub(super) fn start(&mut self) {
        self.outstanding = self.outstanding.saturating_add(1);
    }

    pub(super) fn end(&mut self, now: Instant, latency: Duration) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let sample = latency.as_nanos() as f64;
        self.rtt_ns = match self.updated {
            // The first measurement replaces the guess.
            None => sample,
            // A peak is taken at once, so a slowing endpoint is avoided without delay.
            Some(_) if sample > self.rtt_ns => sample,
            Some(at) => {
                let w = weight(now.saturating_duration_since(at));
                self.rtt_ns * w + sample * (1.0 - w)
            }
        };
        // A late completion (`now` before the last update) must not move the clock back.
        self.updated = Some(self.updated.map_or(now, |at| at.max(now)));
    }

    /// `latency estimate × (outstanding + 1)`, with the estimate decayed toward zero for the
    /// time since the last sample, so an idle endpoint is probed again eventually.
    pub(super) fn cost(&self, now: Instant) -> f64 {
        let rtt = match self.updated {
            None => self.rtt_ns,
            Some(at) => self.rtt_ns * weight(now.saturating_duration_since(at)),
        };
        rtt * (f64::from(self.outstanding) + 1.0)
    }

    pub(super) fn outstanding(&self) -> u32 {
        self.outstanding
    }
}

/// Weight of the old estimate after `elapsed`: `e^(-elapsed / DECAY)`.
fn weight(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}
