//! The replicated state machine's rules: how each [`Command`] changes [`StateData`], and the
//! reads the API needs (credential lookup, watch deltas).
//!
//! Apply is a pure function of (state, command): the command carries the leader's clock, so every
//! replica computes the same result. Persistence and snapshots are `mesh-raft-store`'s job; the
//! API's linearizability is `mesh-node`'s job. This module never fails: every outcome, including
//! "conflict" and "not found", is a [`CommandResponse`] that all replicas agree on.

use std::collections::VecDeque;

use mesh_proto::command::{
    AgentStatus, CertExpiry, Change, Command, CommandResponse, ControlNodeInfo, Credential,
    CredentialKind, MAX_REPORTED_CERTS, Need, ResourceWrite, StateData,
};
use mesh_proto::resource::{Kind, ResourceKey, StoredResource, WorkloadEndpointSpec};
use mesh_proto::{NodeName, ServiceName};

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
            } => match self
                .check_credential(token_sha256, need, *now_unix_ms)
                .and_then(|()| need_covers(need, command))
            {
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
                // A revoked node reports no more; its last status would only go stale.
                self.data.agents.remove(node);
                CommandResponse::Revoked { credentials: n }
            }
            Command::ReportAgentStatus {
                node,
                config_version,
                certs,
                now_unix_ms,
            } => self.report_agent_status(node, *config_version, certs, *now_unix_ms),
            Command::PutFederationToken {
                secret_sha256,
                token,
            } => {
                self.data
                    .federation_tokens
                    .insert(secret_sha256.clone(), token.clone());
                CommandResponse::FederationTokenStored
            }
            Command::RedeemFederationToken {
                secret_sha256,
                peering,
                now_unix_ms,
            } => {
                let pending = self.data.federation_tokens.get(secret_sha256);
                match crate::federation::redeem(pending, &peering.name, *now_unix_ms) {
                    Ok(()) => {
                        if let Some(t) = self.data.federation_tokens.get_mut(secret_sha256) {
                            t.used_unix_ms = Some(*now_unix_ms);
                        }
                        self.data
                            .peerings
                            .insert(peering.name.clone(), peering.clone());
                        CommandResponse::PeeringRecorded
                    }
                    Err(reason) => CommandResponse::RedeemRefused { reason },
                }
            }
            Command::PutPeering { peering } => {
                self.data
                    .peerings
                    .insert(peering.name.clone(), peering.clone());
                CommandResponse::PeeringRecorded
            }
            Command::RemovePeering { name } => CommandResponse::PeeringRemoved {
                existed: self.data.peerings.remove(name).is_some(),
            },
            Command::PutEnrollToken {
                secret_sha256,
                token,
            } => {
                self.data
                    .enrollments
                    .insert(secret_sha256.clone(), token.clone());
                CommandResponse::EnrollTokenStored
            }
            Command::RedeemEnrollment {
                secret_sha256,
                node,
                services,
                agent_token_sha256,
                now_unix_ms,
            } => self.redeem_enrollment(
                secret_sha256,
                node,
                services,
                agent_token_sha256,
                *now_unix_ms,
            ),
            Command::GossipKeyring(op) => {
                crate::gossip::keyring::apply(&mut self.data.gossip_keys, op)
            }
        }
    }

    fn redeem_enrollment(
        &mut self,
        secret_sha256: &str,
        node: &NodeName,
        services: &[ServiceName],
        agent_token_sha256: &str,
        now_unix_ms: u64,
    ) -> CommandResponse {
        let pending = self.data.enrollments.get(secret_sha256);
        if let Err(reason) = crate::enroll::redeem(pending, node, services, now_unix_ms) {
            return CommandResponse::EnrollRefused { reason };
        }
        let Some(p) = self.data.enrollments.get_mut(secret_sha256) else {
            return CommandResponse::EnrollRefused {
                reason: mesh_proto::command::EnrollRefusal::Unknown,
            };
        };
        p.used_unix_ms = Some(now_unix_ms);
        // The credential grants what the token granted, not just what this start asked for,
        // so the node may add a granted service later without a new token.
        let credential = Credential {
            kind: CredentialKind::Agent {
                node: node.clone(),
                services: p.services.clone(),
            },
            created_unix_ms: now_unix_ms,
            expires_unix_ms: 0,
            revoked: false,
        };
        self.data
            .credentials
            .insert(agent_token_sha256.to_owned(), credential);
        CommandResponse::Enrolled
    }

    fn check_credential(
        &self,
        token_sha256: &str,
        need: &Need,
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
            (Need::Agent { node, service }, CredentialKind::Agent { node: n, services }) => {
                agent_node_matches(node, n)?;
                if services.contains(service) {
                    Ok(())
                } else {
                    Err(format!(
                        "the agent credential of node {n} may not serve {service} (it lists {}); \
                         issue one with `meshctl credential create --node {n} --service \
                         {service}`",
                        service_list(services)
                    ))
                }
            }
            (Need::AgentNode { node }, CredentialKind::Agent { node: n, .. }) => {
                agent_node_matches(node, n)
            }
            (Need::Agent { .. } | Need::AgentNode { .. }, _) => {
                Err("this call needs an agent credential (`meshctl credential create`)".into())
            }
        }
    }

    fn report_agent_status(
        &mut self,
        node: &NodeName,
        config_version: u64,
        certs: &[CertExpiry],
        now_unix_ms: u64,
    ) -> CommandResponse {
        let status = AgentStatus {
            config_version,
            certs: certs.iter().take(MAX_REPORTED_CERTS).cloned().collect(),
            reported_unix_ms: now_unix_ms,
        };
        self.data.agents.insert(node.clone(), status);
        CommandResponse::StatusRecorded
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

fn agent_node_matches(wanted: &NodeName, holder: &NodeName) -> Result<(), String> {
    if wanted == holder {
        Ok(())
    } else {
        Err(format!(
            "this agent credential belongs to node {holder}, not {wanted}; run the agent of \
             {wanted} with its own credential"
        ))
    }
}

fn service_list(services: &[ServiceName]) -> String {
    let names: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
    format!("[{}]", names.join(", "))
}

/// Whether `need` covers `command`: an operator may do anything, an agent only what concerns
/// its own records. Checked with the credential, so a handler that wraps the wrong command in
/// an agent's need is refused in the log rather than trusted.
fn need_covers(need: &Need, command: &Command) -> Result<(), String> {
    let scope = |what: &str| {
        Err(format!(
            "an agent credential may only {what}; this command is outside it"
        ))
    };
    match need {
        Need::Operator => Ok(()),
        Need::Agent { node, service } => {
            let own = WorkloadEndpointSpec::key(service, node);
            let covered = match command {
                Command::ApplyResources { resources, .. } => {
                    !resources.is_empty() && resources.iter().all(|w| w.key == own)
                }
                Command::DeleteResource { key, .. } => *key == own,
                _ => false,
            };
            if covered {
                Ok(())
            } else {
                scope(&format!(
                    "write and delete the WorkloadEndpoint {}",
                    own.name
                ))
            }
        }
        Need::AgentNode { node } => match command {
            Command::ReportAgentStatus { node: n, .. } if n == node => Ok(()),
            _ => scope(&format!("report the status of node {node}")),
        },
    }
}

/// SHA-256 of a bearer token, lowercase hex. Tokens carry 256 bits of entropy, so a plain hash
/// (not a password KDF) is the right tool: it cannot be brute-forced.
pub fn token_sha256(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
