//! Retries: which attempt outcomes are retried, how long to back off, and the retry budget that
//! caps the extra load retries may add (Finagle's `RetryBudget`, Linkerd's retry budget).
//!
//! ```text
//!  new request ─► handle_request(now)            (deposits `ratio` of a token)
//!  attempt n failed ─► should_retry(n, outcome, now, rng)
//!        ├─► Retry { backoff }   (withdrew one token; the shell waits `backoff`, tries again)
//!        └─► GiveUp { reason }   (the shell returns the last outcome)
//! ```
//!
//! It does not decide whether a request is safe to repeat beyond its `retryOn` conditions, arm
//! per-try timeouts (the shell does, with [`RetryPolicy::per_try_timeout`]), or replay bodies.

use std::time::{Duration, Instant};

use mesh_proto::resource;

use super::AttemptOutcome;
use crate::config::parse_duration;
use crate::rng::Rng;

/// Length of the budget's sliding window.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Budget when a policy sets retries but no budget (Linkerd's default).
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// First backoff, before jitter; it doubles with each retry up to [`MAX_BACKOFF`] (Envoy's
/// defaults: 25 ms base, ten times that at most).
pub const BASE_BACKOFF: Duration = Duration::from_millis(25);
pub const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Most attempts a request may take, the first included (config refuses more).
pub const MAX_ATTEMPTS: u32 = 10;

/// Buckets of one second each, covering [`BUDGET_WINDOW`].
const BUCKETS: usize = 10;
/// Tokens are counted in thousandths, so a ratio of 0.2 deposits exactly 200 per request.
const MILLI: i64 = 1000;

/// The retry budget: a sliding-window token account.
///
/// Each request deposits `ratio` of a token and each retry withdraws one. Deposits and
/// withdrawals expire after [`BUDGET_WINDOW`], and a reserve of `min_per_second` tokens per
/// second of window is always there, so over any window retries stay within
/// `ratio × requests + min_per_second × 10 s`. The window moves in one-second buckets.
///
/// Call order: [`RetryBudget::handle_request`] once per request (not per attempt), then
/// [`RetryBudget::try_withdraw`] before each retry. `now` may repeat; a `now` earlier than one
/// already seen counts as the latest second seen, so late callers cannot reopen old buckets.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    deposit_milli: i64,
    reserve_milli: i64,
    origin: Option<Instant>,
    /// Latest second (since `origin`) seen.
    latest: u64,
    /// Net milli-tokens of each second, at index `second % BUCKETS`.
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    net_milli: i64,
}

/// A retry policy of one `TrafficPolicy`: conditions, attempts, backoff and budget.
///
/// Call order: [`RetryPolicy::handle_request`] once per request, then after each failed attempt
/// [`RetryPolicy::should_retry`] with the attempt's 1-based number.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    per_try_timeout: Option<Duration>,
    retry_on: RetryOn,
    budget: RetryBudget,
}

/// The `retryOn` conditions, resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `5xx`: any 5xx status, a reset, a connect failure or a per-try timeout (Envoy's meaning).
    pub any_5xx: bool,
    /// `gateway-error`: 502, 503, 504 or a per-try timeout.
    pub gateway_error: bool,
    /// `connect-failure`: the request was never sent. The default when `retryOn` is empty,
    /// because it is the one condition safe for every method.
    pub connect_failure: bool,
    /// `reset`: the stream was reset before a response.
    pub reset: bool,
    /// `retriable-4xx`: 409 Conflict.
    pub retriable_4xx: bool,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait `backoff`, then try again.
    Retry { backoff: Duration },
    /// Return the last outcome to the caller.
    GiveUp { reason: GiveUpReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The outcome is a success or matches no `retryOn` condition.
    NotRetryable,
    /// The request has taken all its attempts.
    AttemptsExhausted { attempts: u32 },
    /// The retry budget is spent: the upstream is failing broadly and retries would only add
    /// load.
    BudgetExhausted,
}

impl RetryBudget {
    /// `ratio` is clamped to `0.0..=1.0` (NaN counts as 0).
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        Self {
            deposit_milli: (ratio * MILLI as f64).round() as i64,
            reserve_milli: i64::from(min_per_second) * BUCKETS as i64 * MILLI,
            origin: None,
            latest: 0,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    pub fn from_spec(spec: &resource::RetryBudget) -> Self {
        Self::new(spec.ratio, spec.min_per_second)
    }

    /// A new request: deposit `ratio` of a token.
    pub fn handle_request(&mut self, now: Instant) {
        let deposit = self.deposit_milli;
        self.bucket(now).net_milli += deposit;
    }

    /// Withdraw one token for a retry if the window holds one; false means do not retry.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.balance_milli(now) < MILLI {
            return false;
        }
        self.bucket(now).net_milli -= MILLI;
        true
    }

    /// Whole tokens available at `now`, for metrics.
    pub fn balance(&mut self, now: Instant) -> i64 {
        self.balance_milli(now) / MILLI
    }

    fn balance_milli(&mut self, now: Instant) -> i64 {
        let current = self.second(now);
        let live = self
            .buckets
            .iter()
            .filter(|b| b.second + BUCKETS as u64 > current)
            .map(|b| b.net_milli)
            .sum::<i64>();
        self.reserve_milli + live
    }

    /// The second `now` falls in, never earlier than the latest seen.
    fn second(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs();
        self.latest = self.latest.max(second);
        self.latest
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let second = self.second(now);
        let slot = &mut self.buckets[(second % BUCKETS as u64) as usize];
        if slot.second != second {
            *slot = Bucket {
                second,
                net_milli: 0,
            };
        }
        slot
    }
}

impl RetryOn {
    /// Resolve `retryOn` names; unknown names are ignored (config refuses them), and an empty
    /// list means `connect-failure` only.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut on = RetryOn::default();
        for name in names {
            match name {
                "5xx" => on.any_5xx = true,
                "gateway-error" => on.gateway_error = true,
                "connect-failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "retriable-4xx" => on.retriable_4xx = true,
                _ => {}
            }
        }
        if on == RetryOn::default() {
            on.connect_failure = true;
        }
        on
    }

    /// Whether `outcome` matches any condition.
    pub fn matches(self, outcome: AttemptOutcome) -> bool {
        match outcome {
            AttemptOutcome::Status(s @ 500..=599) => {
                self.any_5xx || (self.gateway_error && matches!(s, 502..=504))
            }
            AttemptOutcome::Status(409) => self.retriable_4xx,
            AttemptOutcome::Status(_) => false,
            AttemptOutcome::ConnectFailure => self.connect_failure || self.any_5xx,
            AttemptOutcome::Reset => self.reset || self.any_5xx,
            AttemptOutcome::Timeout => self.any_5xx || self.gateway_error,
        }
    }
}

impl RetryPolicy {
    /// Build from the spec's `retries` section. Attempts are clamped to `1..=MAX_ATTEMPTS`;
    /// a missing budget gets the default one (20 % plus 10 per second), because every retry
    /// must be capped; an unparsable per-try timeout means none.
    pub fn from_spec(spec: &resource::RetryPolicy) -> Self {
        Self {
            max_attempts: spec.attempts.clamp(1, MAX_ATTEMPTS),
            per_try_timeout: spec
                .per_try_timeout
                .as_deref()
                .and_then(|s| parse_duration(s).ok())
                .filter(|d| !d.is_zero()),
            retry_on: RetryOn::from_names(spec.retry_on.iter().map(String::as_str)),
            budget: spec.budget.as_ref().map_or_else(
                || RetryBudget::new(DEFAULT_BUDGET_RATIO, DEFAULT_BUDGET_MIN_PER_SECOND),
                RetryBudget::from_spec,
            ),
        }
    }

    /// The deadline the shell arms for each attempt, if any.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// A new request (not a retry): feeds the budget.
    pub fn handle_request(&mut self, now: Instant) {
        self.budget.handle_request(now);
    }

    /// Decide after attempt number `attempt` (1 for the first) ended with `outcome`. A
    /// `Retry` has already withdrawn its token from the budget.
    ///
    /// The backoff is capped exponential with equal jitter: the cap is
    /// `min(MAX_BACKOFF, BASE_BACKOFF × 2^(attempt-1))`, and the wait is uniform in
    /// `[cap/2, cap]`, so retries of many requests spread out but never fire at once.
    pub fn should_retry(
        &mut self,
        attempt: u32,
        outcome: AttemptOutcome,
        now: Instant,
        rng: &mut impl Rng,
    ) -> RetryDecision {
        if !self.retry_on.matches(outcome) {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::NotRetryable,
            };
        }
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::AttemptsExhausted {
                    attempts: self.max_attempts,
                },
            };
        }
        if !self.budget.try_withdraw(now) {
            return RetryDecision::GiveUp {
                reason: GiveUpReason::BudgetExhausted,
            };
        }
        RetryDecision::Retry {
            backoff: backoff(attempt, rng),
        }
    }
}

/// Equal-jitter capped exponential backoff after attempt `attempt` (1-based).
pub fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let cap = BASE_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF);
    let half = cap / 2;
    let spread = u64::try_from((cap - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rng.below(spread.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn retry_on_conditions() {
        use AttemptOutcome::*;
        let on = |names: &[&str]| RetryOn::from_names(names.iter().copied());
        let cases: &[(&[&str], AttemptOutcome, bool)] = &[
            (&[], ConnectFailure, true),
            (&[], Status(503), false),
            (&[], Reset, false),
            (&["5xx"], Status(500), true),
            (&["5xx"], Status(599), true),
            (&["5xx"], Status(404), false),
            (&["5xx"], ConnectFailure, true),
            (&["5xx"], Reset, true),
            (&["5xx"], Timeout, true),
            (&["gateway-error"], Status(500), false),
            (&["gateway-error"], Status(503), true),
            (&["gateway-error"], Timeout, true),
            (&["gateway-error"], ConnectFailure, false),
            (&["reset"], Reset, true),
            (&["reset"], Timeout, false),
            (&["retriable-4xx"], Status(409), true),
            (&["retriable-4xx"], Status(429), false),
            (&["5xx"], Status(200), false),
        ];
        for (names, outcome, expect) in cases {
            assert_eq!(
                on(names).matches(*outcome),
                *expect,
                "{names:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut rng = SplitMix64::new(3);
        for attempt in 1..=12 {
            let cap = BASE_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(MAX_BACKOFF);
            for _ in 0..100 {
                let b = backoff(attempt, &mut rng);
                assert!(
                    b >= cap / 2 && b <= cap,
                    "attempt {attempt}: {b:?} vs cap {cap:?}"
                );
            }
        }
        assert!(backoff(u32::MAX, &mut rng) <= MAX_BACKOFF);
        assert!(backoff(0, &mut rng) <= BASE_BACKOFF);
    }

    #[test]
    fn odd_values_are_clamped() {
        let b = RetryBudget::new(f64::NAN, 0);
        assert_eq!(b.deposit_milli, 0);
        let b = RetryBudget::new(7.0, 0);
        assert_eq!(b.deposit_milli, MILLI);
        let spec: resource::RetryPolicy = serde_json::from_value(serde_json::json!({
            "attempts": 0, "perTryTimeout": "bogus", "retryOn": ["nonsense"]
        }))
        .unwrap();
        let p = RetryPolicy::from_spec(&spec);
        assert_eq!(p.max_attempts(), 1);
        assert_eq!(p.per_try_timeout(), None);
        assert_eq!(p.retry_on, RetryOn::from_names([]));
    }
}
