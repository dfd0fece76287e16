//! Local rate limiting: one token bucket per limited route or service, refilled at
//! `requestsPerSecond` and holding at most `burst` tokens.
//!
//! ```text
//!  request ─► try_take(now) ─┬─► Ok(())               forward
//!                            └─► Err(RetryAfter(d))   answer 429 with `Retry-After: d`
//! ```
//!
//! The limit is local to one sidecar; it does not coordinate with other sidecars or clusters,
//! and it does not queue requests.

use std::time::{Duration, Instant};

use mesh_proto::resource;

/// How long until the next token, when none is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// A token bucket. Arithmetic is integral (a token is `UNIT` credits, refilled at `rps`
/// credits per nanosecond), so no rate drifts and none overflows.
///
/// Call order: [`TokenBucket::from_spec`], then [`TokenBucket::try_take`] once per request.
/// The bucket starts full. A `now` earlier than one already seen refills nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rps: u64,
    capacity: u128,
    credit: u128,
    last: Option<Instant>,
}

/// Credits in one token: one second's worth of nanoseconds, so `rps` tokens per second is
/// `rps` credits per nanosecond.
const UNIT: u128 = 1_000_000_000;

impl TokenBucket {
    /// `requests_per_second` and `burst` of 0 are raised to 1 (config refuses 0).
    pub fn new(requests_per_second: u32, burst: u32) -> Self {
        let capacity = u128::from(burst.max(1)) * UNIT;
        Self {
            rps: u64::from(requests_per_second.max(1)),
            capacity,
            credit: capacity,
            last: None,
        }
    }

    /// `burst` defaults to one second's worth of requests.
    pub fn from_spec(spec: &resource::RateLimit) -> Self {
        Self::new(
            spec.requests_per_second,
            spec.burst.unwrap_or(spec.requests_per_second),
        )
    }

    /// Take one token at `now`, or say how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), RetryAfter> {
        self.refill(now);
        if self.credit >= UNIT {
            self.credit -= UNIT;
            return Ok(());
        }
        let missing = UNIT - self.credit;
        let nanos = missing.div_ceil(u128::from(self.rps));
        Err(RetryAfter(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        )))
    }

    /// Whole tokens left after refilling to `now`, for metrics.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.credit / UNIT).unwrap_or(u64::MAX)
    }

    fn refill(&mut self, now: Instant) {
        let last = self.last.get_or_insert(now);
        if now <= *last {
            return;
        }
        let elapsed = now.duration_since(*last).as_nanos();
        *last = now;
        let added = elapsed.saturating_mul(u128::from(self.rps));
        self.credit = self.credit.saturating_add(added).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_defaults_to_rate_and_zero_is_clamped() {
        let spec = resource::RateLimit {
            requests_per_second: 50,
            burst: None,
        };
        assert_eq!(TokenBucket::from_spec(&spec), TokenBucket::new(50, 50));
        let zero = TokenBucket::new(0, 0);
        assert_eq!((zero.rps, zero.capacity), (1, UNIT));
    }
}
