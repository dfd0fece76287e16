//! A control plane of real `meshd control` processes on loopback, for the chaos tests and the
//! benchmarks: bootstrap one node, join the rest through the real join-token flow, and talk to
//! them with the same API client meshctl uses.
//!
//! Node `i` (1-based) of cluster `c` listens on `127.0.c.i`: Raft on 7001, API on 7443. Each test
//! picks its own cluster number so tests can run in parallel without port clashes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mesh_node::client::{ApiClient, Trust};

use crate::harness::{ProcSpec, TestEnv, bin_path, node_addr};

pub const RAFT_PORT: u16 = 7001;
pub const API_PORT: u16 = 7443;

#[derive(Debug, Clone)]
pub struct ControlNodeRef {
    pub name: String,
    pub handle: usize,
    pub api: SocketAddr,
    pub raft: SocketAddr,
}

/// How to run the cluster's processes.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Run every meshd under `taskset -c <cpus>` (taskset execs, so the pid, signals and
    /// kill -9 are the daemon's own).
    pub cpus: Option<String>,
    /// The meshd binary; default: [`bin_path`]`("meshd")`.
    pub meshd: Option<std::path::PathBuf>,
    /// Extra `meshd control` flags for every node.
    pub extra_args: Vec<String>,
}

/// A running control cluster and its bootstrap secrets.
pub struct ControlCluster {
    pub env: TestEnv,
    pub cluster: u8,
    pub name: String,
    pub nodes: Vec<ControlNodeRef>,
    pub token: String,
    pub join_token: String,
    pub ca_fingerprint: String,
}

/// The workload the control-plane tests and benchmarks write: a ServiceExport named `key`
/// whose label `v` carries `value`, so a read tells which write it observed.
pub fn export_resource(key: &str, value: u64) -> mesh_proto::resource::Resource {
    use mesh_proto::resource::{API_VERSION, Metadata, Resource};
    Resource {
        api_version: API_VERSION.into(),
        kind: "ServiceExport".into(),
        metadata: Metadata {
            name: key.into(),
            namespace: "default".into(),
            labels: std::collections::BTreeMap::from([("v".to_string(), value.to_string())]),
            version: None,
        },
        spec: serde_json::json!({"service": key, "peers": ["west"]}),
    }
}

fn value_of(log: &str, key: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

impl ControlCluster {
    /// Start `n` control nodes of cluster number `cluster` and wait until all are voters.
    /// `MESHFED_TASKSET=<cpus>` in the environment pins them.
    pub fn start(test: &str, cluster: u8, n: u8) -> anyhow::Result<Self> {
        let opts = ClusterOptions {
            cpus: std::env::var("MESHFED_TASKSET").ok(),
            ..ClusterOptions::default()
        };
        Self::start_with(test, cluster, n, opts)
    }

    /// Like [`ControlCluster::start`], with explicit options.
    pub fn start_with(
        test: &str,
        cluster: u8,
        n: u8,
        opts: ClusterOptions,
    ) -> anyhow::Result<Self> {
        let mut env = TestEnv::new(test)?;
        let meshd = match opts.meshd {
            Some(p) => p,
            None => bin_path("meshd")?,
        };
        let cpus = opts.cpus;
        let name = format!("c{cluster}");
        let mut nodes = Vec::new();
        for i in 1..=n {
            let node_name = format!("n{i}");
            let api = node_addr(cluster, i, API_PORT);
            let raft = node_addr(cluster, i, RAFT_PORT);
            let data = env.data_dir(&format!("{name}-{node_name}"));
            let spec = match cpus.clone() {
                Some(cpus) => ProcSpec::new(format!("{name}-{node_name}"), "taskset").args([
                    "-c".to_string(),
                    cpus,
                    meshd.display().to_string(),
                ]),
                None => ProcSpec::new(format!("{name}-{node_name}"), &meshd),
            };
            let spec = spec.args([
                "control".to_string(),
                "--name".into(),
                node_name.clone(),
                "--data-dir".into(),
                data.display().to_string(),
                "--raft-addr".into(),
                raft.to_string(),
                "--api-addr".into(),
                api.to_string(),
            ]);
            let spec = spec.args(opts.extra_args.iter().cloned());
            nodes.push((node_name, spec, api, raft));
        }
        let mut refs = Vec::new();
        let (mut token, mut join_token, mut fp) = (String::new(), String::new(), String::new());
        for (i, (node_name, spec, api, raft)) in nodes.into_iter().enumerate() {
            let spec = if i == 0 {
                spec.args([
                    "--bootstrap",
                    "--cluster",
                    &name,
                    "--trust-domain",
                    &format!("{name}.mesh"),
                ])
            } else {
                spec.args(["--join-token", &join_token])
            };
            let handle = env.spawn(spec)?;
            let proc = env.proc(handle);
            if i == 0 {
                proc.wait_for_log("MESHFED_JOIN_TOKEN=", Duration::from_secs(30))
                    .context("bootstrap node did not print its tokens")?;
                let log = proc.log_text();
                token = value_of(&log, "MESHFED_TOKEN=").context("no operator token printed")?;
                join_token =
                    value_of(&log, "MESHFED_JOIN_TOKEN=").context("no join token printed")?;
                fp = value_of(&log, "MESHFED_CA_FINGERPRINT=")
                    .context("no CA fingerprint printed")?;
            } else {
                proc.wait_for_log("joined cluster", Duration::from_secs(60))
                    .with_context(|| format!("{node_name} did not join"))?;
            }
            refs.push(ControlNodeRef {
                name: node_name,
                handle,
                api,
                raft,
            });
        }
        Ok(Self {
            env,
            cluster,
            name,
            nodes: refs,
            token,
            join_token,
            ca_fingerprint: fp,
        })
    }

    /// A client over every node's API, with the operator token.
    pub fn client(&self) -> anyhow::Result<Arc<ApiClient>> {
        self.client_on(&(0..self.nodes.len()).collect::<Vec<_>>())
    }

    /// A client over some nodes' APIs.
    pub fn client_on(&self, idx: &[usize]) -> anyhow::Result<Arc<ApiClient>> {
        let eps = idx.iter().map(|&i| self.nodes[i].api.to_string()).collect();
        Ok(Arc::new(ApiClient::new(
            eps,
            Trust::PinnedCa(self.ca_fingerprint.clone()),
            Some(self.token.clone()),
        )?))
    }

    /// A client with another bearer token.
    pub fn client_with_token(&self, token: Option<String>) -> anyhow::Result<ApiClient> {
        let eps = self.nodes.iter().map(|n| n.api.to_string()).collect();
        Ok(ApiClient::new(
            eps,
            Trust::PinnedCa(self.ca_fingerprint.clone()),
            token,
        )?)
    }

    /// Index of the node that the running nodes agree is leader, waiting up to `timeout`.
    pub async fn leader(&self, running: &[usize], timeout: Duration) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for &i in running {
                let mut c = (*self.client_on(&[i])?).clone_settings();
                c.retry_for = Duration::ZERO;
                c.attempt_timeout = Duration::from_secs(2);
                if let Ok(s) = c.status().await {
                    seen.push(s.leader_id);
                }
            }
            if let Some(Some(id)) = seen.first().copied()
                && seen.len() == running.len()
                && seen.iter().all(|l| *l == Some(id))
                && let Some(i) = self.index_of_node_id(id).await
                && running.contains(&i)
            {
                return Ok(i);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no agreed leader among nodes {running:?} within {timeout:?}; saw {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Map a Raft node id to our node index through any node's status.
    pub async fn index_of_node_id(&self, id: u64) -> Option<usize> {
        for i in 0..self.nodes.len() {
            let mut c = self.client_on(&[i]).ok()?.clone_settings();
            c.retry_for = Duration::ZERO;
            c.attempt_timeout = Duration::from_secs(1);
            if let Ok(s) = c.status().await {
                let m = s.members.iter().find(|m| m.node_id == id)?;
                return self
                    .nodes
                    .iter()
                    .position(|n| n.api.to_string() == m.api_addr);
            }
        }
        None
    }

    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        let h = self.nodes[i].handle;
        self.env.proc(h).kill9()
    }
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let h = self.nodes[i].handle;
        self.env.proc(h).restart()
    }
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        let h = self.nodes[i].handle;
        self.env.proc(h).stop()
    }
    pub fn cont(&mut self, i: usize) -> anyhow::Result<()> {
        let h = self.nodes[i].handle;
        self.env.proc(h).cont()
    }

    /// Wait until node `i` answers status and knows a leader.
    pub async fn wait_ready(&self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let c = self.client_on(&[i])?;
        let what = format!("node {} ready", self.nodes[i].name);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(s) = c.status().await
                && s.leader_id.is_some()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{what}: timed out after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the leader reports every member replicated to within `slack` entries of its
    /// applied index: the cluster is healthy again, not merely answering.
    pub async fn wait_caught_up(&self, slack: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        loop {
            let mut last = String::new();
            if let Ok(l) = self.leader(&all, Duration::from_secs(2)).await {
                let c = self.client_on(&[l])?;
                if let Ok(s) = c.status().await {
                    let applied = s.commit_index.unwrap_or(0);
                    let lagging: Vec<String> = s
                        .members
                        .iter()
                        .filter(|m| m.matched_index.is_none_or(|i| i + slack < applied))
                        .map(|m| format!("{}@{:?}", m.name, m.matched_index))
                        .collect();
                    if lagging.is_empty() {
                        return Ok(());
                    }
                    last = format!("applied {applied}, lagging {lagging:?}");
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("members did not catch up within {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Path of the meshctl binary, for tests that drive the CLI.
    pub fn meshctl(&self) -> anyhow::Result<std::path::PathBuf> {
        bin_path("meshctl")
    }

    /// Run `meshctl <args>` against this cluster (first node, operator token, CA pin, no
    /// context file): exit code, stdout and stderr.
    pub fn run_meshctl(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = std::process::Command::new(self.meshctl()?)
            .args(args)
            .env("MESHCTL_CONFIG", self.env.root().join("no-config.json"))
            .env("MESHFED_API", self.nodes[0].api.to_string())
            .env("MESHFED_TOKEN", &self.token)
            .env("MESHFED_CA_FINGERPRINT", &self.ca_fingerprint)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
