//! mesh-gateway: the east-west gateway of a cluster (DESIGN §6 "Cross-cluster path"): a QUIC
//! endpoint towards peer gateways, a TCP+mTLS tunnel listener for local sidecars, the relay
//! between them, and probes of each peer gateway.
//!
//! ```text
//!  sidecar A ──TCP, outer mTLS (A's workload SVID), ALPN meshfed-tunnel/1──► [local.rs]
//!     preamble ─► core dispatch_tunnel ─► peer link of the target trust domain [peers.rs]
//!     ══ one bidirectional stream on the pooled QUIC connection, ALPN meshfed/1 ══►
//!  peer gateway [remote.rs]: preamble ─► core admit_stream ─► connect endpoint (static map)
//!     ◄─ status byte ─ ; then [relay.rs] copies opaque bytes both ways
//! ```
//!
//! The gateway never holds the inner TLS session's keys: after the preamble and the status
//! byte it copies bytes it cannot read. Every decision (who may tunnel, what is exported) is
//! `mesh_core::tunnel`'s; this crate only turns sockets into those inputs and back. It does
//! not obtain or renew its SVID (the `meshd gateway` role does, into an `SvidSlot`), does not
//! read config files, and does not talk to the control plane.

mod config;
mod gateway;
mod local;
mod peers;
mod relay;
mod remote;
pub mod sidecar;
pub mod testkit;
mod throughput;
mod tls;
mod wire;

pub use config::{GatewayConfig, GatewayIdentity, Limits, PeerConfig};
pub use gateway::{Gateway, GatewayError};
pub use peers::PeerHealth;
pub use relay::{RelayTap, TapPoint};
pub use throughput::{ThroughputError, measure_tunnel_gbps, raw_quinn_gbps};
pub use tls::TlsError;
