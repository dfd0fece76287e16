//! Gossip health as an input of the endpoint set: overrides, failure, leave.

use super::*;

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn catalog(healthy: bool) -> Input {
    let e = |node: &str, a: &str| CatalogEntry {
        service: svc("api"),
        node: NodeName::new(node).unwrap(),
        address: addr(a),
        locality: Locality::default(),
        healthy,
    };
    Input::Catalog(vec![e("n1", "10.0.0.1:15006"), e("n2", "10.0.0.2:15006")])
}

fn gossip(states: &[(&str, GossipState)]) -> Input {
    Input::Gossip(
        states
            .iter()
            .map(|(a, state)| GossipHealth {
                service: svc("api"),
                address: addr(a),
                state: *state,
            })
            .collect(),
    )
}

fn view(set: &EndpointSet) -> Vec<(String, bool)> {
    set.all(&svc("api"), &Locality::default())
        .iter()
        .map(|e| (e.address.to_string(), e.healthy))
        .collect()
}

#[test]
fn gossip_overrides_the_health_of_the_endpoints_it_names() {
    use GossipState::*;
    let one = "10.0.0.1:15006";
    let two = "10.0.0.2:15006";
    type Case<'a> = (
        &'a str,
        bool,
        Vec<(&'a str, GossipState)>,
        Vec<(&'a str, bool)>,
    );
    let cases: Vec<Case> = vec![
        ("no gossip", true, vec![], vec![(one, true), (two, true)]),
        (
            "owner failed",
            true,
            vec![(one, OwnerFailed)],
            vec![(one, false), (two, true)],
        ),
        (
            "owner left",
            true,
            vec![(one, OwnerLeft)],
            vec![(two, true)],
        ),
        (
            "unhealthy record",
            true,
            vec![(two, Unhealthy)],
            vec![(one, true), (two, false)],
        ),
        (
            "healthy record wins over a stale catalog",
            false,
            vec![(one, Healthy)],
            vec![(one, true), (two, false)],
        ),
        (
            "gossip adds nothing",
            true,
            vec![("10.0.0.9:15006", Healthy)],
            vec![(one, true), (two, true)],
        ),
        (
            "two owners: the worse state wins",
            true,
            vec![(one, Healthy), (one, OwnerFailed)],
            vec![(one, false), (two, true)],
        ),
    ];
    for (name, healthy, g, want) in cases {
        let mut set = EndpointSet::new();
        set.handle(catalog(healthy));
        set.handle(gossip(&g));
        let want: Vec<(String, bool)> = want.iter().map(|(a, h)| (a.to_string(), *h)).collect();
        assert_eq!(view(&set), want, "{name}");
    }
}

#[test]
fn a_gossip_input_replaces_the_last_and_reports_change_only_when_it_changes() {
    let mut set = EndpointSet::new();
    set.handle(catalog(true));
    assert!(set.handle(gossip(&[("10.0.0.1:15006", GossipState::OwnerFailed)])));
    assert!(!set.handle(gossip(&[("10.0.0.1:15006", GossipState::OwnerFailed)])));
    assert_eq!(
        set.endpoints(&svc("api"), &Locality::default())
            .best_tier()
            .len(),
        1
    );
    assert!(set.handle(gossip(&[])));
    assert_eq!(view(&set).len(), 2);
}
