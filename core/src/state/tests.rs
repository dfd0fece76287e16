//! Event-in, exact-outcome-out tests of the state machine's rules: batches, conflicts, the
//! watch change log, and credentials checked at their log position.

use std::collections::BTreeMap;

use super::*;

fn key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::ServiceExport,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn write(name: &str, spec: &str, expect: Option<u64>) -> ResourceWrite {
    ResourceWrite {
        key: key(name),
        labels: BTreeMap::new(),
        spec_json: spec.into(),
        expect_version: expect,
    }
}

fn apply(s: &mut MeshState, w: Vec<ResourceWrite>) -> CommandResponse {
    s.apply(&Command::ApplyResources {
        resources: w,
        now_unix_ms: 1,
    })
}

#[test]
fn batch_gets_one_version_and_unchanged_writes_do_not_bump() {
    let mut s = MeshState::default();
    let r = apply(&mut s, vec![write("a", "{}", None), write("b", "{}", None)]);
    assert_eq!(
        r,
        CommandResponse::Applied {
            version: 1,
            changed: vec![key("a"), key("b")],
            unchanged: vec![]
        }
    );
    let r = apply(&mut s, vec![write("a", "{}", None)]);
    assert_eq!(
        r,
        CommandResponse::Applied {
            version: 1,
            changed: vec![],
            unchanged: vec![key("a")]
        }
    );
    let r = apply(
        &mut s,
        vec![write("a", "{\"x\":1}", None), write("b", "{}", None)],
    );
    assert_eq!(
        r,
        CommandResponse::Applied {
            version: 2,
            changed: vec![key("a")],
            unchanged: vec![key("b")]
        }
    );
}

#[test]
fn conflict_rejects_the_whole_batch() {
    let mut s = MeshState::default();
    apply(&mut s, vec![write("a", "{}", None)]);
    let before = s.clone();
    let r = apply(
        &mut s,
        vec![write("b", "{}", Some(0)), write("a", "{\"x\":1}", Some(7))],
    );
    assert_eq!(
        r,
        CommandResponse::Conflict {
            key: key("a"),
            expected: 7,
            actual: 1
        }
    );
    assert_eq!(s, before);
}

#[test]
fn watch_catches_up_with_changes_then_snapshot_when_too_far_behind() {
    let mut s = MeshState::default();
    assert_eq!(s.catch_up(0), CatchUp::UpToDate);
    apply(&mut s, vec![write("a", "{}", None)]);
    s.apply(&Command::DeleteResource {
        key: key("a"),
        now_unix_ms: 2,
    });
    match s.catch_up(1) {
        CatchUp::Changes(c) => {
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].resource, None);
        }
        other => panic!("{other:?}"),
    }
    for i in 0..(CHANGE_LOG_LEN as u64 + 5) {
        apply(&mut s, vec![write("a", &format!("{{\"i\":{i}}}"), None)]);
    }
    assert!(matches!(s.catch_up(1), CatchUp::Snapshot(_)));
    assert!(matches!(s.catch_up(s.version() - 3), CatchUp::Changes(c) if c.len() == 3));
}

#[test]
fn restored_state_sends_watchers_a_snapshot_not_an_empty_delta() {
    let mut s = MeshState::default();
    apply(&mut s, vec![write("a", "{}", None)]);
    apply(&mut s, vec![write("b", "{}", None)]);
    let bytes = mesh_proto::codec::encode(s.data()).unwrap();
    let restored = MeshState::from_data(mesh_proto::codec::decode(&bytes).unwrap());
    assert!(
        restored.changes.is_empty(),
        "the change log is a cache, not state"
    );
    assert!(matches!(restored.catch_up(1), CatchUp::Snapshot(r) if r.len() == 2));
    assert_eq!(restored.catch_up(2), CatchUp::UpToDate);
}

/// Regression: equality used to include the change-log cache, so a replica reloaded from
/// disk or a snapshot compared unequal to the one that wrote it (CI, raft-store tests).
#[test]
fn a_restored_replica_equals_its_writer_despite_an_empty_change_log() {
    let mut s = MeshState::default();
    apply(&mut s, vec![write("a", "{}", None)]);
    let bytes = mesh_proto::codec::encode(s.data()).unwrap();
    let restored = MeshState::from_data(mesh_proto::codec::decode(&bytes).unwrap());
    assert_eq!(restored, s);
    assert_ne!(restored.catch_up(0), CatchUp::UpToDate);
}

#[test]
fn authorized_commands_check_the_credential_at_their_log_position() {
    let mut s = MeshState::default();
    let op = token_sha256("op");
    s.apply(&Command::PutCredential {
        token_sha256: op.clone(),
        credential: Credential {
            kind: CredentialKind::Operator,
            created_unix_ms: 0,
            expires_unix_ms: 0,
            revoked: false,
        },
    });
    let wrap = |t: &str| Command::Authorized {
        token_sha256: t.into(),
        need: Need::Operator,
        now_unix_ms: 1,
        command: Box::new(Command::ApplyResources {
            resources: vec![write("a", "{}", None)],
            now_unix_ms: 1,
        }),
    };
    assert!(matches!(
        s.apply(&wrap(&token_sha256("nope"))),
        CommandResponse::Unauthorized { .. }
    ));
    assert_eq!(s.version(), 0, "an unauthorized write changed the store");
    let batch = Command::Batch(vec![wrap(&op), wrap(&token_sha256("nope"))]);
    match s.apply(&batch) {
        CommandResponse::Batch(r) => {
            assert!(matches!(r[0], CommandResponse::Applied { version: 1, .. }));
            assert!(matches!(r[1], CommandResponse::Unauthorized { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn node_ids_are_stable_for_a_rejoining_name() {
    let mut s = MeshState::default();
    let info = |n: &str| ControlNodeInfo {
        node_id: 0,
        name: NodeName::new(n).unwrap(),
        raft_addr: "a".into(),
        api_addr: "b".into(),
    };
    let reg = |s: &mut MeshState, n| {
        s.apply(&Command::RegisterControlNode {
            info: info(n),
            now_unix_ms: 0,
        })
    };
    assert_eq!(
        reg(&mut s, "c1"),
        CommandResponse::NodeRegistered { node_id: 1 }
    );
    assert_eq!(
        reg(&mut s, "c2"),
        CommandResponse::NodeRegistered { node_id: 2 }
    );
    assert_eq!(
        reg(&mut s, "c1"),
        CommandResponse::NodeRegistered { node_id: 1 }
    );
}

#[test]
fn expired_and_revoked_credentials_do_not_authenticate() {
    let mut s = MeshState::default();
    let node = NodeName::new("vm-1").unwrap();
    s.apply(&Command::PutCredential {
        token_sha256: token_sha256("t1"),
        credential: Credential {
            kind: CredentialKind::Agent {
                node: node.clone(),
                services: vec![],
            },
            created_unix_ms: 0,
            expires_unix_ms: 100,
            revoked: false,
        },
    });
    assert!(s.authenticate("t1", 99).is_some());
    assert!(s.authenticate("t1", 100).is_none());
    assert!(s.authenticate("t2", 0).is_none());
    s.apply(&Command::RevokeNode {
        node,
        now_unix_ms: 5,
    });
    assert!(s.authenticate("t1", 50).is_none());
}

// ---------------------------------------------------------------- agent credentials

fn node(n: &str) -> NodeName {
    NodeName::new(n).unwrap()
}

fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

/// A state holding an agent credential for node `vm-1` serving `api` (token "agent"), an
/// operator token "op", and, if `revoked`/`expires`, with those set.
fn with_agent(expires_unix_ms: u64) -> MeshState {
    let mut s = MeshState::default();
    for (token, kind) in [
        (
            "agent",
            CredentialKind::Agent {
                node: node("vm-1"),
                services: vec![svc("api"), svc("db")],
            },
        ),
        ("op", CredentialKind::Operator),
    ] {
        s.apply(&Command::PutCredential {
            token_sha256: token_sha256(token),
            credential: Credential {
                kind,
                created_unix_ms: 0,
                expires_unix_ms,
                revoked: false,
            },
        });
    }
    s
}

fn endpoint_write(service: &str, node_name: &str, healthy: bool) -> ResourceWrite {
    let spec = serde_json::json!({
        "service": service, "node": node_name, "address": "127.0.0.1:15006",
        "locality": {"region": "r1", "zone": "a"}, "healthy": healthy,
    });
    ResourceWrite {
        key: WorkloadEndpointSpec::key(&svc(service), &node(node_name)),
        labels: BTreeMap::new(),
        spec_json: spec.to_string(),
        expect_version: None,
    }
}

fn as_agent(token: &str, need: Need, command: Command) -> Command {
    Command::Authorized {
        token_sha256: token_sha256(token),
        need,
        now_unix_ms: 10,
        command: Box::new(command),
    }
}

fn register(token: &str, need_node: &str, need_service: &str, w: ResourceWrite) -> Command {
    as_agent(
        token,
        Need::Agent {
            node: node(need_node),
            service: svc(need_service),
        },
        Command::ApplyResources {
            resources: vec![w],
            now_unix_ms: 10,
        },
    )
}

fn unauthorized(reason: &str) -> CommandResponse {
    CommandResponse::Unauthorized {
        reason: reason.into(),
    }
}

#[test]
fn an_agent_registers_its_own_endpoint_and_identical_re_registration_is_unchanged() {
    let mut s = with_agent(0);
    let key = WorkloadEndpointSpec::key(&svc("api"), &node("vm-1"));
    let cmd = register("agent", "vm-1", "api", endpoint_write("api", "vm-1", true));
    assert_eq!(
        s.apply(&cmd),
        CommandResponse::Applied {
            version: 1,
            changed: vec![key.clone()],
            unchanged: vec![]
        }
    );
    assert_eq!(
        s.apply(&cmd),
        CommandResponse::Applied {
            version: 1,
            changed: vec![],
            unchanged: vec![key.clone()]
        }
    );
    assert_eq!(s.catch_up(1), CatchUp::UpToDate, "no change was logged");
    // A health flip is a change, and deregistering deletes it.
    let flip = register("agent", "vm-1", "api", endpoint_write("api", "vm-1", false));
    assert!(matches!(
        s.apply(&flip),
        CommandResponse::Applied { version: 2, .. }
    ));
    let delete = as_agent(
        "agent",
        Need::Agent {
            node: node("vm-1"),
            service: svc("api"),
        },
        Command::DeleteResource {
            key: key.clone(),
            now_unix_ms: 10,
        },
    );
    assert_eq!(s.apply(&delete), CommandResponse::Deleted { version: 3 });
    assert_eq!(s.apply(&delete), CommandResponse::NotFound { key });
}

#[test]
fn agent_needs_refuse_other_nodes_other_services_and_dead_tokens() {
    let other_node = "this agent credential belongs to node vm-1, not vm-2; run the agent of \
                      vm-2 with its own credential";
    let other_service = "the agent credential of node vm-1 may not serve web (it lists [api, \
                         db]); issue one with `meshctl credential create --node vm-1 --service \
                         web`";
    let dead = "the token is unknown, expired or revoked";
    let not_agent = "this call needs an agent credential (`meshctl credential create`)";
    let cases: Vec<(&str, MeshState, Command, CommandResponse)> = vec![
        (
            "another node's endpoint",
            with_agent(0),
            register("agent", "vm-2", "api", endpoint_write("api", "vm-2", true)),
            unauthorized(other_node),
        ),
        (
            "a service the credential does not list",
            with_agent(0),
            register("agent", "vm-1", "web", endpoint_write("web", "vm-1", true)),
            unauthorized(other_service),
        ),
        (
            "an expired credential",
            with_agent(5),
            register("agent", "vm-1", "api", endpoint_write("api", "vm-1", true)),
            unauthorized(dead),
        ),
        (
            "an unknown token",
            with_agent(0),
            register("nope", "vm-1", "api", endpoint_write("api", "vm-1", true)),
            unauthorized(dead),
        ),
        (
            "the operator token where an agent is needed",
            with_agent(0),
            register("op", "vm-1", "api", endpoint_write("api", "vm-1", true)),
            unauthorized(not_agent),
        ),
    ];
    for (what, mut s, cmd, want) in cases {
        let before = s.clone();
        assert_eq!(s.apply(&cmd), want, "{what}");
        assert_eq!(s, before, "{what}: the refused command changed the state");
    }
}

#[test]
fn a_revoked_agent_credential_is_refused_at_its_log_position() {
    let mut s = with_agent(0);
    let cmd = register("agent", "vm-1", "api", endpoint_write("api", "vm-1", true));
    let revoke = Command::RevokeNode {
        node: node("vm-1"),
        now_unix_ms: 10,
    };
    // Proposed together: the write before the revocation applies, the one after does not.
    match s.apply(&Command::Batch(vec![cmd.clone(), revoke, cmd])) {
        CommandResponse::Batch(r) => {
            assert!(matches!(r[0], CommandResponse::Applied { version: 1, .. }));
            assert_eq!(r[1], CommandResponse::Revoked { credentials: 1 });
            assert_eq!(
                r[2],
                unauthorized("the token is unknown, expired or revoked")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_agent_need_covers_only_its_own_endpoint() {
    let own = Need::Agent {
        node: node("vm-1"),
        service: svc("api"),
    };
    let scope = "an agent credential may only write and delete the WorkloadEndpoint \
                 api.vm-1; this command is outside it";
    let mut export = write("x", "{}", None);
    export.key.name = "api.vm-1".into();
    let cases = [
        (
            "the endpoint of another node, under its own need",
            vec![endpoint_write("api", "vm-2", true)],
        ),
        (
            "its own endpoint plus another",
            vec![
                endpoint_write("api", "vm-1", true),
                endpoint_write("db", "vm-1", true),
            ],
        ),
        ("another kind under the same name", vec![export]),
        ("nothing at all", vec![]),
    ];
    for (what, resources) in cases {
        let mut s = with_agent(0);
        let cmd = as_agent(
            "agent",
            own.clone(),
            Command::ApplyResources {
                resources,
                now_unix_ms: 10,
            },
        );
        assert_eq!(s.apply(&cmd), unauthorized(scope), "{what}");
        assert_eq!(s.version(), 0, "{what}");
    }
    let mut s = with_agent(0);
    let revoke = as_agent(
        "agent",
        own,
        Command::RevokeNode {
            node: node("vm-1"),
            now_unix_ms: 10,
        },
    );
    assert_eq!(s.apply(&revoke), unauthorized(scope));
}

fn report(node_name: &str, config_version: u64, certs: usize) -> Command {
    Command::ReportAgentStatus {
        node: node(node_name),
        config_version,
        certs: (0..certs)
            .map(|i| CertExpiry {
                service: svc(&format!("s{i}")),
                expires_unix: 1000 + i as u64,
            })
            .collect(),
        now_unix_ms: 10,
    }
}

#[test]
fn agent_status_reports_are_kept_outside_the_versioned_store() {
    let mut s = with_agent(0);
    s.apply(&register(
        "agent",
        "vm-1",
        "api",
        endpoint_write("api", "vm-1", true),
    ));
    let need = Need::AgentNode { node: node("vm-1") };
    let r = s.apply(&as_agent("agent", need.clone(), report("vm-1", 1, 2)));
    assert_eq!(r, CommandResponse::StatusRecorded);
    assert_eq!(s.version(), 1, "a report bumped the store version");
    assert_eq!(
        s.catch_up(1),
        CatchUp::UpToDate,
        "a report reached the change log"
    );
    assert_eq!(
        s.data().agents.get(&node("vm-1")),
        Some(&AgentStatus {
            config_version: 1,
            certs: vec![
                CertExpiry {
                    service: svc("s0"),
                    expires_unix: 1000
                },
                CertExpiry {
                    service: svc("s1"),
                    expires_unix: 1001
                },
            ],
            reported_unix_ms: 10,
        })
    );
    // Another node's report is refused; an oversized one is capped.
    assert_eq!(
        s.apply(&as_agent("agent", need.clone(), report("vm-2", 1, 1))),
        unauthorized(
            "an agent credential may only report the status of node vm-1; this command is \
             outside it"
        )
    );
    s.apply(&as_agent(
        "agent",
        need,
        report("vm-1", 1, MAX_REPORTED_CERTS + 10),
    ));
    assert_eq!(
        s.data().agents[&node("vm-1")].certs.len(),
        MAX_REPORTED_CERTS
    );
    // Revoking the node forgets its status.
    s.apply(&Command::RevokeNode {
        node: node("vm-1"),
        now_unix_ms: 20,
    });
    assert!(s.data().agents.is_empty());
}
