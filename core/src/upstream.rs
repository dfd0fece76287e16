//! The outbound traffic state of one upstream, as one local service calls it: the routes
//! attached to the upstream, and per backend service its balancer, outlier detector, circuit
//! breaker, retry policy and fault injector (DESIGN §6 per-route policy, §8 kinds).
//!
//! ```text
//!  handle_config(routes, policies) ─► RouteTable + one Backend per backendRef (or the upstream)
//!  handle_endpoints(backend, ids)  ─► Balancer + OutlierDetector endpoint sets
//!
//!  start(now, request, rng) ─┬─► Start::Reply { 404 NR | 500 NR | FI abort | 503 UO | 503 UH }
//!                            └─► Start::Forward(InFlight { backend, endpoint, timeouts, delay })
//!  attempt ends ─► handle_outcome(now, &mut InFlight, outcome, latency, rng)
//!        ├─► Next::Done                      (success, or an outcome no condition retries)
//!        ├─► Next::Retry { backoff }         (InFlight now names the next endpoint)
//!        └─► Next::GiveUp { reason }         (attempts or budget exhausted, or no endpoint)
//!  request leaves ─► finish(InFlight)        (gives the breaker permit back; exactly once)
//! ```
//!
//! Which policy applies: a `TrafficPolicy` targeting a backend service governs requests sent
//! to it; a backend without its own takes the upstream's (so one policy on `api` covers the
//! canary backends `api-v1` and `api-v2`). Without a `retries` section, a request gets one
//! retry to another endpoint after a connect failure (never sent, so always safe), or after a
//! reset if its method is idempotent (a pooled connection to a peer that just died), within the
//! default budget.
//!
//! This module decides only. It does not connect, time anything out, sleep or buffer bodies:
//! the shell arms `InFlight::timeout` and `per_try_timeout`, waits `delay` and `backoff`, and
//! tells it what happened. It also does not resolve identities: a backend is a service name,
//! whose SPIFFE ID the shell derives and pins in its TLS verifier.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh_proto::resource::{HttpRouteSpec, TrafficPolicySpec};

use crate::balance::{Balancer, EndpointId, Selection};
use crate::config::parse_duration;
use crate::resilience::AttemptOutcome;
use crate::resilience::breaker::{CircuitBreaker, PendingPermit};
use crate::resilience::fault::{Fault, FaultInjector};
use crate::resilience::outlier::{OutlierDetector, OutlierEvent};
use crate::resilience::retry::{GiveUpReason, RetryDecision, RetryPolicy};
use crate::rng::Rng;
use crate::route::{RouteDecision, RouteRequest, RouteTable, RuleRef};

/// Attempts a request gets when no policy sets retries: the first, plus one to another
/// endpoint after a connect failure.
pub const DEFAULT_ATTEMPTS: u32 = 2;

/// The traffic state of one upstream.
///
/// Call order: [`Upstream::handle_config`] first and whenever routes or policies change;
/// [`Upstream::handle_endpoints`] for every name in [`Upstream::backends`] whenever its
/// endpoints change; per request [`Upstream::start`], then [`Upstream::handle_outcome`] after
/// each attempt until it answers `Done` or `GiveUp`, then [`Upstream::finish`] exactly once for
/// every `Forward` (also when the request is abandoned). Drain [`Upstream::poll_event`] after
/// `handle_outcome` for logs.
#[derive(Debug)]
pub struct Upstream {
    service: String,
    routes: RouteTable,
    backends: BTreeMap<String, Backend>,
    events: Vec<(String, OutlierEvent)>,
}

/// One backend service and the resilience state of requests sent to it.
#[derive(Debug)]
struct Backend {
    /// The effective policy this state was built from, to tell when it must be rebuilt.
    policy: Option<TrafficPolicySpec>,
    balancer: Balancer,
    outlier: OutlierDetector,
    breaker: CircuitBreaker,
    retry: RetryPolicy,
    fault: FaultInjector,
    /// No `retries` section: resets are retried only for idempotent methods.
    default_retries: bool,
    request_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    endpoints: Vec<EndpointId>,
    /// Locality tier of each endpoint (0 = nearest); traffic stays in the nearest tier that
    /// has an endpoint not ejected.
    tiers: BTreeMap<EndpointId, u8>,
}

/// An answer the sidecar gives itself, without forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    /// Envoy-style response flag: `NR`, `FI`, `UO`, `UH`.
    pub flags: &'static str,
    pub message: String,
    /// Injected delay to wait before answering.
    pub delay: Option<Duration>,
}

/// How a request starts.
#[derive(Debug)]
pub enum Start {
    Reply(LocalReply),
    Forward(InFlight),
}

/// A request on its way: the backend chosen, the endpoint of the current attempt, and the
/// deadlines the shell arms.
#[derive(Debug)]
pub struct InFlight {
    pub backend: String,
    /// The route rule that chose the backend; `None` without routes.
    pub rule: Option<RuleRef>,
    /// The endpoint of the current attempt.
    pub endpoint: EndpointId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Whole-request deadline, when the route or policy sets one.
    pub timeout: Option<Duration>,
    pub per_try_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    /// Injected delay to wait before the first attempt.
    pub delay: Option<Duration>,
    /// GET, HEAD, OPTIONS, TRACE, PUT or DELETE (RFC 9110 §9.2.2).
    idempotent: bool,
    tried: Vec<EndpointId>,
    permit: Option<PendingPermit>,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Return this attempt's outcome.
    Done,
    /// Wait `backoff`, then send again to `InFlight::endpoint`.
    Retry { backoff: Duration },
    /// Return this attempt's outcome; it failed and will not be retried.
    GiveUp { reason: GiveUp },
}

/// Why a failed request is not retried further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    Retry(GiveUpReason),
    /// A retry was allowed, but every endpoint is ejected or gone.
    NoEndpoint,
}

impl Backend {
    fn new(policy: Option<&TrafficPolicySpec>) -> Self {
        let duration = |s: Option<&String>| {
            s.and_then(|s| parse_duration(s).ok())
                .filter(|d| !d.is_zero())
        };
        let timeouts = policy.and_then(|p| p.timeouts.as_ref());
        Self {
            policy: policy.cloned(),
            balancer: Balancer::from_spec(policy.and_then(|p| p.load_balancer.as_ref())),
            outlier: policy
                .and_then(|p| p.outlier_detection.as_ref())
                .map_or_else(
                    || OutlierDetector::new(Default::default()),
                    OutlierDetector::from_spec,
                ),
            breaker: policy
                .and_then(|p| p.circuit_breaker.as_ref())
                .map_or_else(CircuitBreaker::default, CircuitBreaker::from_spec),
            retry: policy.and_then(|p| p.retries.as_ref()).map_or_else(
                || {
                    RetryPolicy::from_spec(&mesh_proto::resource::RetryPolicy {
                        attempts: DEFAULT_ATTEMPTS,
                        per_try_timeout: None,
                        retry_on: vec!["connect-failure".into(), "reset".into()],
                        budget: None,
                    })
                },
                RetryPolicy::from_spec,
            ),
            fault: policy
                .and_then(|p| p.fault_injection.as_ref())
                .map(FaultInjector::from_spec)
                .unwrap_or_default(),
            default_retries: policy.and_then(|p| p.retries.as_ref()).is_none(),
            request_timeout: duration(timeouts.and_then(|t| t.request.as_ref())),
            connect_timeout: duration(timeouts.and_then(|t| t.connect.as_ref())),
            endpoints: Vec::new(),
            tiers: BTreeMap::new(),
        }
    }

    fn set_endpoints(&mut self, ranked: BTreeMap<EndpointId, u8>) {
        let endpoints: Vec<EndpointId> = ranked.keys().cloned().collect();
        self.balancer.handle_endpoints(endpoints.iter().cloned());
        self.outlier.handle_endpoints(endpoints.iter().cloned());
        self.endpoints = endpoints;
        self.tiers = ranked;
    }

    /// An endpoint that is not ejected, in the nearest tier that has one, preferring one not
    /// yet tried by this request.
    fn pick(
        &mut self,
        now: Instant,
        hash_key: Option<&str>,
        tried: &[EndpointId],
        rng: &mut impl Rng,
    ) -> Option<EndpointId> {
        let max_tier = self.tiers.values().copied().max().unwrap_or(0);
        for avoid_tried in [true, false] {
            for tier in 0..=max_tier {
                let (outlier, tiers) = (&self.outlier, &self.tiers);
                let eligible = |e: &EndpointId| {
                    tiers.get(e).copied().unwrap_or(0) == tier
                        && !outlier.is_ejected(now, e)
                        && !(avoid_tried && tried.contains(e))
                };
                if let Selection::Endpoint(e) = self.balancer.pick(now, hash_key, rng, eligible) {
                    return Some(e);
                }
            }
        }
        None
    }
}

impl Upstream {
    /// The upstream as the app calls it, e.g. `api`.
    pub fn new(service: &str) -> Self {
        let mut up = Self {
            service: service.to_owned(),
            routes: RouteTable::default(),
            backends: BTreeMap::new(),
            events: Vec::new(),
        };
        up.handle_config(&[], &BTreeMap::new());
        up
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Install the routes whose `parentRefs` name this upstream (in store order) and the
    /// traffic policies by target service. Backends whose effective policy is unchanged keep
    /// their load, ejection and budget state; every backend keeps its endpoints.
    pub fn handle_config(
        &mut self,
        routes: &[HttpRouteSpec],
        policies: &BTreeMap<String, TrafficPolicySpec>,
    ) {
        self.routes = RouteTable::from_specs(routes);
        let mut names: Vec<String> = routes
            .iter()
            .flat_map(|r| &r.rules)
            .flat_map(|rule| &rule.backend_refs)
            .map(|b| b.name.clone())
            .collect();
        if names.is_empty() {
            names.push(self.service.clone());
        }
        names.sort();
        names.dedup();
        let mut old = std::mem::take(&mut self.backends);
        for name in names {
            let policy = policies.get(&name).or_else(|| policies.get(&self.service));
            let backend = match old.remove(&name) {
                Some(b) if b.policy.as_ref() == policy => b,
                Some(b) => {
                    let mut fresh = Backend::new(policy);
                    fresh.set_endpoints(b.tiers);
                    fresh
                }
                None => Backend::new(policy),
            };
            self.backends.insert(name, backend);
        }
    }

    /// The backend services requests may go to; each needs endpoints.
    pub fn backends(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }

    /// Replace the endpoints of `backend`, all in one locality tier; unknown backends are
    /// ignored.
    pub fn handle_endpoints(&mut self, backend: &str, endpoints: Vec<EndpointId>) {
        self.handle_ranked_endpoints(backend, endpoints.into_iter().map(|e| (e, 0)).collect());
    }

    /// Replace the endpoints of `backend` with their locality tiers (0 = nearest: same zone,
    /// then same region, then other regions). Requests go to the nearest tier that has an
    /// endpoint not ejected, so losing a zone fails over to the next one and traffic returns
    /// when the zone's endpoints do. An endpoint listed twice keeps its nearest tier.
    pub fn handle_ranked_endpoints(&mut self, backend: &str, endpoints: Vec<(EndpointId, u8)>) {
        if let Some(b) = self.backends.get_mut(backend) {
            let mut ranked: BTreeMap<EndpointId, u8> = BTreeMap::new();
            for (e, tier) in endpoints {
                let t = ranked.entry(e).or_insert(tier);
                *t = (*t).min(tier);
            }
            if ranked != b.tiers {
                b.set_endpoints(ranked);
            }
        }
    }

    /// Route, inject faults, admit through the breaker and pick the first endpoint.
    pub fn start(
        &mut self,
        now: Instant,
        request: &impl RouteRequest,
        rng: &mut impl Rng,
    ) -> Start {
        let (name, rule, route_timeout) = if self.routes.is_empty() {
            (self.service.clone(), None, None)
        } else {
            match self.routes.pick(request, rng) {
                RouteDecision::Backend {
                    rule,
                    backend,
                    timeout,
                    ..
                } => (backend, Some(rule), timeout),
                RouteDecision::NoBackend { rule } => {
                    return reply(
                        500,
                        "NR",
                        format!(
                            "route {} rule {} of {} has no backend with weight",
                            rule.route, rule.rule, self.service
                        ),
                    );
                }
                RouteDecision::NoRoute => {
                    return reply(
                        404,
                        "NR",
                        format!("no route of {} matches {}", self.service, request.path()),
                    );
                }
            }
        };
        let Some(b) = self.backends.get_mut(&name) else {
            return reply(500, "NR", format!("backend {name} is not configured"));
        };
        let delay = match b.fault.decide(rng) {
            Fault::None => None,
            Fault::Delay(d) => Some(d),
            Fault::Abort(status) => return fault_abort(status, None),
            Fault::DelayThenAbort { delay, status } => return fault_abort(status, Some(delay)),
        };
        let permit = match b.breaker.try_acquire_pending() {
            Ok(p) => p,
            Err(o) => {
                return reply(
                    503,
                    "UO",
                    format!(
                        "{name}: circuit breaker open: {:?} at its limit of {}",
                        o.limit, o.max
                    ),
                );
            }
        };
        b.retry.handle_request(now);
        let hash_key = b
            .balancer
            .hash_header()
            .map(str::to_owned)
            .and_then(|h| request.header(&h).map(str::to_owned));
        let Some(endpoint) = b.pick(now, hash_key.as_deref(), &[], rng) else {
            b.breaker.release_pending(permit);
            let ejected = b.outlier.ejected_count(now);
            return reply(
                503,
                "UH",
                format!(
                    "no healthy endpoint of {name}: {} known, {ejected} ejected",
                    b.endpoints.len()
                ),
            );
        };
        b.balancer.handle_start(&endpoint);
        Start::Forward(InFlight {
            backend: name,
            rule,
            endpoint,
            attempt: 1,
            timeout: route_timeout.or(b.request_timeout),
            per_try_timeout: b.retry.per_try_timeout(),
            connect_timeout: b.connect_timeout,
            delay,
            idempotent: matches!(
                request.method(),
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
            tried: Vec::new(),
            permit: Some(permit),
        })
    }

    /// Start an opaque TCP connection: no route can match bytes, so it goes to the upstream's
    /// own backend when routes name it, else to the first backend in name order. Faults and
    /// retries do not apply (nothing can be replayed); the breaker and outlier detection do.
    pub fn start_connection(&mut self, now: Instant, rng: &mut impl Rng) -> Start {
        let Some(name) = self
            .backends
            .contains_key(&self.service)
            .then(|| self.service.clone())
            .or_else(|| self.backends.keys().next().cloned())
        else {
            return reply(503, "NR", format!("{} has no backend", self.service));
        };
        let Some(b) = self.backends.get_mut(&name) else {
            return reply(503, "NR", format!("backend {name} is not configured"));
        };
        let permit = match b.breaker.try_acquire_pending() {
            Ok(p) => p,
            Err(o) => {
                return reply(
                    503,
                    "UO",
                    format!("{name}: {:?} at its limit of {}", o.limit, o.max),
                );
            }
        };
        let Some(endpoint) = b.pick(now, None, &[], rng) else {
            b.breaker.release_pending(permit);
            return reply(503, "UH", format!("no healthy endpoint of {name}"));
        };
        Start::Forward(InFlight {
            backend: name,
            rule: None,
            endpoint,
            attempt: 1,
            timeout: None,
            per_try_timeout: None,
            connect_timeout: b.connect_timeout,
            delay: None,
            idempotent: false,
            tried: Vec::new(),
            permit: Some(permit),
        })
    }

    /// A TCP connect attempt of `req` ended: feed outlier detection, and on a connect failure
    /// move `req` to another endpoint if one is left. True when there is one to try.
    pub fn handle_connect_result(
        &mut self,
        now: Instant,
        req: &mut InFlight,
        connected: bool,
        rng: &mut impl Rng,
    ) -> bool {
        let Some(b) = self.backends.get_mut(&req.backend) else {
            return false;
        };
        let outcome = if connected {
            AttemptOutcome::Status(200)
        } else {
            AttemptOutcome::ConnectFailure
        };
        b.outlier.handle_result(now, &req.endpoint, outcome);
        while let Some(e) = b.outlier.poll_event() {
            self.events.push((req.backend.clone(), e));
        }
        if connected || req.attempt >= DEFAULT_ATTEMPTS {
            return false;
        }
        req.tried.push(req.endpoint.clone());
        match b.pick(now, None, &req.tried, rng) {
            Some(next) if !req.tried.contains(&next) => {
                req.endpoint = next;
                req.attempt += 1;
                true
            }
            _ => false,
        }
    }

    /// The current attempt of `req` ended with `outcome` after `latency`.
    pub fn handle_outcome(
        &mut self,
        now: Instant,
        req: &mut InFlight,
        outcome: AttemptOutcome,
        latency: Duration,
        rng: &mut impl Rng,
    ) -> Next {
        let Some(b) = self.backends.get_mut(&req.backend) else {
            return Next::Done;
        };
        b.balancer.handle_end(&req.endpoint, now, latency);
        b.outlier.handle_result(now, &req.endpoint, outcome);
        while let Some(e) = b.outlier.poll_event() {
            self.events.push((req.backend.clone(), e));
        }
        if b.default_retries && outcome == AttemptOutcome::Reset && !req.idempotent {
            return Next::Done;
        }
        match b.retry.should_retry(req.attempt, outcome, now, rng) {
            RetryDecision::GiveUp {
                reason: GiveUpReason::NotRetryable,
            } => Next::Done,
            RetryDecision::GiveUp { reason } => Next::GiveUp {
                reason: GiveUp::Retry(reason),
            },
            RetryDecision::Retry { backoff } => {
                req.tried.push(req.endpoint.clone());
                match b.pick(now, None, &req.tried, rng) {
                    Some(next) => {
                        b.balancer.handle_start(&next);
                        req.endpoint = next;
                        req.attempt += 1;
                        Next::Retry { backoff }
                    }
                    None => Next::GiveUp {
                        reason: GiveUp::NoEndpoint,
                    },
                }
            }
        }
    }

    /// The request is over: give its breaker permit back. A second call is a no-op.
    pub fn finish(&mut self, req: &mut InFlight) {
        if let Some(permit) = req.permit.take()
            && let Some(b) = self.backends.get_mut(&req.backend)
        {
            b.breaker.release_pending(permit);
        }
    }

    /// Ejections and returns since the last call, with their backend, oldest first.
    pub fn poll_event(&mut self) -> Option<(String, OutlierEvent)> {
        if self.events.is_empty() {
            None
        } else {
            Some(self.events.remove(0))
        }
    }

    /// Requests admitted to `backend` and not yet finished.
    pub fn pending(&self, backend: &str) -> Option<u32> {
        self.backends
            .get(backend)
            .map(|b| b.breaker.pending_requests())
    }
}

fn reply(status: u16, flags: &'static str, message: String) -> Start {
    Start::Reply(LocalReply {
        status,
        flags,
        message,
        delay: None,
    })
}

fn fault_abort(status: u16, delay: Option<Duration>) -> Start {
    Start::Reply(LocalReply {
        status,
        flags: "FI",
        message: format!("fault injected: abort with {status}"),
        delay,
    })
}

// Tests: `core/tests/upstream.rs` (they need a real `Instant`).
