//! Table tests of the endpoint set: inputs in, the exact ranked list (or the reason there is
//! none) out.

use super::*;

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn loc(region: &str, zone: &str) -> Locality {
    Locality {
        region: region.into(),
        zone: zone.into(),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A catalog entry of `service` on `node` at `address`, in `region/zone`.
fn entry(
    service: &str,
    node: &str,
    address: &str,
    at: (&str, &str),
    healthy: bool,
) -> CatalogEntry {
    CatalogEntry {
        service: svc(service),
        node: NodeName::new(node).unwrap(),
        address: addr(address),
        locality: loc(at.0, at.1),
        healthy,
    }
}

fn statics(service: &str, addresses: &[&str]) -> Input {
    Input::Static {
        service: svc(service),
        addresses: addresses.iter().map(|a| addr(a)).collect(),
    }
}

/// What a table row expects: the ranked (address, tier, source) of healthy endpoints, or why
/// there are none.
#[derive(Debug)]
enum Want {
    Ready(Vec<(&'static str, Tier, Source)>),
    None(NoEndpoint),
}

#[track_caller]
fn check(inputs: Vec<Input>, service: &str, local: Locality, want: Want) {
    let mut set = EndpointSet::new();
    for i in inputs {
        set.handle(i);
    }
    let got = set.endpoints(&svc(service), &local);
    match (&got, want) {
        (Endpoints::Ready(list), Want::Ready(want)) => {
            let got: Vec<(SocketAddr, Tier, Source)> =
                list.iter().map(|e| (e.address, e.tier, e.source)).collect();
            let want: Vec<(SocketAddr, Tier, Source)> =
                want.into_iter().map(|(a, t, s)| (addr(a), t, s)).collect();
            assert_eq!(got, want);
            assert!(
                list.iter().all(|e| e.healthy),
                "an unhealthy endpoint was offered"
            );
        }
        (Endpoints::NoHealthyEndpoint { reason }, Want::None(want)) => assert_eq!(*reason, want),
        (got, want) => panic!("got {got:?}, want {want:?}"),
    }
}

use Source::{Catalog, Static};
use Tier::{Other, SameRegion, SameZone};

#[test]
fn ranking_health_and_merging() {
    let r1a = ("r1", "a");
    let r1b = ("r1", "b");
    let r2a = ("r2", "a");
    let catalog = || {
        Input::Catalog(vec![
            entry("api", "n4", "10.0.0.4:15006", r2a, true),
            entry("api", "n3", "10.0.0.3:15006", r1b, true),
            entry("api", "n2", "10.0.0.2:15006", r1a, true),
            entry("api", "n1", "10.0.0.1:15006", r1a, false),
            entry("web", "n9", "10.0.0.9:15006", r1a, true),
        ])
    };
    check(
        vec![],
        "api",
        loc("r1", "a"),
        Want::None(NoEndpoint::Unknown),
    );
    check(
        vec![catalog()],
        "api",
        loc("r1", "a"),
        Want::Ready(vec![
            ("10.0.0.2:15006", SameZone, Catalog),
            ("10.0.0.3:15006", SameRegion, Catalog),
            ("10.0.0.4:15006", Other, Catalog),
        ]),
    );
    // From r2/a, "zone a" of r1 is another region: zones only match within a region.
    check(
        vec![catalog()],
        "api",
        loc("r2", "a"),
        Want::Ready(vec![
            ("10.0.0.4:15006", SameZone, Catalog),
            ("10.0.0.2:15006", Other, Catalog),
            ("10.0.0.3:15006", Other, Catalog),
        ]),
    );
    // A caller that does not know its locality ranks by address alone.
    check(
        vec![catalog()],
        "api",
        Locality::default(),
        Want::Ready(vec![
            ("10.0.0.2:15006", Other, Catalog),
            ("10.0.0.3:15006", Other, Catalog),
            ("10.0.0.4:15006", Other, Catalog),
        ]),
    );
    check(
        vec![Input::Catalog(vec![
            entry("api", "n1", "10.0.0.1:15006", r1a, false),
            entry("api", "n2", "10.0.0.2:15006", r1b, false),
        ])],
        "api",
        loc("r1", "a"),
        Want::None(NoEndpoint::AllUnhealthy { unhealthy: 2 }),
    );
    check(
        vec![statics("api", &["10.0.1.2:15006", "10.0.1.1:15006"])],
        "api",
        loc("r1", "a"),
        Want::Ready(vec![
            ("10.0.1.1:15006", Other, Static),
            ("10.0.1.2:15006", Other, Static),
        ]),
    );
    // An address in both sources is the catalog's entry: its failed health check is not
    // overridden by the static listing.
    check(
        vec![
            statics("api", &["10.0.0.1:15006", "10.0.1.1:15006"]),
            catalog(),
        ],
        "api",
        loc("r1", "a"),
        Want::Ready(vec![
            ("10.0.0.2:15006", SameZone, Catalog),
            ("10.0.0.3:15006", SameRegion, Catalog),
            ("10.0.0.4:15006", Other, Catalog),
            ("10.0.1.1:15006", Other, Static),
        ]),
    );
    // A later catalog replaces the earlier one whole; static endpoints stay.
    check(
        vec![
            catalog(),
            statics("api", &["10.0.1.1:15006"]),
            Input::Catalog(vec![]),
        ],
        "api",
        loc("r1", "a"),
        Want::Ready(vec![("10.0.1.1:15006", Other, Static)]),
    );
    check(
        vec![statics("api", &["10.0.1.1:15006"]), statics("api", &[])],
        "api",
        loc("r1", "a"),
        Want::None(NoEndpoint::Unknown),
    );
}

#[test]
fn two_nodes_claiming_one_address_resolve_to_the_first_node_name_in_any_order() {
    let a = entry("api", "node-a", "10.0.0.1:15006", ("r1", "a"), false);
    let b = entry("api", "node-b", "10.0.0.1:15006", ("r1", "a"), true);
    for entries in [vec![a.clone(), b.clone()], vec![b, a]] {
        check(
            vec![Input::Catalog(entries)],
            "api",
            loc("r1", "a"),
            Want::None(NoEndpoint::AllUnhealthy { unhealthy: 1 }),
        );
    }
}

#[test]
fn handle_reports_whether_reads_changed() {
    let mut set = EndpointSet::new();
    let cat = |healthy| {
        Input::Catalog(vec![entry(
            "api",
            "n1",
            "10.0.0.1:15006",
            ("r1", "a"),
            healthy,
        )])
    };
    let steps = [
        (cat(true), true),
        (cat(true), false),
        (cat(false), true),
        (statics("api", &[]), false),
        (statics("api", &["10.0.1.1:15006"]), true),
        (statics("api", &["10.0.1.1:15006"]), false),
        (statics("api", &[]), true),
        (Input::Catalog(vec![]), true),
    ];
    for (i, (input, want)) in steps.into_iter().enumerate() {
        assert_eq!(set.handle(input), want, "step {i}");
    }
    assert_eq!(set, EndpointSet::new());
}

#[test]
fn best_tier_is_the_leading_run_of_equal_tiers() {
    let mut set = EndpointSet::new();
    set.handle(Input::Catalog(vec![
        entry("api", "n1", "10.0.0.1:15006", ("r1", "b"), true),
        entry("api", "n2", "10.0.0.2:15006", ("r1", "c"), true),
        entry("api", "n3", "10.0.0.3:15006", ("r2", "a"), true),
    ]));
    let got = set.endpoints(&svc("api"), &loc("r1", "a"));
    let best: Vec<SocketAddr> = got.best_tier().iter().map(|e| e.address).collect();
    assert_eq!(best, vec![addr("10.0.0.1:15006"), addr("10.0.0.2:15006")]);
    let none = set.endpoints(&svc("web"), &loc("r1", "a"));
    assert!(none.best_tier().is_empty());
    // `all` also lists unhealthy endpoints, ranked the same way.
    set.handle(Input::Catalog(vec![entry(
        "api",
        "n1",
        "10.0.0.1:15006",
        ("r1", "a"),
        false,
    )]));
    let all = set.all(&svc("api"), &loc("r1", "a"));
    assert_eq!(all.len(), 1);
    assert!(!all[0].healthy);
    assert_eq!(all[0].tier, SameZone);
}

#[test]
fn the_catalog_is_capped_per_service_by_address_order() {
    let n = MAX_ENDPOINTS_PER_SERVICE + 5;
    let entries: Vec<CatalogEntry> = (0..n)
        .rev()
        .map(|i| {
            let a = format!("10.{}.{}.{}:15006", i / 65536, (i / 256) % 256, i % 256);
            entry("api", &format!("n{i}"), &a, ("r1", "a"), true)
        })
        .collect();
    let mut set = EndpointSet::new();
    set.handle(Input::Catalog(entries));
    let all = set.all(&svc("api"), &loc("r1", "a"));
    assert_eq!(all.len(), MAX_ENDPOINTS_PER_SERVICE);
    assert_eq!(all[0].address, addr("10.0.0.0:15006"));
}
