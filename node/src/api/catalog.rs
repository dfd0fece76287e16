//! Handlers of the catalog (`PUT`/`DELETE /v1/catalog/{service}`) and of agent status
//! (`POST /v1/agents/status`, `GET /v1/agents`).
//!
//! ```text
//!  agent token ─► pre-check (this node's state: agent, owns the service) ─► validate
//!     ─► propose Authorized{ need: Agent{node, service} | AgentNode{node}, command }
//!     ─► state machine: credential and scope checked again at the entry's log position
//! ```
//!
//! The node always comes from the credential, never from the request, so an agent can only
//! speak for itself. Endpoints are ordinary `WorkloadEndpoint` resources (operators read them
//! with `GET /v1/resources/WorkloadEndpoint`); statuses live outside the config store and never
//! bump its version. This module decides nothing: validation is `mesh_core::config::validate`
//! and authorization is `mesh_core::state`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use mesh_core::state::token_sha256;
use mesh_proto::api::{
    AgentRecord, AgentStatusAck, AgentStatusReport, AgentsResponse, ApiError, ApplyResponse,
    ApplyResult, CatalogRegistration, DeleteResponse,
};
use mesh_proto::command::{
    Command, CommandResponse, CredentialKind, MAX_REPORTED_CERTS, Need, ResourceWrite,
};
use mesh_proto::resource::{
    API_VERSION, ENDPOINT_NAMESPACE, Kind, Metadata, Resource, WorkloadEndpointSpec,
};
use mesh_proto::{NodeName, ServiceName};

use super::{ApiErr, authenticate, bearer, lookup, propose, require_operator};
use crate::clock;
use crate::control::Ctx;

type ApiResult<T> = Result<Json<T>, ApiErr>;

/// The caller's agent credential: its token, node and services.
struct AgentCaller {
    token: String,
    node: NodeName,
    services: Vec<ServiceName>,
}

impl AgentCaller {
    /// Pre-check against this node's state that the bearer is an agent; `what` names the call
    /// for the refusal.
    fn of(ctx: &Ctx, headers: &HeaderMap, what: &str) -> Result<Self, ApiErr> {
        let token = bearer(headers)?;
        match lookup(ctx, &token)? {
            CredentialKind::Agent { node, services } => Ok(Self {
                token,
                node,
                services,
            }),
            _ => Err(ApiErr::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{what} needs an agent credential (`meshctl credential create`); operators \
                     write endpoints with `meshctl apply -f` (kind WorkloadEndpoint)"
                ),
            )),
        }
    }

    /// The service named in the path, if this credential may serve it.
    fn service(&self, raw: String) -> Result<ServiceName, ApiErr> {
        let service = ServiceName::new(raw)
            .map_err(|e| ApiErr::bad_request(format!("{e}; the path is /v1/catalog/<service>")))?;
        if self.services.contains(&service) {
            return Ok(service);
        }
        let listed: Vec<&str> = self.services.iter().map(ServiceName::as_str).collect();
        Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the agent credential of node {} may not register service {service} (it serves \
                 [{}]); issue one with `meshctl credential create --node {} --service {service}`",
                self.node,
                listed.join(", "),
                self.node
            ),
        ))
    }

    async fn propose(
        &self,
        ctx: &Ctx,
        need: Need,
        command: Command,
    ) -> Result<CommandResponse, ApiErr> {
        let wrapped = Command::Authorized {
            token_sha256: token_sha256(&self.token),
            need,
            now_unix_ms: clock::now_unix_ms(),
            command: Box::new(command),
        };
        propose(ctx, wrapped).await
    }
}

/// `PUT /v1/catalog/{service}`: register or refresh the caller's endpoint of `service`.
pub(super) async fn register(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(service): Path<String>,
    Json(req): Json<CatalogRegistration>,
) -> ApiResult<ApplyResponse> {
    let caller = AgentCaller::of(&ctx, &headers, "registering an endpoint")?;
    let service = caller.service(service)?;
    let spec = WorkloadEndpointSpec {
        service: service.clone(),
        node: caller.node.clone(),
        address: req.address,
        locality: req.locality,
        healthy: req.healthy,
    };
    let resource = Resource {
        api_version: API_VERSION.to_owned(),
        kind: Kind::WorkloadEndpoint.as_str().to_owned(),
        metadata: Metadata {
            name: WorkloadEndpointSpec::resource_name(&service, &caller.node),
            namespace: ENDPOINT_NAMESPACE.to_owned(),
            labels: BTreeMap::new(),
            version: None,
        },
        spec: serde_json::to_value(&spec).map_err(ApiErr::internal)?,
    };
    let valid = mesh_core::config::validate(0, &resource).map_err(|details| {
        ApiErr(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiError {
                code: "invalid_resource".into(),
                message: format!(
                    "the registration of {service} has {} problem(s); nothing was stored",
                    details.len()
                ),
                details,
            },
        )
    })?;
    let existed = ctx.state.read(|s| s.resource(&valid.key).is_some());
    let write = ResourceWrite {
        key: valid.key.clone(),
        labels: valid.labels,
        spec_json: valid.spec_json,
        expect_version: None,
    };
    let need = Need::Agent {
        node: caller.node.clone(),
        service,
    };
    let command = Command::ApplyResources {
        resources: vec![write],
        now_unix_ms: clock::now_unix_ms(),
    };
    match caller.propose(&ctx, need, command).await? {
        CommandResponse::Applied {
            version, unchanged, ..
        } => {
            let outcome = match (unchanged.contains(&valid.key), existed) {
                (true, _) => "unchanged",
                (false, true) => "configured",
                (false, false) => "created",
            };
            Ok(Json(ApplyResponse {
                version,
                results: vec![ApplyResult {
                    kind: valid.key.kind.to_string(),
                    namespace: valid.key.namespace,
                    name: valid.key.name,
                    outcome: outcome.into(),
                }],
            }))
        }
        other => Err(ApiErr::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// `DELETE /v1/catalog/{service}`: deregister the caller's endpoint of `service`.
pub(super) async fn deregister(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> ApiResult<DeleteResponse> {
    let caller = AgentCaller::of(&ctx, &headers, "deregistering an endpoint")?;
    let service = caller.service(service)?;
    let key = WorkloadEndpointSpec::key(&service, &caller.node);
    let need = Need::Agent {
        node: caller.node.clone(),
        service: service.clone(),
    };
    let command = Command::DeleteResource {
        key,
        now_unix_ms: clock::now_unix_ms(),
    };
    match caller.propose(&ctx, need, command).await? {
        CommandResponse::Deleted { version } => Ok(Json(DeleteResponse { version })),
        CommandResponse::NotFound { .. } => Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no endpoint of {service} on node {} is registered",
                caller.node
            ),
        )),
        other => Err(ApiErr::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// `POST /v1/agents/status`: record what the caller's agent has applied.
pub(super) async fn report_status(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<AgentStatusReport>,
) -> ApiResult<AgentStatusAck> {
    let caller = AgentCaller::of(&ctx, &headers, "reporting agent status")?;
    if req.certs.len() > MAX_REPORTED_CERTS {
        return Err(ApiErr::bad_request(format!(
            "certs: {} listed; at most {MAX_REPORTED_CERTS} (one per local service)",
            req.certs.len()
        )));
    }
    if let Some((i, c)) = req
        .certs
        .iter()
        .enumerate()
        .find(|(_, c)| !caller.services.contains(&c.service))
    {
        return Err(ApiErr::bad_request(format!(
            "certs[{i}].service: {} is not a service of node {}'s credential; report only the \
             local services",
            c.service, caller.node
        )));
    }
    let need = Need::AgentNode {
        node: caller.node.clone(),
    };
    let command = Command::ReportAgentStatus {
        node: caller.node.clone(),
        config_version: req.config_version,
        certs: req.certs,
        now_unix_ms: clock::now_unix_ms(),
    };
    match caller.propose(&ctx, need, command).await? {
        CommandResponse::StatusRecorded => Ok(Json(AgentStatusAck {
            store_version: ctx.state.read(|s| s.version()),
        })),
        other => Err(ApiErr::internal(format!("unexpected outcome {other:?}"))),
    }
}

/// `GET /v1/agents` (operator): every agent's last status, read linearizably on the leader.
pub(super) async fn list_agents(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
) -> ApiResult<AgentsResponse> {
    require_operator(&authenticate(&ctx, &headers).await?)?;
    Ok(Json(ctx.state.read(|s| {
        AgentsResponse {
            store_version: s.version(),
            now_unix_ms: clock::now_unix_ms(),
            agents: s
                .data()
                .agents
                .iter()
                .map(|(node, a)| AgentRecord {
                    node: node.clone(),
                    config_version: a.config_version,
                    certs: a.certs.clone(),
                    reported_unix_ms: a.reported_unix_ms,
                })
                .collect(),
        }
    })))
}
