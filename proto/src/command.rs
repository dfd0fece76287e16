//! Raft log commands and their responses, plus the records the replicated state holds.
//!
//! A command carries every input its application needs, including the leader's wall time
//! (`now_unix_ms`), so that applying it is deterministic on every replica. The apply logic itself
//! is `mesh_core::state::MeshState::apply`.

use serde::{Deserialize, Serialize};

use crate::enroll::PendingEnrollment;
use crate::federation::{Peering, PendingToken};
use crate::ids::{ClusterName, NodeName, ServiceName, TrustDomain};
use crate::resource::{ResourceKey, StoredResource};

/// One entry of the replicated log's application data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// First command of a cluster's life: name, trust domain, CA and the bootstrap credentials.
    InitCluster {
        cluster: ClusterName,
        trust_domain: TrustDomain,
        ca: CaMaterial,
        /// SHA-256 (hex) of the operator and join tokens; the tokens themselves are never stored.
        operator_token_sha256: String,
        join_token_sha256: String,
        gossip_key: GossipKey,
        now_unix_ms: u64,
    },
    /// Create or replace a batch of already-validated resources, atomically. Every resource in
    /// the batch gets the same new revision. A `expect_version` mismatch rejects the whole batch.
    ApplyResources {
        resources: Vec<ResourceWrite>,
        now_unix_ms: u64,
    },
    /// Delete one resource. Deleting a missing resource is reported, not an error of the log.
    DeleteResource { key: ResourceKey, now_unix_ms: u64 },
    /// Record a control node and assign it the next free Raft node id.
    RegisterControlNode {
        info: ControlNodeInfo,
        now_unix_ms: u64,
    },
    /// Store a credential (its hash only).
    PutCredential {
        token_sha256: String,
        credential: Credential,
    },
    /// Revoke every credential bound to `node`.
    RevokeNode { node: NodeName, now_unix_ms: u64 },
    /// Apply `command` only if the token whose SHA-256 is given holds `need` at this point of
    /// the log. Checking the credential in the log, not before proposing, makes the check exactly
    /// as linearizable as the write, with no extra round trip.
    Authorized {
        token_sha256: String,
        need: Need,
        now_unix_ms: u64,
        command: Box<Command>,
    },
    /// Independent commands proposed as one log entry (the API coalesces concurrent writes).
    /// Each is applied in order and answered separately; one's failure does not affect another.
    Batch(Vec<Command>),
    /// Record what the agent on `node` has applied (config version, SVID expiries), for
    /// `meshctl proxy-status`. Kept outside the versioned config store: it never bumps the
    /// store version or wakes config watchers, so acknowledging a version cannot create one.
    ReportAgentStatus {
        node: NodeName,
        config_version: u64,
        certs: Vec<CertExpiry>,
        now_unix_ms: u64,
    },
    /// Record a federation token this cluster printed (its secret's SHA-256 only).
    PutFederationToken {
        secret_sha256: String,
        token: PendingToken,
    },
    /// A peer redeems a token: checked at this log position (unknown, used, expired, issued for
    /// another peer), then the token is spent and the peering recorded, atomically.
    RedeemFederationToken {
        secret_sha256: String,
        peering: Peering,
        now_unix_ms: u64,
    },
    /// Record (or replace) a peering this cluster completed as the redeemer.
    PutPeering { peering: Peering },
    /// Forget a peer cluster and its trust bundle.
    RemovePeering { name: ClusterName },
    /// Record an intro token printed for one node (its secret's SHA-256 only).
    PutEnrollToken {
        secret_sha256: String,
        token: PendingEnrollment,
    },
    /// A node redeems its intro token: checked at this log position (unknown, used, expired,
    /// another node, a service not granted), then spent and exchanged for an agent credential
    /// (stored by its token's SHA-256), atomically.
    RedeemEnrollment {
        secret_sha256: String,
        node: NodeName,
        services: Vec<ServiceName>,
        agent_token_sha256: String,
        now_unix_ms: u64,
    },
    /// Change the gossip keyring (`meshctl gossip keyring install|use|remove`). The first key
    /// of `StateData::gossip_keys` is the one members seal with.
    GossipKeyring(crate::gossip::KeyringOp),
}

/// The credential an [`Command::Authorized`] command needs. Each need also bounds what the
/// wrapped command may do: an agent need covers only that agent's own records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Need {
    /// The operator token; covers every command.
    Operator,
    /// An agent credential for `node` that lists `service`. Covers writing and deleting the
    /// `WorkloadEndpoint` `<service>.<node>` and nothing else.
    Agent {
        node: NodeName,
        service: ServiceName,
    },
    /// An agent credential for `node`, whatever its services. Covers
    /// [`Command::ReportAgentStatus`] for `node` and nothing else.
    AgentNode { node: NodeName },
}

/// One resource write inside [`Command::ApplyResources`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceWrite {
    pub key: ResourceKey,
    pub labels: std::collections::BTreeMap<String, String>,
    pub spec_json: String,
    /// Optimistic concurrency: apply only if the stored version equals this (0 = must not exist).
    pub expect_version: Option<u64>,
}

/// The outcome of applying one command. Every variant is a normal outcome: the log never holds a
/// command that "failed" in a way replicas could disagree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Membership and blank entries.
    #[default]
    None,
    Initialized,
    /// The cluster was already initialised; nothing changed.
    AlreadyInitialized,
    /// Resources written at this revision; `unchanged` lists writes that were identical.
    Applied {
        version: u64,
        changed: Vec<ResourceKey>,
        unchanged: Vec<ResourceKey>,
    },
    Deleted {
        version: u64,
    },
    NotFound {
        key: ResourceKey,
    },
    /// An `expect_version` did not match; nothing in the batch was written.
    Conflict {
        key: ResourceKey,
        expected: u64,
        actual: u64,
    },
    NodeRegistered {
        node_id: u64,
    },
    CredentialStored,
    Revoked {
        credentials: u32,
    },
    /// The token of an [`Command::Authorized`] command did not hold the needed credential.
    Unauthorized {
        reason: String,
    },
    /// One response per command of a [`Command::Batch`], in order.
    Batch(Vec<CommandResponse>),
    /// An agent's status report was recorded; the store version did not change.
    StatusRecorded,
    FederationTokenStored,
    PeeringRecorded,
    /// A federation token could not be redeemed; nothing changed.
    RedeemRefused {
        reason: RedeemRefusal,
    },
    PeeringRemoved {
        existed: bool,
    },
    EnrollTokenStored,
    Enrolled,
    EnrollRefused {
        reason: EnrollRefusal,
    },
    /// The gossip keyring after a change: the sealing key first.
    Keyring {
        ids: Vec<u32>,
    },
    /// A keyring change was refused (unknown id, removing the key in use, a full ring).
    KeyringRefused {
        reason: String,
    },
}

/// Why an intro token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollRefusal {
    Unknown,
    Used {
        at_unix_ms: u64,
    },
    Expired {
        at_unix_ms: u64,
    },
    WrongNode {
        issued_for: NodeName,
        got: NodeName,
    },
    NotGranted {
        service: ServiceName,
        granted: Vec<ServiceName>,
    },
}

/// Why a federation token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedeemRefusal {
    /// No such token was ever issued here: forged, or from another cluster.
    Unknown,
    Used {
        at_unix_ms: u64,
    },
    Expired {
        at_unix_ms: u64,
    },
    WrongPeer {
        issued_for: ClusterName,
        redeemer: ClusterName,
    },
}

/// The cluster CA, as held in Raft. Only control nodes ever see `key_pem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    /// `sha256:<hex>` of the CA certificate's DER, which clients pin.
    pub fingerprint: String,
    pub not_after_unix: u64,
}

/// A LAN or WAN gossip key (issue C uses it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipKey {
    pub id: u32,
    pub key_b64: String,
}

/// A control node's addresses. `node_id` is assigned by the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlNodeInfo {
    pub node_id: u64,
    pub name: NodeName,
    pub raft_addr: String,
    pub api_addr: String,
}

/// What a bearer token lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialKind {
    /// Full operator access to the API.
    Operator,
    /// May join a control node: obtain `mesh/control/<node>` for the node it names at join.
    ControlJoin,
    /// An agent on `node`: may obtain `mesh/agent/<node>` and the workload identities of
    /// `services`, and nothing else.
    Agent {
        node: NodeName,
        services: Vec<ServiceName>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub kind: CredentialKind,
    pub created_unix_ms: u64,
    /// 0 = never expires.
    pub expires_unix_ms: u64,
    pub revoked: bool,
}

/// Most SVID expiries one agent status keeps (an agent runs at most 64 services).
pub const MAX_REPORTED_CERTS: usize = 64;

/// When the SVID of one local service of an agent expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertExpiry {
    pub service: ServiceName,
    pub expires_unix: u64,
}

/// The last status an agent reported ([`Command::ReportAgentStatus`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The config store version the agent has applied.
    pub config_version: u64,
    /// At most [`MAX_REPORTED_CERTS`], in the order reported.
    pub certs: Vec<CertExpiry>,
    /// The leader's clock when the report was applied.
    pub reported_unix_ms: u64,
}

/// A stored resource, or its deletion, at one revision: the unit of the watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub version: u64,
    pub key: ResourceKey,
    /// `None` = deleted.
    pub resource: Option<StoredResource>,
}

/// The cluster's name and trust domain, fixed at bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: ClusterName,
    pub trust_domain: TrustDomain,
    pub created_unix_ms: u64,
}

/// Everything the replicated state machine holds. Snapshots and the on-disk applied state are
/// this struct in the binary codec. `mesh_core::state::MeshState` owns the rules for changing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StateData {
    pub cluster: Option<ClusterInfo>,
    pub ca: Option<CaMaterial>,
    /// Credentials by SHA-256 (hex) of their bearer token.
    pub credentials: std::collections::BTreeMap<String, Credential>,
    /// The gossip keyring; the first key seals, every key opens.
    pub gossip_keys: Vec<GossipKey>,
    pub control_nodes: std::collections::BTreeMap<u64, ControlNodeInfo>,
    /// Config store revision: bumped once per applied batch or delete.
    pub version: u64,
    pub resources: std::collections::BTreeMap<ResourceKey, StoredResource>,
    /// The last status each agent reported. Not part of the config store: changing it bumps no
    /// version and is not in the change log. Appended last so older fields keep their encoding.
    pub agents: std::collections::BTreeMap<NodeName, AgentStatus>,
    /// Federation tokens printed here, by the SHA-256 of their secret.
    pub federation_tokens: std::collections::BTreeMap<String, PendingToken>,
    /// Peer clusters, each with its own trust bundle (never merged).
    pub peerings: std::collections::BTreeMap<ClusterName, Peering>,
    /// Intro tokens printed for VM enrollment, by the SHA-256 of their secret.
    pub enrollments: std::collections::BTreeMap<String, PendingEnrollment>,
    // The watch change log is not here: it is a cache held by `mesh_core::state::MeshState`,
    // not persisted or snapshotted (re-encoding it on every apply cost more than the rest of
    // the state). After a restart or snapshot install, watchers behind get a full snapshot.
}
