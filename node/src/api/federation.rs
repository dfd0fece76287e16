//! Handlers of federation (DESIGN §7): printing a token, redeeming one as the issuer, joining
//! with one as the redeemer, listing and removing peers.
//!
//! ```text
//!  issuer  POST /v1/federation/tokens (operator) ─► PutFederationToken ─► meshfed1.… text
//!  redeemer POST /v1/federation/join (operator) ─► decode + check_before_join
//!        ─► issuer POST /v1/federation/redeem (TLS pinned to the token's CA fingerprint)
//!        issuer: RedeemFederationToken in its log (used? expired? other peer?) ─► its record
//!        ─► PutPeering in the redeemer's log
//!  GET /v1/federation/peers, DELETE /v1/federation/peers/{name} (operator)
//! ```
//!
//! The redeem call carries no bearer token: the one-time secret is the credential, checked
//! in the issuer's log. Every rule is `mesh_core::federation`'s; this file moves data.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use http::Method;
use mesh_core::federation::{self as fed, TOKEN_VERSION};
use mesh_core::state::token_sha256;
use mesh_proto::command::{Command, CommandResponse};
use mesh_proto::federation::{
    FederationJoinRequest, FederationToken, FederationTokenRequest, FederationTokenResponse,
    PeerList, Peering, PeeringState, PendingToken, RedeemRequest, RedeemResponse,
};
use mesh_proto::resource::Kind;
use mesh_proto::{ClusterName, TrustDomain};

use super::{ApiErr, authenticate, propose, propose_as_operator, require_operator};
use crate::client::{ApiClient, ClientError, Trust};
use crate::clock;
use crate::control::Ctx;

type ApiResult<T> = Result<Json<T>, ApiErr>;

/// Longest lifetime a token may be given.
const MAX_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;
/// Most gateway addresses a token or a join carries.
const MAX_GATEWAYS: usize = 16;
/// How long the redeemer waits for the issuer.
const REDEEM_TIMEOUT: Duration = Duration::from_secs(10);

/// This cluster's own record, as a peer will store it.
fn own_record(ctx: &Ctx, gateways: Vec<String>) -> Result<Peering, ApiErr> {
    let (ca, api) = ctx.state.read(|s| {
        let d = s.data();
        (
            d.ca.clone(),
            d.control_nodes
                .values()
                .map(|n| n.api_addr.clone())
                .collect::<Vec<_>>(),
        )
    });
    let ca = ca.ok_or_else(|| ApiErr::internal("this cluster has no CA yet"))?;
    let now = clock::now_unix_ms();
    Ok(Peering {
        name: ClusterName::new(ctx.node.cluster.clone()).map_err(ApiErr::internal)?,
        trust_domain: ctx.trust_domain.clone(),
        ca_pem: ca.cert_pem,
        ca_fingerprint: ca.fingerprint,
        api,
        gateways,
        state: PeeringState::Active,
        since_unix_ms: now,
        last_heartbeat_unix_ms: now,
    })
}

fn gateways(list: Vec<String>) -> Result<Vec<String>, ApiErr> {
    if list.len() > MAX_GATEWAYS {
        return Err(ApiErr::bad_request(format!(
            "gateways: {} listed; at most {MAX_GATEWAYS}",
            list.len()
        )));
    }
    for g in &list {
        g.parse::<std::net::SocketAddr>()
            .map_err(|e| ApiErr::bad_request(format!("gateways: {g:?} is not ip:port ({e})")))?;
    }
    Ok(list)
}

/// `POST /v1/federation/tokens`: print a single-use token for `peer`.
pub(super) async fn create_token(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<FederationTokenRequest>,
) -> ApiResult<FederationTokenResponse> {
    let peer = ClusterName::new(req.peer.clone())
        .map_err(|e| ApiErr::bad_request(format!("peer: {e}")))?;
    if peer.as_str() == ctx.node.cluster {
        return Err(ApiErr::bad_request(format!(
            "peer: {peer} is this cluster's own name; name the cluster that will join"
        )));
    }
    if req.ttl_secs == 0 || req.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(ApiErr::bad_request(format!(
            "expires: {} s is out of range; use 1 s to {MAX_TOKEN_TTL_SECS} s (7 days)",
            req.ttl_secs
        )));
    }
    let me = own_record(&ctx, gateways(req.gateways)?)?;
    let secret = crate::token::random_token("mffed").map_err(ApiErr::internal)?;
    let now = clock::now_unix_ms();
    let expires = now + req.ttl_secs * 1000;
    propose_as_operator(
        &ctx,
        &headers,
        Command::PutFederationToken {
            secret_sha256: token_sha256(&secret),
            token: PendingToken {
                peer: peer.clone(),
                created_unix_ms: now,
                expires_unix_ms: expires,
                used_unix_ms: None,
            },
        },
    )
    .await?;
    let token = FederationToken {
        v: TOKEN_VERSION,
        cluster: me.name,
        trust_domain: me.trust_domain,
        peer: peer.clone(),
        ca_pem: me.ca_pem,
        ca_fingerprint: me.ca_fingerprint,
        api: me.api,
        gateways: me.gateways,
        secret,
        expires_unix_ms: expires,
    };
    Ok(Json(FederationTokenResponse {
        token: fed::encode_token(&token),
        peer: peer.to_string(),
        expires_unix_ms: expires,
    }))
}

/// `POST /v1/federation/redeem`: a peer redeems a token this cluster printed.
pub(super) async fn redeem(
    State(ctx): State<Ctx>,
    Json(req): Json<RedeemRequest>,
) -> ApiResult<RedeemResponse> {
    let name = ClusterName::new(req.cluster.clone())
        .map_err(|e| ApiErr::bad_request(format!("cluster: {e}")))?;
    let trust_domain = TrustDomain::new(req.trust_domain.clone())
        .map_err(|e| ApiErr::bad_request(format!("trust_domain: {e}")))?;
    if trust_domain == ctx.trust_domain {
        return Err(ApiErr::bad_request(format!(
            "trust_domain: {trust_domain} is this cluster's own; each cluster needs its own"
        )));
    }
    let ca_fingerprint = mesh_core::identity::fingerprint_of_pem(&req.ca_pem)
        .map_err(|e| ApiErr::bad_request(format!("ca_pem: {e}")))?;
    let now = clock::now_unix_ms();
    let peering = Peering {
        name,
        trust_domain,
        ca_pem: req.ca_pem,
        ca_fingerprint,
        api: req.api,
        gateways: gateways(req.gateways)?,
        state: PeeringState::Active,
        since_unix_ms: now,
        last_heartbeat_unix_ms: now,
    };
    let cmd = Command::RedeemFederationToken {
        secret_sha256: token_sha256(&req.secret),
        peering,
        now_unix_ms: now,
    };
    match propose(&ctx, cmd).await? {
        CommandResponse::PeeringRecorded => Ok(Json(RedeemResponse {
            peering: own_record(&ctx, Vec::new())?,
        })),
        CommandResponse::RedeemRefused { reason } => Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "federation_refused",
            fed::refusal_message(&reason, &ctx.node.cluster),
        )),
        other => Err(ApiErr::internal(format!("unexpected answer {other:?}"))),
    }
}

/// `POST /v1/federation/join`: redeem a peer's token and record the peering here.
pub(super) async fn join(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(req): Json<FederationJoinRequest>,
) -> ApiResult<Peering> {
    require_operator(&authenticate(&ctx, &headers).await?)?;
    let token = fed::decode_token(&req.token).map_err(|e| ApiErr::bad_request(e.to_string()))?;
    let this = ClusterName::new(ctx.node.cluster.clone()).map_err(ApiErr::internal)?;
    fed::check_before_join(&token, &this, clock::now_unix_ms())
        .map_err(|e| ApiErr::new(StatusCode::FORBIDDEN, "federation_refused", e.to_string()))?;
    let me = own_record(&ctx, gateways(req.gateways)?)?;
    let mut issuer = ApiClient::new(
        token.api.clone(),
        Trust::PinnedCa(token.ca_fingerprint.clone()),
        None,
    )
    .map_err(ApiErr::internal)?;
    issuer.attempt_timeout = REDEEM_TIMEOUT;
    let body = RedeemRequest {
        secret: token.secret.clone(),
        cluster: me.name.to_string(),
        trust_domain: me.trust_domain.to_string(),
        ca_pem: me.ca_pem,
        api: me.api,
        gateways: me.gateways,
    };
    let answer: RedeemResponse = issuer
        .call(Method::POST, "/v1/federation/redeem", Some(&body))
        .await
        .map_err(|e| match e {
            ClientError::Api { status, error } => ApiErr::new(
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                &error.code,
                format!("cluster {} refused: {}", token.cluster, error.message),
            ),
            other => ApiErr::new(
                StatusCode::BAD_GATEWAY,
                "peer_unreachable",
                format!(
                    "cannot reach cluster {} at {:?} with its CA pinned ({other}); check the \
                     addresses in the token, or that the token was not altered",
                    token.cluster, token.api
                ),
            ),
        })?;
    let mut peering = answer.peering;
    // Store what the token vouched for: the pinned CA is the one we dialled.
    if peering.ca_fingerprint != token.ca_fingerprint || peering.name != token.cluster {
        return Err(ApiErr::new(
            StatusCode::BAD_GATEWAY,
            "federation_refused",
            format!(
                "cluster {} answered with another identity than its token names; not recorded",
                token.cluster
            ),
        ));
    }
    if peering.gateways.is_empty() {
        peering.gateways = token.gateways.clone();
    }
    propose(
        &ctx,
        Command::PutPeering {
            peering: peering.clone(),
        },
    )
    .await?;
    Ok(Json(peering))
}

/// `GET /v1/federation/peers`.
pub(super) async fn list(State(ctx): State<Ctx>, headers: HeaderMap) -> ApiResult<PeerList> {
    require_operator(&authenticate(&ctx, &headers).await?)?;
    Ok(Json(ctx.state.read(|s| PeerList {
        cluster: ctx.node.cluster.clone(),
        peers: s.data().peerings.values().cloned().collect(),
        exported_services: s.list(Kind::ServiceExport, None).len(),
    })))
}

/// `DELETE /v1/federation/peers/{name}`.
pub(super) async fn remove(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<serde_json::Value> {
    let name = ClusterName::new(name).map_err(|e| ApiErr::bad_request(format!("peer: {e}")))?;
    match propose_as_operator(
        &ctx,
        &headers,
        Command::RemovePeering { name: name.clone() },
    )
    .await?
    {
        CommandResponse::PeeringRemoved { existed: true } => {
            Ok(Json(serde_json::json!({ "removed": name.to_string() })))
        }
        _ => Err(ApiErr::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no peer named {name}; see `meshctl federate list`"),
        )),
    }
}
