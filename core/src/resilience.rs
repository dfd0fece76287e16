//! Per-route resilience policy (DESIGN §6, the `TrafficPolicy` kind of §8): retries with a
//! retry budget, circuit breaking by limits, outlier detection, local rate limiting and fault
//! injection. Each is a small state machine or pure function built from its spec section with
//! `from_spec`; none reads a clock or owns randomness.
//!
//! ```text
//!  request ─► ratelimit::TokenBucket ─► fault::FaultInjector ─► breaker::CircuitBreaker
//!          ─► (balance picks an endpoint, skipping outlier::OutlierDetector ejections)
//!          ─► attempt ─► AttemptOutcome ─┬─► outlier::OutlierDetector::handle_result
//!                                        └─► retry::RetryPolicy::should_retry ─► again / give up
//! ```
//!
//! The diagram is the intended order in the shell; this module does not enforce it, and it
//! does not time requests out: timeouts are durations the shell arms on its own timers.

pub mod breaker;
pub mod fault;
pub mod outlier;
pub mod ratelimit;
pub mod retry;

/// How one attempt of a request ended, as the shell saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The upstream answered with this status.
    Status(u16),
    /// No connection could be made (refused, unreachable, TLS handshake failed); the request
    /// was never sent.
    ConnectFailure,
    /// The connection or stream was reset after the request was sent, before a response.
    Reset,
    /// The per-try timeout fired before a response.
    Timeout,
}

impl AttemptOutcome {
    /// True for a 5xx status.
    pub fn is_5xx(self) -> bool {
        matches!(self, AttemptOutcome::Status(500..=599))
    }
}
