//! Config resource kinds (DESIGN §8) in the kubectl shape: `apiVersion`, `kind`, `metadata`, `spec`.
//!
//! Two layers:
//! - [`Resource`] is what users write and the API speaks (JSON/YAML, `spec` still untyped);
//! - the `*Spec` structs are the typed specs. `mesh_core::config::validate` turns a [`Resource`]
//!   into a typed, checked [`ValidResource`] and reports every problem with its field path.
//!
//! [`StoredResource`] is the form kept in Raft. Its spec is canonical JSON text, because the
//! binary codec cannot carry a self-describing `serde_json::Value`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{Locality, NodeName, ServiceName};

/// The one API group and version meshfed serves today.
pub const API_VERSION: &str = "meshfed.io/v1alpha1";

/// Every kind the config store accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    HTTPRoute,
    TrafficPolicy,
    AuthorizationPolicy,
    FailoverPolicy,
    ServiceExport,
    /// One workload of a service, registered by its agent (the catalog). Appended last so the
    /// encoding of the other kinds does not change.
    WorkloadEndpoint,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::HTTPRoute,
        Kind::TrafficPolicy,
        Kind::AuthorizationPolicy,
        Kind::FailoverPolicy,
        Kind::ServiceExport,
        Kind::WorkloadEndpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::HTTPRoute => "HTTPRoute",
            Kind::TrafficPolicy => "TrafficPolicy",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::FailoverPolicy => "FailoverPolicy",
            Kind::ServiceExport => "ServiceExport",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
        }
    }

    /// Parse a kind as a user types it: the exact name, any case, or a kubectl-style plural or
    /// short name (`httproutes`, `tp`, `authz`, `endpoints`, `we`).
    pub fn parse_loose(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        let l = l.trim_end_matches('s');
        Some(match l {
            "httproute" | "route" => Kind::HTTPRoute,
            "trafficpolicy" | "trafficpolicie" | "tp" => Kind::TrafficPolicy,
            "authorizationpolicy" | "authorizationpolicie" | "authz" | "ap" => {
                Kind::AuthorizationPolicy
            }
            "failoverpolicy" | "failoverpolicie" | "fp" => Kind::FailoverPolicy,
            "serviceexport" | "export" | "se" => Kind::ServiceExport,
            "workloadendpoint" | "endpoint" | "we" => Kind::WorkloadEndpoint,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata` of a resource. `version` is set by the store and ignored on input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

pub fn default_namespace() -> String {
    "default".to_owned()
}

/// A resource as written by a user or returned by the API. `kind` is a string here so that an
/// unknown kind is reported as a validation error with its location, not a parse failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: serde_json::Value,
}

/// Identity of a resource in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// A validated resource, as kept in Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResource {
    pub key: ResourceKey,
    pub labels: BTreeMap<String, String>,
    /// Canonical JSON of the typed spec (defaults filled in).
    pub spec_json: String,
    /// Store revision at which this resource last changed.
    pub version: u64,
}

impl StoredResource {
    /// The API form of this resource.
    pub fn to_resource(&self) -> Resource {
        Resource {
            api_version: API_VERSION.to_owned(),
            kind: self.key.kind.as_str().to_owned(),
            metadata: Metadata {
                name: self.key.name.clone(),
                namespace: self.key.namespace.clone(),
                labels: self.labels.clone(),
                version: Some(self.version),
            },
            spec: serde_json::from_str(&self.spec_json).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A reference to a mesh service, as `targetRef`/`parentRefs` use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    #[serde(default = "service_kind")]
    pub kind: String,
    pub name: String,
}

fn service_kind() -> String {
    "Service".to_owned()
}

// ---------------------------------------------------------------- HTTPRoute (Gateway API/GAMMA)

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ServiceRef>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    pub backend_refs: Vec<BackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    Exact,
    PathPrefix,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    #[serde(rename = "type", default = "path_prefix")]
    pub match_type: PathMatchType,
    pub value: String,
}

fn path_prefix() -> PathMatchType {
    PathMatchType::PathPrefix
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTimeouts {
    /// Whole-request deadline, e.g. `"5s"` or `"250ms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

// ---------------------------------------------------------------- TrafficPolicy

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicySpec {
    pub target_ref: ServiceRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<PolicyTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<FaultInjection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Conditions: `5xx`, `connect-failure`, `reset`, `gateway-error`.
    #[serde(default)]
    pub retry_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Extra load retries may add, as a fraction of requests (0.0–1.0).
    pub ratio: f64,
    /// Retries always allowed per second, whatever the ratio.
    #[serde(default)]
    pub min_per_second: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_connect_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancerPolicy {
    /// Power of two choices over least outstanding requests weighted by latency EWMA (default).
    P2c,
    RoundRobin,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    pub policy: LoadBalancerPolicy,
    /// Header hashed by `consistentHash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_header: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    pub percent: f64,
    pub duration: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    pub percent: f64,
    pub status: u16,
}

// ---------------------------------------------------------------- AuthorizationPolicy

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthzAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    pub target_ref: ServiceRef,
    pub action: AuthzAction,
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Vec<AuthzSource>,
    #[serde(default)]
    pub to: Vec<AuthzOperation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzSource {
    /// Full SPIFFE IDs, e.g. `spiffe://east.mesh/ns/default/sa/web`.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Trust-domain patterns: `east.mesh`, or `*` for any federated trust domain.
    #[serde(default)]
    pub trust_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthzOperation {
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact paths, or prefixes ending in `/*`.
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

// ---------------------------------------------------------------- FailoverPolicy, ServiceExport

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverPolicySpec {
    pub service: String,
    pub targets: Vec<FailoverTarget>,
}

/// One step of a failover order: a locality of this cluster, or a peer cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceExportSpec {
    pub service: String,
    /// Peer clusters allowed to reach the service. Export is explicit: there is no wildcard.
    pub peers: Vec<String>,
}

// ---------------------------------------------------------------- WorkloadEndpoint (catalog)

/// The namespace every `WorkloadEndpoint` lives in.
pub const ENDPOINT_NAMESPACE: &str = "default";

/// One workload of a service, as its agent registered it: where peers' sidecars reach it (the
/// sidecar's mTLS inbound, not the app), where it runs, and whether its health check passes.
/// Its resource name is `<service>.<node>` ([`WorkloadEndpointSpec::resource_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    pub service: ServiceName,
    pub node: NodeName,
    /// `ip:port` of the sidecar's mTLS inbound listener.
    pub address: String,
    #[serde(default)]
    pub locality: Locality,
    /// Whether the agent's health check of the local app passes.
    #[serde(default = "healthy_default")]
    pub healthy: bool,
}

fn healthy_default() -> bool {
    true
}

impl WorkloadEndpointSpec {
    /// The resource name of the endpoint of `service` on `node`: `<service>.<node>`. Both are
    /// DNS labels, so the name splits back unambiguously at its only `.`.
    pub fn resource_name(service: &ServiceName, node: &NodeName) -> String {
        format!("{service}.{node}")
    }

    /// The store key of the endpoint of `service` on `node`.
    pub fn key(service: &ServiceName, node: &NodeName) -> ResourceKey {
        ResourceKey {
            kind: Kind::WorkloadEndpoint,
            namespace: ENDPOINT_NAMESPACE.to_owned(),
            name: Self::resource_name(service, node),
        }
    }
}
