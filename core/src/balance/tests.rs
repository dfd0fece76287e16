//! Balancer tests that need no clock: the consistent-hash ring's stability and spread, and the
//! strategy a spec selects. Picks that depend on time (P2C, round robin through `pick`) are in
//! `core/tests/traffic_balance.rs`, which may hold a real `Instant`.

use mesh_proto::resource::{LoadBalancer, LoadBalancerPolicy};

use super::ring::{MAX_POINTS, Ring, VNODES};
use super::*;

fn ids(n: usize) -> Vec<EndpointId> {
    (0..n)
        .map(|i| EndpointId::new(&format!("10.0.{}.{}:8443", i / 250, i % 250)))
        .collect()
}

fn owners(ring: &Ring, keys: usize) -> Vec<Option<usize>> {
    (0..keys)
        .map(|k| ring.lookup(stable_hash(format!("user-{k}").as_bytes()), |_| true))
        .collect()
}

#[test]
fn adding_one_of_ten_endpoints_moves_few_keys_and_only_to_it() {
    let ten = ids(11)[..10].to_vec();
    let eleven = ids(11);
    let before = owners(&Ring::build(ten.iter()), 10_000);
    let after = owners(&Ring::build(eleven.iter()), 10_000);
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            moved += 1;
            // Indices of the first ten are the same in both sets; the new one is index 10.
            assert_eq!(*a, Some(10), "a key moved between two old endpoints");
        }
    }
    let share = f64::from(moved) / 10_000.0;
    assert!(share <= 0.15, "{share} of keys moved; ideal is 1/11");
    assert!(
        share >= 0.05,
        "{share} of keys moved; the new endpoint took almost nothing"
    );
}

#[test]
fn keys_spread_over_endpoints() {
    let ring = Ring::build(ids(10).iter());
    let mut counts = [0u32; 10];
    for owner in owners(&ring, 20_000).into_iter().flatten() {
        counts[owner] += 1;
    }
    // Fair share is 2,000; virtual nodes keep each within ±30 %.
    assert!(
        counts.iter().all(|c| (1_400..=2_600).contains(c)),
        "{counts:?}"
    );
}

#[test]
fn lookup_skips_ineligible_endpoints_clockwise() {
    let ring = Ring::build(ids(5).iter());
    let key = stable_hash(b"user-42");
    let owner = ring.lookup(key, |_| true).unwrap();
    let next = ring.lookup(key, |i| i != owner).unwrap();
    assert_ne!(owner, next);
    // Removing the owner from the set sends the key where skipping it did.
    let mut rest = ids(5);
    let removed = rest.remove(owner);
    let smaller = Ring::build(rest.iter());
    let moved_to = smaller.lookup(key, |_| true).unwrap();
    assert_eq!(rest[moved_to], ids(5)[next]);
    assert!(!rest.contains(&removed));
    assert_eq!(ring.lookup(key, |_| false), None);
    assert_eq!(Ring::default().lookup(key, |_| true), None);
}

#[test]
fn ring_size_is_bounded() {
    let ring = Ring::build(ids(1_000).iter());
    assert!(ring.len() <= MAX_POINTS);
    assert_eq!(Ring::build(ids(3).iter()).len(), 3 * VNODES);
}

#[test]
fn strategy_from_spec() {
    let lb = |policy, header: Option<&str>| LoadBalancer {
        policy,
        hash_header: header.map(str::to_owned),
    };
    assert_eq!(Strategy::from_spec(None), Strategy::P2c);
    assert_eq!(
        Strategy::from_spec(Some(&lb(LoadBalancerPolicy::RoundRobin, None))),
        Strategy::RoundRobin
    );
    assert_eq!(
        Strategy::from_spec(Some(&lb(
            LoadBalancerPolicy::ConsistentHash,
            Some("X-User")
        ))),
        Strategy::ConsistentHash {
            header: "x-user".to_owned()
        }
    );
    assert_eq!(
        Strategy::from_spec(Some(&lb(LoadBalancerPolicy::ConsistentHash, None))),
        Strategy::P2c
    );
    let b = Balancer::from_spec(Some(&lb(
        LoadBalancerPolicy::ConsistentHash,
        Some("x-user"),
    )));
    assert_eq!(b.hash_header(), Some("x-user"));
}

#[test]
fn endpoint_set_is_sorted_deduplicated_and_keeps_stats() {
    let mut b = Balancer::new(Strategy::P2c);
    let a = EndpointId::new("10.0.0.2:1");
    let z = EndpointId::new("10.0.0.1:1");
    b.handle_endpoints([a.clone(), z.clone(), a.clone()]);
    assert_eq!(b.endpoints.len(), 2);
    b.handle_start(&a);
    b.handle_start(&EndpointId::new("unknown:1"));
    b.handle_endpoints([a.clone(), EndpointId::new("10.0.0.3:1")]);
    assert_eq!(b.outstanding(&a), Some(1));
    assert_eq!(b.outstanding(&z), None);
}
