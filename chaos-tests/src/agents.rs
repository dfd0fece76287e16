//! Sidecars on top of a [`ControlCluster`]: start a `meshd demo-app` and its `meshd agent` with
//! a fresh agent credential, plus the small HTTP and polling helpers the data-plane tests share.
//!
//! Host `h` of test cluster `c` runs its sidecar on `127.0.c.h` (inbound :15006, admin :15000);
//! its app listens on `127.0.0.1:<app_port>`. This module knows the agent's flags and services
//! file, and nothing of what a test asserts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use mesh_node::client::ApiClient;
use mesh_proto::api::CredentialRequest;

use crate::control::ControlCluster;
use crate::harness::{ProcSpec, bin_path, node_addr};

pub const INBOUND_PORT: u16 = 15006;
pub const ADMIN_PORT: u16 = 15000;

/// One host to start: a service, its app and its sidecar.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Node name, as in its credential.
    pub node: String,
    pub service: String,
    /// Last octet of the sidecar's loopback address.
    pub host: u8,
    pub app_port: u16,
    pub region: String,
    pub zone: String,
    /// Extra YAML lines of the service entry (e.g. `health:` or `upstreams:`), indented by 4.
    pub extra_yaml: String,
}

/// A started host.
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub node: String,
    pub service: String,
    /// Harness handles.
    pub agent: usize,
    pub app: usize,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub data: PathBuf,
    pub token: String,
}

/// Create a credential for `spec`, start its demo app and its agent, and wait until the agent
/// reports ready.
pub async fn start_agent(
    cl: &mut ControlCluster,
    op: &ApiClient,
    spec: &AgentSpec,
) -> anyhow::Result<AgentRef> {
    let meshd = bin_path("meshd")?;
    let token = op
        .create_credential(&CredentialRequest {
            node: spec.node.clone(),
            services: vec![spec.service.clone()],
            ttl_secs: 0,
        })
        .await?
        .token;
    let inbound = node_addr(cl.cluster, spec.host, INBOUND_PORT);
    let admin = node_addr(cl.cluster, spec.host, ADMIN_PORT);
    let data = cl.env.data_dir(&format!("agent-{}", spec.node));
    let token_file = cl.env.root().join(format!("{}.token", spec.node));
    std::fs::write(&token_file, &token)?;
    let services_file = cl.env.root().join(format!("{}.services.yaml", spec.node));
    std::fs::write(
        &services_file,
        format!(
            "services:\n  - name: {}\n    port: {}\n    inbound: {inbound}\n    \
             locality: {{region: {}, zone: {}}}\n{}",
            spec.service, spec.app_port, spec.region, spec.zone, spec.extra_yaml
        ),
    )?;
    let app = cl.env.spawn(
        ProcSpec::new(format!("app-{}", spec.service), &meshd).args([
            "demo-app".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", spec.app_port),
            "--name".into(),
            spec.service.clone(),
        ]),
    )?;
    let control: Vec<String> = cl.nodes.iter().map(|n| n.api.to_string()).collect();
    let agent = cl
        .env
        .spawn(ProcSpec::new(format!("agent-{}", spec.node), &meshd).args([
            "agent".to_string(),
            "--name".into(),
            spec.node.clone(),
            "--data-dir".into(),
            data.display().to_string(),
            "--control".into(),
            control.join(","),
            "--ca-fingerprint".into(),
            cl.ca_fingerprint.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--services".into(),
            services_file.display().to_string(),
            "--admin-addr".into(),
            admin.to_string(),
        ]))?;
    wait_for(
        &format!("agent {} ready", spec.node),
        DEADLINE,
        || async move { Ok((http_get(admin, "/ready").await?.status == 200).then_some(())) },
    )
    .await?;
    Ok(AgentRef {
        node: spec.node.clone(),
        service: spec.service.clone(),
        agent,
        app,
        inbound,
        admin,
        data,
        token,
    })
}

/// The default deadline of a wait.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Poll `f` every 100 ms until it returns `Some`, or fail after `deadline` naming `what` and
/// the last result.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let until = Instant::now() + deadline;
    loop {
        let last = match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > until {
            bail!("timed out after {deadline:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// The HTTP client the data-plane tests share.
pub use crate::sidecars::{Answer, get as http_get};
