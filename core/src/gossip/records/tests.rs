//! Table tests of record authority and the merge rules.

use std::net::SocketAddr;

use mesh_proto::gossip::GossipRole;
use mesh_proto::{ClusterName, Locality};

use super::*;

fn member(name: &str, ip: u8, generation: u64, signer: &Signer) -> MemberId {
    MemberId {
        name: NodeName::new(name).unwrap(),
        role: GossipRole::Agent,
        cluster: ClusterName::new("east").unwrap(),
        addr: SocketAddr::from(([10, 0, 0, ip], 7946)),
        generation,
        signing_key: signer.public(),
    }
}

fn record(owner: &MemberId, ip: u8, healthy: bool, version: u64) -> HealthRecord {
    HealthRecord {
        owner: owner.clone(),
        service: ServiceName::new("api").unwrap(),
        address: SocketAddr::from(([10, 0, 0, ip], 15006)),
        locality: Locality::default(),
        healthy,
        version,
    }
}

fn states(v: &HealthView) -> Vec<(String, GossipState)> {
    v.endpoints()
        .into_iter()
        .map(|h| (h.address.to_string(), h.state))
        .collect()
}

#[test]
fn only_the_owner_can_assert_its_endpoints() {
    let a_key = Signer::from_seed(&[1; 32]).unwrap();
    let b_key = Signer::from_seed(&[2; 32]).unwrap();
    let a = member("a", 1, 1, &a_key);
    let b = member("b", 2, 1, &b_key);
    let mut v = HealthView::new();
    let good = a_key.health(record(&a, 1, true, 1));
    assert_eq!(v.accept_bytes(&good).0, Accept::New);
    assert_eq!(v.accept_bytes(&good).0, Accept::Stale);
    let cases: Vec<(&str, Vec<u8>, Reject)> = vec![
        // b signs a record naming a as owner: a's key does not verify it.
        (
            "claims another owner",
            b_key.health(record(&a, 1, false, 9)),
            Reject::BadSignature,
        ),
        // b, as itself, asserts a's endpoint: outside its own IP.
        (
            "asserts a foreign endpoint",
            b_key.health(record(&b, 1, false, 9)),
            Reject::NotOwner,
        ),
        ("forged leave", b_key.leave(a.clone()), Reject::BadSignature),
        ("garbage", b"\x01\x02garbage".to_vec(), Reject::Undecodable),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(v.accept_bytes(&bytes).0, Accept::Rejected(want), "{name}");
    }
    assert_eq!(v.rejected(), 4);
    assert_eq!(
        states(&v),
        vec![("10.0.0.1:15006".into(), GossipState::Healthy)]
    );
    // A relayed copy with a flipped bit in the health flag fails the signature.
    let Broadcast::Health {
        mut record,
        signature,
    } = codec::decode(&good).unwrap()
    else {
        panic!()
    };
    record.healthy = false;
    record.version = 2;
    assert_eq!(
        v.accept(&Broadcast::Health { record, signature }),
        Accept::Rejected(Reject::BadSignature)
    );
}

#[test]
fn versions_generations_failure_and_leave_merge_by_the_rules() {
    let k = Signer::from_seed(&[1; 32]).unwrap();
    let g1 = member("a", 1, 1, &k);
    let g2 = member("a", 1, 2, &k);
    let ep = "10.0.0.1:15006".to_string();
    let mut v = HealthView::new();
    assert_eq!(
        v.accept_bytes(&k.health(record(&g1, 1, true, 2))).0,
        Accept::New
    );
    assert_eq!(
        v.accept_bytes(&k.health(record(&g1, 1, false, 1))).0,
        Accept::Stale
    );
    assert_eq!(
        v.accept_bytes(&k.health(record(&g1, 1, false, 3))).0,
        Accept::New
    );
    assert_eq!(states(&v), vec![(ep.clone(), GossipState::Unhealthy)]);
    assert_eq!(
        v.accept_bytes(&k.health(record(&g1, 1, true, 4))).0,
        Accept::New
    );

    // Declared dead: unhealthy whatever it said; up again: its records count again.
    v.member_down(&g1);
    assert_eq!(states(&v), vec![(ep.clone(), GossipState::OwnerFailed)]);
    v.member_up(&g1);
    assert_eq!(states(&v), vec![(ep.clone(), GossipState::Healthy)]);
    v.member_down(&g1);

    // A restart (generation 2) replaces everything of generation 1; old records are stale.
    assert_eq!(
        v.accept_bytes(&k.health(record(&g2, 1, true, 1))).0,
        Accept::New
    );
    assert_eq!(states(&v), vec![(ep.clone(), GossipState::Healthy)]);
    assert_eq!(
        v.accept_bytes(&k.health(record(&g1, 1, true, 9))).0,
        Accept::Stale
    );
    v.member_down(&g1); // about the superseded identity: ignored
    assert_eq!(states(&v), vec![(ep.clone(), GossipState::Healthy)]);

    // A leave removes its endpoints, before or after foca's MemberDown, and is not a failure.
    assert_eq!(v.accept_bytes(&k.leave(g2.clone())).0, Accept::New);
    v.member_down(&g2);
    assert!(v.has_left(&g2));
    assert!(states(&v).is_empty());
    assert_eq!(
        v.accept_bytes(&k.health(record(&g2, 1, true, 5))).0,
        Accept::Stale
    );
}

#[test]
fn a_member_can_assert_a_bounded_number_of_records() {
    let k = Signer::from_seed(&[1; 32]).unwrap();
    let a = member("a", 1, 1, &k);
    let mut v = HealthView::new();
    for port in 0..(MAX_RECORDS_PER_MEMBER as u16 + 3) {
        let mut r = record(&a, 1, true, 1);
        r.address.set_port(1000 + port);
        let want = if usize::from(port) < MAX_RECORDS_PER_MEMBER {
            Accept::New
        } else {
            Accept::Rejected(Reject::TooMany)
        };
        assert_eq!(v.accept_bytes(&k.health(r)).0, want);
    }
    assert_eq!(v.records_of(&a), MAX_RECORDS_PER_MEMBER);
}

#[test]
fn keys_invalidate_older_versions_of_the_same_item_only() {
    let k = Signer::from_seed(&[1; 32]).unwrap();
    let a = member("a", 1, 1, &k);
    let key = |b: Vec<u8>| RecordKey::of(&codec::decode::<Broadcast>(&b).unwrap());
    let v1 = key(k.health(record(&a, 1, true, 1)));
    let v2 = key(k.health(record(&a, 1, false, 2)));
    let mut other = record(&a, 1, true, 1);
    other.address.set_port(1);
    let other = key(k.health(other));
    let leave = key(k.leave(a.clone()));
    assert!(v2.invalidates(&v1));
    assert!(!v1.invalidates(&v2));
    assert!(!v2.invalidates(&other));
    assert!(leave.invalidates(&v2));
}
