//! Time-driven tests of the resilience cores (`mesh_core::resilience`): the retry budget under a
//! failing upstream, outlier ejection and its backoff, and the token bucket.
//!
//! They live here rather than next to the code because they need one real `Instant` as the
//! origin of simulated time, and tidy forbids clock reads anywhere under `core/src`. After that
//! one read, time only moves by adding durations, so every run is the same.

use std::time::{Duration, Instant};

use mesh_core::balance::EndpointId;
use mesh_core::resilience::AttemptOutcome;
use mesh_core::resilience::outlier::{EjectReason, OutlierConfig, OutlierDetector, OutlierEvent};
use mesh_core::resilience::ratelimit::{RetryAfter, TokenBucket};
use mesh_core::resilience::retry::{GiveUpReason, RetryDecision, RetryPolicy};
use mesh_core::rng::SplitMix64;
use mesh_proto::resource;

fn origin() -> Instant {
    Instant::now()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------- retry budget

fn retry_policy(attempts: u32, ratio: f64, min_per_second: u32) -> RetryPolicy {
    RetryPolicy::from_spec(&resource::RetryPolicy {
        attempts,
        per_try_timeout: None,
        retry_on: vec!["5xx".to_owned()],
        budget: Some(resource::RetryBudget {
            ratio,
            min_per_second,
        }),
    })
}

/// Run `requests` requests, `gap` apart, against an upstream that fails every attempt, and
/// count the retries the policy allows.
fn retries_against_failing_upstream(policy: &mut RetryPolicy, requests: u32, gap: Duration) -> u32 {
    let t0 = origin();
    let mut rng = SplitMix64::new(9);
    let mut retries = 0;
    for i in 0..requests {
        let now = t0 + gap * i;
        policy.handle_request(now);
        let mut attempt = 1;
        while let RetryDecision::Retry { backoff } =
            policy.should_retry(attempt, AttemptOutcome::Status(503), now, &mut rng)
        {
            assert!(backoff <= Duration::from_millis(250));
            retries += 1;
            attempt += 1;
        }
    }
    retries
}

#[test]
fn retry_budget_caps_retries_against_a_failing_upstream() {
    // 10,000 requests at 100 per second: 100 s of simulated time.
    let (requests, seconds, min_per_second) = (10_000u32, 100u32, 10u32);
    let mut policy = retry_policy(5, 0.2, min_per_second);
    let retries =
        retries_against_failing_upstream(&mut policy, requests, Duration::from_millis(10));
    // 20 % of requests, the reserve for every second, and one bucket of slack.
    let bucket_slack = 0.2 * f64::from(requests / seconds) + f64::from(min_per_second);
    let bound = 0.2 * f64::from(requests) + f64::from(min_per_second * seconds) + bucket_slack;
    assert!(
        f64::from(retries) <= bound,
        "{retries} retries for {requests} requests exceeds {bound}"
    );
    // The budget is not stingier than promised either.
    assert!(retries >= 2_000, "only {retries} retries");
}

#[test]
fn retry_budget_without_reserve_allows_only_the_ratio() {
    let mut policy = retry_policy(10, 0.1, 0);
    let retries = retries_against_failing_upstream(&mut policy, 1_000, Duration::from_millis(10));
    assert!((95..=101).contains(&retries), "{retries} retries");
    let mut none = retry_policy(10, 0.0, 0);
    assert_eq!(
        retries_against_failing_upstream(&mut none, 1_000, Duration::from_millis(10)),
        0
    );
}

#[test]
fn retry_budget_deposits_expire_after_the_window() {
    let mut policy = retry_policy(2, 1.0, 0);
    let t0 = origin();
    let mut rng = SplitMix64::new(1);
    for _ in 0..5 {
        policy.handle_request(t0);
    }
    // Eleven seconds later the five deposits are gone.
    let later = t0 + secs(11);
    assert_eq!(
        policy.should_retry(1, AttemptOutcome::Status(500), later, &mut rng),
        RetryDecision::GiveUp {
            reason: GiveUpReason::BudgetExhausted
        }
    );
    assert!(
        matches!(
            policy.should_retry(1, AttemptOutcome::Status(500), t0 + secs(9), &mut rng),
            RetryDecision::GiveUp { .. }
        ),
        "a `now` earlier than one seen counts as the latest second"
    );
}

#[test]
fn retry_policy_gives_up_on_attempts_and_non_retryable_outcomes() {
    let mut policy = retry_policy(3, 1.0, 100);
    let now = origin();
    let mut rng = SplitMix64::new(2);
    policy.handle_request(now);
    assert!(matches!(
        policy.should_retry(1, AttemptOutcome::Reset, now, &mut rng),
        RetryDecision::Retry { .. }
    ));
    assert!(matches!(
        policy.should_retry(2, AttemptOutcome::Status(502), now, &mut rng),
        RetryDecision::Retry { .. }
    ));
    assert_eq!(
        policy.should_retry(3, AttemptOutcome::Status(502), now, &mut rng),
        RetryDecision::GiveUp {
            reason: GiveUpReason::AttemptsExhausted { attempts: 3 }
        }
    );
    assert_eq!(
        policy.should_retry(1, AttemptOutcome::Status(404), now, &mut rng),
        RetryDecision::GiveUp {
            reason: GiveUpReason::NotRetryable
        }
    );
}

// ---------------------------------------------------------------- outlier detection

fn ep(i: usize) -> EndpointId {
    EndpointId::new(&format!("10.0.0.{i}:8443"))
}

fn detector(endpoints: usize, max_ejection_percent: u32) -> OutlierDetector {
    let mut d = OutlierDetector::new(OutlierConfig {
        consecutive_5xx: 3,
        consecutive_connect_failures: 1,
        base_ejection_time: secs(30),
        max_ejection_percent,
    });
    d.handle_endpoints((0..endpoints).map(ep));
    d
}

fn events(d: &mut OutlierDetector) -> Vec<OutlierEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

#[test]
fn first_connect_failure_ejects_and_the_endpoint_returns_after_the_base_time() {
    let mut d = detector(4, 100);
    let t0 = origin();
    d.handle_result(t0, &ep(1), AttemptOutcome::ConnectFailure);
    assert!(d.is_ejected(t0, &ep(1)));
    assert!(!d.is_ejected(t0, &ep(2)));
    assert_eq!(d.poll_timeout(), Some(t0 + secs(30)));
    assert_eq!(
        events(&mut d),
        [OutlierEvent::Ejected {
            endpoint: ep(1),
            reason: EjectReason::ConsecutiveConnectFailures,
            until: t0 + secs(30),
            ejections: 1,
        }]
    );
    assert!(d.is_ejected(t0 + secs(29), &ep(1)));
    // Exact even before the timer fires.
    assert!(!d.is_ejected(t0 + secs(30), &ep(1)));
    d.handle_timeout(t0 + secs(30));
    assert_eq!(events(&mut d), [OutlierEvent::Returned { endpoint: ep(1) }]);
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn ejection_time_doubles_on_repeat_and_decays_while_healthy() {
    let mut d = detector(4, 100);
    let mut now = origin();
    for expect in [30, 60, 120, 240, 300, 300] {
        d.handle_result(now, &ep(0), AttemptOutcome::ConnectFailure);
        let until = d.poll_timeout().expect("ejected");
        assert_eq!(until - now, secs(expect));
        // Fails again the moment it returns.
        now = until;
        d.handle_timeout(now);
    }
    // Each base time spent healthy removes one ejection from the count: six ejections, three
    // base times healthy, so this is ejection number four, 2^3 × 30 s.
    d.handle_result(now + secs(90), &ep(0), AttemptOutcome::ConnectFailure);
    assert_eq!(d.poll_timeout(), Some(now + secs(90) + secs(240)));
    let back = now + secs(90) + secs(240);
    d.handle_timeout(back);
    d.handle_result(back + secs(3600), &ep(0), AttemptOutcome::ConnectFailure);
    assert_eq!(d.poll_timeout(), Some(back + secs(3600) + secs(30)));
}

#[test]
fn a_return_missed_by_the_timer_is_reported_before_the_next_ejection() {
    let mut d = detector(4, 100);
    let t0 = origin();
    d.handle_result(t0, &ep(1), AttemptOutcome::ConnectFailure);
    events(&mut d);
    // No `handle_timeout`: the endpoint fails again the moment its ejection ends.
    let back = t0 + secs(30);
    d.handle_result(back, &ep(1), AttemptOutcome::ConnectFailure);
    assert_eq!(
        events(&mut d),
        [
            OutlierEvent::Returned { endpoint: ep(1) },
            OutlierEvent::Ejected {
                endpoint: ep(1),
                reason: EjectReason::ConsecutiveConnectFailures,
                until: back + secs(60),
                ejections: 2,
            },
        ]
    );
    d.handle_timeout(back + secs(59));
    assert_eq!(d.poll_event(), None);
}

#[test]
fn consecutive_5xx_threshold_and_reset_by_success() {
    let mut d = detector(4, 100);
    let t0 = origin();
    let e = ep(3);
    for outcome in [
        AttemptOutcome::Status(503),
        AttemptOutcome::Timeout,
        AttemptOutcome::Status(200),
        AttemptOutcome::Status(500),
        AttemptOutcome::Reset,
    ] {
        d.handle_result(t0, &e, outcome);
        assert!(!d.is_ejected(t0, &e), "ejected after {outcome:?}");
    }
    d.handle_result(t0, &e, AttemptOutcome::Status(502));
    assert!(d.is_ejected(t0, &e));
    assert!(matches!(
        events(&mut d).as_slice(),
        [OutlierEvent::Ejected {
            reason: EjectReason::Consecutive5xx,
            ..
        }]
    ));
    // Results of requests that were in flight are ignored while ejected.
    d.handle_result(t0 + secs(1), &e, AttemptOutcome::ConnectFailure);
    assert_eq!(d.poll_timeout(), Some(t0 + secs(30)));
    // Unknown endpoints are ignored.
    d.handle_result(t0, &ep(99), AttemptOutcome::ConnectFailure);
    assert!(!d.is_ejected(t0, &ep(99)));
}

#[test]
fn max_ejection_percent_caps_ejections() {
    // 20 % of 10 endpoints: two at once.
    let mut d = detector(10, 20);
    let t0 = origin();
    for i in 0..3 {
        d.handle_result(
            t0 + secs(i),
            &ep(i as usize),
            AttemptOutcome::ConnectFailure,
        );
    }
    let now = t0 + secs(5);
    assert_eq!(d.ejected_count(now), 2);
    assert!(!d.is_ejected(now, &ep(2)));
    assert!(events(&mut d).contains(&OutlierEvent::EjectionCapped {
        endpoint: ep(2),
        reason: EjectReason::ConsecutiveConnectFailures,
    }));
    // Once the first returns, the next failure of the capped endpoint ejects it.
    let after = t0 + secs(30);
    d.handle_timeout(after);
    d.handle_result(after, &ep(2), AttemptOutcome::ConnectFailure);
    assert!(d.is_ejected(after, &ep(2)));
    assert_eq!(d.ejected_count(after), 2);
}

#[test]
fn the_last_endpoint_stays_below_100_percent() {
    let t0 = origin();
    let mut capped = detector(1, 99);
    capped.handle_result(t0, &ep(0), AttemptOutcome::ConnectFailure);
    assert!(!capped.is_ejected(t0, &ep(0)));
    let mut all = detector(1, 100);
    all.handle_result(t0, &ep(0), AttemptOutcome::ConnectFailure);
    assert!(all.is_ejected(t0, &ep(0)));
    // 10 % of 3 endpoints still allows one ejection.
    let mut small = detector(3, 10);
    small.handle_result(t0, &ep(0), AttemptOutcome::ConnectFailure);
    small.handle_result(t0, &ep(1), AttemptOutcome::ConnectFailure);
    assert_eq!(small.ejected_count(t0), 1);
}

#[test]
fn endpoint_set_changes_keep_state_of_kept_endpoints() {
    let mut d = detector(3, 100);
    let t0 = origin();
    d.handle_result(t0, &ep(0), AttemptOutcome::ConnectFailure);
    d.handle_endpoints([ep(0), ep(7)]);
    assert!(d.is_ejected(t0, &ep(0)));
    d.handle_endpoints([ep(7)]);
    assert!(!d.is_ejected(t0, &ep(0)));
    assert_eq!(d.poll_timeout(), None);
}

// ---------------------------------------------------------------- rate limit

#[test]
fn token_bucket_allows_the_burst_then_the_rate() {
    let mut bucket = TokenBucket::new(10, 3);
    let t0 = origin();
    for _ in 0..3 {
        assert_eq!(bucket.try_take(t0), Ok(()));
    }
    assert_eq!(
        bucket.try_take(t0),
        Err(RetryAfter(Duration::from_millis(100)))
    );
    assert_eq!(
        bucket.try_take(t0 + Duration::from_millis(40)),
        Err(RetryAfter(Duration::from_millis(60)))
    );
    assert_eq!(bucket.try_take(t0 + Duration::from_millis(100)), Ok(()));
    // A `now` from the past refills nothing and does not panic.
    assert!(bucket.try_take(t0).is_err());
    // A long idle time refills only up to the burst.
    assert_eq!(bucket.available(t0 + secs(3600)), 3);
}

#[test]
fn token_bucket_sustained_rate() {
    // Offered 1,000 rps for 10 s against 100 rps with a burst of 20.
    let mut bucket = TokenBucket::from_spec(&resource::RateLimit {
        requests_per_second: 100,
        burst: Some(20),
    });
    let t0 = origin();
    let accepted = (0..10_000u32)
        .filter(|i| {
            bucket
                .try_take(t0 + Duration::from_millis(u64::from(*i)))
                .is_ok()
        })
        .count();
    assert!((1_018..=1_020).contains(&accepted), "{accepted} accepted");
}
