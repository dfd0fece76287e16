//! The replicated state machine's rules: how each [`Command`] changes [`StateData`], and the
//! reads the API needs (credential lookup, watch deltas).
//!
//! Apply is a pure function of (state, command): the command carries the leader's clock, so every
//! replica computes the same result. Persistence and snapshots are `mesh-raft-store`'s job; the
//! API's linearizability is `mesh-node`'s job. This module never fails: every outcome, including
//! "conflict" and "not found", is a [`CommandResponse`] that all replicas agree on.

use std::collections::VecDeque;

use mesh_proto::command::{
    Change, Command, CommandResponse, ControlNodeInfo, Credential, CredentialKind, Need,
    ResourceWrite, StateData,
};
use mesh_proto::resource::{Kind, ResourceKey, StoredResource};

/// How many recent changes are kept for watchers. A watcher further behind gets a snapshot.
pub const CHANGE_LOG_LEN: usize = 4096;

/// The replicated mesh state and its transition rules.
///
/// Call order: `apply` for each committed command, in log order; reads at any time.
///
/// Equality compares the replicated [`StateData`] only: the change log is a per-process cache
/// (not persisted, not in snapshots), so a replica restored from disk equals the one that wrote
/// it even though it can serve fewer deltas.
#[derive(Debug, Clone, Default)]
pub struct MeshState {
    data: StateData,
    /// Bounded log of recent changes, oldest first, for watchers.
    changes: VecDeque<Change>,
    /// Every change with a version above this is still in `changes`.
    changes_floor: u64,
}

impl PartialEq for MeshState {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl Eq for MeshState {}

/// What a watcher at `from` must receive to catch up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// Nothing newer than `from` yet.
    UpToDate,
    /// The changes after `from`, oldest first.
    Changes(Vec<Change>),
    /// `from` is older than the retained change log: send everything.
    Snapshot(Vec<StoredResource>),
}

impl MeshState {
    /// Wrap state loaded from disk or a snapshot. The change log is not persisted, so one that
    /// arrives empty covers nothing: watchers behind the current version get a snapshot.
    pub fn from_data(data: StateData) -> Self {
        Self {
            changes_floor: data.version,
            changes: VecDeque::new(),
            data,
        }
    }

    pub fn data(&self) -> &StateData {
        &self.data
    }

    pub fn into_data(self) -> StateData {
        self.data
    }

    pub fn version(&self) -> u64 {
        self.data.version
    }

    pub fn apply(&mut self, cmd: &Command) -> CommandResponse {
        match cmd {
            Command::InitCluster {
                cluster,
                trust_domain,
                ca,
                operator_token_sha256,
                join_token_sha256,
                gossip_key,
                now_unix_ms,
            } => {
                if self.data.cluster.is_some() {
                    return CommandResponse::AlreadyInitialized;
                }
                self.data.cluster = Some(mesh_proto::command::ClusterInfo {
                    name: cluster.clone(),
                    trust_domain: trust_domain.clone(),
                    created_unix_ms: *now_unix_ms,
                });
                self.data.ca = Some(ca.clone());
                let cred = |kind| Credential {
                    kind,
                    created_unix_ms: *now_unix_ms,
                    expires_unix_ms: 0,
                    revoked: false,
                };
                self.data.credentials.insert(
                    operator_token_sha256.clone(),
                    cred(CredentialKind::Operator),
                );
                self.data
                    .credentials
                    .insert(join_token_sha256.clone(), cred(CredentialKind::ControlJoin));
                self.data.gossip_keys = vec![gossip_key.clone()];
                CommandResponse::Initialized
            }
            Command::ApplyResources { resources, .. } => self.apply_resources(resources),
            Command::DeleteResource { key, .. } => self.delete(key),
            Command::RegisterControlNode { info, .. } => self.register_node(info),
            Command::PutCredential {
                token_sha256,
                credential,
            } => {
                self.data
                    .credentials
                    .insert(token_sha256.clone(), credential.clone());
                CommandResponse::CredentialStored
            }
            Command::Authorized {
                token_sha256,
                need,
                now_unix_ms,
                command,
            } => match self.check_credential(token_sha256, *need, *now_unix_ms) {
                Ok(()) => self.apply(command),
                Err(reason) => CommandResponse::Unauthorized { reason },
            },
            Command::Batch(commands) => {
                CommandResponse::Batch(commands.iter().map(|c| self.apply(c)).collect())
            }
            Command::RevokeNode { node, .. } => {
                let mut n = 0;
                for c in self.data.credentials.values_mut() {
                    if matches!(&c.kind, CredentialKind::Agent { node: m, .. } if m == node)
                        && !c.revoked
                    {
                        c.revoked = true;
                        n += 1;
                    }
                }
                CommandResponse::Revoked { credentials: n }
            }
        }
    }

    fn check_credential(
        &self,
        token_sha256: &str,
        need: Need,
        now_unix_ms: u64,
    ) -> Result<(), String> {
        let c = self
            .data
            .credentials
            .get(token_sha256)
            .ok_or_else(|| "the token is unknown, expired or revoked".to_owned())?;
        let expired = c.expires_unix_ms != 0 && now_unix_ms >= c.expires_unix_ms;
        if expired || c.revoked {
            return Err("the token is unknown, expired or revoked".into());
        }
        match (need, &c.kind) {
            (Need::Operator, CredentialKind::Operator) => Ok(()),
            (Need::Operator, _) => Err("this call needs the operator token".into()),
        }
    }

    fn apply_resources(&mut self, writes: &[ResourceWrite]) -> CommandResponse {
        // Check every precondition before touching anything: a batch is all or nothing.
        for w in writes {
            if let Some(expected) = w.expect_version {
                let actual = self.data.resources.get(&w.key).map_or(0, |r| r.version);
                if actual != expected {
                    return CommandResponse::Conflict {
                        key: w.key.clone(),
                        expected,
                        actual,
                    };
                }
            }
        }
        let (changed, unchanged): (Vec<&ResourceWrite>, Vec<&ResourceWrite>) =
            writes.iter().partition(|w| {
                self.data
                    .resources
                    .get(&w.key)
                    .is_none_or(|r| r.spec_json != w.spec_json || r.labels != w.labels)
            });
        if changed.is_empty() {
            return CommandResponse::Applied {
                version: self.data.version,
                changed: vec![],
                unchanged: unchanged.into_iter().map(|w| w.key.clone()).collect(),
            };
        }
        self.data.version += 1;
        let version = self.data.version;
        for w in &changed {
            let stored = StoredResource {
                key: w.key.clone(),
                labels: w.labels.clone(),
                spec_json: w.spec_json.clone(),
                version,
            };
            self.data.resources.insert(w.key.clone(), stored.clone());
            self.push_change(Change {
                version,
                key: w.key.clone(),
                resource: Some(stored),
            });
        }
        CommandResponse::Applied {
            version,
            changed: changed.into_iter().map(|w| w.key.clone()).collect(),
            unchanged: unchanged.into_iter().map(|w| w.key.clone()).collect(),
        }
    }

    fn delete(&mut self, key: &ResourceKey) -> CommandResponse {
        if self.data.resources.remove(key).is_none() {
            return CommandResponse::NotFound { key: key.clone() };
        }
        self.data.version += 1;
        let version = self.data.version;
        self.push_change(Change {
            version,
            key: key.clone(),
            resource: None,
        });
        CommandResponse::Deleted { version }
    }

    fn register_node(&mut self, info: &ControlNodeInfo) -> CommandResponse {
        let existing = self
            .data
            .control_nodes
            .values()
            .find(|n| n.name == info.name)
            .map(|n| n.node_id);
        let node_id = existing.unwrap_or_else(|| {
            self.data
                .control_nodes
                .keys()
                .next_back()
                .map_or(1, |max| max + 1)
        });
        let mut info = info.clone();
        info.node_id = node_id;
        self.data.control_nodes.insert(node_id, info);
        CommandResponse::NodeRegistered { node_id }
    }

    fn push_change(&mut self, change: Change) {
        self.changes.push_back(change);
        while self.changes.len() > CHANGE_LOG_LEN {
            if let Some(old) = self.changes.pop_front() {
                self.changes_floor = self.changes_floor.max(old.version);
            }
        }
    }

    /// What a watcher that has seen everything up to `from` needs next.
    pub fn catch_up(&self, from: u64) -> CatchUp {
        if from >= self.data.version {
            return CatchUp::UpToDate;
        }
        if from == 0 || from < self.changes_floor {
            return CatchUp::Snapshot(self.data.resources.values().cloned().collect());
        }
        CatchUp::Changes(
            self.changes
                .iter()
                .filter(|c| c.version > from)
                .cloned()
                .collect(),
        )
    }

    /// Resources of one kind (and optionally one namespace), in key order.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<&StoredResource> {
        self.data
            .resources
            .values()
            .filter(|r| r.key.kind == kind && namespace.is_none_or(|ns| r.key.namespace == ns))
            .collect()
    }

    pub fn resource(&self, key: &ResourceKey) -> Option<&StoredResource> {
        self.data.resources.get(key)
    }

    /// The credential a bearer token grants at `now_unix_ms`, if it is known, unexpired and
    /// not revoked.
    pub fn authenticate(&self, token: &str, now_unix_ms: u64) -> Option<&Credential> {
        let c = self.data.credentials.get(&token_sha256(token))?;
        let expired = c.expires_unix_ms != 0 && now_unix_ms >= c.expires_unix_ms;
        (!expired && !c.revoked).then_some(c)
    }
}

/// SHA-256 of a bearer token, lowercase hex. Tokens carry 256 bits of entropy, so a plain hash
/// (not a password KDF) is the right tool: it cannot be brute-forced.
pub fn token_sha256(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
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
            name: mesh_proto::NodeName::new(n).unwrap(),
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
        let node = mesh_proto::NodeName::new("vm-1").unwrap();
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
}
