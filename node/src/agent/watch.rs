//! Config for the sidecar: a long-poll of the control plane's `/v1/watch`, the
//! `AuthorizationPolicy`, `HTTPRoute` and `WorkloadEndpoint` resources it keeps, one compiled
//! [`Authorizer`] per local service swapped in on change, the catalog fed to
//! [`Discovery`], and the last good snapshot on disk.
//!
//! ```text
//!  <data-dir>/config.json ─► Snapshot ─┬─► Policies::install ─► RwLock<Arc<Authz>> per service
//!                               ▲       ├─► Discovery::install ─► endpoints of every upstream
//!  watch(from, 30 s) ─► snapshot | changes ─┘ ─► config.json, applied version ─► report
//! ```
//!
//! With no control node reachable the agent keeps the last snapshot it had (from memory, or
//! from `config.json` at start), so it serves with the last good config. Default deny holds
//! before any config arrives: a service without an ALLOW rule admits nothing. This module does
//! not interpret policies (the core `Authorizer` does); HTTPRoutes and TrafficPolicies are kept
//! and cached here and handed to the outbound side through [`Policies::subscribe`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use mesh_core::authz::{Authorizer, DenyReason, Verdict};
use mesh_core::http::RequestFacts;
use mesh_proto::resource::{AuthorizationPolicySpec, Kind, ResourceKey, StoredResource};
use mesh_proto::{ServiceName, SpiffeId};
use serde::{Deserialize, Serialize};

use super::discovery::Discovery;
use crate::client::ApiClient;
use crate::paths::write_atomic;

/// How long one watch call waits on the server for a change.
const WATCH_WAIT: Duration = Duration::from_secs(30);
/// Longest pause between watch attempts while the control plane is unreachable.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// The namespace every meshfed workload lives in today (`spiffe://<td>/ns/default/sa/<svc>`).
const NAMESPACE: &str = "default";

/// The config resources this agent keeps, at a store version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) version: u64,
    pub(crate) resources: BTreeMap<String, StoredResource>,
}

/// A service's authorization, as the inbound listener asks it.
#[derive(Debug)]
pub(crate) enum Authz {
    Compiled(Authorizer),
    /// A policy for this service could not be read by this agent; everything is denied.
    Unreadable {
        policy: String,
        problem: String,
    },
}

/// The current authorization of every local service, and the snapshot it came from for the
/// outbound side (routes, traffic policies, endpoints), which subscribes to changes.
pub(crate) struct Policies {
    by_service: HashMap<ServiceName, RwLock<Arc<Authz>>>,
    snapshot: tokio::sync::watch::Sender<Arc<Snapshot>>,
}

fn kept(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::AuthorizationPolicy | Kind::HTTPRoute | Kind::TrafficPolicy | Kind::WorkloadEndpoint
    )
}

fn key_string(k: &ResourceKey) -> String {
    format!("{}/{}/{}", k.kind, k.namespace, k.name)
}

impl Snapshot {
    /// The snapshot cached at `path`, if it reads.
    pub(crate) fn load(path: &Path) -> Option<Snapshot> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable config cache");
                None
            }
        }
    }

    fn save(&self, path: &Path) {
        let res = serde_json::to_vec(self)
            .map_err(anyhow::Error::from)
            .and_then(|b| write_atomic(path, &b, 0o644));
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache config");
        }
    }

    /// Apply a full snapshot (`Some`) or changes from a watch answer.
    fn apply(&mut self, resp: mesh_proto::api::WatchResponse) {
        if let Some(items) = resp.snapshot {
            self.resources = items
                .into_iter()
                .filter(|r| kept(r.key.kind))
                .map(|r| (key_string(&r.key), r))
                .collect();
        }
        for change in resp.changes {
            if !kept(change.key.kind) {
                continue;
            }
            let k = key_string(&change.key);
            match change.resource {
                Some(r) => self.resources.insert(k, r),
                None => self.resources.remove(&k),
            };
        }
        self.version = resp.version;
    }
}

impl Authz {
    /// Compile the policies of namespace `default` that target `service`.
    fn compile(service: &ServiceName, snap: &Snapshot) -> Self {
        let mut specs = Vec::new();
        for r in snap.resources.values() {
            if r.key.kind != Kind::AuthorizationPolicy || r.key.namespace != NAMESPACE {
                continue;
            }
            match serde_json::from_str::<AuthorizationPolicySpec>(&r.spec_json) {
                Ok(spec) => specs.push((r.key.name.clone(), spec)),
                // A policy this build cannot read may be one for this service: fail closed if
                // its target can be made out, or if it cannot.
                Err(e) => {
                    let target = serde_json::from_str::<serde_json::Value>(&r.spec_json)
                        .ok()
                        .and_then(|v| v["targetRef"]["name"].as_str().map(str::to_owned));
                    if target.is_none_or(|t| t == service.as_str()) {
                        return Self::Unreadable {
                            policy: r.key.name.clone(),
                            problem: e.to_string(),
                        };
                    }
                }
            }
        }
        Self::Compiled(Authorizer::compile(service.as_str(), &specs))
    }

    /// The header names the policies match on, for `request_facts`.
    pub(crate) fn header_names(&self) -> &[String] {
        match self {
            Self::Compiled(a) => a.header_names(),
            Self::Unreadable { .. } => &[],
        }
    }

    /// Decide an opaque TCP connection from `peer`.
    pub(crate) fn decide_connection(&self, peer: &SpiffeId) -> Verdict {
        match self {
            Self::Compiled(a) => a.decide_connection(peer),
            Self::Unreadable { policy, problem } => Verdict::Deny {
                reason: DenyReason::UnusablePolicy {
                    policy: policy.clone(),
                    problem: format!("this agent cannot read it ({problem}); upgrade meshd"),
                },
            },
        }
    }

    pub(crate) fn decide(&self, peer: &SpiffeId, facts: &RequestFacts) -> Verdict {
        match self {
            Self::Compiled(a) => a.decide(peer, facts),
            Self::Unreadable { policy, problem } => Verdict::Deny {
                reason: DenyReason::UnusablePolicy {
                    policy: policy.clone(),
                    problem: format!("this agent cannot read it ({problem}); upgrade meshd"),
                },
            },
        }
    }
}

impl Policies {
    /// Default deny for every service until a snapshot is installed.
    pub(crate) fn new(services: &[ServiceName]) -> Self {
        let empty = Snapshot::default();
        let by_service = services
            .iter()
            .map(|s| (s.clone(), RwLock::new(Arc::new(Authz::compile(s, &empty)))))
            .collect();
        let (snapshot, _) = tokio::sync::watch::channel(Arc::new(empty));
        Self {
            by_service,
            snapshot,
        }
    }

    /// The installed snapshot now and on every later install.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    /// The current authorization of `service`; `None` if it is not a local service.
    pub(crate) fn authz(&self, service: &ServiceName) -> Option<Arc<Authz>> {
        let slot = self.by_service.get(service)?;
        Some(slot.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Recompile every service's policies from `snap` and swap them in.
    pub(crate) fn install(&self, snap: &Snapshot) {
        for (service, slot) in &self.by_service {
            let next = Arc::new(Authz::compile(service, snap));
            *slot.write().unwrap_or_else(PoisonError::into_inner) = next;
        }
        self.snapshot.send_replace(Arc::new(snap.clone()));
    }
}

/// The config cache file in `data`.
pub(crate) fn cache_path(data: &Path) -> PathBuf {
    data.join("config.json")
}

/// Where a new snapshot is installed.
pub(crate) struct Sinks {
    pub(crate) policies: Arc<Policies>,
    pub(crate) discovery: Arc<Discovery>,
    /// The store version of the last installed snapshot, for the status report.
    pub(crate) applied: tokio::sync::watch::Sender<u64>,
}

impl Sinks {
    /// Discovery first: installing the policies publishes the snapshot to the outbound side,
    /// which then reads endpoints from discovery.
    fn install(&self, snap: &Snapshot) {
        self.discovery.install(snap);
        self.policies.install(snap);
    }
}

/// Long-poll the control plane forever, installing and caching every new version.
pub(crate) async fn watch_forever(
    client: Arc<ApiClient>,
    cache: PathBuf,
    sinks: Sinks,
    mut snap: Snapshot,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match client.watch(snap.version, WATCH_WAIT).await {
            Ok(resp) if resp.version < snap.version && resp.snapshot.is_none() => {
                // The store is older than what we hold (a rebuilt or restored control plane):
                // keep serving what we have and ask for a full snapshot.
                tracing::warn!(
                    ours = snap.version,
                    theirs = resp.version,
                    "control plane config is older than the cached one; resynchronising"
                );
                snap.version = 0;
            }
            Ok(resp) => {
                delay = Duration::from_millis(200);
                let changed = resp.snapshot.is_some() || !resp.changes.is_empty();
                if !changed && resp.version == snap.version {
                    continue;
                }
                let before = snap.resources.clone();
                snap.apply(resp);
                if snap.resources != before {
                    sinks.install(&snap);
                    tracing::info!(
                        version = snap.version,
                        resources = snap.resources.len(),
                        "config updated"
                    );
                }
                snap.save(&cache);
                sinks.applied.send_if_modified(|v| {
                    let changed = *v != snap.version;
                    *v = snap.version;
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "config watch failed; serving with the last good config");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::http::{PathOptions, request_facts};
    use mesh_proto::api::WatchResponse;
    use mesh_proto::command::Change;

    use super::*;

    fn policy(name: &str, target: &str, spec: serde_json::Value) -> StoredResource {
        let mut spec = spec;
        spec["targetRef"] = serde_json::json!({"kind": "Service", "name": target});
        StoredResource {
            key: ResourceKey {
                kind: Kind::AuthorizationPolicy,
                namespace: "default".into(),
                name: name.into(),
            },
            labels: BTreeMap::new(),
            spec_json: spec.to_string(),
            version: 1,
        }
    }

    #[test]
    fn default_deny_then_allow_from_a_snapshot_then_deny_after_delete() {
        let api = ServiceName::new("api").unwrap();
        let policies = Policies::new(std::slice::from_ref(&api));
        let web = SpiffeId::parse("spiffe://c1.mesh/ns/default/sa/web").unwrap();
        let facts = request_facts("GET", "/x", &[], &[], PathOptions::default()).unwrap();
        let decide = || policies.authz(&api).unwrap().decide(&web, &facts);
        assert!(matches!(decide(), Verdict::Deny { .. }));
        let allow = policy(
            "allow-web",
            "api",
            serde_json::json!({"action": "ALLOW", "rules": [{"from": [{"principals": [web.to_string()]}]}]}),
        );
        let mut snap = Snapshot::default();
        snap.apply(WatchResponse {
            version: 3,
            snapshot: Some(vec![allow.clone()]),
            changes: vec![],
        });
        policies.install(&snap);
        assert!(matches!(decide(), Verdict::Allow { .. }));
        snap.apply(WatchResponse {
            version: 4,
            snapshot: None,
            changes: vec![Change {
                version: 4,
                key: allow.key.clone(),
                resource: None,
            }],
        });
        policies.install(&snap);
        assert!(matches!(decide(), Verdict::Deny { .. }));
    }

    #[test]
    fn an_unreadable_policy_for_the_service_denies_everything_and_the_cache_round_trips() {
        let api = ServiceName::new("api").unwrap();
        let mut snap = Snapshot::default();
        let odd = policy(
            "future",
            "api",
            serde_json::json!({"action": "ALLOW", "newField": 1}),
        );
        snap.resources.insert(key_string(&odd.key), odd);
        assert!(matches!(
            Authz::compile(&api, &snap),
            Authz::Unreadable { .. }
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path());
        snap.save(&path);
        assert_eq!(Snapshot::load(&path), Some(snap));
    }
}
