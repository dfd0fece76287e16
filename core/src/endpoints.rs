//! The endpoint set: the one place where the usable endpoints of an upstream service are
//! computed from everything the agent knows about it. It owns merging, health filtering and
//! locality ranking; it does not pick one endpoint per request (that is `balance`), eject
//! outliers (`resilience::outlier`), or fetch anything (the agent's watch feeds it).
//!
//! ```text
//!  Input::Catalog(entries)  (watch snapshot: every WorkloadEndpoint)  ─┐
//!  Input::Static{service, addresses}  (services file)                  ─┼─► EndpointSet::handle
//!  Input::Gossip(health)  (owners' signed records, membership)          ─┤          │
//!  (issue D: remote-cluster endpoints)                                 ─┘          │
//!                                                                                  ▼
//!          endpoints(service, local locality) ─► Endpoints::Ready(ranked) | NoHealthyEndpoint
//! ```
//!
//! Call order: [`EndpointSet::handle`] any number of times, in any order; [`EndpointSet::endpoints`]
//! and [`EndpointSet::all`] at any time. A read reflects every input handled before it, and is
//! a pure function of them: the same inputs give the same list, in the same order.
//!
//! Merge rules:
//! - a catalog input replaces every catalog entry (the snapshot is whole), a static input
//!   replaces the static list of its service;
//! - an address known from both sources is reported once, as the catalog entry: it carries
//!   locality and health, which a static address lacks;
//! - two catalog entries claiming one address (a misconfiguration) resolve to the one whose node
//!   name sorts first;
//! - a static endpoint's locality is unknown and it counts as healthy (outlier detection is what
//!   notices a dead static endpoint);
//! - a gossip input replaces the previous one and overrides the health of the catalog and
//!   static endpoints it names (same service and address): it comes from the endpoint's own
//!   member, seconds fresher than a Raft write. `Healthy`/`Unhealthy` set the health,
//!   `OwnerFailed` (the member was declared dead) makes it unhealthy, `OwnerLeft` (a graceful
//!   leave) removes it. Gossip never adds an endpoint: the catalog says what exists.
//!
//! Ranking (DESIGN §6 failover): [`Tier::SameZone`], then [`Tier::SameRegion`], then
//! [`Tier::Other`], then by address. An empty region or zone is "unknown" and never matches.
//! Peer-cluster endpoints (issue D) are to be a further [`Source`] and a tier after `Other`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use mesh_proto::{Locality, NodeName, ServiceName};

/// Most endpoints one service keeps from the catalog; further ones (by address order) are
/// ignored, so a runaway catalog cannot grow an agent without bound.
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 4096;

/// Where an endpoint was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// Registered in the control plane's catalog by the endpoint's own agent.
    Catalog,
    /// Listed in this agent's services file.
    Static,
}

/// How close an endpoint runs to the caller; lower is preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    SameZone,
    SameRegion,
    Other,
}

/// One `WorkloadEndpoint` of the catalog, already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub service: ServiceName,
    pub node: NodeName,
    pub address: SocketAddr,
    pub locality: Locality,
    pub healthy: bool,
}

/// What gossip concludes about one endpoint (`mesh_core::gossip::records`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GossipState {
    Healthy,
    Unhealthy,
    /// Its member was declared dead.
    OwnerFailed,
    /// Its member left on purpose.
    OwnerLeft,
}

/// One endpoint's health as gossip reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipHealth {
    pub service: ServiceName,
    pub address: SocketAddr,
    pub state: GossipState,
}

/// An input to the endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Every catalog entry of every service, replacing the previous catalog.
    Catalog(Vec<CatalogEntry>),
    /// The static endpoints of `service`, replacing its previous static list.
    Static {
        service: ServiceName,
        addresses: Vec<SocketAddr>,
    },
    /// Every endpoint gossip knows about, replacing the previous gossip input.
    Gossip(Vec<GossipHealth>),
}

/// One endpoint of a service, as the set reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub locality: Locality,
    pub healthy: bool,
    pub source: Source,
    /// Relative to the locality the caller asked with.
    pub tier: Tier,
}

/// The usable endpoints of a service: a total answer, never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// Healthy endpoints only, best first (tier, then address). Never empty.
    Ready(Vec<Endpoint>),
    NoHealthyEndpoint {
        reason: NoEndpoint,
    },
}

/// Why a service has no usable endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    /// Neither the catalog nor the services file knows an endpoint of the service.
    Unknown,
    /// Every known endpoint fails its health check.
    AllUnhealthy { unhealthy: usize },
}

impl Endpoints {
    /// The leading endpoints that share the best tier: where failover says to send traffic
    /// while any of them is up. Empty when there is no healthy endpoint.
    pub fn best_tier(&self) -> &[Endpoint] {
        match self {
            Endpoints::Ready(list) => {
                let n = list
                    .iter()
                    .take_while(|e| list.first().is_some_and(|f| f.tier == e.tier))
                    .count();
                &list[..n]
            }
            Endpoints::NoHealthyEndpoint { .. } => &[],
        }
    }
}

/// Every endpoint the agent knows, by service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Per service, per address: the catalog entry that won (see the merge rules).
    catalog: BTreeMap<ServiceName, BTreeMap<SocketAddr, CatalogEntry>>,
    statics: BTreeMap<ServiceName, BTreeSet<SocketAddr>>,
    /// Per service, per address: gossip's verdict (the first by state order when two owners
    /// name one address, the worst).
    gossip: BTreeMap<ServiceName, BTreeMap<SocketAddr, GossipState>>,
}

impl EndpointSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Apply one input. Returns whether anything the reads report changed, so a shell can
    /// notify readers only then.
    pub fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Catalog(entries) => {
                let next = index_catalog(entries);
                let changed = next != self.catalog;
                self.catalog = next;
                changed
            }
            Input::Static { service, addresses } => {
                let next: BTreeSet<SocketAddr> = addresses.into_iter().collect();
                let changed = self
                    .statics
                    .get(&service)
                    .map_or(!next.is_empty(), |s| *s != next);
                if next.is_empty() {
                    self.statics.remove(&service);
                } else {
                    self.statics.insert(service, next);
                }
                changed
            }
            Input::Gossip(health) => {
                let mut next: BTreeMap<ServiceName, BTreeMap<SocketAddr, GossipState>> =
                    BTreeMap::new();
                for h in health {
                    let per_service = next.entry(h.service).or_default();
                    if per_service.len() < MAX_ENDPOINTS_PER_SERVICE {
                        let e = per_service.entry(h.address).or_insert(h.state);
                        *e = (*e).max(h.state);
                    }
                }
                let changed = next != self.gossip;
                self.gossip = next;
                changed
            }
        }
    }

    /// The usable endpoints of `service` for a caller at `local`: the healthy ones, ranked, or
    /// why there are none.
    pub fn endpoints(&self, service: &ServiceName, local: &Locality) -> Endpoints {
        let all = self.all(service, local);
        if all.is_empty() {
            return Endpoints::NoHealthyEndpoint {
                reason: NoEndpoint::Unknown,
            };
        }
        let unhealthy = all.iter().filter(|e| !e.healthy).count();
        let healthy: Vec<Endpoint> = all.into_iter().filter(|e| e.healthy).collect();
        if healthy.is_empty() {
            Endpoints::NoHealthyEndpoint {
                reason: NoEndpoint::AllUnhealthy { unhealthy },
            }
        } else {
            Endpoints::Ready(healthy)
        }
    }

    /// Every known endpoint of `service`, unhealthy ones included, ranked as
    /// [`EndpointSet::endpoints`] ranks them (for explaining a decision).
    pub fn all(&self, service: &ServiceName, local: &Locality) -> Vec<Endpoint> {
        let catalog = self.catalog.get(service);
        let mut out: Vec<Endpoint> = catalog
            .into_iter()
            .flat_map(BTreeMap::values)
            .map(|e| Endpoint {
                address: e.address,
                locality: e.locality.clone(),
                healthy: e.healthy,
                source: Source::Catalog,
                tier: tier(local, &e.locality),
            })
            .collect();
        let statics = self.statics.get(service).into_iter().flatten();
        for address in statics {
            if catalog.is_some_and(|c| c.contains_key(address)) {
                continue;
            }
            out.push(Endpoint {
                address: *address,
                locality: Locality::default(),
                healthy: true,
                source: Source::Static,
                tier: tier(local, &Locality::default()),
            });
        }
        if let Some(gossip) = self.gossip.get(service) {
            out.retain_mut(|e| match gossip.get(&e.address) {
                None => true,
                Some(GossipState::OwnerLeft) => false,
                Some(state) => {
                    e.healthy = *state == GossipState::Healthy;
                    true
                }
            });
        }
        out.sort_by_key(|e| (e.tier, e.address));
        out
    }
}

/// Catalog entries by service and address, applying the merge rules and the per-service cap.
fn index_catalog(
    mut entries: Vec<CatalogEntry>,
) -> BTreeMap<ServiceName, BTreeMap<SocketAddr, CatalogEntry>> {
    // Sorting first makes "the node name that sorts first wins" and the cap independent of the
    // order the snapshot listed entries in.
    entries.sort_by(|a, b| (&a.service, a.address, &a.node).cmp(&(&b.service, b.address, &b.node)));
    let mut out: BTreeMap<ServiceName, BTreeMap<SocketAddr, CatalogEntry>> = BTreeMap::new();
    for e in entries {
        let per_service = out.entry(e.service.clone()).or_default();
        if per_service.len() < MAX_ENDPOINTS_PER_SERVICE || per_service.contains_key(&e.address) {
            per_service.entry(e.address).or_insert(e);
        }
    }
    out
}

/// How close `there` is to `here`. Unknown (empty) parts never match.
pub fn tier(here: &Locality, there: &Locality) -> Tier {
    let region = !here.region.is_empty() && here.region == there.region;
    let zone = region && !here.zone.is_empty() && here.zone == there.zone;
    match (region, zone) {
        (true, true) => Tier::SameZone,
        (true, false) => Tier::SameRegion,
        (false, _) => Tier::Other,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod gossip_tests;
