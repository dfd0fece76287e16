//! Request handlers of the control API. Each one authenticates, decides with `mesh-core`, and
//! proposes or reads; the routing, leader gate and error type are in the parent module.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use mesh_core::identity::{self, Requester};
use mesh_core::state::{CatchUp, token_sha256};
use mesh_proto::api::*;
use mesh_proto::command::{
    Command, CommandResponse, ControlNodeInfo, Credential, CredentialKind, ResourceWrite,
};
use mesh_proto::resource::{Kind, ResourceKey};
use mesh_proto::{NodeName, ServiceName};
use mesh_raft_store::ControlNode;
use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use serde::Deserialize;

use super::{
    ApiErr, authenticate, authenticate_local, propose, propose_as_operator, require_operator,
};
use crate::clock;
use crate::control::{Ctx, voters};

type ApiResult<T> = Result<Json<T>, ApiErr>;

pub(super) async fn status(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
) -> ApiResult<StatusResponse> {
    authenticate_local(&ctx, &headers)?;
    let m = ctx.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voter_ids: Vec<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, n)| MemberStatus {
            node_id: *id,
            name: n.name.clone(),
            raft_addr: n.raft_addr.clone(),
            api_addr: n.api_addr.clone(),
            role: if Some(*id) == m.current_leader {
                "leader".into()
            } else if voter_ids.contains(id) {
                "follower".into()
            } else {
                "learner".into()
            },
            matched_index: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index),
        })
        .collect();
    let (ca_fp, ca_exp, version) = ctx.state.read(|s| {
        let ca = s.data().ca.as_ref();
        (
            ca.map(|c| c.fingerprint.clone()).unwrap_or_default(),
            ca.map_or(0, |c| c.not_after_unix),
            s.version(),
        )
    });
    Ok(Json(StatusResponse {
        cluster: ctx.node.cluster.clone(),
        trust_domain: ctx.trust_domain.to_string(),
        node_id: ctx.node.node_id,
        node_name: ctx.node.name.clone(),
        leader_id: m.current_leader,
        term: m.current_term,
        commit_index: m.last_applied.map(|l| l.index),
        applied_index: m.last_applied.map(|l| l.index),
        config_version: version,
        members,
        ca_fingerprint: ca_fp,
        ca_not_after_unix: ca_exp,
    }))
}

#[derive(Deserialize)]
pub(super) struct WatchQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Long-poll: answer as soon as the applied config version passes `from`, or after `wait_ms`.
pub(super) async fn watch(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> ApiResult<WatchResponse> {
    let who = authenticate_local(&ctx, &headers)?;
    if matches!(who, CredentialKind::ControlJoin) {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a join token cannot watch config",
        ));
    }
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(30_000).min(60_000));
    let mut rx = ctx.state.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (version, catch_up) = ctx.state.read(|s| (s.version(), s.catch_up(q.from)));
        match catch_up {
            CatchUp::Changes(changes) => {
                return Ok(Json(WatchResponse {
                    version,
                    snapshot: None,
                    changes,
                }));
            }
            CatchUp::Snapshot(items) => {
                return Ok(Json(WatchResponse {
                    version,
                    snapshot: Some(items),
                    changes: vec![],
                }));
            }
            CatchUp::UpToDate => {
                // Wake on a new config version only: entries that leave the store alone (agent
                // status reports, credentials) must not make every watcher re-read.
                let woke =
                    tokio::time::timeout_at(deadline, rx.wait_for(|a| a.config_version != version))
                        .await
                        .is_ok_and(|r| r.is_ok());
                if !woke {
                    return Ok(Json(WatchResponse {
                        version,
                        snapshot: None,
                        changes: vec![],
                    }));
                }
            }
        }
    }
}

fn parse_kind(kind: &str) -> Result<Kind, ApiErr> {
    Kind::parse_loose(kind).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        ApiErr::new(
            StatusCode::NOT_FOUND,
            "unknown_kind",
            format!("unknown kind {kind:?}; expected one of {}", all.join(", ")),
        )
    })
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    namespace: Option<String>,
}

pub(super) async fn list(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(kind): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<ListResponse> {
    let kind = parse_kind(&kind)?;
    require_operator(&authenticate(&ctx, &headers).await?)?;
    Ok(Json(ctx.state.read(|s| {
        ListResponse {
            version: s.version(),
            items: s
                .list(kind, q.namespace.as_deref())
                .into_iter()
                .map(|r| r.to_resource())
                .collect(),
        }
    })))
}

pub(super) async fn get_one(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> ApiResult<mesh_proto::resource::Resource> {
    let kind = parse_kind(&kind)?;
    require_operator(&authenticate(&ctx, &headers).await?)?;
    let key = ResourceKey {
        kind,
        namespace,
        name,
    };
    ctx.state
        .read(|s| s.resource(&key).map(|r| r.to_resource()))
        .map(Json)
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{key} does not exist"),
            )
        })
}

pub(super) async fn delete_one(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path((kind, namespace, name)): Path<(String, String, String)>,
) -> ApiResult<DeleteResponse> {
    let kind = parse_kind(&kind)?;
    let key = ResourceKey {
        kind,
        namespace,
        name,
    };
    match propose_as_operator(
        &ctx,
        &headers,
        Command::DeleteResource {
            key,
            now_unix_ms: clock::now_unix_ms(),
        },
    )
    .await?
    {
        CommandResponse::Deleted { version } => Ok(Json(DeleteResponse { version })),
        CommandResponse::NotFound { key } => Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{key} does not exist"),
        )),
        other => Err(ApiErr::internal(format!("unexpected outcome {other:?}"))),
    }
}

pub(super) async fn apply(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<ApplyRequest>,
) -> ApiResult<ApplyResponse> {
    // Dry runs read, so they need the linearizable check; writes are checked in the log.
    if req.dry_run {
        require_operator(&authenticate(&ctx, &headers).await?)?;
    } else {
        require_operator(&authenticate_local(&ctx, &headers)?)?;
    }
    if req.resources.is_empty() {
        return Err(ApiErr::bad_request("no resources in the request"));
    }
    let valid = mesh_core::config::validate_batch(&req.resources).map_err(|details| {
        ApiErr(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiError {
                code: "invalid_resource".into(),
                message: format!("{} problem(s); nothing was applied", details.len()),
                details,
            },
        )
    })?;
    let writes: Vec<ResourceWrite> = valid
        .into_iter()
        .map(|v| ResourceWrite {
            key: v.key,
            labels: v.labels,
            spec_json: v.spec_json,
            expect_version: None,
        })
        .collect();
    if req.dry_run {
        let results = ctx.state.read(|s| {
            writes
                .iter()
                .map(|w| {
                    let outcome = match s.resource(&w.key) {
                        None => "created (dry run)",
                        Some(r) if r.spec_json == w.spec_json && r.labels == w.labels => {
                            "unchanged"
                        }
                        Some(_) => "configured (dry run)",
                    };
                    result(&w.key, outcome)
                })
                .collect()
        });
        return Ok(Json(ApplyResponse {
            version: ctx.state.read(|s| s.version()),
            results,
        }));
    }
    let existed: Vec<bool> = ctx.state.read(|s| {
        writes
            .iter()
            .map(|w| s.resource(&w.key).is_some())
            .collect()
    });
    match propose_as_operator(
        &ctx,
        &headers,
        Command::ApplyResources {
            resources: writes.clone(),
            now_unix_ms: clock::now_unix_ms(),
        },
    )
    .await?
    {
        CommandResponse::Applied {
            version, unchanged, ..
        } => {
            let results = writes
                .iter()
                .zip(existed)
                .map(|(w, existed)| {
                    let outcome = if unchanged.contains(&w.key) {
                        "unchanged"
                    } else if existed {
                        "configured"
                    } else {
                        "created"
                    };
                    result(&w.key, outcome)
                })
                .collect();
            Ok(Json(ApplyResponse { version, results }))
        }
        CommandResponse::Conflict {
            key,
            expected,
            actual,
        } => Err(ApiErr::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{key} is at version {actual}, not {expected}; re-read it and apply again"),
        )),
        other => Err(ApiErr::internal(format!("unexpected outcome {other:?}"))),
    }
}

fn result(key: &ResourceKey, outcome: &str) -> ApplyResult {
    ApplyResult {
        kind: key.kind.to_string(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        outcome: outcome.into(),
    }
}

fn csr_error(e: identity::CsrError) -> ApiErr {
    let status = if matches!(e, identity::CsrError::NotPermitted { .. }) {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiErr::new(status, "csr_refused", e.to_string())
}

fn ca(ctx: &Ctx) -> Result<mesh_proto::command::CaMaterial, ApiErr> {
    ctx.state
        .read(|s| s.data().ca.clone())
        .ok_or_else(|| ApiErr::internal("the cluster CA is not initialised yet"))
}

pub(super) async fn join(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<JoinRequest>,
) -> ApiResult<JoinResponse> {
    let who = authenticate(&ctx, &headers).await?;
    if !matches!(who, CredentialKind::ControlJoin) {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "joining needs the join token printed at bootstrap",
        ));
    }
    let node = NodeName::new(req.node_name.clone())
        .map_err(|e| ApiErr::bad_request(format!("node_name: {e}")))?;
    let taken = ctx.state.read(|s| {
        s.data()
            .control_nodes
            .values()
            .any(|n| n.name != node && (n.raft_addr == req.raft_addr || n.api_addr == req.api_addr))
    });
    if taken {
        return Err(ApiErr::new(
            StatusCode::CONFLICT,
            "address_in_use",
            "another control node already uses that raft or API address",
        ));
    }
    let id = identity::check_csr(
        &req.csr_pem,
        &ctx.trust_domain,
        &Requester::ControlJoin { node: node.clone() },
    )
    .map_err(csr_error)?;
    let ca = ca(&ctx)?;
    let svid = identity::sign_svid(
        &ca,
        &req.csr_pem,
        &id,
        identity::MAX_SVID_TTL_SECS,
        clock::now_unix(),
    )
    .map_err(ApiErr::internal)?;
    let info = ControlNodeInfo {
        node_id: 0,
        name: node,
        raft_addr: req.raft_addr,
        api_addr: req.api_addr,
    };
    let node_id = match propose(
        &ctx,
        Command::RegisterControlNode {
            info,
            now_unix_ms: clock::now_unix_ms(),
        },
    )
    .await?
    {
        CommandResponse::NodeRegistered { node_id } => node_id,
        other => return Err(ApiErr::internal(format!("unexpected outcome {other:?}"))),
    };
    let members = ctx
        .state
        .read(|s| s.data().control_nodes.values().cloned().collect());
    Ok(Json(JoinResponse {
        node_id,
        cluster: ctx.node.cluster.clone(),
        trust_domain: ctx.trust_domain.to_string(),
        ca_pem: ca.cert_pem,
        cert_pem: svid.cert_pem,
        members,
    }))
}

pub(super) async fn add_member(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<AddMemberRequest>,
) -> ApiResult<serde_json::Value> {
    let who = authenticate(&ctx, &headers).await?;
    if !matches!(who, CredentialKind::ControlJoin | CredentialKind::Operator) {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "adding a voter needs the join or operator token",
        ));
    }
    let info = ctx
        .state
        .read(|s| s.data().control_nodes.get(&req.node_id).cloned())
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "node {} never joined; run `meshd control --join-token` on it",
                    req.node_id
                ),
            )
        })?;
    if voters(&ctx.raft).contains(&req.node_id) {
        return Ok(Json(
            serde_json::json!({"nodeId": req.node_id, "outcome": "already a voter"}),
        ));
    }
    let node = ControlNode {
        name: info.name.to_string(),
        raft_addr: info.raft_addr,
        api_addr: info.api_addr,
    };
    membership_change(&ctx, ctx.raft.add_learner(req.node_id, node, true)).await?;
    let add = ChangeMembers::AddVoterIds([req.node_id].into_iter().collect());
    membership_change(&ctx, ctx.raft.change_membership(add, false)).await?;
    Ok(Json(
        serde_json::json!({"nodeId": req.node_id, "outcome": "voter"}),
    ))
}

pub(super) async fn remove_member(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> ApiResult<serde_json::Value> {
    require_operator(&authenticate(&ctx, &headers).await?)?;
    let current = voters(&ctx.raft);
    if !current.contains(&id) {
        return Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("node {id} is not a voter; voters are {current:?}"),
        ));
    }
    if current.len() <= 1 {
        return Err(ApiErr::bad_request("refusing to remove the last voter"));
    }
    let remove = ChangeMembers::RemoveVoters([id].into_iter().collect());
    membership_change(&ctx, ctx.raft.change_membership(remove, false)).await?;
    Ok(Json(
        serde_json::json!({"nodeId": id, "outcome": "removed"}),
    ))
}

async fn membership_change<F, E>(_ctx: &Ctx, fut: F) -> Result<(), ApiErr>
where
    F: Future<Output = Result<E, RaftError<u64, ClientWriteError<u64, ControlNode>>>>,
{
    match tokio::time::timeout(Duration::from_secs(30), fut).await {
        Err(_) => Err(ApiErr::new(
            StatusCode::GATEWAY_TIMEOUT,
            "commit_timeout",
            "membership change not committed within 30 s",
        )),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            Err(ApiErr::not_leader("leadership moved; retry"))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Err(
            ApiErr::new(StatusCode::CONFLICT, "membership", e.to_string()),
        ),
        Ok(Err(RaftError::Fatal(f))) => Err(ApiErr::internal(f)),
    }
}

pub(super) async fn sign(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<SignRequest>,
) -> ApiResult<SignResponse> {
    let who = authenticate(&ctx, &headers).await?;
    let requester = match who {
        CredentialKind::Operator => Requester::Operator,
        CredentialKind::Agent { node, services } => Requester::Agent { node, services },
        CredentialKind::ControlJoin => {
            return Err(ApiErr::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a join token can only be used by `meshd control --join-token`",
            ));
        }
    };
    let id = identity::check_csr(&req.csr_pem, &ctx.trust_domain, &requester).map_err(csr_error)?;
    let ca = ca(&ctx)?;
    let ttl = req.ttl_secs.unwrap_or(identity::DEFAULT_SVID_TTL_SECS);
    let svid = identity::sign_svid(&ca, &req.csr_pem, &id, ttl, clock::now_unix())
        .map_err(ApiErr::internal)?;
    Ok(Json(SignResponse {
        cert_pem: svid.cert_pem,
        ca_pem: ca.cert_pem,
        spiffe_id: id.to_string(),
        not_after_unix: svid.not_after_unix,
    }))
}

pub(super) async fn create_credential(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<CredentialRequest>,
) -> ApiResult<CredentialResponse> {
    let node =
        NodeName::new(req.node.clone()).map_err(|e| ApiErr::bad_request(format!("node: {e}")))?;
    let services = req
        .services
        .iter()
        .map(|s| {
            ServiceName::new(s.clone()).map_err(|e| ApiErr::bad_request(format!("services: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let token = crate::token::random_token("mfagent").map_err(ApiErr::internal)?;
    let now = clock::now_unix_ms();
    let credential = Credential {
        kind: CredentialKind::Agent { node, services },
        created_unix_ms: now,
        expires_unix_ms: if req.ttl_secs == 0 {
            0
        } else {
            now + req.ttl_secs * 1000
        },
        revoked: false,
    };
    propose_as_operator(
        &ctx,
        &headers,
        Command::PutCredential {
            token_sha256: token_sha256(&token),
            credential,
        },
    )
    .await?;
    Ok(Json(CredentialResponse { token }))
}
