//! Catalog registration: each local service's endpoint (its mTLS inbound address, locality and
//! health) is written to the control plane's catalog, kept there while the agent runs, and
//! removed on graceful shutdown.
//!
//! ```text
//!  health::check_forever ─► watch<Health> ─┐
//!  discovery (watch snapshot) ─► generation ┼─► register_forever ─► PUT /v1/catalog/<service>
//!                                           │     on start, on a health flip, and when the
//!                                           │     snapshot shows our entry missing or different
//!  SIGTERM ─► agent::run ─► deregister_all ─► DELETE /v1/catalog/<service>  (bounded)
//! ```
//!
//! Every task here is off the data path: while the control plane is down, registration retries
//! with capped backoff and the proxies keep serving. A refusal (4xx: the credential does not
//! list the service, an address peers cannot dial) is logged once and not retried until the
//! health verdict changes, since the same request would be refused again. This module decides
//! nothing about who may register (the state machine does) or what health means for traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use mesh_proto::api::CatalogRegistration;
use mesh_proto::{Locality, ServiceName};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::ServicesConfig;
use super::discovery::Discovery;
use super::health::{self, Health};
use crate::client::{ApiClient, ClientError};

/// Longest pause between two registration attempts while the control plane is unreachable.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Shortest time between two registrations of one service, so a flapping app or a confused
/// catalog cannot turn into a stream of Raft writes.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest pause before re-registering an entry the catalog keeps losing or changing (two
/// agents sharing one node's credential would otherwise rewrite each other every second).
const MAX_DRIFT_DELAY: Duration = Duration::from_secs(60);
/// How long shutdown waits for deregistration.
pub(crate) const DEREGISTER_DEADLINE: Duration = Duration::from_secs(3);

/// What one local service registers.
#[derive(Debug, Clone)]
struct Registration {
    service: ServiceName,
    address: SocketAddr,
    locality: Locality,
}

/// The last registration the control plane accepted.
#[derive(Debug, Clone)]
struct Registered {
    healthy: bool,
    /// The resource name the control plane chose (`<service>.<node of the credential>`).
    name: String,
    /// Store version of the answer: a snapshot at least this new must show the entry.
    version: u64,
}

/// Start, per local service, its health check and its registration on `tasks`. Returns the
/// health verdict of each service (in the order of `services`) for gossip to follow.
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    client: &Arc<ApiClient>,
    services: &ServicesConfig,
    discovery: &Arc<Discovery>,
) -> Vec<watch::Receiver<Health>> {
    let mut checks = Vec::new();
    for s in &services.services {
        let (tx, rx) = watch::channel(Health::Unknown);
        tasks.spawn(health::check_forever(
            s.name.clone(),
            s.app,
            s.health.clone(),
            tx,
        ));
        let reg = Registration {
            service: s.name.clone(),
            address: s.inbound,
            locality: s.locality.clone(),
        };
        checks.push(rx.clone());
        tasks.spawn(register_forever(client.clone(), reg, rx, discovery.clone()));
    }
    checks
}

/// Keep the endpoint of `reg` registered with the health `health` reports, until aborted.
async fn register_forever(
    client: Arc<ApiClient>,
    reg: Registration,
    mut health: watch::Receiver<Health>,
    discovery: Arc<Discovery>,
) {
    let mut catalog = discovery.subscribe();
    let mut registered: Option<Registered> = None;
    // The health verdict a refused registration was for: not retried until it changes.
    let mut refused_for: Option<bool> = None;
    let mut delay = Duration::from_millis(200);
    // Consecutive re-registrations because the catalog lost or changed our entry.
    let mut drifts: u32 = 0;
    loop {
        let healthy = match &*health.borrow_and_update() {
            Health::Unknown => None,
            Health::Passing => Some(true),
            Health::Failing { .. } => Some(false),
        };
        let why = healthy
            .filter(|h| refused_for != Some(*h))
            .and_then(|h| why_write(&reg, h, registered.as_ref(), &discovery));
        if let (Some(healthy), Some(why)) = (healthy, why) {
            if why == Why::Drift {
                drifts = drifts.saturating_add(1);
                let pause = Duration::from_secs(1u64 << drifts.min(6)).min(MAX_DRIFT_DELAY);
                tracing::warn!(service = %reg.service, retry_in = ?pause, "the catalog lost or changed this endpoint; registering it again (if this repeats, is another agent running with this node's credential?)");
                tokio::time::sleep(pause).await;
            } else {
                drifts = 0;
            }
            let want = CatalogRegistration {
                address: reg.address.to_string(),
                locality: reg.locality.clone(),
                healthy,
            };
            match client.register_endpoint(&reg.service, &want).await {
                Ok(resp) => {
                    delay = Duration::from_millis(200);
                    refused_for = None;
                    let result = resp.results.first();
                    let name = result.map(|r| r.name.clone()).unwrap_or_default();
                    let outcome = result.map_or("?", |r| r.outcome.as_str());
                    tracing::info!(service = %reg.service, address = %reg.address, healthy, outcome, version = resp.version, "registered in the catalog");
                    registered = Some(Registered {
                        healthy,
                        name,
                        version: resp.version,
                    });
                }
                Err(e) if is_refusal(&e) => {
                    tracing::error!(service = %reg.service, error = %e, "the catalog refused this service's endpoint; traffic is still served, but peers will not discover it");
                    refused_for = Some(healthy);
                }
                Err(e) => {
                    tracing::warn!(service = %reg.service, error = %e, retry_in = ?delay, "cannot register in the catalog yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    continue;
                }
            }
            tokio::time::sleep(MIN_INTERVAL).await;
        }
        tokio::select! {
            r = health.changed() => if r.is_err() { return },
            r = catalog.changed() => if r.is_err() { return },
        }
    }
}

/// Why the catalog must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Nothing accepted yet.
    First,
    /// The health verdict changed.
    Flip,
    /// A snapshot recent enough to show our entry shows it missing or different: an operator
    /// deleted it, the store was restored from an older backup, or another agent overwrote it.
    Drift,
}

/// Whether (and why) the catalog must be written for `reg` with `healthy`.
fn why_write(
    reg: &Registration,
    healthy: bool,
    registered: Option<&Registered>,
    discovery: &Discovery,
) -> Option<Why> {
    let Some(r) = registered else {
        return Some(Why::First);
    };
    if r.healthy != healthy {
        return Some(Why::Flip);
    }
    let (entry, snapshot_version) = discovery.entry(&r.name);
    if snapshot_version < r.version {
        return None;
    }
    let same = entry.is_some_and(|e| {
        e.address == reg.address && e.locality == reg.locality && e.healthy == healthy
    });
    (!same).then_some(Why::Drift)
}

/// The control plane answered and said no: the same request would be refused again.
fn is_refusal(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status, .. }
        if status.is_client_error()
            && *status != StatusCode::REQUEST_TIMEOUT
            && *status != StatusCode::TOO_MANY_REQUESTS)
}

/// Remove every local service's endpoint from the catalog, giving up after
/// [`DEREGISTER_DEADLINE`] (the control plane may be down; peers then notice by health).
pub(crate) async fn deregister_all(client: &ApiClient, services: &[ServiceName]) {
    let all = futures_util::future::join_all(
        services
            .iter()
            .map(|s| async move { (s, client.deregister_endpoint(s).await) }),
    );
    match tokio::time::timeout(DEREGISTER_DEADLINE, all).await {
        Ok(results) => {
            for (service, r) in results {
                match r {
                    Ok(_) => tracing::info!(%service, "deregistered from the catalog"),
                    Err(e) if e.code() == Some("not_found") => {}
                    Err(e) => {
                        tracing::warn!(%service, error = %e, "cannot deregister from the catalog")
                    }
                }
            }
        }
        Err(_) => tracing::warn!(
            deadline = ?DEREGISTER_DEADLINE,
            "deregistration did not finish in time; peers see this endpoint until an operator \
             deletes it or the agent registers again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mesh_proto::resource::{Kind, ResourceKey, StoredResource};

    use super::*;
    use crate::agent::watch::Snapshot;

    fn snapshot(version: u64, healthy: Option<bool>) -> Snapshot {
        let mut resources = BTreeMap::new();
        if let Some(healthy) = healthy {
            let spec = serde_json::json!({"service": "api", "node": "vm-1",
                "address": "127.0.0.1:15006", "locality": {"region": "r1", "zone": "a"},
                "healthy": healthy});
            let key = ResourceKey {
                kind: Kind::WorkloadEndpoint,
                namespace: "default".into(),
                name: "api.vm-1".into(),
            };
            resources.insert(
                key.to_string(),
                StoredResource {
                    key,
                    labels: BTreeMap::new(),
                    spec_json: spec.to_string(),
                    version,
                },
            );
        }
        Snapshot { version, resources }
    }

    #[test]
    fn writes_happen_first_on_a_flip_and_when_a_recent_snapshot_disagrees() {
        let reg = Registration {
            service: ServiceName::new("api").unwrap(),
            address: "127.0.0.1:15006".parse().unwrap(),
            locality: Locality {
                region: "r1".into(),
                zone: "a".into(),
            },
        };
        let d = Discovery::new(&ServicesConfig { services: vec![] });
        let done = Registered {
            healthy: true,
            name: "api.vm-1".into(),
            version: 5,
        };
        let why =
            |healthy, registered: Option<&Registered>| why_write(&reg, healthy, registered, &d);
        assert_eq!(why(true, None), Some(Why::First));
        assert_eq!(why(false, Some(&done)), Some(Why::Flip));
        // The snapshot is older than the registration: it cannot show it yet.
        d.install(&snapshot(4, None));
        assert_eq!(why(true, Some(&done)), None);
        d.install(&snapshot(5, Some(true)));
        assert_eq!(why(true, Some(&done)), None);
        // Deleted, or overwritten with another verdict, behind the agent's back.
        d.install(&snapshot(6, None));
        assert_eq!(why(true, Some(&done)), Some(Why::Drift));
        d.install(&snapshot(7, Some(false)));
        assert_eq!(why(true, Some(&done)), Some(Why::Drift));
    }
}
