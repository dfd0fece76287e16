//! Support for meshfed's chaos tier (DESIGN §11): a harness that runs real `meshd` processes on
//! distinct loopback addresses and injects process faults, a userspace TCP relay for network
//! faults, and a per-key linearizability checker for policy-store histories.
//!
//! The tests themselves live in `tests/`, one invariant per file. This library holds no test
//! scenario and no knowledge of meshfed's API beyond binary names.

pub mod control;
pub mod harness;
pub mod linearizability;
pub mod relay;
