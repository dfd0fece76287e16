//! Gossip (DESIGN §5): the LAN pool of a cluster, sans-IO. foca runs SWIM; this module adds
//! what foca leaves to its user: sealed packets, a replicated keyring, signed endpoint-health
//! records with owner-only authority, and the timing the pool runs with.
//!
//! ```text
//!  keyring.rs  Raft keyring rules (install / use / remove) and the decoded ring
//!  seal.rs     AES-256-GCM packets, per-sender key derivation, bounded replay windows
//!  peer.rs     foca Identity (MemberId: name, role, cluster, addr, generation, key) and Codec
//!  records.rs  signed HealthRecord / Leave, merge rules, foca BroadcastHandler
//!  pool.rs     Pool: foca + all of the above behind handle_* / poll
//!  sim.rs      seeded many-member simulation over a lossy virtual network
//! ```
//!
//! Nothing here owns a socket, a timer or a clock; `mesh-node`'s `gossip` module is the shell.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

pub mod keyring;
pub mod peer;
pub mod pool;
pub mod records;
pub mod seal;
pub mod sim;

pub use pool::{Output, OwnEndpoint, Pool, PoolOptions};

/// Largest sealed datagram (RFC 8085: stay under a 1500-byte MTU).
pub const MAX_DATAGRAM_BYTES: usize = 1400;

/// The LAN timing (ARCHITECTURE.md "Gossip timing" has the math). foca's `new_lan` is
/// memberlist's: 1 s probes and a suspicion of 4 × log10(n) probe periods, about 8 s at
/// n = 100, far above DESIGN §5's 3 s p99 detection. This keeps its shape and shortens it:
///
/// - probe every 300 ms, direct-ack timeout 120 ms, 3 indirect probes;
/// - suspicion `max(1, log10 n) × 0.9 s` (1.8 s at 100, 2.7 s at 1000): long enough for a
///   falsely suspected member to hear of it and refute at 10 % loss (its refutation is
///   gossiped every 100 ms to 3 members), short enough that probe + suspicion + spread < 3 s;
/// - gossip every 100 ms to 3 members, so an update reaches 99.9 % of 100 members in well
///   under a second.
pub fn lan_config(cluster_size: NonZeroU32) -> foca::Config {
    let mut c = foca::Config::new_lan(cluster_size);
    c.probe_period = Duration::from_millis(300);
    c.probe_rtt = Duration::from_millis(120);
    let log = f64::from(cluster_size.get()).log10().max(1.0);
    c.suspect_to_down_after = Duration::from_millis((log * 900.0) as u64);
    c.max_packet_size =
        NonZeroUsize::new(MAX_DATAGRAM_BYTES - seal::OVERHEAD_BYTES).unwrap_or(NonZeroUsize::MIN);
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(100),
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    c
}
