//! Gossip on an agent: join the cluster's LAN pool with the keyring and seeds the control plane
//! hands out (`GET /v1/gossip`, long-polled so keyring changes arrive within a round trip),
//! assert the local endpoints' health as signed records, and feed what the pool concludes about
//! every endpoint into `Discovery`, so sidecars stop sending to a dead member's endpoints
//! seconds before the catalog would say so.
//!
//! ```text
//!  GET /v1/gossip ─► keys, seeds ─► gossip::spawn ─► GossipHandle ◄─ set_keys/set_seeds (poll)
//!  health::check_forever (per service) ─► watch<Health> ─► set_own_health(all local endpoints)
//!  GossipHandle::subscribe ─► PoolState.health ─► Discovery::install_gossip ─► EndpointSet
//!  SIGTERM ─► leave (signed leave record + foca leave), before deregistration
//! ```
//!
//! Off the data path like every control task: with the control plane down at start, the agent
//! serves and gossip joins once the keyring arrives.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mesh_core::gossip::OwnEndpoint;
use mesh_proto::gossip::GossipRole;
use mesh_proto::{ClusterName, Locality, ServiceName};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::AgentOptions;
use super::config::ServicesConfig;
use super::discovery::Discovery;
use super::health::Health;
use crate::client::ApiClient;
use crate::gossip::{self as shell, GossipHandle, GossipOptions};

/// How long one keyring long-poll waits on the server.
const POLL_WAIT: Duration = Duration::from_secs(30);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// How long shutdown waits for the leave to go out.
const LEAVE_DEADLINE: Duration = Duration::from_millis(500);

/// The running member, once it has joined.
pub(crate) type Member = Arc<OnceLock<GossipHandle>>;

/// One local endpoint and its health verdict.
struct Local {
    service: ServiceName,
    address: SocketAddr,
    locality: Locality,
    health: watch::Receiver<Health>,
}

/// Start gossip on `tasks`: join, then follow health and the keyring.
pub(crate) fn start(
    tasks: &mut JoinSet<()>,
    client: &Arc<ApiClient>,
    opts: &AgentOptions,
    services: &ServicesConfig,
    checks: Vec<watch::Receiver<Health>>,
    discovery: &Arc<Discovery>,
    member: Member,
) -> Member {
    let locals: Vec<Local> = services
        .services
        .iter()
        .zip(checks)
        .map(|(s, health)| Local {
            service: s.name.clone(),
            address: s.inbound,
            locality: s.locality.clone(),
            health,
        })
        .collect();
    let bind = opts.gossip_addr.or_else(|| {
        services
            .services
            .first()
            .map(|s| SocketAddr::new(s.inbound.ip(), shell::DEFAULT_PORT))
    });
    let Some(bind) = bind else {
        return member;
    };
    tasks.spawn(run(
        client.clone(),
        opts.name.clone(),
        bind,
        locals,
        discovery.clone(),
        member.clone(),
    ));
    member
}

/// Leave the pool, if joined.
pub(crate) async fn leave(member: &Member) {
    if let Some(h) = member.get() {
        h.leave(LEAVE_DEADLINE).await;
    }
}

async fn run(
    client: Arc<ApiClient>,
    name: mesh_proto::NodeName,
    bind: SocketAddr,
    locals: Vec<Local>,
    discovery: Arc<Discovery>,
    member: Member,
) {
    let mut delay = Duration::from_millis(200);
    let (info, handle) = loop {
        let got = client.gossip_join_info(&[], Duration::ZERO).await;
        let started = match got {
            Ok(info) => match ClusterName::new(info.cluster.clone()) {
                Ok(cluster) => {
                    let opts = GossipOptions {
                        name: name.clone(),
                        role: GossipRole::Agent,
                        cluster,
                        bind,
                        keys: info.keys.clone(),
                        seeds: parse_seeds(&info.seeds),
                    };
                    shell::spawn(opts)
                        .await
                        .map(|h| (info, h))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("cluster name: {e}")),
            },
            Err(e) => Err(e.to_string()),
        };
        match started {
            Ok(x) => break x,
            Err(why) => {
                tracing::warn!(%why, retry_in = ?delay, "gossip not started yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    };
    let _ = member.set(handle.clone());
    tokio::spawn(follow_health(handle.clone(), locals));
    tokio::spawn(feed_discovery(handle.clone(), discovery));
    follow_keyring(client, handle, info.keys.iter().map(|k| k.id).collect()).await;
}

fn parse_seeds(seeds: &[String]) -> Vec<SocketAddr> {
    seeds.iter().filter_map(|s| s.parse().ok()).collect()
}

/// Long-poll the keyring and seeds; hand every change to the member.
async fn follow_keyring(client: Arc<ApiClient>, handle: GossipHandle, mut known: Vec<u32>) {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.gossip_join_info(&known, POLL_WAIT).await {
            Ok(info) => {
                delay = Duration::from_millis(200);
                let ids: Vec<u32> = info.keys.iter().map(|k| k.id).collect();
                if ids != known && !ids.is_empty() {
                    known = ids;
                    handle.set_keys(info.keys).await;
                }
                handle.set_seeds(parse_seeds(&info.seeds)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?delay, "gossip keyring poll");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

/// Assert every local endpoint's health whenever one verdict changes.
async fn follow_health(handle: GossipHandle, mut locals: Vec<Local>) {
    loop {
        let endpoints: Vec<OwnEndpoint> = locals
            .iter_mut()
            .filter_map(|l| {
                let healthy = match &*l.health.borrow_and_update() {
                    Health::Unknown => return None,
                    Health::Passing => true,
                    Health::Failing { .. } => false,
                };
                Some(OwnEndpoint {
                    service: l.service.clone(),
                    address: l.address,
                    locality: l.locality.clone(),
                    healthy,
                })
            })
            .collect();
        handle.set_own_health(endpoints).await;
        if locals.is_empty() {
            return;
        }
        let changes = locals.iter_mut().map(|l| Box::pin(l.health.changed()));
        if futures_util::future::select_all(changes).await.0.is_err() {
            return;
        }
    }
}

/// Hand the pool's endpoint health to discovery on every change.
async fn feed_discovery(handle: GossipHandle, discovery: Arc<Discovery>) {
    let mut state = handle.subscribe();
    loop {
        let health = state.borrow_and_update().health.clone();
        discovery.install_gossip(health);
        if state.changed().await.is_err() {
            return;
        }
    }
}
