//! Bringing up the demo's pieces with the real flows an operator uses: a control cluster by
//! bootstrap and join tokens, and a workload host as a demo app plus a `meshd agent` with its
//! own agent credential and services file.
//!
//! Layout of cluster `o` (second octet): control nodes on `127.0.o.1..3` (Raft :7001, API
//! :7443); the workload on host `h` has its sidecar on `127.0.o.h` (inbound :15006, admin
//! :15000, upstream listener :9001) and its app on `127.0.0.1:<20000 + 100·(o−200) + h>`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mesh_proto::api::CredentialRequest;

use super::procs::Procs;
use crate::client::{ApiClient, Trust};

/// How long one start-up step may take.
const STEP: Duration = Duration::from_secs(60);

/// A running control cluster.
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) octet: u8,
    pub(crate) api: Vec<SocketAddr>,
    pub(crate) ca_fingerprint: String,
    pub(crate) token: String,
    pub(crate) client: Arc<ApiClient>,
}

/// A running workload: demo app and sidecar.
pub(crate) struct Host {
    pub(crate) zone: String,
    pub(crate) agent: usize,
    /// Where the app calls its upstream, if it has one.
    pub(crate) upstream: Option<SocketAddr>,
}

fn value_of(log: &str, key: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

/// Bootstrap node 1, join nodes 2..=`n` with the join token.
pub(crate) async fn start_cluster(
    procs: &mut Procs,
    data: &Path,
    name: &str,
    octet: u8,
    n: u8,
) -> anyhow::Result<Cluster> {
    let mut api = Vec::new();
    let (mut token, mut join, mut fp) = (String::new(), String::new(), String::new());
    for i in 1..=n {
        let raft = SocketAddr::from(([127, 0, octet, i], 7001));
        let addr = SocketAddr::from(([127, 0, octet, i], 7443));
        let mut args: Vec<String> = vec![
            "control".into(),
            "--name".into(),
            format!("{name}-{i}"),
            "--data-dir".into(),
            data.join(format!("{name}-{i}")).display().to_string(),
            "--raft-addr".into(),
            raft.to_string(),
            "--api-addr".into(),
            addr.to_string(),
        ];
        if i == 1 {
            args.extend([
                "--bootstrap".into(),
                "--cluster".into(),
                name.into(),
                "--trust-domain".into(),
                format!("{name}.mesh"),
            ]);
        } else {
            args.extend(["--join-token".into(), join.clone()]);
        }
        let h = procs.spawn(&format!("{name}-control-{i}"), args)?;
        if i == 1 {
            let log = procs.wait_for_log(h, "MESHFED_JOIN_TOKEN=", STEP).await?;
            token = value_of(&log, "MESHFED_TOKEN=").context("no operator token printed")?;
            join = value_of(&log, "MESHFED_JOIN_TOKEN=").context("no join token printed")?;
            fp = value_of(&log, "MESHFED_CA_FINGERPRINT=").context("no CA fingerprint")?;
        } else {
            procs.wait_for_log(h, "joined cluster", STEP).await?;
        }
        api.push(addr);
    }
    let client = ApiClient::new(
        api.iter().map(ToString::to_string).collect(),
        Trust::PinnedCa(fp.clone()),
        Some(token.clone()),
    )?;
    Ok(Cluster {
        name: name.to_owned(),
        octet,
        api,
        ca_fingerprint: fp,
        token,
        client: Arc::new(client),
    })
}

/// What to start on one workload host.
pub(crate) struct HostSpec<'a> {
    pub(crate) host: u8,
    pub(crate) service: &'a str,
    pub(crate) zone: &'a str,
    /// The service this one calls through `127.0.o.h:9001`.
    pub(crate) calls: Option<&'a str>,
}

/// Start the app and sidecar of `spec` in `c`.
pub(crate) async fn start_host(
    procs: &mut Procs,
    data: &Path,
    c: &Cluster,
    spec: &HostSpec<'_>,
) -> anyhow::Result<Host> {
    let ip = [127, 0, c.octet, spec.host];
    let node = format!("{}-host-{}", c.name, spec.host);
    let app_port = 20000 + 100 * u16::from(c.octet.saturating_sub(200)) + u16::from(spec.host);
    procs.spawn(
        &format!("{node}-app"),
        vec![
            "demo-app".into(),
            "--listen".into(),
            format!("127.0.0.1:{app_port}"),
            "--name".into(),
            format!("{}@{}/{}", spec.service, c.name, spec.zone),
        ],
    )?;
    let token = c
        .client
        .create_credential(&CredentialRequest {
            node: node.clone(),
            services: vec![spec.service.to_owned()],
            ttl_secs: 0,
        })
        .await?
        .token;
    let dir = data.join(&node);
    std::fs::create_dir_all(&dir)?;
    let token_file = dir.join("agent.token");
    std::fs::write(&token_file, token)?;
    let upstream = spec.calls.map(|_| SocketAddr::from((ip, 9001)));
    let mut yaml = format!(
        "services:\n  - name: {}\n    port: {app_port}\n    inbound: {}\n    locality: {{region: {}, zone: {}}}\n    health: {{tcp: true, interval: 500ms, timeout: 300ms}}\n",
        spec.service,
        SocketAddr::from((ip, 15006)),
        c.name,
        spec.zone
    );
    if let (Some(callee), Some(listen)) = (spec.calls, upstream) {
        yaml.push_str(&format!(
            "    upstreams:\n      - service: {callee}\n        listen: {listen}\n"
        ));
    }
    let services = dir.join("services.yaml");
    std::fs::write(&services, yaml)?;
    let admin = SocketAddr::from((ip, 15000));
    let control: Vec<String> = c.api.iter().map(ToString::to_string).collect();
    let agent = procs.spawn(
        &format!("{node}-agent"),
        vec![
            "agent".into(),
            "--name".into(),
            node.clone(),
            "--data-dir".into(),
            dir.join("agent").display().to_string(),
            "--control".into(),
            control.join(","),
            "--ca-fingerprint".into(),
            c.ca_fingerprint.clone(),
            "--token-file".into(),
            token_file.display().to_string(),
            "--services".into(),
            services.display().to_string(),
            "--admin-addr".into(),
            admin.to_string(),
        ],
    )?;
    procs.wait_for_log(agent, "agent running", STEP).await?;
    Ok(Host {
        zone: spec.zone.to_owned(),
        agent,
        upstream,
    })
}
