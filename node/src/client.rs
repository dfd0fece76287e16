//! HTTPS client for the control API, used by meshctl, joining nodes, follower→leader forwarding,
//! the chaos tests and the benchmarks.
//!
//! Trust is explicit: either the CA fingerprint pin from a context or token (first contact), or a
//! trust bundle with a SPIFFE peer policy. Server host names are never checked; the SPIFFE ID
//! in the server certificate is.
//!
//! Retries are limited to failures where the request certainly had no effect: the connection
//! could not be made, or the server answered `503 not_leader`/`no_leader` before proposing. A
//! timeout after the request was sent is returned as [`ClientError::is_definite`] = false, so a
//! caller recording a history knows the write may have happened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mesh_core::identity::{self, PeerPolicy, TrustBundles};
use mesh_proto::ServiceName;
use mesh_proto::api::*;
use mesh_proto::resource::{Kind, Resource};
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

/// How the client decides to trust the server.
#[derive(Clone)]
pub enum Trust {
    /// Trust a control node whose chain includes the CA with this `sha256:` fingerprint.
    PinnedCa(String),
    /// Verify against bundles with a peer policy (node-to-node calls).
    Bundle {
        bundles: Arc<TrustBundles>,
        policy: PeerPolicy,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("{addr}: {message}")]
    Io { addr: String, message: String },
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{} ({status}): {}", .error.code, .error.message)]
    Api { status: StatusCode, error: ApiError },
    #[error("bad response from {addr}: {message}")]
    Decode { addr: String, message: String },
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// True if the request certainly had no effect on the server.
    pub fn is_definite(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Config(_) => true,
            ClientError::Api { status, error } => {
                status.is_client_error() || is_not_leader(*status, error)
            }
            ClientError::Io { .. } | ClientError::Timeout { .. } | ClientError::Decode { .. } => {
                false
            }
        }
    }

    /// The API error code, if the server answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

fn is_not_leader(status: StatusCode, e: &ApiError) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE && (e.code == "not_leader" || e.code == "no_leader")
}

pub struct RawResponse {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: Option<String>,
}

/// Idle connections per endpoint, with when they were last used. A connection idle longer than
/// [`POOL_IDLE`] is dropped rather than reused, so a server-side idle close cannot turn a fresh
/// request into an ambiguous failure.
type Pool = Mutex<HashMap<String, Vec<(tokio::time::Instant, SendRequest<Full<Bytes>>)>>>;
const POOL_IDLE: Duration = Duration::from_secs(5);

/// A control API client over a list of endpoints.
pub struct ApiClient {
    endpoints: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
    pool: Pool,
    /// Deadline for one attempt.
    pub attempt_timeout: Duration,
    /// How long to keep retrying definite failures (no leader, connection refused). Even at
    /// zero, one pass over every endpoint is made for connection failures.
    pub retry_for: Duration,
    /// Index of the endpoint that answered last; tried first.
    preferred: std::sync::atomic::AtomicUsize,
}

impl ApiClient {
    pub fn new(
        endpoints: Vec<String>,
        trust: Trust,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        Self::with_client_cert(endpoints, trust, token, None)
    }

    pub fn with_client_cert(
        endpoints: Vec<String>,
        trust: Trust,
        token: Option<String>,
        client_cert: Option<(&str, &str)>,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Config(
                "no API address given; set one with --api or `meshctl context set`".into(),
            ));
        }
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match trust {
            Trust::PinnedCa(fp) => identity::PinnedCaServerVerifier::new(fp),
            Trust::Bundle { bundles, policy } => {
                identity::SpiffeServerVerifier::new(bundles, policy)
            }
        };
        let tls = identity::client_config(verifier, client_cert, &[b"http/1.1"])
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Self::with_config(endpoints, Arc::new(tls), token)
    }

    /// A client over a ready TLS config (e.g. one presenting a hot-swappable SVID).
    pub fn with_config(
        endpoints: Vec<String>,
        tls: Arc<rustls::ClientConfig>,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Config(
                "no API address given; set one with --api or `meshctl context set`".into(),
            ));
        }
        Ok(Self {
            endpoints,
            tls,
            token,
            pool: Mutex::new(HashMap::new()),
            attempt_timeout: Duration::from_secs(15),
            retry_for: Duration::from_secs(10),
            preferred: Default::default(),
        })
    }

    /// A client with the same endpoints, trust and token, and its own connection pool.
    pub fn clone_settings(&self) -> ApiClient {
        ApiClient {
            endpoints: self.endpoints.clone(),
            tls: self.tls.clone(),
            token: self.token.clone(),
            pool: Mutex::new(HashMap::new()),
            attempt_timeout: self.attempt_timeout,
            retry_for: self.retry_for,
            preferred: Default::default(),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Send one request, retrying definite failures across endpoints until `retry_for` passes.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> Result<RawResponse, ClientError> {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut delay = Duration::from_millis(50);
        let n = self.endpoints.len();
        let first = self.preferred.load(Relaxed) % n;
        let mut tried = 0usize;
        loop {
            let i = (first + tried) % n;
            let addr = &self.endpoints[i];
            let res = self
                .attempt(
                    addr,
                    method.clone(),
                    path,
                    body.clone(),
                    headers,
                    timeout.unwrap_or(self.attempt_timeout),
                )
                .await;
            let retry = match &res {
                Err(e @ ClientError::Connect { .. }) => Some(e.to_string()),
                Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                    let e: Option<ApiError> = serde_json::from_slice(&r.body).ok();
                    match e {
                        Some(e) if is_not_leader(r.status, &e) => Some(e.message),
                        _ => None,
                    }
                }
                _ => None,
            };
            tried += 1;
            match retry {
                // A refused connection moves straight on to the next endpoint, once round.
                Some(_) if tried < n && matches!(res, Err(ClientError::Connect { .. })) => {}
                Some(why) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::debug!(%addr, %why, "retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                _ => {
                    if res.is_ok() {
                        self.preferred.store(i, Relaxed);
                    }
                    return res;
                }
            }
        }
    }

    async fn attempt(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        let pooled = self
            .pool
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(addr).and_then(Vec::pop));
        let mut sender = match pooled {
            Some((at, s)) if !s.is_closed() && at.elapsed() < POOL_IDLE => s,
            _ => tokio::time::timeout(timeout, self.connect(addr))
                .await
                .map_err(|_| ClientError::Connect {
                    addr: addr.into(),
                    message: format!("timed out after {timeout:?}"),
                })??,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr)
            .header(
                http::header::USER_AGENT,
                concat!("meshfed/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let exchange = async {
            sender.ready().await.map_err(|e| io_err(addr, e))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| io_err(addr, e))?;
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| io_err(addr, e))?
                .to_bytes();
            Ok::<_, ClientError>(RawResponse {
                status,
                body,
                content_type,
            })
        };
        let out = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.into(),
                timeout,
            })??;
        if let Ok(mut p) = self.pool.lock() {
            let v = p.entry(addr.to_owned()).or_default();
            if v.len() < 8 {
                v.push((tokio::time::Instant::now(), sender));
            }
        }
        Ok(out)
    }

    async fn connect(&self, addr: &str) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let cerr = |m: String| ClientError::Connect {
            addr: addr.into(),
            message: m,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| cerr(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| cerr(e.to_string()))?;
        let name =
            ServerName::try_from("control.meshfed.invalid").map_err(|e| cerr(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| cerr(format!("TLS handshake failed: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| cerr(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "api connection closed");
            }
        });
        Ok(sender)
    }

    /// A JSON call: non-2xx answers become [`ClientError::Api`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        self.call_with_timeout(method, path, body, None).await
    }

    async fn call_with_timeout<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let addr = self.endpoints[0].clone();
        let r = self.raw(method, path, body, &[], timeout).await?;
        if !r.status.is_success() {
            let error = serde_json::from_slice::<ApiError>(&r.body).unwrap_or_else(|_| ApiError {
                code: "http_error".into(),
                message: String::from_utf8_lossy(&r.body).chars().take(300).collect(),
                details: vec![],
            });
            return Err(ClientError::Api {
                status: r.status,
                error,
            });
        }
        serde_json::from_slice(&r.body).map_err(|e| ClientError::Decode {
            addr,
            message: e.to_string(),
        })
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.call(Method::GET, "/v1/status", None::<&()>).await
    }

    pub async fn apply(&self, req: &ApplyRequest) -> Result<ApplyResponse, ClientError> {
        self.call(Method::POST, "/v1/apply", Some(req)).await
    }

    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<ListResponse, ClientError> {
        let q = namespace
            .map(|n| format!("?namespace={n}"))
            .unwrap_or_default();
        self.call(
            Method::GET,
            &format!("/v1/resources/{kind}{q}"),
            None::<&()>,
        )
        .await
    }

    pub async fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Resource, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/resources/{kind}/{namespace}/{name}"),
            None::<&()>,
        )
        .await
    }

    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<DeleteResponse, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/resources/{kind}/{namespace}/{name}"),
            None::<&()>,
        )
        .await
    }

    /// Long-poll for changes after `from`, waiting up to `wait` on the server.
    pub async fn watch(&self, from: u64, wait: Duration) -> Result<WatchResponse, ClientError> {
        let path = format!("/v1/watch?from={from}&wait_ms={}", wait.as_millis());
        self.call_with_timeout(
            Method::GET,
            &path,
            None::<&()>,
            Some(wait + Duration::from_secs(10)),
        )
        .await
    }

    pub async fn sign(&self, req: &SignRequest) -> Result<SignResponse, ClientError> {
        self.call(Method::POST, "/v1/certificates", Some(req)).await
    }

    pub async fn join(&self, req: &JoinRequest) -> Result<JoinResponse, ClientError> {
        self.call(Method::POST, "/v1/join", Some(req)).await
    }

    pub async fn add_member(&self, node_id: u64) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call_with_timeout(
                Method::POST,
                "/v1/members",
                Some(&AddMemberRequest { node_id }),
                Some(Duration::from_secs(60)),
            )
            .await?;
        Ok(())
    }

    pub async fn remove_member(&self, node_id: u64) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/v1/members/{node_id}"),
                None::<&()>,
            )
            .await?;
        Ok(())
    }

    pub async fn create_credential(
        &self,
        req: &CredentialRequest,
    ) -> Result<CredentialResponse, ClientError> {
        self.call(Method::POST, "/v1/credentials", Some(req)).await
    }

    /// Register (or refresh) this agent's endpoint of `service` in the catalog; needs an agent
    /// credential that lists `service`. Identical re-registration answers `unchanged`.
    pub async fn register_endpoint(
        &self,
        service: &ServiceName,
        req: &CatalogRegistration,
    ) -> Result<ApplyResponse, ClientError> {
        self.call(Method::PUT, &format!("/v1/catalog/{service}"), Some(req))
            .await
    }

    /// Remove this agent's endpoint of `service` from the catalog (`404 not_found` if none).
    pub async fn deregister_endpoint(
        &self,
        service: &ServiceName,
    ) -> Result<DeleteResponse, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/catalog/{service}"),
            None::<&()>,
        )
        .await
    }

    /// Report what this agent has applied (agent credential).
    pub async fn report_status(
        &self,
        req: &AgentStatusReport,
    ) -> Result<AgentStatusAck, ClientError> {
        self.call(Method::POST, "/v1/agents/status", Some(req))
            .await
    }

    /// Print an intro token for one node (operator).
    pub async fn enroll_token(
        &self,
        req: &mesh_proto::enroll::EnrollTokenRequest,
    ) -> Result<mesh_proto::enroll::EnrollTokenResponse, ClientError> {
        self.call(Method::POST, "/v1/enroll/tokens", Some(req))
            .await
    }

    /// Redeem an intro token for an agent credential (no bearer needed).
    pub async fn enroll_redeem(
        &self,
        req: &mesh_proto::enroll::RedeemEnrollRequest,
    ) -> Result<mesh_proto::enroll::RedeemEnrollResponse, ClientError> {
        self.call(Method::POST, "/v1/enroll/redeem", Some(req))
            .await
    }

    /// Every intro token printed, used or not (operator).
    pub async fn enroll_list(&self) -> Result<mesh_proto::enroll::EnrollList, ClientError> {
        self.call(Method::GET, "/v1/enroll", None::<&()>).await
    }

    /// Revoke every credential of `node` (operator).
    pub async fn enroll_revoke(&self, node: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Method::DELETE, &format!("/v1/enroll/{node}"), None::<&()>)
            .await
    }

    /// Print a federation token for `peer` (operator).
    pub async fn federation_token(
        &self,
        req: &mesh_proto::federation::FederationTokenRequest,
    ) -> Result<mesh_proto::federation::FederationTokenResponse, ClientError> {
        self.call(Method::POST, "/v1/federation/tokens", Some(req))
            .await
    }

    /// Redeem a peer's federation token and record the peering (operator).
    pub async fn federation_join(
        &self,
        req: &mesh_proto::federation::FederationJoinRequest,
    ) -> Result<mesh_proto::federation::Peering, ClientError> {
        self.call(Method::POST, "/v1/federation/join", Some(req))
            .await
    }

    /// This cluster's peers (operator).
    pub async fn federation_peers(&self) -> Result<mesh_proto::federation::PeerList, ClientError> {
        self.call(Method::GET, "/v1/federation/peers", None::<&()>)
            .await
    }

    /// End a peering on this cluster's side (operator).
    pub async fn federation_remove(&self, peer: &str) -> Result<serde_json::Value, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/federation/peers/{peer}"),
            None::<&()>,
        )
        .await
    }

    /// Every agent's last status report (operator).
    pub async fn agents(&self) -> Result<AgentsResponse, ClientError> {
        self.call(Method::GET, "/v1/agents", None::<&()>).await
    }
}

mod gossip;

fn io_err(addr: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Io {
        addr: addr.into(),
        message: e.to_string(),
    }
}
