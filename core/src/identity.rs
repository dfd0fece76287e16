//! Identity rules (DESIGN §3): the cluster root CA, the CSR signer's checks, X.509-SVID issuance
//! and verification, per-trust-domain bundles, and the rustls verifiers built on them.
//!
//! Everything here is a pure function of its inputs: time arrives as `now_unix`, and the only
//! randomness is what ring draws inside key generation, ECDSA signing and certificate serials.
//! This module does not store the CA, schedule renewals, read files or open sockets; the node
//! shell does, and calls in here for every decision.
//!
//! ```text
//!  agent / joining node                 control node (CA holder)
//!  --------------------                 ------------------------
//!  generate_csr(id) --- csr_pem ------> check_csr(csr, td, requester) -> SpiffeId
//!                                       sign_svid(ca, csr, id, ttl, now) -> SignedSvid
//!        <-------------- cert_pem -----
//!  server_config / client_config        TrustBundles (one root set per trust domain)
//!  SpiffeServerVerifier / SpiffeClientVerifier -> verify_svid(chain, bundles, usage, now)
//! ```

mod ca;
mod csr;
mod slot;
mod tls;
mod tls_config;
mod verify;

pub use ca::{SignedSvid, fingerprint, fingerprint_of_pem, generate_ca, sign_svid};
pub use csr::{CsrError, KeyAndCsr, MAX_CSR_PEM_BYTES, Requester, check_csr, generate_csr};
pub use slot::{SvidSlot, client_config_with_slot, renewal_due_at, server_config_with_slot};
pub use tls::{
    PeerPolicy, PinnedCaServerVerifier, SpiffeClientVerifier, SpiffeServerVerifier, svid_error_of,
};
pub use tls_config::{client_config, server_config};
pub use verify::{
    MAX_CHAIN_LEN, MAX_ROOTS_PER_TRUST_DOMAIN, SvidError, TrustBundles, Usage, spiffe_id_of,
    verify_svid,
};

/// Leaf lifetime when the requester does not ask for one: 24 hours.
pub const DEFAULT_SVID_TTL_SECS: u64 = 24 * 3600;
/// The longest leaf lifetime the CA ever grants: 7 days.
pub const MAX_SVID_TTL_SECS: u64 = 7 * 24 * 3600;
/// The shortest leaf lifetime the CA grants: 10 seconds (tests use 20 s to exercise renewal).
pub const MIN_SVID_TTL_SECS: u64 = 10;
/// Lifetime of a cluster root CA: 10 years.
pub const CA_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// How far `not_before` is backdated, so that peers with slightly slow clocks accept a new cert.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a CA, certificate, bundle or TLS config could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen refused to build, sign or serialize something.
    #[error("could not {what}: {source}")]
    Certificate {
        what: &'static str,
        source: rcgen::Error,
    },
    /// The stored CA material does not hold a usable CA certificate and key.
    #[error("invalid CA material: {reason}")]
    InvalidCa { reason: String },
    /// The CSR given to `sign_svid` does not decode or verify; run `check_csr` first.
    #[error("invalid CSR: {0}")]
    Csr(#[from] CsrError),
    /// A PEM input held no usable object of the expected kind.
    #[error("invalid {what} PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    /// A trust domain would hold more roots than rotation ever needs.
    #[error("trust domain {td} already holds {max} roots; remove an old root first")]
    TooManyRoots {
        td: mesh_proto::TrustDomain,
        max: usize,
    },
    /// A time does not fit in an X.509 validity field.
    #[error("unix time {unix} cannot be written into a certificate")]
    TimeOutOfRange { unix: u64 },
    /// The system random number generator failed while drawing a serial number.
    #[error("random number generator failed while drawing a certificate serial")]
    Rng,
    /// rustls refused the config (bad key, key and cert mismatch, ...).
    #[error("tls config: {source}")]
    Tls { source: rustls::Error },
}
