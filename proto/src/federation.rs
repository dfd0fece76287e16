//! Federation shapes (DESIGN §7): the peering token one cluster prints and another redeems,
//! the peering records both Raft groups keep, and the API bodies of the handshake.
//!
//! ```text
//!  east: meshctl federate token --peer west ─► PendingToken (secret hashed) in east's Raft
//!        prints meshfed1.<base64url(FederationToken as JSON)>
//!  west: meshctl federate join <token> ─► west's leader ─► east /v1/federation/redeem
//!        (TLS pinned to the CA in the token; RedeemRequest carries west's bundle)
//!        east: RedeemFederationToken in its log ─► Peering{west} ; west: PutPeering{east}
//! ```
//!
//! Shapes only: the token's text form and every check live in `mesh_core::federation`.

use serde::{Deserialize, Serialize};

use crate::ids::{ClusterName, TrustDomain};

/// What a federation token carries, before its text encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationToken {
    /// Token format; 1 today.
    pub v: u32,
    /// The cluster that issued the token, and its trust domain.
    pub cluster: ClusterName,
    pub trust_domain: TrustDomain,
    /// The only cluster that may redeem it.
    pub peer: ClusterName,
    /// The issuer's root CA certificate (PEM): the trust bundle of its trust domain.
    pub ca_pem: String,
    /// `sha256:<hex>` of the CA certificate's DER; the redeemer pins the issuer's API with it.
    pub ca_fingerprint: String,
    /// The issuer's control API addresses.
    pub api: Vec<String>,
    /// The issuer's east-west gateway addresses (may be empty until gateways exist).
    pub gateways: Vec<String>,
    /// The one-time secret; the issuer keeps only its SHA-256.
    pub secret: String,
    pub expires_unix_ms: u64,
}

/// A token the issuer has printed and not yet seen redeemed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingToken {
    pub peer: ClusterName,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    /// When it was redeemed; a token is good once.
    pub used_unix_ms: Option<u64>,
}

/// The life of a peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeeringState {
    /// Recorded on one side, handshake not finished.
    Pending,
    Active,
    /// The peer has not answered recent heartbeats.
    Failing,
    /// Being removed.
    Deleting,
}

impl PeeringState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Active => "ACTIVE",
            Self::Failing => "FAILING",
            Self::Deleting => "DELETING",
        }
    }
}

/// One peer cluster, as this cluster's Raft group records it. Bundles are kept per peer and
/// never merged with the local trust domain's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peering {
    pub name: ClusterName,
    pub trust_domain: TrustDomain,
    pub ca_pem: String,
    pub ca_fingerprint: String,
    pub api: Vec<String>,
    pub gateways: Vec<String>,
    pub state: PeeringState,
    pub since_unix_ms: u64,
    /// Last time the peer was heard from (the handshake counts); 0 if never.
    pub last_heartbeat_unix_ms: u64,
}

/// `POST /v1/federation/tokens` (operator).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationTokenRequest {
    pub peer: String,
    pub ttl_secs: u64,
    #[serde(default)]
    pub gateways: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationTokenResponse {
    pub token: String,
    pub peer: String,
    pub expires_unix_ms: u64,
}

/// `POST /v1/federation/join` (operator, on the redeeming cluster).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FederationJoinRequest {
    pub token: String,
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// `POST /v1/federation/redeem` (no bearer token: the secret authenticates), sent by the
/// redeeming cluster's leader to the issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedeemRequest {
    pub secret: String,
    pub cluster: String,
    pub trust_domain: String,
    pub ca_pem: String,
    pub api: Vec<String>,
    pub gateways: Vec<String>,
}

/// The issuer's answer: its own current record, as the redeemer stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedeemResponse {
    pub peering: Peering,
}

/// `GET /v1/federation/peers` (operator).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerList {
    pub cluster: String,
    pub peers: Vec<Peering>,
    /// ServiceExports in this cluster's store (what every peer may reach).
    pub exported_services: usize,
}
