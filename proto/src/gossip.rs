//! Gossip vocabulary (DESIGN §5): the identity of a member of a cluster's LAN pool, the
//! signed records members spread as foca custom broadcasts, the keyring operations of the Raft
//! log, and the API bodies of `meshctl members` and `meshctl gossip keyring`.
//!
//! Shapes only. Sealing, replay windows, the record merge rules and the foca runtime live in
//! `mesh_core::gossip`; sockets and timers in `mesh-node`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::command::GossipKey;
use crate::ids::{ClusterName, Locality, NodeName, ServiceName};

/// Most keys a keyring holds (install refuses more).
pub const MAX_GOSSIP_KEYS: usize = 8;
/// Length of a gossip key, in bytes (AES-256).
pub const GOSSIP_KEY_BYTES: usize = 32;

/// What a member of the pool runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GossipRole {
    Control,
    Agent,
    Gateway,
}

impl GossipRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GossipRole::Control => "control",
            GossipRole::Agent => "agent",
            GossipRole::Gateway => "gateway",
        }
    }
}

/// A member of a LAN pool as foca identifies it. A restarted process picks a higher
/// `generation` (its start time, in ms), so it rejoins as a new member rather than as the one
/// the pool declared dead; `signing_key` is the Ed25519 public key its records are signed with,
/// fresh for every generation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub name: NodeName,
    pub role: GossipRole,
    pub cluster: ClusterName,
    /// The UDP address the member gossips on; unique within the pool.
    pub addr: SocketAddr,
    pub generation: u64,
    pub signing_key: [u8; 32],
}

/// One endpoint's health as its owner asserts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub owner: MemberId,
    pub service: ServiceName,
    /// The endpoint as peers dial it (the sidecar's inbound listener).
    pub address: SocketAddr,
    pub locality: Locality,
    pub healthy: bool,
    /// Bumped by the owner on every change; newer wins per (owner, endpoint).
    pub version: u64,
}

/// A record that only its owner can produce: signed with the owner's `signing_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    /// The health of one endpoint.
    Health {
        record: HealthRecord,
        signature: Vec<u8>,
    },
    /// The owner leaves the pool on purpose: its endpoints are removed, not failed.
    Leave { owner: MemberId, signature: Vec<u8> },
}

/// A keyring change, as a Raft command (`Command::GossipKeyring`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyringOp {
    /// Add a key every member accepts; the state machine assigns the next id.
    Install { key_b64: String },
    /// Seal with key `id` from now on (it must be installed).
    Use { id: u32 },
    /// Drop key `id` (never the one in use).
    Remove { id: u32 },
}

/// `GET /v1/gossip`: what a member needs to join the pool. Keys in use order: the first one
/// seals, every one opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipJoinInfo {
    pub cluster: String,
    pub keys: Vec<GossipKey>,
    /// Gossip addresses of control nodes (the answering node first).
    pub seeds: Vec<String>,
}

/// `POST /v1/gossip/keyring` (operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringRequest {
    /// `install`, `use` or `remove`.
    pub op: String,
    /// For `install`: base64url, 32 bytes. Absent: the control node generates one.
    #[serde(default)]
    pub key_b64: Option<String>,
    /// For `use` and `remove`.
    #[serde(default)]
    pub id: Option<u32>,
}

/// The keyring after a change, or as listed: ids only, never key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringResponse {
    /// The key that seals.
    pub primary: u32,
    pub ids: Vec<u32>,
}

/// `GET /v1/gossip/members` (operator): the answering node's view of its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// The answering member.
    pub node: String,
    pub members: Vec<MemberView>,
    pub counters: GossipCounters,
}

/// One member as `meshctl members` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub node: String,
    pub address: String,
    /// `alive`, `suspect`, `failed` or `left`.
    pub status: String,
    pub role: String,
    pub cluster: String,
    pub generation: u64,
    /// foca's incarnation (bumped by the member to refute suspicion).
    pub incarnation: u16,
    /// Endpoint-health records this node holds from the member.
    pub records: usize,
}

/// Packet and record counters of one member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipCounters {
    pub packets_received: u64,
    pub packets_sent: u64,
    pub dropped_malformed: u64,
    pub dropped_unknown_key: u64,
    pub dropped_tampered: u64,
    pub dropped_replayed: u64,
    /// Custom broadcasts refused: bad signature, or an owner asserting what it does not own.
    pub records_rejected: u64,
    /// Members this node saw declared dead without a leave.
    pub members_failed: u64,
    /// Packets sealed with each key id since start (`[id, count]`), to watch a rotation.
    pub sealed_with: Vec<(u32, u64)>,
}
