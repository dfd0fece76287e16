//! mesh-gateway: the east-west QUIC gateway (tunnel relay, peer-gateway links and probes).
//!
//! Not built yet: issue D fills this crate. It exists now so the workspace layout of DESIGN §2
//! and its dependency rule (no `mesh-node`, no `mesh-raft-store`) are in place from the start.
