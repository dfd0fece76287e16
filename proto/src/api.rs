//! JSON bodies of the control API (`/v1/...`). Shared by the server in `mesh-node`, meshctl and
//! agents, so both ends agree on one definition.

use serde::{Deserialize, Serialize};

use crate::command::{CertExpiry, Change, ControlNodeInfo};
use crate::ids::{Locality, NodeName};
use crate::resource::{Resource, StoredResource};

/// Error body of every non-2xx API response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `invalid_resource`, `unauthorized`, `not_leader`.
    pub code: String,
    pub message: String,
    /// Field-level problems, for validation errors.
    #[serde(default)]
    pub details: Vec<FieldProblem>,
}

/// One validation problem: which document, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// Index of the document in the submitted batch.
    pub document: usize,
    /// Dotted field path, e.g. `spec.rules[0].backendRefs[1].weight`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub resources: Vec<Resource>,
    /// Validate only; store nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub version: u64,
    /// One line per resource: `configured`, `created` or `unchanged`.
    pub results: Vec<ApplyResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResult {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListResponse {
    /// Store revision this list was read at.
    pub version: u64,
    pub items: Vec<Resource>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub version: u64,
}

/// `GET /v1/watch?from=V`: either a full snapshot (when `from` is older than the retained change
/// log, or 0) or the changes after `from`. Long-polls until there is something newer than `from`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchResponse {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Vec<StoredResource>>,
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub cluster: String,
    pub trust_domain: String,
    pub node_id: u64,
    pub node_name: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub config_version: u64,
    pub members: Vec<MemberStatus>,
    pub ca_fingerprint: String,
    pub ca_not_after_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node_id: u64,
    pub name: String,
    pub raft_addr: String,
    pub api_addr: String,
    /// `leader`, `follower`, `learner`.
    pub role: String,
    /// Last log index known replicated to this member (leader view only).
    pub matched_index: Option<u64>,
}

/// `POST /v1/join`: a new control node asks to join with the join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_name: String,
    pub raft_addr: String,
    pub api_addr: String,
    /// PEM CSR for `spiffe://<td>/mesh/control/<node_name>`.
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: u64,
    pub cluster: String,
    pub trust_domain: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub members: Vec<ControlNodeInfo>,
}

/// `POST /v1/members`: add a registered node as a voter (after it has started its Raft server).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddMemberRequest {
    pub node_id: u64,
}

/// `POST /v1/certificates`: sign a CSR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignRequest {
    pub csr_pem: String,
    /// Requested lifetime in seconds; the CA caps it.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignResponse {
    pub cert_pem: String,
    pub ca_pem: String,
    pub spiffe_id: String,
    pub not_after_unix: u64,
}

/// `POST /v1/credentials`: an operator issues an agent credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialRequest {
    pub node: String,
    pub services: Vec<String>,
    /// Lifetime in seconds; 0 = no expiry.
    #[serde(default)]
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialResponse {
    /// The bearer token, shown once.
    pub token: String,
}

/// `PUT /v1/catalog/{service}`: an agent registers (or re-registers) the endpoint of one of its
/// services. The node is the agent credential's; the answer is an [`ApplyResponse`] whose one
/// result is `created`, `configured` or `unchanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRegistration {
    /// `ip:port` of the sidecar's mTLS inbound listener for the service.
    pub address: String,
    #[serde(default)]
    pub locality: Locality,
    pub healthy: bool,
}

/// `POST /v1/agents/status`: what an agent has applied. The node is the agent credential's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStatusReport {
    pub config_version: u64,
    /// One per local service; at most `MAX_REPORTED_CERTS`.
    pub certs: Vec<CertExpiry>,
}

/// The answer to [`AgentStatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatusAck {
    /// The config store version when the report was recorded.
    pub store_version: u64,
}

/// `GET /v1/agents` (operator): every agent's last report, read on the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsResponse {
    /// The config store version at the time of the read, to compare each agent's against.
    pub store_version: u64,
    /// The answering leader's clock, so ages are computed on one clock.
    pub now_unix_ms: u64,
    pub agents: Vec<AgentRecord>,
}

/// One agent's last status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub node: NodeName,
    pub config_version: u64,
    pub certs: Vec<CertExpiry>,
    pub reported_unix_ms: u64,
}
