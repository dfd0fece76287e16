//! `meshd control`: start-up (bootstrap, join or restart), then run Raft, the Raft RPC server and
//! the API server until SIGTERM or Ctrl-C.
//!
//! ```text
//!  data dir has node.json? ── yes ──▶ restart: load TLS + Raft from disk
//!        │ no
//!        ├─ --bootstrap ─▶ make CA + own SVID ─▶ raft.initialize({self}) ─▶ commit InitCluster
//!        │                 ─▶ print operator + join tokens once
//!        └─ --join-token ─▶ POST /v1/join (CA pinned by fingerprint) ─▶ own SVID + node id
//!                          ─▶ start Raft as a non-member ─▶ POST /v1/members (learner → voter)
//! node.json is written last, so an interrupted start-up is detected rather than half-resumed.
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_core::identity::{self, Requester, TrustBundles};
use mesh_core::state::token_sha256;
use mesh_proto::command::{Command, CommandResponse, ControlNodeInfo, GossipKey};
use mesh_proto::{ClusterName, NodeName, SpiffeId, TrustDomain};
use mesh_raft_store::{ControlNode, Raft, StateHandle};
use tokio::net::TcpListener;

use crate::client::{ApiClient, Trust};
use crate::paths::{DataDir, NodeFile};
use crate::raft_net::{self, NetworkFactory, TlsIdentity};
use crate::token::{JoinToken, random_token};
use crate::{api, clock};

/// Raft timing. With the defaults (50/250/400 ms) a lost leader is replaced after the lease
/// (400 ms) plus 250–400 ms: 0.65–0.8 s, inside DESIGN §10's 1 s failover goal.
#[derive(Debug, Clone, Copy)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub cluster: ClusterName,
    pub trust_domain: TrustDomain,
}

#[derive(Debug, Clone)]
pub struct Join {
    pub token: JoinToken,
    /// Overrides the API addresses carried in the token.
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ControlOptions {
    pub name: NodeName,
    pub data_dir: PathBuf,
    pub raft_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub bootstrap: Option<Bootstrap>,
    pub join: Option<Join>,
    pub timing: RaftTiming,
    /// Lifetime of this node's control SVID; renewed at half of it.
    pub svid_ttl_secs: u64,
    /// UDP address of this node's gossip member (DESIGN §5).
    pub gossip_addr: SocketAddr,
}

/// Everything the API handlers need, shared by every connection.
pub struct ControlCtx {
    pub raft: Raft,
    pub state: StateHandle,
    pub node: NodeFile,
    pub trust_domain: TrustDomain,
    pub tls: TlsIdentity,
    pub proposer: crate::proposer::Proposer,
    /// This node's gossip member, once the keyring exists (`gossip::control::run`).
    pub gossip: std::sync::OnceLock<crate::gossip::GossipHandle>,
}

pub type Ctx = Arc<ControlCtx>;

/// How a start-up that found an empty data dir must finish once Raft is running.
enum Fresh {
    Restart,
    Bootstrap {
        cluster: ClusterName,
        ca: mesh_proto::command::CaMaterial,
    },
    Join {
        token: JoinToken,
        addrs: Vec<String>,
    },
}

pub async fn run(opts: ControlOptions) -> anyhow::Result<()> {
    let dd = DataDir::new(&opts.data_dir);
    let (node, fresh) = prepare(&opts, &dd).await?;
    let (ca_pem, chain_pem, key_pem) = dd.load_tls()?;
    let trust_domain = TrustDomain::new(node.trust_domain.clone())?;
    let mut bundles = TrustBundles::new();
    bundles.insert_pem(trust_domain.clone(), &ca_pem)?;
    let tls = TlsIdentity {
        trust_domain: trust_domain.clone(),
        bundles: Arc::new(bundles),
        svid: identity::SvidSlot::from_pem(&chain_pem, &key_pem)?,
    };

    let (log, sm) = mesh_raft_store::open(&dd.raft_dir()).await?;
    let state = sm.handle();
    let config = openraft::Config {
        cluster_name: node.cluster.clone(),
        heartbeat_interval: opts.timing.heartbeat_ms,
        election_timeout_min: opts.timing.election_min_ms,
        election_timeout_max: opts.timing.election_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
    .validate()
    .context("invalid raft timing: election timeouts must exceed the heartbeat interval")?;
    let network = NetworkFactory { tls: tls.clone() };
    let raft = Raft::new(node.node_id, Arc::new(config), network, log, sm).await?;

    let raft_listener = TcpListener::bind(opts.raft_addr).await.with_context(|| {
        format!(
            "cannot bind the raft port {}; is another meshd running?",
            opts.raft_addr
        )
    })?;
    let raft_task = tokio::spawn(raft_net::serve(
        raft_listener,
        tls.server_for_control()?,
        raft.clone(),
    ));

    let proposer = crate::proposer::Proposer::spawn(raft.clone(), api::COMMIT_TIMEOUT);
    let ctx = Arc::new(ControlCtx {
        raft: raft.clone(),
        state,
        node: node.clone(),
        trust_domain,
        tls,
        proposer,
        gossip: std::sync::OnceLock::new(),
    });
    let api_listener = TcpListener::bind(opts.api_addr).await.with_context(|| {
        format!(
            "cannot bind the API port {}; is another meshd running?",
            opts.api_addr
        )
    })?;
    let api_task = tokio::spawn(api::serve(api_listener, ctx.clone()));

    match fresh {
        Fresh::Restart => {}
        Fresh::Bootstrap { cluster, ca } => finish_bootstrap(&ctx, &dd, cluster, ca).await?,
        Fresh::Join { token, addrs } => finish_join(&ctx, &dd, &token, &addrs).await?,
    }
    let gossip_task = tokio::spawn(crate::gossip::control::run(ctx.clone(), opts.gossip_addr));
    let renew_task = tokio::spawn(renew_svid_forever(
        ctx.clone(),
        dd.clone(),
        opts.svid_ttl_secs,
    ));
    tracing::info!(node = %node.name, id = node.node_id, api = %opts.api_addr, raft = %opts.raft_addr, "control node running");

    crate::signals::shutdown().await;
    tracing::info!("shutting down");
    if let Some(g) = ctx.gossip.get() {
        g.leave(Duration::from_secs(1)).await;
    }
    gossip_task.abort();
    api_task.abort();
    raft_task.abort();
    renew_task.abort();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    Ok(())
}

/// Decide what kind of start this is, and do the parts that need no running Raft.
async fn prepare(opts: &ControlOptions, dd: &DataDir) -> anyhow::Result<(NodeFile, Fresh)> {
    if let Some(node) = dd.load_node()? {
        if opts.bootstrap.is_some() || opts.join.is_some() {
            tracing::info!(dir = %dd.root().display(), "data dir already initialised; ignoring --bootstrap/--join-token");
        }
        return Ok((node, Fresh::Restart));
    }
    if dd.has_partial_state() {
        bail!(
            "{} holds an interrupted bootstrap or join (no node.json); remove the directory and \
             run the command again",
            dd.root().display()
        );
    }
    let file = |cluster: &str, td: &str, id| NodeFile {
        name: opts.name.to_string(),
        node_id: id,
        cluster: cluster.to_owned(),
        trust_domain: td.to_owned(),
        raft_addr: opts.raft_addr.to_string(),
        api_addr: opts.api_addr.to_string(),
    };
    match (&opts.bootstrap, &opts.join) {
        (Some(_), Some(_)) => bail!(
            "--bootstrap and --join-token are exclusive: bootstrap the first node, join the others"
        ),
        (None, None) => bail!(
            "{} is not initialised: pass --bootstrap --cluster NAME --trust-domain TD for the first \
             control node, or --join-token TOKEN for the others",
            dd.root().display()
        ),
        (Some(b), None) => {
            let now = clock::now_unix();
            let ca = identity::generate_ca(&b.cluster, &b.trust_domain, now)?;
            let id = SpiffeId::control(&b.trust_domain, &opts.name);
            let kc = identity::generate_csr(&id)?;
            let requester = Requester::Control {
                node: opts.name.clone(),
            };
            let checked = identity::check_csr(&kc.csr_pem, &b.trust_domain, &requester)?;
            let svid =
                identity::sign_svid(&ca, &kc.csr_pem, &checked, identity::MAX_SVID_TTL_SECS, now)?;
            dd.save_tls(
                &ca.cert_pem,
                &format!("{}{}", svid.cert_pem, ca.cert_pem),
                &kc.key_pem,
            )?;
            let node = file(b.cluster.as_str(), b.trust_domain.as_str(), 1);
            Ok((
                node,
                Fresh::Bootstrap {
                    cluster: b.cluster.clone(),
                    ca,
                },
            ))
        }
        (None, Some(j)) => {
            let addrs = if j.addrs.is_empty() {
                j.token.api.clone()
            } else {
                j.addrs.clone()
            };
            let client = ApiClient::new(
                addrs.clone(),
                Trust::PinnedCa(j.token.ca_fingerprint.clone()),
                Some(j.token.secret.clone()),
            )?;
            let td = TrustDomain::new(j.token.trust_domain.clone())?;
            let id = SpiffeId::control(&td, &opts.name);
            let kc = identity::generate_csr(&id)?;
            let resp = client
                .join(&mesh_proto::api::JoinRequest {
                    node_name: opts.name.to_string(),
                    raft_addr: opts.raft_addr.to_string(),
                    api_addr: opts.api_addr.to_string(),
                    csr_pem: kc.csr_pem.clone(),
                })
                .await
                .context("join refused")?;
            dd.save_tls(
                &resp.ca_pem,
                &format!("{}{}", resp.cert_pem, resp.ca_pem),
                &kc.key_pem,
            )?;
            let node = file(&resp.cluster, &resp.trust_domain, resp.node_id);
            Ok((
                node,
                Fresh::Join {
                    token: j.token.clone(),
                    addrs,
                },
            ))
        }
    }
}

async fn finish_bootstrap(
    ctx: &Ctx,
    dd: &DataDir,
    cluster: ClusterName,
    ca: mesh_proto::command::CaMaterial,
) -> anyhow::Result<()> {
    let me = ControlNode {
        name: ctx.node.name.clone(),
        raft_addr: ctx.node.raft_addr.clone(),
        api_addr: ctx.node.api_addr.clone(),
    };
    ctx.raft
        .initialize(BTreeMap::from([(ctx.node.node_id, me)]))
        .await?;
    ctx.raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(ctx.node.node_id, "bootstrap")
        .await
        .context("this node did not become leader of its new cluster within 10 s")?;
    let operator = random_token("mfop")?;
    let join_secret = random_token("mfjoin")?;
    let gossip = random_token("mfgk")?;
    let now = clock::now_unix_ms();
    let init = Command::InitCluster {
        cluster: cluster.clone(),
        trust_domain: ctx.trust_domain.clone(),
        ca: ca.clone(),
        operator_token_sha256: token_sha256(&operator),
        join_token_sha256: token_sha256(&join_secret),
        gossip_key: GossipKey {
            id: 1,
            key_b64: gossip.trim_start_matches("mfgk_").to_owned(),
        },
        now_unix_ms: now,
    };
    let resp = ctx.raft.client_write(init).await?.data;
    if resp != CommandResponse::Initialized {
        bail!("cluster initialisation returned {resp:?}");
    }
    let info = ControlNodeInfo {
        node_id: ctx.node.node_id,
        name: NodeName::new(ctx.node.name.clone())?,
        raft_addr: ctx.node.raft_addr.clone(),
        api_addr: ctx.node.api_addr.clone(),
    };
    ctx.raft
        .client_write(Command::RegisterControlNode {
            info,
            now_unix_ms: now,
        })
        .await?;
    dd.save_node(&ctx.node)?;
    let join = JoinToken {
        secret: join_secret,
        ca_fingerprint: ca.fingerprint.clone(),
        trust_domain: ctx.trust_domain.to_string(),
        api: vec![ctx.node.api_addr.clone()],
    };
    print_bootstrap(ctx, &cluster, &ca.fingerprint, &operator, &join.encode()?);
    Ok(())
}

fn print_bootstrap(ctx: &Ctx, cluster: &ClusterName, fp: &str, operator: &str, join: &str) {
    let api = &ctx.node.api_addr;
    println!(
        "meshfed cluster {cluster} bootstrapped (trust domain {})",
        ctx.trust_domain
    );
    println!("The operator token is shown once. Store it now; only its hash is kept.");
    println!("MESHFED_CA_FINGERPRINT={fp}");
    println!("MESHFED_API={api}");
    println!("MESHFED_TOKEN={operator}");
    println!("MESHFED_JOIN_TOKEN={join}");
    println!("Point meshctl at it:");
    println!(
        "  meshctl context set {cluster} --api {api} --ca-fingerprint {fp} --token {operator}"
    );
    println!("Add control nodes (3 or 5 in all):");
    println!(
        "  meshd control --name c2 --data-dir DIR --raft-addr HOST:7001 --api-addr HOST:7443 --join-token {join}"
    );
}

async fn finish_join(
    ctx: &Ctx,
    dd: &DataDir,
    token: &JoinToken,
    addrs: &[String],
) -> anyhow::Result<()> {
    let client = ApiClient::new(
        addrs.to_vec(),
        Trust::PinnedCa(token.ca_fingerprint.clone()),
        Some(token.secret.clone()),
    )?;
    // The leader adds us as a learner (which needs our Raft server up: it is), waits for us to
    // catch up, then promotes us to voter.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut delay = Duration::from_millis(200);
    loop {
        match client.add_member(ctx.node.node_id).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "promotion to voter not done yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e).context("could not become a voter within 60 s"),
        }
    }
    dd.save_node(&ctx.node)?;
    println!(
        "joined cluster {} as control node {} (id {})",
        ctx.node.cluster, ctx.node.name, ctx.node.node_id
    );
    Ok(())
}

/// Keep this node's control SVID fresh: at 50 % of its lifetime, sign a new one with the
/// cluster CA (every control node holds it in the replicated state), persist it, and swap it
/// in. New Raft and API connections use it; open ones are untouched.
async fn renew_svid_forever(ctx: Ctx, dd: DataDir, ttl_secs: u64) {
    let mut failures = 0u32;
    loop {
        let (not_before, not_after) = ctx.tls.svid.validity();
        let now = clock::now_unix();
        // A certificate that outlives the configured TTL (say the TTL was lowered) is renewed
        // at once; otherwise at half its lifetime.
        let due = if not_after.saturating_sub(now) > ttl_secs + identity::CLOCK_SKEW_SECS {
            now
        } else {
            identity::renewal_due_at(not_before, not_after)
        };
        if now < due {
            // Sleep in bounded steps so a clock jump is noticed within the hour.
            tokio::time::sleep(Duration::from_secs((due - now).min(3600))).await;
            continue;
        }
        match renew_svid(&ctx, &dd, ttl_secs) {
            Ok(not_after) => {
                failures = 0;
                tracing::info!(not_after, "control SVID renewed");
                // Never renew in a tight loop, whatever the clock or the TTL says.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                failures += 1;
                let wait = Duration::from_secs(5u64.saturating_mul(1 << failures.min(6)));
                tracing::warn!(error = %e, retry_in = ?wait, "control SVID renewal failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn renew_svid(ctx: &Ctx, dd: &DataDir, ttl_secs: u64) -> anyhow::Result<u64> {
    let node = NodeName::new(ctx.node.name.clone())?;
    let ca = ctx
        .state
        .read(|s| s.data().ca.clone())
        .context("the cluster CA is not in this node's state yet")?;
    let kc = identity::generate_csr(&SpiffeId::control(&ctx.trust_domain, &node))?;
    let id = identity::check_csr(&kc.csr_pem, &ctx.trust_domain, &Requester::Control { node })?;
    let svid = identity::sign_svid(&ca, &kc.csr_pem, &id, ttl_secs, clock::now_unix())?;
    let chain = format!("{}{}", svid.cert_pem, ca.cert_pem);
    // Persist first: a crash after the swap must not restart on the old, expiring SVID.
    dd.save_tls(&ca.cert_pem, &chain, &kc.key_pem)?;
    ctx.tls.svid.replace(&chain, &kc.key_pem)?;
    Ok(svid.not_after_unix)
}

/// The current voter ids, from the latest membership config.
pub fn voters(raft: &Raft) -> BTreeSet<u64> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}
