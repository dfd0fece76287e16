//! Gossip on a control node: the keyring comes from this node's own applied Raft state (no
//! API round trip), the seeds are the other control nodes (their Raft IP at this node's gossip
//! port), and the running member is published in `ControlCtx::gossip` for the API.
//!
//! ```text
//!  StateHandle::subscribe ─► gossip_keys / control_nodes changed ─► set_keys / set_seeds
//!  first keyring (bootstrap commits InitCluster) ─► gossip::spawn ─► ctx.gossip
//! ```

use std::net::SocketAddr;

use mesh_proto::gossip::GossipRole;
use mesh_proto::{ClusterName, NodeName};

use super::{GossipError, GossipOptions};
use crate::control::Ctx;

/// Run the control node's member until the task is aborted.
pub async fn run(ctx: Ctx, bind: SocketAddr) {
    let mut applied = ctx.state.subscribe();
    let read = |ctx: &Ctx| {
        ctx.state.read(|s| {
            let d = s.data();
            let seeds: Vec<SocketAddr> = d
                .control_nodes
                .values()
                .filter(|n| n.name.as_str() != ctx.node.name)
                .filter_map(|n| n.raft_addr.parse::<SocketAddr>().ok())
                .map(|a| SocketAddr::new(a.ip(), bind.port()))
                .collect();
            (d.gossip_keys.clone(), seeds)
        })
    };
    // The keyring exists once InitCluster has been applied here.
    let (mut keys, mut seeds) = read(&ctx);
    while keys.is_empty() {
        if applied.changed().await.is_err() {
            return;
        }
        (keys, seeds) = read(&ctx);
    }
    let opts = match (
        NodeName::new(ctx.node.name.clone()),
        ClusterName::new(ctx.node.cluster.clone()),
    ) {
        (Ok(name), Ok(cluster)) => GossipOptions {
            name,
            role: GossipRole::Control,
            cluster,
            bind,
            keys: keys.clone(),
            seeds: seeds.clone(),
        },
        _ => {
            tracing::error!(
                "this node's name or cluster is not a valid gossip name; gossip disabled"
            );
            return;
        }
    };
    let handle = match super::spawn(opts).await {
        Ok(h) => h,
        Err(e @ GossipError::Bind { .. }) => {
            tracing::error!(error = %e, "gossip disabled");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "gossip disabled");
            return;
        }
    };
    let _ = ctx.gossip.set(handle.clone());
    while applied.changed().await.is_ok() {
        let (k, s) = read(&ctx);
        if k != keys && !k.is_empty() {
            keys = k;
            handle.set_keys(keys.clone()).await;
        }
        if s != seeds {
            seeds = s;
            handle.set_seeds(seeds.clone()).await;
        }
    }
}
