//! Time-driven tests of the balancer (`mesh_core::balance`): P2C over peak-EWMA load in a
//! simulated closed loop, round robin, consistent hashing through `pick`, and eligibility.
//!
//! They live here rather than next to the code because `Balancer::pick` takes an `Instant`,
//! and tidy forbids clock reads anywhere under `core/src`. One real `Instant` is the origin of
//! simulated time; after that, time only moves by adding durations.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use mesh_core::balance::{Balancer, EndpointId, NoEndpointReason, Selection, Strategy};
use mesh_core::rng::SplitMix64;

fn ep(i: usize) -> EndpointId {
    EndpointId::new(&format!("10.0.0.{i}:8443"))
}

fn picked(s: Selection) -> EndpointId {
    match s {
        Selection::Endpoint(e) => e,
        other => panic!("no endpoint: {other:?}"),
    }
}

#[test]
fn p2c_avoids_a_slow_endpoint() {
    // Endpoint 0 answers in 200 ms, the other four in 10 ms; a request every 2 ms for 20 s.
    let mut b = Balancer::new(Strategy::P2c);
    b.handle_endpoints((0..5).map(ep));
    let latency = |e: &EndpointId| {
        if *e == ep(0) {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(10)
        }
    };
    let t0 = Instant::now();
    let mut rng = SplitMix64::new(42);
    let mut in_flight: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut counts = [0u32; 5];
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_millis(2) * i;
        while let Some(Reverse((done, idx))) = in_flight.peek().copied() {
            if done > now {
                break;
            }
            in_flight.pop();
            let e = ep(idx);
            b.handle_end(&e, done, latency(&e));
        }
        let e = picked(b.pick(now, None, &mut rng, |_| true));
        b.handle_start(&e);
        let idx = (0..5).find(|i| ep(*i) == e).expect("known endpoint");
        counts[idx] += 1;
        in_flight.push(Reverse((now + latency(&e), idx)));
    }
    let fast: u32 = counts[1..].iter().sum();
    assert!(
        fast >= 9_000,
        "only {fast} of 10,000 picks went to fast endpoints: {counts:?}"
    );
    // The fast ones share the load rather than one taking it all.
    assert!(counts[1..].iter().all(|c| *c >= 1_500), "{counts:?}");
}

#[test]
fn p2c_prefers_fewer_outstanding_requests() {
    let mut b = Balancer::new(Strategy::P2c);
    b.handle_endpoints([ep(0), ep(1)]);
    let now = Instant::now();
    for _ in 0..3 {
        b.handle_start(&ep(0));
    }
    let mut rng = SplitMix64::new(5);
    for _ in 0..100 {
        assert_eq!(picked(b.pick(now, None, &mut rng, |_| true)), ep(1));
    }
    assert_eq!(b.outstanding(&ep(0)), Some(3));
}

#[test]
fn p2c_picks_only_eligible_endpoints_and_spreads_over_them() {
    let mut b = Balancer::new(Strategy::P2c);
    b.handle_endpoints((0..10).map(ep));
    let now = Instant::now();
    let mut rng = SplitMix64::new(6);
    let eligible = |e: &EndpointId| *e == ep(3) || *e == ep(8);
    let mut threes = 0;
    for _ in 0..1_000 {
        let e = picked(b.pick(now, None, &mut rng, eligible));
        assert!(eligible(&e), "picked ineligible {e}");
        if e == ep(3) {
            threes += 1;
        }
    }
    // Equal load and latency: ties go to the first drawn, so the split is even.
    assert!(
        (400..=600).contains(&threes),
        "{threes} of 1,000 to one of two"
    );
}

#[test]
fn round_robin_cycles_and_skips_ineligible() {
    let mut b = Balancer::new(Strategy::RoundRobin);
    b.handle_endpoints((0..4).map(ep));
    let now = Instant::now();
    let mut rng = SplitMix64::new(8);
    let first = picked(b.pick(now, None, &mut rng, |_| true));
    let start = (0..4).find(|i| ep(*i) == first).expect("known endpoint");
    let order: Vec<EndpointId> = (1..8)
        .map(|_| picked(b.pick(now, None, &mut rng, |e| *e != ep(2))))
        .collect();
    let expect: Vec<EndpointId> = (1..12)
        .map(|k| ep((start + k) % 4))
        .filter(|e| *e != ep(2))
        .take(7)
        .collect();
    assert_eq!(order, expect);
}

#[test]
fn consistent_hash_is_sticky_and_moves_off_ineligible_owners() {
    let mut b = Balancer::new(Strategy::ConsistentHash {
        header: "x-user".to_owned(),
    });
    b.handle_endpoints((0..6).map(ep));
    let now = Instant::now();
    let mut rng = SplitMix64::new(3);
    let owner = picked(b.pick(now, Some("alice"), &mut rng, |_| true));
    for _ in 0..20 {
        assert_eq!(
            picked(b.pick(now, Some("alice"), &mut rng, |_| true)),
            owner
        );
    }
    let fallback = picked(b.pick(now, Some("alice"), &mut rng, |e| *e != owner));
    assert_ne!(fallback, owner);
    assert_eq!(
        picked(b.pick(now, Some("alice"), &mut rng, |e| *e != owner)),
        fallback
    );
    assert_eq!(
        picked(b.pick(now, Some("alice"), &mut rng, |_| true)),
        owner
    );
    // Without the header, requests are still balanced.
    assert!(matches!(
        b.pick(now, None, &mut rng, |_| true),
        Selection::Endpoint(_)
    ));
}

#[test]
fn empty_and_fully_ineligible_sets() {
    let now = Instant::now();
    let mut rng = SplitMix64::new(0);
    for strategy in [
        Strategy::P2c,
        Strategy::RoundRobin,
        Strategy::ConsistentHash {
            header: "x-user".to_owned(),
        },
    ] {
        let mut b = Balancer::new(strategy);
        assert_eq!(
            b.pick(now, Some("k"), &mut rng, |_| true),
            Selection::NoHealthyEndpoint {
                reason: NoEndpointReason::NoEndpoints
            }
        );
        b.handle_endpoints((0..3).map(ep));
        assert_eq!(
            b.pick(now, Some("k"), &mut rng, |_| false),
            Selection::NoHealthyEndpoint {
                reason: NoEndpointReason::AllIneligible { endpoints: 3 }
            }
        );
        assert_eq!(
            b.pick(now, Some("k"), &mut rng, |e| *e == ep(1)),
            Selection::Endpoint(ep(1))
        );
    }
}
