//! Wire and config vocabulary shared by every meshfed crate: identifiers, config resource kinds,
//! Raft commands, API messages and the one binary codec.
//!
//! This crate owns *shapes*, not decisions. Validation beyond "this string is a well-formed id"
//! lives in `mesh-core`; I/O lives in `mesh-node` and `mesh-gateway`. It depends on no workspace
//! crate, and it is the only crate that names bincode (see [`codec`]).

pub mod api;
pub mod codec;
pub mod command;
pub mod enroll;
pub mod federation;
pub mod gossip;
pub mod ids;
pub mod resource;
pub mod tunnel;

pub use ids::{ClusterName, IdError, Locality, NodeName, Role, ServiceName, SpiffeId, TrustDomain};
