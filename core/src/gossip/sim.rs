//! A seeded, in-process simulation of a LAN pool: many [`Pool`]s (the real foca, sealing and
//! records code) over a virtual network with loss and delay, driven by a virtual clock. It
//! measures what DESIGN §5 sets targets for: failure-detection time, dissemination time of a
//! custom broadcast, and false positives (healthy members declared dead).
//!
//! ```text
//!  t = 0        every member knows the roster (no join phase), probes start
//!  t = warmup   kills: one member every `kill_every`, never restarted
//!               broadcasts: one member flips its endpoint's health every `broadcast_every`
//!  t = run      stop; detection = (first MemberDown of victim at observer) − kill time, per
//!               (observer, victim); dissemination = (record visible at observer) − send time,
//!               per (observer, broadcast); a false positive = a MemberDown of a member that
//!               was not killed
//! ```
//!
//! Deterministic: the same [`SimParams`] give the same [`SimReport`]. Used by a test
//! (`core/tests/gossip_sim.rs`, small N) and by `mesh-bench` (N = 100 and 1000).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use foca::Timer;
use mesh_proto::gossip::{GossipRole, MemberId};
use mesh_proto::{ClusterName, Locality, NodeName, ServiceName};

use super::keyring::Keyring;
use super::peer::Peer;
use super::pool::{Output, OwnEndpoint, Pool, PoolOptions};
use super::records::Signer;
use crate::endpoints::GossipState;
use crate::rng::{Rng, SplitMix64};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimParams {
    pub members: usize,
    pub seed: u64,
    /// Probability that one datagram is lost.
    pub loss: f64,
    /// One-way delay, uniform in `[delay_min, delay_max]`.
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Virtual time before the first kill or broadcast.
    pub warmup: Duration,
    /// Total virtual time.
    pub run: Duration,
    pub kills: usize,
    pub kill_every: Duration,
    pub broadcasts: usize,
    pub broadcast_every: Duration,
    /// foca's timing, [`super::lan_config`] by default.
    pub config: foca::Config,
}

impl SimParams {
    /// DESIGN §5's scenario at `members`: 10 % loss, 1–20 ms delay.
    pub fn lan(members: usize, seed: u64) -> Self {
        Self {
            members,
            seed,
            loss: 0.10,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(20),
            warmup: Duration::from_secs(5),
            run: Duration::from_secs(60),
            kills: 10,
            kill_every: Duration::from_secs(5),
            broadcasts: 10,
            broadcast_every: Duration::from_millis(2500),
            config: super::lan_config(
                std::num::NonZeroU32::new(members.max(1) as u32)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            ),
        }
    }
}

/// What a run measured. Times are in milliseconds of virtual time.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub members: usize,
    /// Over every (surviving observer, killed member) pair.
    pub detect_p50_ms: f64,
    pub detect_p99_ms: f64,
    pub detect_max_ms: f64,
    /// Pairs where the observer never marked the victim dead before the run ended.
    pub undetected: usize,
    /// Over every (surviving observer, broadcast) pair.
    pub disseminate_p50_ms: f64,
    pub disseminate_p999_ms: f64,
    pub not_disseminated: usize,
    /// MemberDown notifications about members that were alive.
    pub false_positives: usize,
    /// Distinct live members some observer declared dead.
    pub falsely_failed_members: usize,
    pub packets_sent: u64,
    pub packets_lost: u64,
}

enum Event {
    Deliver { to: usize, packet: Vec<u8> },
    Timer { node: usize, timer: Timer<Peer> },
}

struct World {
    pools: Vec<Pool>,
    alive: Vec<bool>,
    by_addr: HashMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    seq: u64,
    now_us: u64,
    rng: SplitMix64,
    params: SimParams,
    killed_at: BTreeMap<usize, u64>,
    detected: BTreeMap<(usize, usize), u64>,
    false_positives: usize,
    falsely_failed: std::collections::BTreeSet<usize>,
    /// Per broadcast: (owner, endpoint address, wanted state, sent at).
    pending: Vec<(usize, SocketAddr, GossipState, u64)>,
    seen: BTreeMap<(usize, usize), u64>,
    sent: u64,
    lost: u64,
}

/// Run one simulation.
pub fn run_simulation(params: &SimParams) -> SimReport {
    let mut w = World::new(params.clone());
    let warmup = params.warmup.as_micros() as u64;
    let kill_every = params.kill_every.as_micros() as u64;
    let bcast_every = params.broadcast_every.as_micros() as u64;
    let end = params.run.as_micros() as u64;
    let mut next_kill = (0..params.kills).map(|k| warmup + k as u64 * kill_every);
    let mut next_bcast = (0..params.broadcasts).map(|k| warmup + 1_000 + k as u64 * bcast_every);
    let (mut kill_at, mut bcast_at) = (next_kill.next(), next_bcast.next());
    loop {
        let next_event = w.queue.peek().map(|Reverse((t, _))| *t);
        let step = [next_event, kill_at, bcast_at].into_iter().flatten().min();
        let Some(t) = step.filter(|t| *t <= end) else {
            break;
        };
        w.now_us = t;
        if kill_at == Some(t) {
            w.kill();
            kill_at = next_kill.next();
        } else if bcast_at == Some(t) {
            w.broadcast();
            bcast_at = next_bcast.next();
        } else if let Some(Reverse((_, id))) = w.queue.pop()
            && let Some(ev) = w.events.remove(&id)
        {
            w.dispatch(ev);
        }
    }
    w.report()
}

impl World {
    fn new(params: SimParams) -> Self {
        let mut rng = SplitMix64::new(params.seed);
        let cluster = ClusterName::new("sim").unwrap_or_else(|_| unreachable_name());
        let ring = Keyring::from_raw(vec![(1, [7; 32])]).unwrap_or_else(|_| unreachable_name());
        let mut pools = Vec::with_capacity(params.members);
        let mut ids = Vec::with_capacity(params.members);
        let mut by_addr = HashMap::new();
        for i in 0..params.members {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            let Some(signer) = Signer::from_seed(&seed) else {
                continue;
            };
            let addr = sim_addr(i);
            let me = MemberId {
                name: NodeName::new(format!("m{i}")).unwrap_or_else(|_| unreachable_name()),
                role: GossipRole::Agent,
                cluster: cluster.clone(),
                addr,
                generation: 1,
                signing_key: signer.public(),
            };
            let mut tag = [0u8; 16];
            tag[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            tag[8..].copy_from_slice(&(i as u64).to_le_bytes());
            ids.push(me.clone());
            by_addr.insert(addr, pools.len());
            pools.push(Pool::new(PoolOptions {
                me,
                signer,
                sender_tag: tag,
                rng_seed: rng.next_u64(),
                keyring: ring.clone(),
                config: params.config.clone(),
            }));
        }
        let mut w = Self {
            alive: vec![true; pools.len()],
            pools,
            by_addr,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now_us: 0,
            rng,
            params,
            killed_at: BTreeMap::new(),
            detected: BTreeMap::new(),
            false_positives: 0,
            falsely_failed: Default::default(),
            pending: Vec::new(),
            seen: BTreeMap::new(),
            sent: 0,
            lost: 0,
        };
        for i in 0..w.pools.len() {
            let others: Vec<MemberId> = ids.iter().filter(|m| **m != ids[i]).cloned().collect();
            w.pools[i].add_members(&others);
            w.collect(i);
        }
        w
    }

    fn schedule(&mut self, after_us: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_us + after_us, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn dispatch(&mut self, ev: Event) {
        let node = match ev {
            Event::Deliver { to, packet } => {
                if !self.alive[to] {
                    return;
                }
                self.pools[to].handle_packet(&packet);
                to
            }
            Event::Timer { node, timer } => {
                if !self.alive[node] {
                    return;
                }
                self.pools[node].handle_timer(timer);
                node
            }
        };
        self.collect(node);
    }

    /// Drain node `i`'s outputs into the network, the timer queue and the measurements.
    fn collect(&mut self, i: usize) {
        while let Some(out) = self.pools[i].poll() {
            match out {
                Output::Send { to, packet } => {
                    self.sent += 1;
                    let Some(&dst) = self.by_addr.get(&to) else {
                        continue;
                    };
                    if self.rng.unit_f64() < self.params.loss {
                        self.lost += 1;
                        continue;
                    }
                    let (lo, hi) = (
                        self.params.delay_min.as_micros() as u64,
                        self.params.delay_max.as_micros() as u64,
                    );
                    let delay = lo + self.rng.below(hi.saturating_sub(lo) + 1);
                    self.schedule(delay, Event::Deliver { to: dst, packet });
                }
                Output::Timer { after, timer } => {
                    self.schedule(after.as_micros() as u64, Event::Timer { node: i, timer });
                }
                Output::MemberDown(id) => {
                    let Some(&victim) = self.by_addr.get(&id.addr) else {
                        continue;
                    };
                    if self.killed_at.contains_key(&victim) {
                        self.detected.entry((i, victim)).or_insert(self.now_us);
                    } else {
                        self.false_positives += 1;
                        self.falsely_failed.insert(victim);
                    }
                }
                Output::HealthChanged => self.check_seen(i),
                Output::MemberUp(_) => {}
            }
        }
    }

    fn check_seen(&mut self, i: usize) {
        let health = self.pools[i].health();
        for (b, (_, address, want, _)) in self.pending.iter().enumerate() {
            if self.seen.contains_key(&(i, b)) {
                continue;
            }
            if health
                .iter()
                .any(|h| h.address == *address && h.state == *want)
            {
                self.seen.insert((i, b), self.now_us);
            }
        }
    }

    fn random_alive(&mut self, not: &[usize]) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.pools.len())
            .filter(|i| self.alive[*i] && !not.contains(i))
            .collect();
        let pick = self.rng.below(candidates.len() as u64) as usize;
        candidates.get(pick).copied()
    }

    fn kill(&mut self) {
        // Broadcast owners stay up so their dissemination is measured against live members.
        let owners: Vec<usize> = self.pending.iter().map(|p| p.0).collect();
        if let Some(v) = self.random_alive(&owners) {
            self.alive[v] = false;
            self.killed_at.insert(v, self.now_us);
        }
    }

    fn broadcast(&mut self) {
        let killed: Vec<usize> = self.killed_at.keys().copied().collect();
        let Some(owner) = self.random_alive(&killed) else {
            return;
        };
        let b = self.pending.len();
        let mut address = sim_addr(owner);
        address.set_port(15006);
        let endpoint = OwnEndpoint {
            service: ServiceName::new(format!("s{b}")).unwrap_or_else(|_| unreachable_name()),
            address,
            locality: Locality::default(),
            healthy: true,
        };
        self.pending
            .push((owner, address, GossipState::Healthy, self.now_us));
        self.seen.insert((owner, b), self.now_us);
        self.pools[owner].set_own_health(&[endpoint]);
        self.collect(owner);
    }

    fn report(&self) -> SimReport {
        let survivors: Vec<usize> = (0..self.pools.len()).filter(|i| self.alive[*i]).collect();
        let end = self.params.run.as_micros() as u64;
        let mut detect = Vec::new();
        let mut undetected = 0;
        for (&victim, &at) in &self.killed_at {
            for &o in &survivors {
                match self.detected.get(&(o, victim)) {
                    Some(t) => detect.push((t - at) as f64 / 1000.0),
                    None => {
                        undetected += 1;
                        detect.push((end - at) as f64 / 1000.0);
                    }
                }
            }
        }
        let mut spread = Vec::new();
        let mut not_disseminated = 0;
        for (b, (_, _, _, at)) in self.pending.iter().enumerate() {
            for &o in &survivors {
                match self.seen.get(&(o, b)) {
                    Some(t) => spread.push((t - at) as f64 / 1000.0),
                    None => {
                        not_disseminated += 1;
                        spread.push((end - at) as f64 / 1000.0);
                    }
                }
            }
        }
        SimReport {
            members: self.pools.len(),
            detect_p50_ms: quantile(&mut detect, 0.50),
            detect_p99_ms: quantile(&mut detect, 0.99),
            detect_max_ms: quantile(&mut detect, 1.0),
            undetected,
            disseminate_p50_ms: quantile(&mut spread, 0.50),
            disseminate_p999_ms: quantile(&mut spread, 0.999),
            not_disseminated,
            false_positives: self.false_positives,
            falsely_failed_members: self.falsely_failed.len(),
            packets_sent: self.sent,
            packets_lost: self.lost,
        }
    }
}

/// Nearest-rank quantile; 0 for no samples.
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

fn sim_addr(i: usize) -> SocketAddr {
    let i = i as u32;
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946))
}

/// Names and keys built from constants above are valid; this is never reached.
fn unreachable_name<T>() -> T {
    panic!("a constant gossip simulation name or key was refused")
}
