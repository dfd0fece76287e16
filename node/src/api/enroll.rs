//! Handlers of VM enrollment (DESIGN §7): printing an intro token for one node, redeeming it
//! (the agent, with no bearer: the token's secret authenticates), listing tokens, revoking a
//! node.
//!
//! ```text
//!  operator POST /v1/enroll/tokens ─► PutEnrollToken ─► meshfed-enroll1.… text
//!  agent    POST /v1/enroll/redeem {secret, node, services}
//!        ─► RedeemEnrollment in the log (unknown? used? expired? other node? not granted?)
//!        ─► a fresh agent credential, returned once
//!  operator GET /v1/enroll, DELETE /v1/enroll/{node} (revokes every credential of the node)
//! ```

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use mesh_core::enroll::{TOKEN_VERSION, encode_token, refusal_message};
use mesh_core::state::token_sha256;
use mesh_proto::command::{Command, CommandResponse};
use mesh_proto::enroll::{
    EnrollList, EnrollToken, EnrollTokenRequest, EnrollTokenResponse, PendingEnrollment,
    RedeemEnrollRequest, RedeemEnrollResponse,
};
use mesh_proto::{NodeName, ServiceName};

use super::{ApiErr, authenticate, propose, propose_as_operator, require_operator};
use crate::clock;
use crate::control::Ctx;

type ApiResult<T> = Result<Json<T>, ApiErr>;

/// Longest lifetime an intro token may be given.
const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// Most services one token may grant.
const MAX_SERVICES: usize = 64;

fn services(list: &[String]) -> Result<Vec<ServiceName>, ApiErr> {
    if list.is_empty() || list.len() > MAX_SERVICES {
        return Err(ApiErr::bad_request(format!(
            "services: give 1 to {MAX_SERVICES} services (--service a,b)"
        )));
    }
    list.iter()
        .map(|s| {
            ServiceName::new(s.clone()).map_err(|e| ApiErr::bad_request(format!("services: {e}")))
        })
        .collect()
}

/// `POST /v1/enroll/tokens`.
pub(super) async fn create_token(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<EnrollTokenRequest>,
) -> ApiResult<EnrollTokenResponse> {
    let node =
        NodeName::new(req.node.clone()).map_err(|e| ApiErr::bad_request(format!("node: {e}")))?;
    let granted = services(&req.services)?;
    if req.ttl_secs == 0 || req.ttl_secs > MAX_TTL_SECS {
        return Err(ApiErr::bad_request(format!(
            "ttl: {} s is out of range; use 1 s to {MAX_TTL_SECS} s (7 days)",
            req.ttl_secs
        )));
    }
    let (fp, api) = ctx.state.read(|s| {
        let d = s.data();
        (
            d.ca.as_ref().map(|c| c.fingerprint.clone()),
            d.control_nodes
                .values()
                .map(|n| n.api_addr.clone())
                .collect::<Vec<_>>(),
        )
    });
    let fp = fp.ok_or_else(|| ApiErr::internal("this cluster has no CA yet"))?;
    let secret = crate::token::random_token("mfenroll").map_err(ApiErr::internal)?;
    let now = clock::now_unix_ms();
    let expires = now + req.ttl_secs * 1000;
    propose_as_operator(
        &ctx,
        &headers,
        Command::PutEnrollToken {
            secret_sha256: token_sha256(&secret),
            token: PendingEnrollment {
                node: node.clone(),
                services: granted.clone(),
                created_unix_ms: now,
                expires_unix_ms: expires,
                used_unix_ms: None,
            },
        },
    )
    .await?;
    let token = EnrollToken {
        v: TOKEN_VERSION,
        node: node.clone(),
        services: granted,
        ca_fingerprint: fp,
        api,
        secret,
        expires_unix_ms: expires,
    };
    Ok(Json(EnrollTokenResponse {
        token: encode_token(&token),
        node: node.to_string(),
        expires_unix_ms: expires,
    }))
}

/// `POST /v1/enroll/redeem`.
pub(super) async fn redeem(
    State(ctx): State<Ctx>,
    Json(req): Json<RedeemEnrollRequest>,
) -> ApiResult<RedeemEnrollResponse> {
    let node =
        NodeName::new(req.node.clone()).map_err(|e| ApiErr::bad_request(format!("node: {e}")))?;
    let asked = services(&req.services)?;
    let agent_token = crate::token::random_token("mfagent").map_err(ApiErr::internal)?;
    let cmd = Command::RedeemEnrollment {
        secret_sha256: token_sha256(&req.secret),
        node,
        services: asked,
        agent_token_sha256: token_sha256(&agent_token),
        now_unix_ms: clock::now_unix_ms(),
    };
    match propose(&ctx, cmd).await? {
        CommandResponse::Enrolled => Ok(Json(RedeemEnrollResponse { agent_token })),
        CommandResponse::EnrollRefused { reason } => Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "enrollment_refused",
            refusal_message(&reason),
        )),
        other => Err(ApiErr::internal(format!("unexpected answer {other:?}"))),
    }
}

/// `GET /v1/enroll`.
pub(super) async fn list(State(ctx): State<Ctx>, headers: HeaderMap) -> ApiResult<EnrollList> {
    require_operator(&authenticate(&ctx, &headers).await?)?;
    Ok(Json(ctx.state.read(|s| EnrollList {
        tokens: s.data().enrollments.values().cloned().collect(),
    })))
}

/// `DELETE /v1/enroll/{node}`: revoke every credential bound to the node.
pub(super) async fn revoke(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(node): Path<String>,
) -> ApiResult<serde_json::Value> {
    let node = NodeName::new(node).map_err(|e| ApiErr::bad_request(format!("node: {e}")))?;
    let cmd = Command::RevokeNode {
        node: node.clone(),
        now_unix_ms: clock::now_unix_ms(),
    };
    match propose_as_operator(&ctx, &headers, cmd).await? {
        CommandResponse::Revoked { credentials } => Ok(Json(
            serde_json::json!({ "node": node.to_string(), "credentials_revoked": credentials }),
        )),
        other => Err(ApiErr::internal(format!("unexpected answer {other:?}"))),
    }
}
