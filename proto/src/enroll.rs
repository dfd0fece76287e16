//! VM enrollment shapes (DESIGN §7, Consul auto-config): the single-use intro token an
//! operator prints for one node, its record in Raft, and the API bodies of redeeming it.
//!
//! ```text
//!  meshctl enroll token --node vm-1 --service billing ─► PendingEnrollment (secret hashed)
//!        prints meshfed-enroll1.<base64url(EnrollToken as JSON)>
//!  vm-1: meshd agent --token-file F ─► POST /v1/enroll/redeem (TLS pinned to the token's CA)
//!        control log: RedeemEnrollment ─► an agent credential for vm-1 and its services
//! ```
//!
//! Shapes only: the text form and the checks are `mesh_core::enroll`'s.

use serde::{Deserialize, Serialize};

use crate::ids::{NodeName, ServiceName};

/// What an intro token carries, before its text encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollToken {
    pub v: u32,
    pub node: NodeName,
    pub services: Vec<ServiceName>,
    /// `sha256:<hex>` of the cluster CA: the agent pins the control API with it.
    pub ca_fingerprint: String,
    pub api: Vec<String>,
    /// The one-time secret; the cluster keeps only its SHA-256.
    pub secret: String,
    pub expires_unix_ms: u64,
}

/// An intro token the cluster has printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEnrollment {
    pub node: NodeName,
    pub services: Vec<ServiceName>,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    pub used_unix_ms: Option<u64>,
}

/// `POST /v1/enroll/tokens` (operator).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollTokenRequest {
    pub node: String,
    pub services: Vec<String>,
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollTokenResponse {
    pub token: String,
    pub node: String,
    pub expires_unix_ms: u64,
}

/// `POST /v1/enroll/redeem` (no bearer: the secret authenticates).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedeemEnrollRequest {
    pub secret: String,
    /// The node the agent runs as (`--name`); must be the token's.
    pub node: String,
    /// The services in its services file; each must be granted by the token.
    pub services: Vec<String>,
}

/// The agent credential, handed over once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedeemEnrollResponse {
    pub agent_token: String,
}

/// `GET /v1/enroll` (operator): printed tokens, used or not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollList {
    pub tokens: Vec<PendingEnrollment>,
}
