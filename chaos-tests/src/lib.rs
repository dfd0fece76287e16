//! Support for meshfed's chaos tier (DESIGN §11): a harness that runs real `meshd` processes on
//! distinct loopback addresses and injects process faults (`harness`), a userspace TCP relay for
//! network faults (`relay`), a per-key linearizability checker for policy-store histories
//! (`linearizability`), a real control-plane cluster built on the harness (`control`), and
//! sidecars with demo apps on top of it (`agents`).
//!
//! The tests themselves live in `tests/`, one invariant per file. Only `control` and `agents`
//! know meshfed's API and flags; the other modules know nothing of it beyond binary names.

pub mod agents;
pub mod control;
pub mod harness;
pub mod linearizability;
pub mod relay;
pub mod sidecars;
