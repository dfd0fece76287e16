//! Gossip endpoints of the control API:
//! - `GET /v1/gossip?known=IDS&wait_ms=MS` (agent or operator, served by any node): the keyring
//!   (sealing key first) and seeds; long-polls while the keyring's ids equal `known`;
//! - `GET /v1/gossip/members` (operator, served by any node): this node's own foca view;
//! - `GET`/`POST /v1/gossip/keyring` (operator, leader): list ids / install, use, remove.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_proto::command::{Command, CommandResponse, CredentialKind};
use mesh_proto::gossip::{
    GOSSIP_KEY_BYTES, GossipJoinInfo, KeyringOp, KeyringRequest, KeyringResponse, MembersResponse,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use super::{ApiErr, authenticate, authenticate_local, propose_as_operator, require_operator};
use crate::control::Ctx;

type ApiResult<T> = Result<Json<T>, ApiErr>;

#[derive(Deserialize)]
pub(super) struct JoinQuery {
    #[serde(default)]
    known: String,
    #[serde(default)]
    wait_ms: u64,
}

pub(super) async fn join_info(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<JoinQuery>,
) -> ApiResult<GossipJoinInfo> {
    let who = authenticate_local(&ctx, &headers)?;
    if !matches!(who, CredentialKind::Operator | CredentialKind::Agent { .. }) {
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "gossip keys are for agents and operators",
        ));
    }
    let known: Vec<u32> = q.known.split(',').filter_map(|s| s.parse().ok()).collect();
    let ids = |ctx: &Ctx| {
        ctx.state.read(|s| {
            s.data()
                .gossip_keys
                .iter()
                .map(|k| k.id)
                .collect::<Vec<u32>>()
        })
    };
    let wait = Duration::from_millis(q.wait_ms.min(60_000));
    if ids(&ctx) == known && !wait.is_zero() {
        let mut rx = ctx.state.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|_| ids(&ctx) != known)).await;
    }
    let keys = ctx.state.read(|s| s.data().gossip_keys.clone());
    let mut seeds = Vec::new();
    if let Some(g) = ctx.gossip.get() {
        let state = g.state();
        seeds.push(state.me.addr.to_string());
        for m in &state.members {
            if m.role == "control" && m.status == "alive" && !seeds.contains(&m.address) {
                seeds.push(m.address.clone());
            }
        }
    }
    Ok(Json(GossipJoinInfo {
        cluster: ctx.node.cluster.clone(),
        keys,
        seeds,
    }))
}

pub(super) async fn members(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
) -> ApiResult<MembersResponse> {
    require_operator(&authenticate_local(&ctx, &headers)?)?;
    let g = ctx.gossip.get().ok_or_else(|| {
        ApiErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gossip_not_running",
            "this node's gossip member has not started (no keyring yet, or its UDP port is taken; see its log)",
        )
    })?;
    let state = g.state();
    Ok(Json(MembersResponse {
        node: ctx.node.name.clone(),
        members: state.members.clone(),
        counters: state.counters.clone(),
    }))
}

pub(super) async fn list_keyring(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
) -> ApiResult<KeyringResponse> {
    require_operator(&authenticate(&ctx, &headers).await?)?;
    let ids: Vec<u32> = ctx
        .state
        .read(|s| s.data().gossip_keys.iter().map(|k| k.id).collect());
    Ok(Json(KeyringResponse {
        primary: ids.first().copied().unwrap_or(0),
        ids,
    }))
}

pub(super) async fn change_keyring(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<KeyringRequest>,
) -> ApiResult<KeyringResponse> {
    let need_id = || {
        req.id
            .ok_or_else(|| ApiErr::bad_request(format!("`{}` needs an id", req.op)))
    };
    let op = match req.op.as_str() {
        "install" => KeyringOp::Install {
            key_b64: match &req.key_b64 {
                Some(k) => k.clone(),
                None => fresh_key()?,
            },
        },
        "use" => KeyringOp::Use { id: need_id()? },
        "remove" => KeyringOp::Remove { id: need_id()? },
        other => {
            return Err(ApiErr::bad_request(format!(
                "unknown keyring op {other:?}; expected install, use or remove"
            )));
        }
    };
    match propose_as_operator(&ctx, &headers, Command::GossipKeyring(op)).await? {
        CommandResponse::Keyring { ids } => Ok(Json(KeyringResponse {
            primary: ids.first().copied().unwrap_or(0),
            ids,
        })),
        CommandResponse::KeyringRefused { reason } => {
            Err(ApiErr::new(StatusCode::CONFLICT, "keyring_refused", reason))
        }
        other => Err(ApiErr::internal(format!("unexpected answer {other:?}"))),
    }
}

fn fresh_key() -> Result<String, ApiErr> {
    let mut key = [0u8; GOSSIP_KEY_BYTES];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| ApiErr::internal("the system random number generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(key))
}
