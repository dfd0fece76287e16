//! Outlier detection: ejects an endpoint from load balancing after consecutive connect failures
//! or consecutive 5xx, for an ejection time that doubles each time it recurs (DESIGN §6: a lost
//! endpoint leaves rotation on its first failed connect).
//!
//! ```text
//!  handle_endpoints(set) ─┐
//!  handle_result(now, endpoint, outcome) ─► counters ─► threshold reached ─► eject until t
//!  poll_timeout() = earliest t ─► handle_timeout(now) ─► endpoint returns
//!  poll_event() ─► Ejected / Returned / EjectionCapped   (for logs and metrics)
//!  is_ejected(now, endpoint) ─► the balancer's eligibility predicate
//! ```
//!
//! It does not probe endpoints, read gossip health or pick endpoints; it only answers whether
//! an endpoint is ejected at a given time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use mesh_proto::resource;

use super::AttemptOutcome;
use crate::balance::EndpointId;
use crate::config::parse_duration;

/// Defaults for fields a spec leaves out. Connect failures eject on the first one (DESIGN §6);
/// a single 5xx can be the request's fault, so 5xx needs five in a row (Envoy's default).
pub const DEFAULT_CONSECUTIVE_CONNECT_FAILURES: u32 = 1;
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Longest ejection, however often an endpoint is ejected (unless the base is longer).
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// By default every endpoint may be ejected: an empty local set is what moves traffic on to the
/// next locality or peer cluster (DESIGN §6). Lower it to keep some endpoints in rotation.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 100;
/// Events kept for `poll_event`; older ones are dropped first.
const MAX_EVENTS: usize = 1024;

/// Outlier detection over one endpoint set.
///
/// Call order: [`OutlierDetector::handle_endpoints`] whenever the set changes, then
/// [`OutlierDetector::handle_result`] after every attempt. Arm a timer at
/// [`OutlierDetector::poll_timeout`] and call [`OutlierDetector::handle_timeout`] when it fires;
/// drain [`OutlierDetector::poll_event`] after any `handle_*`. [`OutlierDetector::is_ejected`]
/// is exact at any `now` even if `handle_timeout` is late.
///
/// Ejection cap: at most `max_ejection_percent` of the set (rounded down) is ejected at once,
/// but at least one endpoint may be when the percent is above 0 (Envoy's rule, so small sets
/// are protected at all). Below 100 %, the last endpoint in rotation is never ejected; at 100 %
/// all may be, and the caller fails over. An endpoint over its threshold while the cap is
/// reached keeps its counts and is ejected on its next failure if room has appeared.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: BTreeMap<EndpointId, EndpointState>,
    events: VecDeque<OutlierEvent>,
}

/// The resolved `outlierDetection` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// Something that happened, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutlierEvent {
    Ejected {
        endpoint: EndpointId,
        reason: EjectReason,
        until: Instant,
        /// How many times in a row this endpoint has been ejected, this one included.
        ejections: u32,
    },
    Returned {
        endpoint: EndpointId,
    },
    /// The threshold was reached but the ejection cap was, too.
    EjectionCapped {
        endpoint: EndpointId,
        reason: EjectReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectReason {
    ConsecutiveConnectFailures,
    Consecutive5xx,
}

#[derive(Debug, Clone, Default)]
struct EndpointState {
    consecutive_5xx: u32,
    consecutive_connect_failures: u32,
    /// Ejection count, which sets the next ejection's length; it decays while healthy.
    ejections: u32,
    /// End of the current or last ejection.
    ejected_until: Option<Instant>,
    /// `Returned` for `ejected_until` has not been emitted yet.
    return_due: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_connect_failures: DEFAULT_CONSECUTIVE_CONNECT_FAILURES,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

impl OutlierConfig {
    /// Missing fields take the defaults above; thresholds of 0 become 1, a zero or unparsable
    /// base time the default, and percentages above 100 become 100.
    pub fn from_spec(spec: &resource::OutlierDetection) -> Self {
        let d = Self::default();
        Self {
            consecutive_5xx: spec.consecutive_5xx.unwrap_or(d.consecutive_5xx).max(1),
            consecutive_connect_failures: spec
                .consecutive_connect_failures
                .unwrap_or(d.consecutive_connect_failures)
                .max(1),
            base_ejection_time: spec
                .base_ejection_time
                .as_deref()
                .and_then(|s| parse_duration(s).ok())
                .filter(|t| !t.is_zero())
                .unwrap_or(d.base_ejection_time),
            max_ejection_percent: spec
                .max_ejection_percent
                .unwrap_or(d.max_ejection_percent)
                .min(100),
        }
    }

    /// Length of ejection number `ejections` (1-based): `base × 2^(ejections-1)`, at most
    /// [`MAX_EJECTION_TIME`] or the base, whichever is longer.
    pub fn ejection_time(&self, ejections: u32) -> Duration {
        let doublings = ejections.saturating_sub(1).min(31);
        self.base_ejection_time
            .saturating_mul(1u32 << doublings)
            .min(MAX_EJECTION_TIME.max(self.base_ejection_time))
    }

    /// How many of `n` endpoints may be ejected at once.
    pub fn max_ejected(&self, n: usize) -> usize {
        let percent = self.max_ejection_percent as usize;
        match percent {
            0 => 0,
            100.. => n,
            _ => (n * percent / 100).max(1).min(n.saturating_sub(1)),
        }
    }
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            endpoints: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    pub fn from_spec(spec: &resource::OutlierDetection) -> Self {
        Self::new(OutlierConfig::from_spec(spec))
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Replace the endpoint set. Endpoints that stay keep their counters and ejections; new
    /// ones start clean; removed ones are forgotten.
    pub fn handle_endpoints(&mut self, endpoints: impl IntoIterator<Item = EndpointId>) {
        let mut old = std::mem::take(&mut self.endpoints);
        self.endpoints = endpoints
            .into_iter()
            .map(|id| {
                let state = old.remove(&id).unwrap_or_default();
                (id, state)
            })
            .collect();
    }

    /// Record how an attempt to `endpoint` ended. Results for endpoints outside the set, or
    /// for one already ejected (requests that were in flight), are ignored.
    ///
    /// A 5xx, reset or timeout counts toward `consecutive5xx` (the endpoint accepted the
    /// connection and then failed the request) and clears the connect-failure count; a connect
    /// failure counts toward `consecutiveConnectFailures` only; any other status clears both.
    pub fn handle_result(&mut self, now: Instant, endpoint: &EndpointId, outcome: AttemptOutcome) {
        let config = self.config;
        let Some(state) = self.endpoints.get_mut(endpoint) else {
            return;
        };
        if state.ejected_until.is_some_and(|t| t > now) {
            return;
        }
        // An ejection that ended before its timer fired: report the return first.
        let returned = std::mem::take(&mut state.return_due);
        count(state, outcome);
        let reason = threshold_reached(&config, state);
        if returned {
            self.push(OutlierEvent::Returned {
                endpoint: endpoint.clone(),
            });
        }
        let Some(reason) = reason else {
            return;
        };
        // Counting ejections walks the set, so it happens only when a threshold is reached.
        if self.ejected_count(now) >= config.max_ejected(self.endpoints.len()) {
            self.push(OutlierEvent::EjectionCapped {
                endpoint: endpoint.clone(),
                reason,
            });
            return;
        }
        if let Some(state) = self.endpoints.get_mut(endpoint) {
            let event = eject(&config, state, now, endpoint.clone(), reason);
            self.push(event);
        }
    }

    /// Return endpoints whose ejection has ended by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut returned = Vec::new();
        for (id, state) in &mut self.endpoints {
            if state.return_due && state.ejected_until.is_some_and(|t| t <= now) {
                state.return_due = false;
                returned.push(id.clone());
            }
        }
        for endpoint in returned {
            self.push(OutlierEvent::Returned { endpoint });
        }
    }

    /// When the next ejection ends, if any endpoint is ejected.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoints
            .values()
            .filter(|s| s.return_due)
            .filter_map(|s| s.ejected_until)
            .min()
    }

    pub fn poll_event(&mut self) -> Option<OutlierEvent> {
        self.events.pop_front()
    }

    /// Whether `endpoint` is out of rotation at `now`. Unknown endpoints are not ejected.
    pub fn is_ejected(&self, now: Instant, endpoint: &EndpointId) -> bool {
        self.endpoints
            .get(endpoint)
            .and_then(|s| s.ejected_until)
            .is_some_and(|t| t > now)
    }

    /// How many endpoints are ejected at `now`.
    pub fn ejected_count(&self, now: Instant) -> usize {
        self.endpoints
            .values()
            .filter(|s| s.ejected_until.is_some_and(|t| t > now))
            .count()
    }

    fn push(&mut self, event: OutlierEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

fn count(state: &mut EndpointState, outcome: AttemptOutcome) {
    match outcome {
        AttemptOutcome::ConnectFailure => {
            state.consecutive_connect_failures =
                state.consecutive_connect_failures.saturating_add(1);
        }
        AttemptOutcome::Status(500..=599) | AttemptOutcome::Reset | AttemptOutcome::Timeout => {
            state.consecutive_5xx = state.consecutive_5xx.saturating_add(1);
            state.consecutive_connect_failures = 0;
        }
        AttemptOutcome::Status(_) => {
            state.consecutive_5xx = 0;
            state.consecutive_connect_failures = 0;
        }
    }
}

fn threshold_reached(config: &OutlierConfig, state: &EndpointState) -> Option<EjectReason> {
    if state.consecutive_connect_failures >= config.consecutive_connect_failures {
        Some(EjectReason::ConsecutiveConnectFailures)
    } else if state.consecutive_5xx >= config.consecutive_5xx {
        Some(EjectReason::Consecutive5xx)
    } else {
        None
    }
}

/// Eject `state` from `now`. The ejection count first decays by one for each base ejection
/// time spent healthy since the last ejection ended, so an endpoint that recovered for good
/// starts again from the base time.
fn eject(
    config: &OutlierConfig,
    state: &mut EndpointState,
    now: Instant,
    endpoint: EndpointId,
    reason: EjectReason,
) -> OutlierEvent {
    if let Some(back) = state.ejected_until {
        let healthy = now.saturating_duration_since(back);
        let steps = healthy.as_nanos() / config.base_ejection_time.as_nanos().max(1);
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        state.ejections = state.ejections.saturating_sub(steps);
    }
    state.ejections = state.ejections.saturating_add(1);
    let length = config.ejection_time(state.ejections);
    // `Instant` overflow would need an ejection of centuries; stay ejected for the base then.
    let until = now
        .checked_add(length)
        .or_else(|| now.checked_add(config.base_ejection_time))
        .unwrap_or(now);
    state.ejected_until = Some(until);
    state.return_due = true;
    state.consecutive_5xx = 0;
    state.consecutive_connect_failures = 0;
    OutlierEvent::Ejected {
        endpoint,
        reason,
        until,
        ejections: state.ejections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_time_doubles_and_is_capped() {
        let c = OutlierConfig::default();
        let secs = |n| c.ejection_time(n).as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(4), secs(5)],
            [30, 60, 120, 240, 300]
        );
        assert_eq!(secs(u32::MAX), 300);
        let long = OutlierConfig {
            base_ejection_time: Duration::from_secs(600),
            ..c
        };
        assert_eq!(long.ejection_time(3), Duration::from_secs(600));
    }

    #[test]
    fn max_ejected_by_percent() {
        let at = |percent, n| {
            OutlierConfig {
                max_ejection_percent: percent,
                ..OutlierConfig::default()
            }
            .max_ejected(n)
        };
        // (percent, endpoints) -> ejectable
        let cases = [
            ((0, 10), 0),
            ((10, 10), 1),
            ((10, 3), 1),
            ((10, 1), 0),
            ((50, 4), 2),
            ((50, 3), 1),
            ((99, 10), 9),
            ((99, 2), 1),
            ((100, 1), 1),
            ((100, 7), 7),
            ((100, 0), 0),
            ((10, 0), 0),
        ];
        for ((percent, n), expect) in cases {
            assert_eq!(at(percent, n), expect, "{percent}% of {n}");
        }
    }

    #[test]
    fn odd_spec_values_are_clamped() {
        let spec = resource::OutlierDetection {
            consecutive_5xx: Some(0),
            consecutive_connect_failures: None,
            base_ejection_time: Some("0s".to_owned()),
            max_ejection_percent: Some(1000),
        };
        let c = OutlierConfig::from_spec(&spec);
        assert_eq!(c.consecutive_5xx, 1);
        assert_eq!(
            c.consecutive_connect_failures,
            DEFAULT_CONSECUTIVE_CONNECT_FAILURES
        );
        assert_eq!(c.base_ejection_time, DEFAULT_BASE_EJECTION_TIME);
        assert_eq!(c.max_ejection_percent, 100);
    }
}
