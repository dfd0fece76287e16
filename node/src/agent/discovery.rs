//! Endpoint discovery for the outbound side: the agent's one [`Discovery`], which feeds the
//! services file's static endpoints and the catalog (`WorkloadEndpoint`s in the watch
//! snapshot) into `mesh_core::endpoints::EndpointSet`, and answers "where can I send traffic
//! for this upstream?".
//!
//! ```text
//!  services file ─► Discovery::new ─(Input::Static per upstream service)─┐
//!  watch snapshot ─► Discovery::install ─(Input::Catalog)─────────────────┼─► EndpointSet
//!                                    └─ generation += 1 when reads change ─┘       │
//!  outbound: discovery.endpoints(&upstream, &locality) ─► Endpoints::{Ready(ranked), NoHealthyEndpoint}
//!            discovery.subscribe().changed().await  ─► re-read, e.g. rebuild a balancer
//! ```
//!
//! Interface for the outbound proxy (cheap, callable per request from any task):
//! - `Discovery::endpoints(&self, upstream: &ServiceName, local: &Locality) -> Endpoints`:
//!   healthy endpoints ranked same zone, same region, other (then by address), or
//!   `NoHealthyEndpoint { reason }`; `local` is the calling service's `ServiceConfig::locality`.
//! - `Discovery::subscribe(&self) -> watch::Receiver<u64>`: the generation, bumped whenever an
//!   answer of `endpoints` may have changed (never otherwise).
//!
//! Static stability: the catalog comes from the same snapshot as policies, cached in
//! `config.json`, so a restarted agent discovers the endpoints it last knew with the control
//! plane down. This module does not balance, eject outliers or connect.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};

use mesh_core::endpoints::{CatalogEntry, EndpointSet, Endpoints, Input};
use mesh_proto::resource::{Kind, WorkloadEndpointSpec};
use mesh_proto::{Locality, ServiceName};
use tokio::sync::watch;

use super::config::ServicesConfig;
use super::watch::Snapshot;

/// Every upstream's endpoints, shared by the watch (writer) and the proxies (readers).
pub(crate) struct Discovery {
    inner: RwLock<Inner>,
    generation: watch::Sender<u64>,
    /// (local service, upstream, local locality) of every declared upstream, for logging.
    upstreams: Vec<(ServiceName, ServiceName, Locality)>,
}

struct Inner {
    set: EndpointSet,
    /// Catalog entries by resource name (`<service>.<node>`), for the agent's own registration.
    by_name: BTreeMap<String, CatalogEntry>,
    /// Store version of the last installed snapshot.
    snapshot_version: u64,
}

impl Discovery {
    /// Discovery with the static endpoints of every upstream in `services` (the union, when two
    /// local services list the same upstream) and an empty catalog.
    pub(crate) fn new(services: &ServicesConfig) -> Self {
        let mut statics: BTreeMap<ServiceName, BTreeSet<SocketAddr>> = BTreeMap::new();
        let mut upstreams = Vec::new();
        for s in &services.services {
            for u in &s.upstreams {
                statics
                    .entry(u.service.clone())
                    .or_default()
                    .extend(u.endpoints.iter().copied());
                upstreams.push((s.name.clone(), u.service.clone(), s.locality.clone()));
            }
        }
        let mut set = EndpointSet::new();
        for (service, addresses) in statics {
            set.handle(Input::Static {
                service,
                addresses: addresses.into_iter().collect(),
            });
        }
        Self {
            inner: RwLock::new(Inner {
                set,
                by_name: BTreeMap::new(),
                snapshot_version: 0,
            }),
            generation: watch::channel(0).0,
            upstreams,
        }
    }

    /// The usable endpoints of `upstream` for a caller at `local`.
    pub(crate) fn endpoints(&self, upstream: &ServiceName, local: &Locality) -> Endpoints {
        self.read(|i| i.set.endpoints(upstream, local))
    }

    /// The generation, bumped whenever [`Discovery::endpoints`] may answer differently.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Feed the catalog of `snap` in. Entries whose spec this agent cannot read are skipped
    /// (and logged): they cannot be dialled safely.
    pub(crate) fn install(&self, snap: &Snapshot) {
        let mut by_name = BTreeMap::new();
        for r in snap.resources.values() {
            if r.key.kind != Kind::WorkloadEndpoint {
                continue;
            }
            match parse_entry(&r.spec_json) {
                Ok(e) => {
                    by_name.insert(r.key.name.clone(), e);
                }
                Err(why) => {
                    tracing::warn!(endpoint = %r.key.name, %why, "ignoring an unreadable catalog entry");
                }
            }
        }
        let entries: Vec<CatalogEntry> = by_name.values().cloned().collect();
        let changed = {
            let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            inner.by_name = by_name;
            inner.snapshot_version = snap.version;
            inner.set.handle(Input::Catalog(entries))
        };
        if changed {
            self.generation.send_modify(|g| *g += 1);
            self.log_upstreams();
        }
    }

    /// Feed gossip's endpoint health in (`agent/gossip.rs`); it overrides the health of the
    /// catalog and static endpoints it names.
    pub(crate) fn install_gossip(&self, health: Vec<mesh_core::endpoints::GossipHealth>) {
        let changed = {
            let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            inner.set.handle(Input::Gossip(health))
        };
        if changed {
            self.generation.send_modify(|g| *g += 1);
            self.log_upstreams();
        }
    }

    /// The catalog entry named `name` in the last snapshot, and that snapshot's version.
    pub(crate) fn entry(&self, name: &str) -> (Option<CatalogEntry>, u64) {
        self.read(|i| (i.by_name.get(name).cloned(), i.snapshot_version))
    }

    fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn log_upstreams(&self) {
        for (service, upstream, local) in &self.upstreams {
            match self.endpoints(upstream, local) {
                e @ Endpoints::Ready(_) => {
                    let best: Vec<String> = e
                        .best_tier()
                        .iter()
                        .map(|e| e.address.to_string())
                        .collect();
                    tracing::info!(%service, %upstream, ?best, "upstream endpoints changed");
                }
                Endpoints::NoHealthyEndpoint { reason } => {
                    tracing::warn!(%service, %upstream, ?reason, "upstream has no healthy endpoint");
                }
            }
        }
    }
}

fn parse_entry(spec_json: &str) -> Result<CatalogEntry, String> {
    let spec: WorkloadEndpointSpec = serde_json::from_str(spec_json).map_err(|e| e.to_string())?;
    let address = spec
        .address
        .parse()
        .map_err(|_| format!("address {:?} is not an ip:port", spec.address))?;
    Ok(CatalogEntry {
        service: spec.service,
        node: spec.node,
        address,
        locality: spec.locality,
        healthy: spec.healthy,
    })
}

#[cfg(test)]
mod tests {
    use mesh_core::endpoints::{NoEndpoint, Source, Tier};
    use mesh_proto::resource::{ResourceKey, StoredResource};

    use super::*;
    use crate::agent::config::{HealthCheck, ServiceConfig, UpstreamConfig};

    fn endpoint(service: &str, node: &str, address: &str, healthy: bool) -> StoredResource {
        let spec = serde_json::json!({"service": service, "node": node, "address": address,
            "locality": {"region": "r1", "zone": "a"}, "healthy": healthy});
        StoredResource {
            key: ResourceKey {
                kind: Kind::WorkloadEndpoint,
                namespace: "default".into(),
                name: format!("{service}.{node}"),
            },
            labels: BTreeMap::new(),
            spec_json: spec.to_string(),
            version: 1,
        }
    }

    fn snapshot(version: u64, items: Vec<StoredResource>) -> Snapshot {
        Snapshot {
            version,
            resources: items
                .into_iter()
                .map(|r| (format!("{}", r.key), r))
                .collect(),
        }
    }

    #[test]
    fn the_catalog_and_static_endpoints_merge_and_changes_bump_the_generation() {
        let services = ServicesConfig {
            services: vec![ServiceConfig {
                name: ServiceName::new("web").unwrap(),
                app: "127.0.0.1:1".parse().unwrap(),
                inbound: "127.0.0.1:5".parse().unwrap(),
                locality: Locality {
                    region: "r1".into(),
                    zone: "a".into(),
                },
                health: HealthCheck::default(),
                upstreams: vec![UpstreamConfig {
                    service: ServiceName::new("api").unwrap(),
                    listen: "127.0.0.1:9001".parse().unwrap(),
                    endpoints: vec!["127.0.0.9:15006".parse().unwrap()],
                    protocol: Default::default(),
                }],
                http_proxy: None,
                protocol: Default::default(),
            }],
        };
        let d = Discovery::new(&services);
        let api = ServiceName::new("api").unwrap();
        let here = services.services[0].locality.clone();
        let rx = d.subscribe();
        let Endpoints::Ready(list) = d.endpoints(&api, &here) else {
            panic!("static endpoint not offered")
        };
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].source, Source::Static);

        let mut bad = endpoint("api", "n3", "127.0.0.3:15006", true);
        bad.spec_json = "{\"service\": 7}".into();
        let snap = snapshot(
            4,
            vec![
                endpoint("api", "n1", "127.0.0.1:15006", true),
                endpoint("api", "n2", "127.0.0.2:15006", false),
                bad,
            ],
        );
        d.install(&snap);
        assert_eq!(*rx.borrow(), 1);
        let Endpoints::Ready(list) = d.endpoints(&api, &here) else {
            panic!("no endpoints")
        };
        let got: Vec<(String, Tier, Source)> = list
            .iter()
            .map(|e| (e.address.to_string(), e.tier, e.source))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "127.0.0.1:15006".to_string(),
                    Tier::SameZone,
                    Source::Catalog
                ),
                ("127.0.0.9:15006".to_string(), Tier::Other, Source::Static),
            ]
        );
        let (own, version) = d.entry("api.n2");
        assert_eq!(version, 4);
        assert!(own.is_some_and(|e| !e.healthy));

        // The same catalog again changes nothing and wakes nobody.
        d.install(&snapshot(5, snap.resources.values().cloned().collect()));
        assert_eq!(*rx.borrow(), 1);
        d.install(&snapshot(6, vec![]));
        assert_eq!(*rx.borrow(), 2);
        let web = ServiceName::new("web").unwrap();
        assert_eq!(
            d.endpoints(&web, &here),
            Endpoints::NoHealthyEndpoint {
                reason: NoEndpoint::Unknown
            }
        );
    }
}
