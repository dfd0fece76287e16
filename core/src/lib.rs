//! Every meshfed decision, with no I/O: identity rules (CA, CSR checks, SVID verification),
//! config validation, endpoint sets, and the replicated state machine's apply function.
//!
//! Architecture invariant: this crate takes no socket, runtime, clock or ambient randomness.
//! Time is a parameter (`now_unix`, `now_unix_ms`), and the tidy test in `tests/tidy.rs` checks
//! that tokio, quinn, sled and openraft never enter its dependency closure.

pub mod authz;
pub mod balance;
pub mod check;
pub mod config;
pub mod endpoints;
pub mod enroll;
pub mod federation;
pub mod gossip;
pub mod http;
pub mod identity;
pub mod resilience;
pub mod rng;
pub mod route;
pub mod state;
pub mod token_text;
pub mod tunnel;
pub mod upstream;
