//! Endpoint-health records over gossip: who may assert what, and how records merge into one
//! view of which endpoints are up.
//!
//! ```text
//!  owner: HealthRecord ─► sign (owner's Ed25519 key, in its MemberId) ─► foca custom broadcast
//!  any member: receive_item ─► verify signature ─► owner asserts only its own IP ─► merge
//!  foca MemberDown(id) ─► owner failed ─► its endpoints Unhealthy(OwnerFailed)
//!  Leave{owner} (signed) ─► owner left ─► its endpoints removed
//!  view.endpoints() ─► Vec<GossipHealth> ─► mesh_core::endpoints::Input::Gossip
//! ```
//!
//! Authority: a record names its owner's full identity, including the public key it is signed
//! with, so a relaying member cannot alter it, and a member asserting an endpoint outside its
//! own IP address is refused: one member cannot mark another's endpoints dead. (Binding the
//! signing key to the member's SVID, so a holder of the gossip key cannot impersonate a whole
//! member, is not built; see ARCHITECTURE.md.)
//!
//! Merge rules, per member name:
//! - a higher generation replaces the member's records (a restarted process starts afresh);
//!   a lower one is stale;
//! - within a generation, a newer version wins per endpoint; equal or older is stale;
//! - declared dead (foca `MemberDown` for exactly that identity, no leave seen) ⇒ every endpoint
//!   it asserted is unhealthy, whatever its records said;
//! - a signed leave ⇒ its endpoints are removed (a graceful stop, not a failure), in whichever
//!   order the leave and foca's `MemberDown` arrive.
//!
//! Call order: `accept`, `member_up`, `member_down` as inputs arrive; reads at any time.
//! Bounded: at most [`MAX_MEMBERS`] members and [`MAX_RECORDS_PER_MEMBER`] records each.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use foca::{BroadcastHandler, Invalidates};
use mesh_proto::gossip::{Broadcast, HealthRecord, MemberId};
use mesh_proto::{NodeName, ServiceName, codec};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::peer::Peer;
use crate::endpoints::{GossipHealth, GossipState};

/// Most members whose records a view keeps.
pub const MAX_MEMBERS: usize = 8192;
/// Most endpoint records one member may assert.
pub const MAX_RECORDS_PER_MEMBER: usize = 64;
/// Largest encoded broadcast accepted (a packet is at most 1400 bytes).
const MAX_BROADCAST_BYTES: usize = 1400;

/// A member's signing key.
pub struct Signer(Ed25519KeyPair);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Signer").field(&self.public()).finish()
    }
}

impl Signer {
    /// A key from 32 seed bytes (the shell draws them from the OS RNG; the simulation from its
    /// seed). `None` if ring refuses the seed.
    pub fn from_seed(seed: &[u8; 32]) -> Option<Self> {
        Ed25519KeyPair::from_seed_unchecked(seed).ok().map(Self)
    }

    pub fn public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public_key().as_ref());
        out
    }

    /// The signed broadcast of `record`, encoded for foca.
    pub fn health(&self, record: HealthRecord) -> Vec<u8> {
        let signature = self
            .0
            .sign(&signed_bytes(&Signed::Health(&record)))
            .as_ref()
            .to_vec();
        encode(&Broadcast::Health { record, signature })
    }

    /// The signed leave of `owner`, encoded for foca.
    pub fn leave(&self, owner: MemberId) -> Vec<u8> {
        let signature = self
            .0
            .sign(&signed_bytes(&Signed::Leave(&owner)))
            .as_ref()
            .to_vec();
        encode(&Broadcast::Leave { owner, signature })
    }
}

fn encode(b: &Broadcast) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail; an empty broadcast is refused by foca.
    codec::encode(b).unwrap_or_default()
}

#[derive(serde::Serialize)]
enum Signed<'a> {
    Health(&'a HealthRecord),
    Leave(&'a MemberId),
}

fn signed_bytes(what: &Signed<'_>) -> Vec<u8> {
    let mut out = b"meshfed-gossip-record-v1".to_vec();
    out.extend(codec::encode(what).unwrap_or_default());
    out
}

fn verify(key: &[u8; 32], what: &Signed<'_>, signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&signed_bytes(what), signature)
        .is_ok()
}

/// What became of one received broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accept {
    /// New information: keep and disseminate.
    New,
    /// Already known or superseded.
    Stale,
    Rejected(Reject),
}

/// Why a broadcast was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Undecodable,
    BadSignature,
    /// The owner asserts an endpoint outside its own IP address.
    NotOwner,
    /// Another identity with the same name and generation already asserts records.
    Conflict,
    TooMany,
}

/// What the view knows of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerStatus {
    Active,
    Failed,
    Left,
}

#[derive(Debug, Clone)]
struct Owner {
    id: MemberId,
    status: OwnerStatus,
    records: BTreeMap<(ServiceName, SocketAddr), HealthRecord>,
}

/// Every member's records, merged.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    owners: BTreeMap<NodeName, Owner>,
    /// Bumped whenever [`HealthView::endpoints`] may answer differently.
    generation: u64,
    rejected: u64,
}

impl HealthView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Check and merge one encoded broadcast.
    pub fn accept_bytes(&mut self, data: &[u8]) -> (Accept, Option<RecordKey>) {
        let decoded = (data.len() <= MAX_BROADCAST_BYTES)
            .then(|| codec::decode::<Broadcast>(data).ok())
            .flatten();
        let Some(b) = decoded else {
            self.rejected += 1;
            return (Accept::Rejected(Reject::Undecodable), None);
        };
        let key = RecordKey::of(&b);
        let verdict = self.accept(&b);
        if matches!(verdict, Accept::Rejected(_)) {
            self.rejected += 1;
        }
        (verdict, Some(key))
    }

    /// Check and merge one broadcast.
    pub fn accept(&mut self, b: &Broadcast) -> Accept {
        match b {
            Broadcast::Health { record, signature } => {
                if !verify(
                    &record.owner.signing_key,
                    &Signed::Health(record),
                    signature,
                ) {
                    return Accept::Rejected(Reject::BadSignature);
                }
                if record.address.ip() != record.owner.addr.ip() {
                    return Accept::Rejected(Reject::NotOwner);
                }
                self.merge(record)
            }
            Broadcast::Leave { owner, signature } => {
                if !verify(&owner.signing_key, &Signed::Leave(owner), signature) {
                    return Accept::Rejected(Reject::BadSignature);
                }
                match self.owner_for(owner) {
                    Err(a) => a,
                    Ok(o) if o.status == OwnerStatus::Left => Accept::Stale,
                    Ok(o) => {
                        o.status = OwnerStatus::Left;
                        o.records.clear();
                        self.generation += 1;
                        Accept::New
                    }
                }
            }
        }
    }

    fn merge(&mut self, record: &HealthRecord) -> Accept {
        let o = match self.owner_for(&record.owner) {
            Ok(o) => o,
            Err(a) => return a,
        };
        if o.status == OwnerStatus::Left {
            return Accept::Stale;
        }
        let k = (record.service.clone(), record.address);
        match o.records.get(&k) {
            Some(have) if have.version >= record.version => return Accept::Stale,
            None if o.records.len() >= MAX_RECORDS_PER_MEMBER => {
                return Accept::Rejected(Reject::TooMany);
            }
            _ => {}
        }
        o.records.insert(k, record.clone());
        self.generation += 1;
        Accept::New
    }

    /// The entry of `id`'s member, replaced if `id` is a newer generation.
    fn owner_for(&mut self, id: &MemberId) -> Result<&mut Owner, Accept> {
        let full = self.owners.len() >= MAX_MEMBERS;
        let fresh = || Owner {
            id: id.clone(),
            status: OwnerStatus::Active,
            records: BTreeMap::new(),
        };
        match self.owners.get(&id.name) {
            None if full => return Err(Accept::Rejected(Reject::TooMany)),
            None => {
                self.owners.insert(id.name.clone(), fresh());
            }
            Some(o) if o.id.generation > id.generation => return Err(Accept::Stale),
            Some(o) if o.id.generation == id.generation && o.id != *id => {
                return Err(Accept::Rejected(Reject::Conflict));
            }
            Some(o) if o.id.generation < id.generation => {
                self.owners.insert(id.name.clone(), fresh());
                self.generation += 1;
            }
            Some(_) => {}
        }
        self.owners
            .get_mut(&id.name)
            .ok_or(Accept::Rejected(Reject::TooMany))
    }

    /// foca declared `id` down. Ignored for an identity the view has superseded.
    pub fn member_down(&mut self, id: &MemberId) {
        if let Some(o) = self.owners.get_mut(&id.name)
            && o.id == *id
            && o.status == OwnerStatus::Active
        {
            o.status = OwnerStatus::Failed;
            self.generation += 1;
        }
    }

    /// foca saw `id` up (again).
    pub fn member_up(&mut self, id: &MemberId) {
        if let Some(o) = self.owners.get_mut(&id.name)
            && o.id == *id
            && o.status == OwnerStatus::Failed
        {
            o.status = OwnerStatus::Active;
            self.generation += 1;
        }
    }

    /// Whether `id` left on purpose.
    pub fn has_left(&self, id: &MemberId) -> bool {
        self.owners
            .get(&id.name)
            .is_some_and(|o| o.id == *id && o.status == OwnerStatus::Left)
    }

    /// How many endpoint records `id` asserts here.
    pub fn records_of(&self, id: &MemberId) -> usize {
        self.owners
            .get(&id.name)
            .filter(|o| o.id == *id)
            .map_or(0, |o| o.records.len())
    }

    /// Bumped whenever [`HealthView::endpoints`] may answer differently.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Broadcasts refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Every endpoint some member asserts, with what the view concludes about it. Left
    /// members' endpoints are reported `OwnerLeft` (their records are gone, so an endpoint it
    /// asserted is named from the last record seen before the leave: none). Sorted.
    pub fn endpoints(&self) -> Vec<GossipHealth> {
        let mut out = Vec::new();
        for o in self.owners.values() {
            for r in o.records.values() {
                let state = match (o.status, r.healthy) {
                    (OwnerStatus::Failed, _) => GossipState::OwnerFailed,
                    (OwnerStatus::Left, _) => GossipState::OwnerLeft,
                    (OwnerStatus::Active, true) => GossipState::Healthy,
                    (OwnerStatus::Active, false) => GossipState::Unhealthy,
                };
                out.push(GossipHealth {
                    service: r.service.clone(),
                    address: r.address,
                    state,
                });
            }
        }
        out.sort_by(|a, b| (&a.service, a.address).cmp(&(&b.service, b.address)));
        out
    }
}

/// What a broadcast is about, so foca stops spreading a superseded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    owner: NodeName,
    generation: u64,
    /// `None` for a leave.
    item: Option<(ServiceName, SocketAddr)>,
    version: u64,
}

impl RecordKey {
    fn of(b: &Broadcast) -> Self {
        match b {
            Broadcast::Health { record, .. } => Self {
                owner: record.owner.name.clone(),
                generation: record.owner.generation,
                item: Some((record.service.clone(), record.address)),
                version: record.version,
            },
            Broadcast::Leave { owner, .. } => Self {
                owner: owner.name.clone(),
                generation: owner.generation,
                item: None,
                version: u64::MAX,
            },
        }
    }
}

impl Invalidates for RecordKey {
    fn invalidates(&self, other: &Self) -> bool {
        let same_generation = self.generation == other.generation
            && (self.item.is_none() || (self.item == other.item && self.version >= other.version));
        self.owner == other.owner && (self.generation > other.generation || same_generation)
    }
}

/// foca's broadcast handler: checks and merges into a shared [`HealthView`]. Refused and stale
/// records are dropped quietly (never an error, which would abort the rest of the packet).
#[derive(Debug, Clone, Default)]
pub struct RecordHandler {
    pub view: Arc<Mutex<HealthView>>,
}

impl BroadcastHandler<Peer> for RecordHandler {
    type Key = RecordKey;
    type Error = Infallible;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Peer>,
    ) -> Result<Option<RecordKey>, Infallible> {
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        let (verdict, key) = view.accept_bytes(data);
        Ok(match (verdict, sender) {
            (Accept::New, _) => key,
            // Our own record, re-added to be spread again (to members that joined since).
            (Accept::Stale, None) => key,
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests;
