//! `meshctl check` findings from fixed inputs: each condition a user would act on.

use mesh_proto::api::{AgentRecord, AgentsResponse, MemberStatus, StatusResponse};
use mesh_proto::command::CertExpiry;
use mesh_proto::federation::{Peering, PeeringState};
use mesh_proto::resource::WorkloadEndpointSpec;
use mesh_proto::{ClusterName, Locality, NodeName, ServiceName, TrustDomain};

use super::*;

const NOW: u64 = 1_800_000_000;

fn status(voters: usize, leader: Option<u64>, ca_left_secs: u64) -> StatusResponse {
    StatusResponse {
        cluster: "east".into(),
        trust_domain: "east.mesh".into(),
        node_id: 1,
        node_name: "n1".into(),
        leader_id: leader,
        term: 3,
        commit_index: Some(9),
        applied_index: Some(9),
        config_version: 4,
        members: (0..voters)
            .map(|i| MemberStatus {
                node_id: i as u64 + 1,
                name: format!("n{i}"),
                raft_addr: String::new(),
                api_addr: String::new(),
                role: "follower".into(),
                matched_index: None,
            })
            .collect(),
        ca_fingerprint: "sha256:00".into(),
        ca_not_after_unix: NOW + ca_left_secs,
    }
}

fn agents(reports: Vec<AgentRecord>) -> AgentsResponse {
    AgentsResponse {
        store_version: 4,
        now_unix_ms: NOW * 1000,
        agents: reports,
    }
}

fn report(node: &str, version: u64, age_ms: u64, svid_left: u64) -> AgentRecord {
    AgentRecord {
        node: NodeName::new(node).unwrap(),
        config_version: version,
        certs: vec![CertExpiry {
            service: ServiceName::new("api").unwrap(),
            expires_unix: NOW + svid_left,
        }],
        reported_unix_ms: NOW * 1000 - age_ms,
    }
}

fn endpoint(service: &str, healthy: bool) -> WorkloadEndpointSpec {
    WorkloadEndpointSpec {
        service: ServiceName::new(service).unwrap(),
        node: NodeName::new("h1").unwrap(),
        address: "127.0.0.1:15006".into(),
        locality: Locality::default(),
        healthy,
    }
}

fn levels(f: &[Finding]) -> Vec<(Level, String)> {
    f.iter().map(|f| (f.level, f.message.clone())).collect()
}

#[test]
fn a_healthy_cluster_is_all_ok() {
    let st = status(3, Some(1), 300 * 86_400);
    let ag = agents(vec![report("h1", 4, 1_000, 86_400)]);
    let eps = [endpoint("api", true), endpoint("api", false)];
    let f = evaluate(&Inputs {
        status: &st,
        agents: &ag,
        endpoints: &eps,
        peers: None,
        now_unix_ms: NOW * 1000,
    });
    assert!(f.iter().all(|f| f.level == Level::Ok), "{:#?}", levels(&f));
    assert!(!failed(&f));
    assert!(
        f.iter()
            .any(|f| f.message == "service api: 1/2 endpoints healthy")
    );
}

#[test]
fn problems_become_warnings_or_failures_with_hints() {
    let st = status(2, None, 10 * 86_400);
    let ag = agents(vec![
        report("h1", 3, 1_000, 600),
        report("h2", 4, 600_000, 86_400),
    ]);
    let eps = [endpoint("billing", false)];
    let peer = Peering {
        name: ClusterName::new("west").unwrap(),
        trust_domain: TrustDomain::new("west.mesh").unwrap(),
        ca_pem: "not a pem".into(),
        ca_fingerprint: String::new(),
        api: vec![],
        gateways: vec![],
        state: PeeringState::Failing,
        since_unix_ms: 0,
        last_heartbeat_unix_ms: 0,
    };
    let peers = [peer];
    let f = evaluate(&Inputs {
        status: &st,
        agents: &ag,
        endpoints: &eps,
        peers: Some(&peers),
        now_unix_ms: NOW * 1000,
    });
    let want = [
        (Level::Fail, "no leader elected"),
        (Level::Warn, "2 voter(s)"),
        (Level::Warn, "cluster CA expires in 240 h"),
        (Level::Warn, "agent h1 applied config 3 of 4"),
        (Level::Warn, "SVID of api on h1 expires in 0 h"),
        (Level::Warn, "agent h2 last reported 600 s ago"),
        (Level::Fail, "service billing: none of 1 endpoints healthy"),
        (Level::Fail, "peer west is FAILING"),
        (Level::Fail, "trust bundle of west.mesh is unreadable"),
    ];
    for (level, text) in want {
        assert!(
            f.iter().any(|x| x.level == level
                && x.message.starts_with(text)
                && (level == Level::Ok || x.hint.is_some())),
            "missing {level:?} {text:?} in {:#?}",
            levels(&f)
        );
    }
    assert!(failed(&f));
}
