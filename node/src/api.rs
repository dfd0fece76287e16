//! The control API: HTTPS JSON on every control node (axum over hyper, TLS by rustls).
//!
//! ```text
//!  request ─▶ leader gate ─┬─ this node leads ─▶ handler: authenticate (ReadIndex) ─▶ read/propose
//!                          ├─ another node leads ─▶ forward once to its API, return its answer
//!                          └─ no leader ─▶ 503 no_leader (clients retry)
//! ```
//! `/v1/status` and `/v1/watch` are served by any node from its own applied state: status is a
//! diagnostic and watch is config distribution, where every node's stream is a prefix of the
//! leader's. Everything that decides authorization or returns config to an operator goes through
//! the leader and `ensure_linearizable`, never a lease read, so a paused or deposed leader cannot
//! answer with superseded data.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use mesh_core::identity::{self, PeerPolicy};
use mesh_proto::api::*;
use mesh_proto::command::{Command, CommandResponse, CredentialKind};
use mesh_raft_store::ControlNode;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::client::ApiClient;
use crate::control::Ctx;

mod catalog;
mod enroll;
mod federation;
mod gossip;
mod handlers;

/// Marks a request already forwarded by a follower, so it is never forwarded twice.
const FORWARDED: &str = "x-meshfed-forwarded";
const MAX_API_CONNS: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a proposal may take to commit before the API answers 504 (outcome unknown).
pub(crate) const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// An API failure: a status and the JSON error body.
#[derive(Debug)]
pub struct ApiErr(pub StatusCode, pub ApiError);

impl ApiErr {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self(
            status,
            ApiError {
                code: code.into(),
                message: message.into(),
                details: vec![],
            },
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
    pub fn not_leader(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", message)
    }
    pub fn no_leader() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "no leader elected yet; retry shortly",
        )
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/v1/status", get(handlers::status))
        .route("/v1/watch", get(handlers::watch))
        .route("/v1/resources/{kind}", get(handlers::list))
        .route(
            "/v1/resources/{kind}/{namespace}/{name}",
            get(handlers::get_one).delete(handlers::delete_one),
        )
        .route("/v1/apply", post(handlers::apply))
        .route("/v1/join", post(handlers::join))
        .route("/v1/members", post(handlers::add_member))
        .route("/v1/members/{id}", delete(handlers::remove_member))
        .route("/v1/certificates", post(handlers::sign))
        .route("/v1/credentials", post(handlers::create_credential))
        .route(
            "/v1/catalog/{service}",
            put(catalog::register).delete(catalog::deregister),
        )
        .route("/v1/agents", get(catalog::list_agents))
        .route("/v1/agents/status", post(catalog::report_status))
        .route("/v1/enroll", get(enroll::list))
        .route("/v1/enroll/tokens", post(enroll::create_token))
        .route("/v1/enroll/redeem", post(enroll::redeem))
        .route("/v1/enroll/{node}", delete(enroll::revoke))
        .route("/v1/federation/tokens", post(federation::create_token))
        .route("/v1/federation/redeem", post(federation::redeem))
        .route("/v1/federation/join", post(federation::join))
        .route("/v1/federation/peers", get(federation::list))
        .route("/v1/federation/peers/{name}", delete(federation::remove))
        .route("/v1/gossip", get(gossip::join_info))
        .route("/v1/gossip/members", get(gossip::members))
        .route(
            "/v1/gossip/keyring",
            get(gossip::list_keyring).post(gossip::change_keyring),
        )
        .layer(middleware::from_fn_with_state(ctx.clone(), leader_gate))
        .with_state(ctx)
}

/// Accept TLS connections and serve the router until the task is dropped.
pub async fn serve(listener: TcpListener, ctx: Ctx) {
    let client_verifier =
        identity::SpiffeClientVerifier::new(ctx.tls.bundles.clone(), PeerPolicy::AnyKnown, false);
    let tls = match identity::server_config_with_slot(
        ctx.tls.svid.clone(),
        Some(client_verifier),
        &[b"http/1.1"],
    ) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the API TLS config; API disabled");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_API_CONNS));
    let app = router(ctx);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many API connections; refusing");
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "api tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "api connection ended");
            }
        });
    }
}

/// Paths any node answers from its own state.
fn served_locally(path: &str) -> bool {
    // Gossip join info and members are this node's own view (its keyring is its applied
    // state, its members its own foca instance).
    matches!(
        path,
        "/v1/status" | "/v1/watch" | "/v1/gossip" | "/v1/gossip/members"
    )
}

async fn leader_gate(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    if served_locally(req.uri().path()) {
        return next.run(req).await;
    }
    let (leader, me) = {
        let m = ctx.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader.and_then(|id| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| (id, n.clone()))
        });
        (leader, m.id)
    };
    match leader {
        Some((id, _)) if id == me => next.run(req).await,
        Some((id, node)) => {
            if req.headers().contains_key(FORWARDED) {
                return ApiErr::not_leader(format!(
                    "node {me} is not the leader either; leadership is moving"
                ))
                .into_response();
            }
            forward(&ctx, id, &node, req)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        None => ApiErr::no_leader().into_response(),
    }
}

/// Send the request to the leader's API once and relay its answer.
async fn forward(
    ctx: &Ctx,
    leader: u64,
    node: &ControlNode,
    req: Request,
) -> Result<Response, ApiErr> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 8 * 1024 * 1024)
        .await
        .map_err(|e| ApiErr::bad_request(format!("cannot read request body: {e}")))?;
    let verifier = identity::SpiffeServerVerifier::new(
        ctx.tls.bundles.clone(),
        PeerPolicy::RoleControl(ctx.trust_domain.clone()),
    );
    let tls = identity::client_config_with_slot(verifier, ctx.tls.svid.clone(), &[b"http/1.1"])
        .map_err(ApiErr::internal)?;
    let mut client = ApiClient::with_config(vec![node.api_addr.clone()], Arc::new(tls), None)
        .map_err(ApiErr::internal)?;
    client.retry_for = Duration::ZERO;
    client.attempt_timeout = COMMIT_TIMEOUT + Duration::from_secs(50);
    let mut headers = vec![(FORWARDED, ctx.node.node_id.to_string())];
    if let Some(a) = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        headers.push(("authorization", a.to_owned()));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = (!body.is_empty()).then(|| body.to_vec());
    match client.raw(parts.method, path, body, &headers, None).await {
        Ok(r) => Ok((
            r.status,
            [(
                http::header::CONTENT_TYPE,
                r.content_type.unwrap_or_else(|| "application/json".into()),
            )],
            r.body,
        )
            .into_response()),
        Err(crate::client::ClientError::Connect { message, .. }) => {
            Err(ApiErr::not_leader(format!(
                "leader {leader} at {} is unreachable: {message}",
                node.api_addr
            )))
        }
        Err(e) => Err(ApiErr::new(
            StatusCode::GATEWAY_TIMEOUT,
            "forward_failed",
            format!(
                "forwarding to leader {leader} failed; the request may or may not have taken effect: {e}"
            ),
        )),
    }
}

/// Who the bearer token belongs to, read linearizably: this node confirms it still leads (a
/// heartbeat round to a quorum) and has applied everything committed before answering.
pub(crate) async fn authenticate(ctx: &Ctx, headers: &HeaderMap) -> Result<CredentialKind, ApiErr> {
    let token = bearer(headers)?;
    ensure_linearizable(ctx).await?;
    lookup(ctx, &token)
}

/// Like [`authenticate`], from this node's applied state (for locally served paths).
pub(crate) fn authenticate_local(ctx: &Ctx, headers: &HeaderMap) -> Result<CredentialKind, ApiErr> {
    let token = bearer(headers)?;
    lookup(ctx, &token)
}

fn lookup(ctx: &Ctx, token: &str) -> Result<CredentialKind, ApiErr> {
    let now = crate::clock::now_unix_ms();
    ctx.state
        .read(|s| s.authenticate(token, now).map(|c| c.kind.clone()))
        .ok_or_else(|| {
            ApiErr::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token is unknown, expired or revoked",
            )
        })
}

fn bearer(headers: &HeaderMap) -> Result<String, ApiErr> {
    let h = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match h.strip_prefix("Bearer ") {
        Some(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        _ => Err(ApiErr::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token; pass --token or run `meshctl context set NAME --token TOKEN`",
        )),
    }
}

pub(crate) async fn ensure_linearizable(ctx: &Ctx) -> Result<(), ApiErr> {
    use openraft::error::{CheckIsLeaderError, RaftError};
    match ctx.raft.ensure_linearizable().await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(
            ApiErr::not_leader(format!("leadership moved to {:?}; retry", f.leader_id)),
        ),
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => Err(ApiErr::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            format!("cannot confirm leadership with a quorum: {q}"),
        )),
        Err(RaftError::Fatal(f)) => Err(ApiErr::internal(f)),
    }
}

pub(crate) fn require_operator(kind: &CredentialKind) -> Result<(), ApiErr> {
    match kind {
        CredentialKind::Operator => Ok(()),
        _ => Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this call needs the operator token",
        )),
    }
}

/// Propose a command (coalesced with concurrent ones) and wait for it to be applied here.
pub(crate) async fn propose(ctx: &Ctx, cmd: Command) -> Result<CommandResponse, ApiErr> {
    use crate::proposer::ProposeError;
    match ctx.proposer.propose(cmd).await {
        Ok(CommandResponse::Unauthorized { reason }) => Err(ApiErr::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            reason,
        )),
        Ok(r) => Ok(r),
        Err(ProposeError::Timeout(t)) => Err(ApiErr::new(
            StatusCode::GATEWAY_TIMEOUT,
            "commit_timeout",
            format!("not committed within {t:?}; the change may or may not take effect"),
        )),
        Err(ProposeError::NotLeader(_)) => Err(ApiErr::not_leader(
            "this node lost leadership before the change was committed; it was not applied",
        )),
        Err(ProposeError::Membership(e)) => Err(ApiErr::new(StatusCode::CONFLICT, "membership", e)),
        Err(ProposeError::Fatal(e)) => Err(ApiErr::internal(e)),
    }
}

/// Propose `cmd` as the operator whose token is on the request. The token is pre-checked
/// against this node's state (so a stranger cannot fill the log) and checked again, exactly,
/// when the entry is applied.
pub(crate) async fn propose_as_operator(
    ctx: &Ctx,
    headers: &HeaderMap,
    cmd: Command,
) -> Result<CommandResponse, ApiErr> {
    let token = bearer(headers)?;
    require_operator(&lookup(ctx, &token)?)?;
    let wrapped = Command::Authorized {
        token_sha256: mesh_core::state::token_sha256(&token),
        need: mesh_proto::command::Need::Operator,
        now_unix_ms: crate::clock::now_unix_ms(),
        command: Box::new(cmd),
    };
    propose(ctx, wrapped).await
}
