//! Endpoint selection within one service's endpoint set (DESIGN §6): power of two choices over
//! peak-EWMA load (the default, as in Linkerd and Finagle), round robin, or consistent hashing
//! of a header value on a ring with virtual nodes.
//!
//! ```text
//!  handle_endpoints(set) ─► stats kept per endpoint, ring rebuilt
//!  pick(now, hash_key, rng, eligible) ─► Selection::{Endpoint, NoHealthyEndpoint}
//!  handle_start(endpoint) … attempt … handle_end(endpoint, now, latency)
//! ```
//!
//! It does not know localities, clusters or health: the caller passes an `eligible` predicate
//! (typically "not ejected by outlier detection") and orders failover across endpoint sets.

mod p2c;
mod ring;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::resource::{LoadBalancer, LoadBalancerPolicy};

use self::p2c::PeakEwma;
use self::ring::Ring;
use crate::rng::{Rng, stable_hash};

/// An endpoint of a service, named by its address (e.g. `10.0.0.7:8443`). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(Arc<str>);

/// The outcome of one pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Endpoint(EndpointId),
    NoHealthyEndpoint { reason: NoEndpointReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpointReason {
    /// The set is empty.
    NoEndpoints,
    /// Every endpoint failed the `eligible` predicate (e.g. all are ejected).
    AllIneligible { endpoints: usize },
}

/// Which algorithm picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Power of two choices: two distinct random eligible endpoints, the one with the lower
    /// `latency EWMA × (outstanding + 1)` wins.
    P2c,
    /// Each eligible endpoint in turn, in address order, from a random start.
    RoundRobin,
    /// The endpoint owning the hash of `header`'s value on the ring, or the next eligible one
    /// clockwise. Requests without the header are balanced by P2C.
    ConsistentHash { header: String },
}

/// A load balancer over one endpoint set.
///
/// Call order: [`Balancer::handle_endpoints`] whenever the set changes; per attempt,
/// [`Balancer::pick`], then [`Balancer::handle_start`] when the request is sent to the
/// endpoint and [`Balancer::handle_end`] with its latency when it completes, whatever the
/// outcome (fast failures are outlier detection's business). Unknown endpoints are ignored.
#[derive(Debug, Clone)]
pub struct Balancer {
    strategy: Strategy,
    /// Sorted by id, so every sidecar sees the same order.
    endpoints: Vec<Endpoint>,
    ring: Ring,
    /// Next round-robin position; `None` until the first pick draws a random start.
    cursor: Option<usize>,
    /// Indices of eligible endpoints, reused across picks so picking does not allocate.
    scratch: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    id: EndpointId,
    load: PeakEwma,
}

/// Random draws P2C tries over the whole set before it lists the eligible endpoints.
const P2C_SAMPLE_DRAWS: usize = 8;

impl EndpointId {
    pub fn new(address: &str) -> Self {
        Self(Arc::from(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EndpointId {
    fn from(address: &str) -> Self {
        Self::new(address)
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Strategy {
    /// The spec's `loadBalancer`; no section means P2C. A consistent hash without a header
    /// (config refuses it) falls back to P2C.
    pub fn from_spec(spec: Option<&LoadBalancer>) -> Self {
        match spec.map(|lb| (lb.policy, lb.hash_header.as_deref())) {
            None | Some((LoadBalancerPolicy::P2c, _)) => Strategy::P2c,
            Some((LoadBalancerPolicy::RoundRobin, _)) => Strategy::RoundRobin,
            Some((LoadBalancerPolicy::ConsistentHash, Some(h))) => Strategy::ConsistentHash {
                header: h.to_ascii_lowercase(),
            },
            Some((LoadBalancerPolicy::ConsistentHash, None)) => Strategy::P2c,
        }
    }
}

impl Balancer {
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            endpoints: Vec::new(),
            ring: Ring::default(),
            cursor: None,
            scratch: Vec::new(),
        }
    }

    pub fn from_spec(spec: Option<&LoadBalancer>) -> Self {
        Self::new(Strategy::from_spec(spec))
    }

    /// The header whose value the caller passes as `hash_key` to [`Balancer::pick`], in lower
    /// case; `None` unless the strategy is a consistent hash.
    pub fn hash_header(&self) -> Option<&str> {
        match &self.strategy {
            Strategy::ConsistentHash { header } => Some(header),
            _ => None,
        }
    }

    /// Replace the endpoint set. Endpoints that stay keep their load statistics; duplicates
    /// are merged.
    pub fn handle_endpoints(&mut self, endpoints: impl IntoIterator<Item = EndpointId>) {
        let mut ids: Vec<EndpointId> = endpoints.into_iter().collect();
        ids.sort();
        ids.dedup();
        let mut old: HashMap<EndpointId, PeakEwma> = std::mem::take(&mut self.endpoints)
            .into_iter()
            .map(|e| (e.id, e.load))
            .collect();
        self.endpoints = ids
            .into_iter()
            .map(|id| {
                let load = old.remove(&id).unwrap_or_default();
                Endpoint { id, load }
            })
            .collect();
        if matches!(self.strategy, Strategy::ConsistentHash { .. }) {
            self.ring = Ring::build(self.endpoints.iter().map(|e| &e.id));
        }
    }

    /// Choose an endpoint among those `eligible` accepts. `hash_key` is the value of
    /// [`Balancer::hash_header`] on the request, if any; other strategies ignore it.
    pub fn pick(
        &mut self,
        now: Instant,
        hash_key: Option<&str>,
        rng: &mut impl Rng,
        eligible: impl Fn(&EndpointId) -> bool,
    ) -> Selection {
        if self.endpoints.is_empty() {
            return Selection::NoHealthyEndpoint {
                reason: NoEndpointReason::NoEndpoints,
            };
        }
        let chosen = match (&self.strategy, hash_key) {
            (Strategy::ConsistentHash { .. }, Some(key)) => {
                let endpoints = &self.endpoints;
                self.ring.lookup(stable_hash(key.as_bytes()), |i| {
                    endpoints.get(i).is_some_and(|e| eligible(&e.id))
                })
            }
            (Strategy::RoundRobin, _) => self.round_robin(rng, &eligible),
            (Strategy::P2c | Strategy::ConsistentHash { .. }, _) => {
                self.power_of_two(now, rng, &eligible)
            }
        };
        match chosen.and_then(|i| self.endpoints.get(i)) {
            Some(e) => Selection::Endpoint(e.id.clone()),
            None => Selection::NoHealthyEndpoint {
                reason: NoEndpointReason::AllIneligible {
                    endpoints: self.endpoints.len(),
                },
            },
        }
    }

    /// A request was sent to `endpoint`.
    pub fn handle_start(&mut self, endpoint: &EndpointId) {
        if let Some(e) = self.find(endpoint) {
            e.load.start();
        }
    }

    /// A request to `endpoint` completed at `now` after `latency`.
    pub fn handle_end(&mut self, endpoint: &EndpointId, now: Instant, latency: Duration) {
        if let Some(e) = self.find(endpoint) {
            e.load.end(now, latency);
        }
    }

    /// Requests in flight to `endpoint`, for metrics and tests.
    pub fn outstanding(&self, endpoint: &EndpointId) -> Option<u32> {
        self.index(endpoint)
            .and_then(|i| self.endpoints.get(i))
            .map(|e| e.load.outstanding())
    }

    fn index(&self, endpoint: &EndpointId) -> Option<usize> {
        self.endpoints.binary_search_by(|e| e.id.cmp(endpoint)).ok()
    }

    fn find(&mut self, endpoint: &EndpointId) -> Option<&mut Endpoint> {
        self.index(endpoint).and_then(|i| self.endpoints.get_mut(i))
    }

    fn round_robin(
        &mut self,
        rng: &mut impl Rng,
        eligible: &impl Fn(&EndpointId) -> bool,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        // A random start keeps sidecars that boot together from all hitting the first endpoint.
        let start = *self.cursor.get_or_insert_with(|| index_below(rng, n));
        let chosen = (0..n)
            .map(|step| (start + step) % n)
            .find(|&i| self.endpoints.get(i).is_some_and(|e| eligible(&e.id)))?;
        self.cursor = Some((chosen + 1) % n);
        Some(chosen)
    }

    /// Two distinct eligible endpoints, uniformly at random; the cheaper one wins (the first
    /// drawn on a tie).
    ///
    /// The fast path rejection-samples from the whole set, which is uniform over the eligible
    /// endpoints and costs a few predicate calls when most are eligible. When it gives up
    /// (many ineligible, or fewer than two eligible) it draws from the list of eligible ones.
    fn power_of_two(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        eligible: &impl Fn(&EndpointId) -> bool,
    ) -> Option<usize> {
        let n = self.endpoints.len();
        let is_eligible = |i: usize| self.endpoints.get(i).is_some_and(|e| eligible(&e.id));
        let mut first = None;
        for _ in 0..P2C_SAMPLE_DRAWS {
            let i = index_below(rng, n);
            if !is_eligible(i) {
                continue;
            }
            match first {
                None => first = Some(i),
                Some(a) if a != i => return Some(self.cheaper(now, a, i)),
                Some(_) => {}
            }
        }
        self.scratch.clear();
        self.scratch.extend((0..n).filter(|&i| is_eligible(i)));
        let k = self.scratch.len();
        if k < 2 {
            return self.scratch.first().copied();
        }
        let a = index_below(rng, k);
        // The second draw skips the first, so the two choices are distinct.
        let mut b = index_below(rng, k - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (*self.scratch.get(a)?, *self.scratch.get(b)?);
        Some(self.cheaper(now, a, b))
    }

    fn cheaper(&self, now: Instant, a: usize, b: usize) -> usize {
        let cost = |i: usize| {
            self.endpoints
                .get(i)
                .map_or(f64::INFINITY, |e| e.load.cost(now))
        };
        if cost(b) < cost(a) { b } else { a }
    }
}

/// A uniform index in `0..n`.
fn index_below(rng: &mut impl Rng, n: usize) -> usize {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    usize::try_from(rng.below(n)).unwrap_or(0)
}

#[cfg(test)]
mod tests;
