//! The gossip shell: one UDP socket and one task per process driving a
//! `mesh_core::gossip::Pool` (foca + sealing + records), for every meshd role.
//!
//! ```text
//!  UdpSocket ─recv─► Pool::handle_packet ─┐            ┌─► Output::Send ─► UdpSocket::send_to
//!  timer heap ─due─► Pool::handle_timer ──┼─► poll() ──┼─► Output::Timer ─► timer heap
//!  GossipHandle ─Cmd─► keys / seeds /     │            └─► MemberUp/Down, HealthChanged
//!     own health / leave ─────────────────┘                     └─► watch<Arc<PoolState>>
//!  every 1 s: publish counters; rejoin seeds while alone; every 10 s: rebroadcast own records
//! ```
//!
//! The role glue lives in `agent/gossip.rs` (keyring and seeds from the control API, health checks
//! in, endpoint health out to `Discovery`) and `control.rs` (keyring from the local Raft
//! state, other control nodes as seeds). This module decides nothing: every rule is the
//! core's. Bounded: the command channel, the timer heap and the datagram size.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use foca::Timer;
use mesh_core::endpoints::GossipHealth;
use mesh_core::gossip::keyring::Keyring;
use mesh_core::gossip::peer::Peer;
use mesh_core::gossip::records::Signer;
use mesh_core::gossip::{MAX_DATAGRAM_BYTES, Output, OwnEndpoint, Pool, PoolOptions};
use mesh_proto::command::GossipKey;
use mesh_proto::gossip::{GossipCounters, GossipRole, MemberId, MemberView};
use mesh_proto::{ClusterName, NodeName};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub mod control;
pub mod metrics;

/// The default gossip UDP port (Serf's).
pub const DEFAULT_PORT: u16 = 7946;
/// Most timers foca may have pending; more are dropped (foca keeps a handful per member).
const MAX_TIMERS: usize = 65_536;
const COMMANDS: usize = 64;
const REBROADCAST_EVERY: Duration = Duration::from_secs(10);
/// Pool size foca's timing assumes when nothing better is known.
const SIZE_HINT: u32 = 100;

/// What one member starts with.
#[derive(Debug, Clone)]
pub struct GossipOptions {
    pub name: NodeName,
    pub role: GossipRole,
    pub cluster: ClusterName,
    pub bind: SocketAddr,
    pub keys: Vec<GossipKey>,
    pub seeds: Vec<SocketAddr>,
}

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("cannot bind the gossip UDP port {addr}: {source}; pass --gossip-addr")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the gossip keyring from the control plane is unusable: {0}")]
    Keyring(#[from] mesh_core::gossip::keyring::KeyringError),
    #[error("the system random number generator failed")]
    Rng,
}

/// What the member knows, published after every change.
#[derive(Debug, Clone)]
pub struct PoolState {
    pub me: MemberId,
    pub members: Vec<MemberView>,
    pub counters: GossipCounters,
    pub health: Vec<GossipHealth>,
    pub key_ids: Vec<u32>,
}

enum Cmd {
    Keys(Vec<GossipKey>),
    Seeds(Vec<SocketAddr>),
    OwnHealth(Vec<OwnEndpoint>),
    Leave(oneshot::Sender<()>),
}

/// The running member: commands in, state out.
#[derive(Clone)]
pub struct GossipHandle {
    tx: mpsc::Sender<Cmd>,
    state: watch::Receiver<Arc<PoolState>>,
}

impl GossipHandle {
    pub fn state(&self) -> Arc<PoolState> {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<PoolState>> {
        self.state.clone()
    }

    pub async fn set_keys(&self, keys: Vec<GossipKey>) {
        let _ = self.tx.send(Cmd::Keys(keys)).await;
    }

    pub async fn set_seeds(&self, seeds: Vec<SocketAddr>) {
        let _ = self.tx.send(Cmd::Seeds(seeds)).await;
    }

    pub async fn set_own_health(&self, endpoints: Vec<OwnEndpoint>) {
        let _ = self.tx.send(Cmd::OwnHealth(endpoints)).await;
    }

    /// Leave the pool on purpose, waiting at most `deadline` for the packets to go out.
    pub async fn leave(&self, deadline: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(deadline, wait).await;
        }
    }
}

/// Bind, then run the member on its own task.
pub async fn spawn(opts: GossipOptions) -> Result<GossipHandle, GossipError> {
    let socket = UdpSocket::bind(opts.bind)
        .await
        .map_err(|source| GossipError::Bind {
            addr: opts.bind,
            source,
        })?;
    let rng = SystemRandom::new();
    let mut seed = [0u8; 32];
    let mut tag = [0u8; 16];
    let mut rng_seed = [0u8; 8];
    for buf in [&mut seed[..], &mut tag[..], &mut rng_seed[..]] {
        rng.fill(buf).map_err(|_| GossipError::Rng)?;
    }
    let signer = Signer::from_seed(&seed).ok_or(GossipError::Rng)?;
    let me = MemberId {
        name: opts.name,
        role: opts.role,
        cluster: opts.cluster,
        addr: socket.local_addr().unwrap_or(opts.bind),
        // Start time: a restarted process is a newer member than the one the pool remembers.
        generation: crate::clock::now_unix_ms(),
        signing_key: signer.public(),
    };
    let keyring = Keyring::from_keys(&opts.keys)?;
    let pool = Pool::new(PoolOptions {
        me,
        signer,
        sender_tag: tag,
        rng_seed: u64::from_le_bytes(rng_seed),
        keyring,
        config: mesh_core::gossip::lan_config(
            NonZeroU32::new(SIZE_HINT).unwrap_or(NonZeroU32::MIN),
        ),
    });
    let (state_tx, state) = watch::channel(Arc::new(snapshot(&pool)));
    let (tx, rx) = mpsc::channel(COMMANDS);
    tracing::info!(me = %pool.identity().name, addr = %pool.identity().addr, seeds = ?opts.seeds, "gossip member starting");
    let shell = Shell {
        pool,
        socket,
        timers: BinaryHeap::new(),
        pending: HashMap::new(),
        next_timer: 0,
        seeds: opts.seeds,
        state: state_tx,
    };
    tokio::spawn(shell.run(rx));
    Ok(GossipHandle { tx, state })
}

fn snapshot(pool: &Pool) -> PoolState {
    PoolState {
        me: pool.identity().clone(),
        members: pool.members(),
        counters: pool.counters(),
        health: pool.health(),
        key_ids: pool.keyring().ids(),
    }
}

struct Shell {
    pool: Pool,
    socket: UdpSocket,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Timer<Peer>>,
    next_timer: u64,
    seeds: Vec<SocketAddr>,
    state: watch::Sender<Arc<PoolState>>,
}

impl Shell {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        self.pool.join(&self.seeds);
        self.flush().await;
        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_rebroadcast = Instant::now();
        loop {
            let due = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                got = self.socket.recv_from(&mut buf) => match got {
                    // A datagram longer than the largest we send is not ours.
                    Ok((n, _)) if n <= MAX_DATAGRAM_BYTES => self.pool.handle_packet(&buf[..n]),
                    Ok(_) => self.pool.handle_packet(&[]),
                    Err(e) => tracing::debug!(error = %e, "gossip recv"),
                },
                () = sleep_until(due) => self.fire_due(),
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Leave(done)) => {
                        self.pool.leave();
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd),
                },
                _ = tick.tick() => {
                    if !self.pool.connected() {
                        self.pool.join(&self.seeds);
                    }
                    if last_rebroadcast.elapsed() >= REBROADCAST_EVERY {
                        last_rebroadcast = Instant::now();
                        self.pool.rebroadcast();
                    }
                    self.publish();
                }
            }
            self.flush().await;
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Keys(keys) => match Keyring::from_keys(&keys) {
                Ok(ring) if ring != *self.pool.keyring() => {
                    tracing::info!(ids = ?ring.ids(), "gossip keyring updated");
                    self.pool.set_keyring(ring);
                    self.publish();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring an unusable gossip keyring"),
            },
            Cmd::Seeds(seeds) => self.seeds = seeds,
            Cmd::OwnHealth(endpoints) => self.pool.set_own_health(&endpoints),
            Cmd::Leave(_) => {}
        }
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.pending.remove(&id) {
                self.pool.handle_timer(t);
            }
        }
    }

    /// Act on everything the pool asked for.
    async fn flush(&mut self) {
        let mut changed = false;
        while let Some(out) = self.pool.poll() {
            match out {
                Output::Send { to, packet } => {
                    if let Err(e) = self.socket.send_to(&packet, to).await {
                        tracing::debug!(%to, error = %e, "gossip send");
                    }
                }
                Output::Timer { after, timer } => {
                    if self.pending.len() < MAX_TIMERS {
                        self.next_timer += 1;
                        self.timers
                            .push(Reverse((Instant::now() + after, self.next_timer)));
                        self.pending.insert(self.next_timer, timer);
                    }
                }
                Output::MemberUp(id) => {
                    tracing::info!(member = %id.name, addr = %id.addr, role = id.role.as_str(), "gossip member up");
                    // Tell the newcomer (and everyone) our records again.
                    self.pool.rebroadcast();
                    changed = true;
                }
                Output::MemberDown(id) => {
                    let left = self.pool.has_left(&id);
                    tracing::warn!(member = %id.name, addr = %id.addr, left, "gossip member down");
                    changed = true;
                }
                Output::HealthChanged => changed = true,
            }
        }
        if changed {
            self.publish();
        }
    }

    fn publish(&self) {
        self.state.send_replace(Arc::new(snapshot(&self.pool)));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
