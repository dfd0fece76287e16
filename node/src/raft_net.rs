//! Raft RPC transport: TLS 1.3 over TCP, mutual authentication with control-role SVIDs only,
//! and length-prefixed frames in the `mesh-proto` codec.
//!
//! ```text
//!  leader (RaftConn, one per target)              follower (serve)
//!  ── frame(RaftRequest) ───────────────────────▶ verify client SVID = spiffe://<td>/mesh/control/*
//!  ◀────────────────────────── frame(RaftReply) ── raft.append_entries / vote / install_snapshot
//! ```
//! A connection carries one request at a time and is re-dialled after any error. Every call has
//! openraft's deadline (`RPCOption::hard_ttl`), and the server bounds connections and frame size.
//! This module does not decide anything: membership and elections are openraft's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::{self, PeerPolicy, SvidSlot, TrustBundles};
use mesh_proto::codec;
use mesh_proto::{NodeName, SpiffeId, TrustDomain};
use mesh_raft_store::{ControlNode, Raft, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Largest Raft frame accepted. Snapshot chunks are 3 MiB by default; append batches are capped
/// by openraft's `max_payload_entries`.
const MAX_RAFT_FRAME: usize = 32 * 1024 * 1024;
/// Concurrent inbound Raft connections (peers keep one each; the rest is slack for redials).
const MAX_RAFT_CONNS: usize = 64;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Serialize, Deserialize)]
enum RaftReply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
}

/// What a node needs to dial its peers: its own SVID (hot-swappable) and the cluster bundle.
#[derive(Clone)]
pub struct TlsIdentity {
    pub trust_domain: TrustDomain,
    pub bundles: Arc<TrustBundles>,
    pub svid: Arc<SvidSlot>,
}

impl TlsIdentity {
    /// A client config that accepts only the control node called `peer`.
    pub fn client_for_control(&self, peer: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let policy = match NodeName::new(peer) {
            Ok(n) => PeerPolicy::Exactly(SpiffeId::control(&self.trust_domain, &n)),
            Err(_) => PeerPolicy::RoleControl(self.trust_domain.clone()),
        };
        let verifier = identity::SpiffeServerVerifier::new(self.bundles.clone(), policy);
        Ok(Arc::new(identity::client_config_with_slot(
            verifier,
            self.svid.clone(),
            &[],
        )?))
    }

    /// A server config that requires a control-role client certificate.
    pub fn server_for_control(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let verifier = identity::SpiffeClientVerifier::new(
            self.bundles.clone(),
            PeerPolicy::RoleControl(self.trust_domain.clone()),
            true,
        );
        Ok(Arc::new(identity::server_config_with_slot(
            self.svid.clone(),
            Some(verifier),
            &[],
        )?))
    }
}

pub struct NetworkFactory {
    pub tls: TlsIdentity,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = RaftConn;

    async fn new_client(&mut self, target: u64, node: &ControlNode) -> RaftConn {
        RaftConn {
            target,
            addr: node.raft_addr.clone(),
            tls: self
                .tls
                .client_for_control(&node.name)
                .map_err(|e| e.to_string()),
            stream: None,
        }
    }
}

/// A connection to one peer's Raft port.
pub struct RaftConn {
    target: u64,
    addr: String,
    tls: Result<Arc<rustls::ClientConfig>, String>,
    stream: Option<tokio_rustls::client::TlsStream<TcpStream>>,
}

/// Why an RPC did not get a reply. `Connect` means the peer is unreachable (openraft backs off).
enum CallError {
    Connect(io::Error),
    Io(io::Error),
}

impl RaftConn {
    async fn call(&mut self, req: &RaftRequest, ttl: Duration) -> Result<RaftReply, CallError> {
        let body = codec::encode(req).map_err(|e| CallError::Io(io::Error::other(e)))?;
        let out = tokio::time::timeout(ttl, self.exchange(&body)).await;
        let res = match out {
            Ok(r) => r,
            Err(_) => Err(CallError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("raft rpc to {} timed out after {ttl:?}", self.addr),
            ))),
        };
        if res.is_err() {
            self.stream = None;
        }
        res
    }

    async fn exchange(&mut self, body: &[u8]) -> Result<RaftReply, CallError> {
        if self.stream.is_none() {
            self.stream = Some(self.connect().await.map_err(CallError::Connect)?);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(CallError::Connect(io::Error::other("no connection")));
        };
        write_frame(stream, body).await.map_err(CallError::Io)?;
        let reply = read_frame(stream, MAX_RAFT_FRAME)
            .await
            .map_err(CallError::Io)?;
        codec::decode(&reply).map_err(|e| CallError::Io(io::Error::other(e)))
    }

    async fn connect(&self) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tls = self.tls.clone().map_err(io::Error::other)?;
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("control.meshfed.invalid").map_err(io::Error::other)?;
        tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
    }

    fn rpc_error<E: std::error::Error>(&self, e: CallError) -> RPCError<u64, ControlNode, E> {
        match e {
            CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

fn mismatched<E: std::error::Error>() -> RPCError<u64, ControlNode, E> {
    RPCError::Network(NetworkError::new(&io::Error::other(
        "peer sent a reply of the wrong type",
    )))
}

impl RaftNetwork<TypeConfig> for RaftConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, ControlNode, RaftError<u64>>> {
        match self
            .call(&RaftRequest::Append(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::Append(Ok(r))) => Ok(r),
            Ok(RaftReply::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(mismatched()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, ControlNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .call(&RaftRequest::Snapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftReply::Snapshot(Ok(r))) => Ok(r),
            Ok(RaftReply::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(mismatched()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, ControlNode, RaftError<u64>>> {
        match self.call(&RaftRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftReply::Vote(Ok(r))) => Ok(r),
            Ok(RaftReply::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(mismatched()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }
}

/// Serve Raft RPCs on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, raft: Raft) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_RAFT_CONNS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "raft accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many raft connections; refusing");
            continue;
        };
        let acceptor = acceptor.clone();
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_conn(acceptor, tcp, peer, raft).await {
                tracing::debug!(%peer, error = %e, "raft connection closed");
            }
        });
    }
}

async fn serve_conn(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    raft: Raft,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out"))??;
    tracing::debug!(%peer, "raft peer connected");
    loop {
        let body = match read_frame(&mut tls, MAX_RAFT_FRAME).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let req: RaftRequest = codec::decode(&body).map_err(io::Error::other)?;
        let reply = match req {
            RaftRequest::Append(r) => RaftReply::Append(raft.append_entries(r).await),
            RaftRequest::Vote(r) => RaftReply::Vote(raft.vote(r).await),
            RaftRequest::Snapshot(r) => RaftReply::Snapshot(raft.install_snapshot(r).await),
        };
        let out = codec::encode(&reply).map_err(io::Error::other)?;
        write_frame(&mut tls, &out).await?;
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, body: &[u8]) -> io::Result<()> {
    let framed = codec::frame(body).map_err(io::Error::other)?;
    s.write_all(&framed).await?;
    s.flush().await
}

async fn read_frame<S: AsyncRead + Unpin>(s: &mut S, limit: usize) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let len = codec::frame_len(header, limit).map_err(io::Error::other)?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(body)
}
