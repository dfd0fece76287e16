//! [`Pool`]: one member of a LAN pool, sans-IO. It wraps foca with the sealed transport, the
//! signed endpoint-health records and the member table, so the node's UDP shell and the
//! simulation drive exactly the same code.
//!
//! ```text
//!  shell ──handle_packet(bytes)──►  Opener (key id, AEAD, replay) ─► foca.handle_data ─┐
//!        ──handle_timer(timer)───►  foca.handle_timer ─────────────────────────────────┤
//!        ──set_own_health / rebroadcast / leave / set_keyring ─► foca.add_broadcast ───┤
//!                                                                                       ▼
//!  shell ◄──poll()── Output::{Send{to, sealed}, Timer{after, timer}, MemberDown, MemberUp,
//!                             HealthChanged}  ◄── AccumulatingRuntime + HealthView
//! ```
//!
//! Call order: [`Pool::new`], [`Pool::join`] with seed addresses, then any of the `handle_*`
//! and setters as events happen, draining [`Pool::poll`] after each until it returns `None`.
//! Timers are relative (`after`): the shell owns the clock. Nothing here reads a clock or an
//! ambient RNG: foca's RNG is seeded from the options.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, State, Timer};
use mesh_proto::gossip::{GossipCounters, HealthRecord, MemberId, MemberView};
use mesh_proto::{Locality, ServiceName};
// foca's RNG, always seeded from `PoolOptions::rng_seed`.
use rand::{SeedableRng, rngs::StdRng};

use super::keyring::Keyring;
use super::peer::{MeshCodec, Peer};
use super::records::{HealthView, RecordHandler, Signer};
use super::seal::{Dropped, Opener, Sealer};
use crate::endpoints::GossipHealth;

/// Everything a member starts with.
#[derive(Debug)]
pub struct PoolOptions {
    pub me: MemberId,
    pub signer: Signer,
    /// Random per process start (the sealer's sender tag).
    pub sender_tag: [u8; 16],
    pub rng_seed: u64,
    pub keyring: Keyring,
    /// foca's timing: [`super::lan_config`] unless an experiment says otherwise.
    pub config: foca::Config,
}

/// One endpoint this member owns, as its health checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnEndpoint {
    pub service: ServiceName,
    pub address: SocketAddr,
    pub locality: Locality,
    pub healthy: bool,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send {
        to: SocketAddr,
        packet: Vec<u8>,
    },
    Timer {
        after: Duration,
        timer: Timer<Peer>,
    },
    MemberUp(MemberId),
    /// Declared dead, or left (see [`Pool::has_left`]).
    MemberDown(MemberId),
    /// [`Pool::health`] answers differently.
    HealthChanged,
}

type SwimCore = Foca<Peer, MeshCodec, StdRng, RecordHandler>;

/// One member of the pool.
pub struct Pool {
    foca: SwimCore,
    rt: AccumulatingRuntime<Peer>,
    view: Arc<Mutex<HealthView>>,
    view_generation: u64,
    sealer: Sealer,
    opener: Opener,
    keyring: Keyring,
    signer: Signer,
    own: BTreeMap<(ServiceName, SocketAddr), HealthRecord>,
    counters: GossipCounters,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("me", &self.foca.identity())
            .finish()
    }
}

impl Pool {
    pub fn new(opts: PoolOptions) -> Self {
        let handler = RecordHandler::default();
        let view = handler.view.clone();
        let foca = Foca::with_custom_broadcast(
            Peer(opts.me),
            opts.config,
            StdRng::seed_from_u64(opts.rng_seed),
            MeshCodec,
            handler,
        );
        Self {
            foca,
            rt: AccumulatingRuntime::new(),
            view,
            view_generation: 0,
            sealer: Sealer::new(opts.sender_tag),
            opener: Opener::new(),
            keyring: opts.keyring,
            signer: opts.signer,
            own: BTreeMap::new(),
            counters: GossipCounters::default(),
            out: VecDeque::new(),
        }
    }

    pub fn identity(&self) -> &MemberId {
        &self.foca.identity().0
    }

    /// Announce to every seed address (our own is skipped).
    pub fn join(&mut self, seeds: &[SocketAddr]) {
        let me = self.identity().clone();
        for addr in seeds.iter().filter(|a| **a != me.addr) {
            // foca accepts an announce addressed to any identity with the receiver's address.
            let mut seed = me.clone();
            seed.addr = *addr;
            seed.generation = 0;
            let _ = self.foca.announce(Peer(seed), &mut self.rt);
        }
        self.drain();
    }

    /// Learn `ids` as alive members without an announce (the simulation starts from a known
    /// roster; a real member joins through seeds).
    pub fn add_members(&mut self, ids: &[MemberId]) {
        let members = ids.iter().map(|id| Member::alive(Peer(id.clone())));
        let _ = self.foca.apply_many(members, true, &mut self.rt);
        self.drain();
    }

    /// Whether the pool has any active member besides us.
    pub fn connected(&self) -> bool {
        self.foca.num_members() > 0
    }

    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.keyring = keyring;
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// One datagram from the network.
    pub fn handle_packet(&mut self, packet: &[u8]) {
        self.counters.packets_received += 1;
        match self.opener.open(&self.keyring, packet) {
            Ok(plain) => {
                if let Err(e) = self.foca.handle_data(&plain, &mut self.rt) {
                    self.counters.dropped_malformed += 1;
                    tracing::debug!(error = %e, "gossip packet refused by foca");
                }
            }
            Err(d) => {
                match d {
                    Dropped::Malformed => self.counters.dropped_malformed += 1,
                    Dropped::UnknownKey { .. } => self.counters.dropped_unknown_key += 1,
                    Dropped::Tampered => self.counters.dropped_tampered += 1,
                    Dropped::Replayed => self.counters.dropped_replayed += 1,
                }
                tracing::debug!(why = %d, "gossip packet dropped");
            }
        }
        self.drain();
    }

    /// A timer foca asked for has fired.
    pub fn handle_timer(&mut self, timer: Timer<Peer>) {
        if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
            tracing::debug!(error = %e, "gossip timer");
        }
        self.drain();
    }

    /// The health of every endpoint this member owns; changed ones get a new version and are
    /// spread at once.
    pub fn set_own_health(&mut self, endpoints: &[OwnEndpoint]) {
        let me = self.identity().clone();
        let mut changed = Vec::new();
        for e in endpoints
            .iter()
            .take(super::records::MAX_RECORDS_PER_MEMBER)
        {
            let k = (e.service.clone(), e.address);
            let next_version = match self.own.get(&k) {
                Some(r) if r.healthy == e.healthy && r.locality == e.locality => continue,
                Some(r) => r.version + 1,
                None => 1,
            };
            let record = HealthRecord {
                owner: me.clone(),
                service: e.service.clone(),
                address: e.address,
                locality: e.locality.clone(),
                healthy: e.healthy,
                version: next_version,
            };
            self.own.insert(k, record.clone());
            changed.push(record);
        }
        if changed.is_empty() {
            return;
        }
        for r in changed {
            let _ = self.foca.add_broadcast(&self.signer.health(r));
        }
        let _ = self.foca.broadcast(&mut self.rt);
        self.drain();
    }

    /// Spread every own record again (for members that joined since), at the same versions.
    pub fn rebroadcast(&mut self) {
        let records: Vec<HealthRecord> = self.own.values().cloned().collect();
        for r in records {
            let _ = self.foca.add_broadcast(&self.signer.health(r));
        }
        let _ = self.foca.broadcast(&mut self.rt);
        self.drain();
    }

    /// Leave on purpose: a signed leave record, then foca's leave (we gossip our own death).
    pub fn leave(&mut self) {
        let me = self.identity().clone();
        let _ = self.foca.add_broadcast(&self.signer.leave(me));
        let _ = self.foca.broadcast(&mut self.rt);
        let _ = self.foca.leave_cluster(&mut self.rt);
        self.drain();
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Every endpoint the pool's records name, with what they conclude.
    pub fn health(&self) -> Vec<GossipHealth> {
        self.with_view(HealthView::endpoints)
    }

    pub fn has_left(&self, id: &MemberId) -> bool {
        self.with_view(|v| v.has_left(id))
    }

    /// Every member this one knows (itself first), for `meshctl members`.
    pub fn members(&self) -> Vec<MemberView> {
        let view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        let me = self.identity();
        let mine = Member::new(Peer(me.clone()), 0, State::Alive);
        let mut out = Vec::new();
        for m in std::iter::once(&mine).chain(self.foca.iter_membership_state()) {
            let id = &m.id().0;
            let status = match m.state() {
                State::Alive => "alive",
                State::Suspect => "suspect",
                State::Down if view.has_left(id) => "left",
                State::Down => "failed",
            };
            out.push(MemberView {
                node: id.name.to_string(),
                address: id.addr.to_string(),
                status: status.into(),
                role: id.role.as_str().into(),
                cluster: id.cluster.to_string(),
                generation: id.generation,
                incarnation: m.incarnation(),
                records: view.records_of(id),
            });
        }
        out
    }

    pub fn counters(&self) -> GossipCounters {
        let mut c = self.counters.clone();
        c.records_rejected = self.with_view(HealthView::rejected);
        c
    }

    fn with_view<R>(&self, f: impl FnOnce(&HealthView) -> R) -> R {
        f(&self.view.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Turn what foca accumulated into outputs: seal every packet, pass timers through,
    /// apply membership notifications to the view.
    fn drain(&mut self) {
        while let Some((to, data)) = self.rt.to_send() {
            if let Some(packet) = self.sealer.seal(&self.keyring, &data) {
                self.counters.packets_sent += 1;
                let id = self.keyring.primary().0;
                match self.counters.sealed_with.iter_mut().find(|(k, _)| *k == id) {
                    Some((_, n)) => *n += 1,
                    None => self.counters.sealed_with.push((id, 1)),
                }
                self.out.push_back(Output::Send {
                    to: to.0.addr,
                    packet,
                });
            }
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.out.push_back(Output::Timer { after, timer });
        }
        while let Some(n) = self.rt.to_notify() {
            self.notify(n);
        }
        let generation = self.with_view(HealthView::generation);
        if generation != self.view_generation {
            self.view_generation = generation;
            self.out.push_back(Output::HealthChanged);
        }
    }

    fn notify(&mut self, n: OwnedNotification<Peer>) {
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        match n {
            OwnedNotification::MemberUp(p) => {
                view.member_up(&p.0);
                drop(view);
                self.out.push_back(Output::MemberUp(p.0));
            }
            OwnedNotification::MemberDown(p) => {
                view.member_down(&p.0);
                if !view.has_left(&p.0) {
                    self.counters.members_failed += 1;
                }
                drop(view);
                self.out.push_back(Output::MemberDown(p.0));
            }
            OwnedNotification::Rejoin(p) => {
                drop(view);
                // We were declared down and renewed ourselves: re-sign our records as the
                // new identity so they count again.
                let records: Vec<HealthRecord> = self.own.values().cloned().collect();
                for mut r in records {
                    r.owner = p.0.clone();
                    self.own.insert((r.service.clone(), r.address), r.clone());
                    let _ = self.foca.add_broadcast(&self.signer.health(r));
                }
            }
            _ => {}
        }
    }
}
