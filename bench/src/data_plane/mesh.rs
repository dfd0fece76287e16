//! The meshfed path under test: one `meshd control` node for the SVIDs and the policy, and two
//! `meshd agent` sidecars, all release builds pinned with `taskset`, started the way the
//! chaos tier's data-plane tests start them (credential → token file → services file → agent).
//!
//! ```text
//!  client ─► sidecar A (service `web`) outbound 127.0.0.1:<port>, plain HTTP/1.1
//!              ══ mTLS TLS 1.3, SVIDs from the control node, pooled ══►
//!            sidecar B (service `api`) inbound 127.0.61.11:15006 ─► authz (ALLOW web) ─► app
//! ```
//!
//! Control node on `127.0.61.1`, sidecar admin ports on `127.0.61.{10,11}:15000`. This module
//! waits on conditions with deadlines (ready endpoints, the first 200) and never sleeps for a
//! fixed time; it does not measure. Everything it starts lives in the returned
//! `ControlCluster`'s environment and dies when that is dropped.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mesh_chaos_tests::control::{ClusterOptions, ControlCluster};
use mesh_chaos_tests::harness::{ProcSpec, free_port};
use mesh_proto::api::{ApplyRequest, CredentialRequest};
use mesh_proto::resource::{API_VERSION, Metadata, Resource};

use super::wait_for;

/// Test-cluster number of the bench's mesh (`127.0.61.x`).
const CLUSTER: u8 = 61;
/// How long each setup step may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// A running meshfed path.
pub(crate) struct MeshPath {
    pub(crate) cluster: ControlCluster,
    /// Sidecar A's outbound listener for `api`.
    pub(crate) entry: SocketAddr,
    /// Handles of sidecar A and sidecar B in `cluster.env`.
    pub(crate) sidecars: [usize; 2],
}

/// Start control, sidecars and policy, and wait until a GET through the path answers 200.
pub(crate) async fn start(meshd: &Path, app_port: u16, cpus: &str) -> anyhow::Result<MeshPath> {
    let opts = ClusterOptions {
        cpus: Some(cpus.to_owned()),
        meshd: Some(meshd.to_owned()),
        ..ClusterOptions::default()
    };
    let mut cl = ControlCluster::start_with("bench_data_plane", CLUSTER, 1, opts)?;
    let op = cl.client()?;
    let td = format!("{}.mesh", cl.name);
    let control: Vec<String> = cl.nodes.iter().map(|n| n.api.to_string()).collect();
    let host = |h: u8| IpAddr::V4(Ipv4Addr::new(127, 0, CLUSTER, h));
    let (web_host, api_host) = (host(10), host(11));
    let api_inbound = SocketAddr::new(api_host, 15006);
    let entry = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?,
    );
    // web's own app is never called; the port only has to be valid.
    let web_app_port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let mut sidecars = [0; 2];
    for (i, (svc, ip, port, upstreams)) in [
        (
            "web",
            web_host,
            web_app_port,
            format!(
                "    upstreams:\n      - service: api\n        listen: {entry}\n        \
                 endpoints: [\"{api_inbound}\"]\n"
            ),
        ),
        ("api", api_host, app_port, String::new()),
    ]
    .into_iter()
    .enumerate()
    {
        let token = op
            .create_credential(&CredentialRequest {
                node: format!("host-{svc}"),
                services: vec![svc.into()],
                ttl_secs: 0,
            })
            .await
            .with_context(|| format!("create the agent credential for {svc}"))?
            .token;
        let data = cl.env.data_dir(&format!("agent-{svc}"));
        let token_file = cl.env.root().join(format!("{svc}.token"));
        std::fs::write(&token_file, token)?;
        let services_file = cl.env.root().join(format!("{svc}.services.yaml"));
        std::fs::write(
            &services_file,
            format!(
                "services:\n  - name: {svc}\n    port: {port}\n    inbound: {}\n    \
                 locality: {{region: r1, zone: a}}\n{upstreams}",
                SocketAddr::new(ip, 15006)
            ),
        )?;
        let spec = ProcSpec::new(format!("agent-{svc}"), "taskset")
            .args([
                "-c".to_string(),
                cpus.to_owned(),
                meshd.display().to_string(),
            ])
            .args([
                "agent".to_string(),
                "--name".into(),
                format!("host-{svc}"),
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
                SocketAddr::new(ip, 15000).to_string(),
            ]);
        sidecars[i] = cl.env.spawn(spec)?;
    }
    for ip in [web_host, api_host] {
        let admin = SocketAddr::new(ip, 15000);
        wait_for(
            &format!("sidecar on {ip} ready"),
            STEP_DEADLINE,
            move || ready(admin),
        )
        .await?;
    }
    let policy = Resource {
        api_version: API_VERSION.into(),
        kind: "AuthorizationPolicy".into(),
        metadata: Metadata {
            name: "api-allow-web".into(),
            namespace: "default".into(),
            labels: BTreeMap::new(),
            version: None,
        },
        spec: serde_json::json!({
            "targetRef": {"kind": "Service", "name": "api"},
            "action": "ALLOW",
            "rules": [{"from": [{"principals": [format!("spiffe://{td}/ns/default/sa/web")]}]}],
        }),
    };
    op.apply(&ApplyRequest {
        resources: vec![policy],
        dry_run: false,
    })
    .await
    .context("apply the AuthorizationPolicy allowing web → api")?;
    wait_for("a 200 through both sidecars", STEP_DEADLINE, move || {
        super::loadgen::probe(entry).map(|(status, _)| status == 200)
    })
    .await?;
    Ok(MeshPath {
        cluster: cl,
        entry,
        sidecars,
    })
}

/// `GET /ready` on a sidecar's admin port answers 200.
fn ready(admin: SocketAddr) -> anyhow::Result<bool> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(
        format!("GET /ready HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut head = [0u8; 16];
    let n = s.read(&mut head)?;
    Ok(head[..n].starts_with(b"HTTP/1.1 200"))
}
