//! A data-plane fixture on the harness: a control cluster, then per workload a `meshd demo-app`
//! and a `meshd agent` sidecar with an agent credential of its own, on `127.0.<cluster>.<host>`.
//! Also the small HTTP client and metric reader the data-plane tests share.
//!
//! Layout: the sidecar of a workload on host `h` listens on `127.0.c.h:15006` (mTLS inbound)
//! and `127.0.c.h:15000` (admin); its upstream listeners on `127.0.c.h:<port>`; its app on
//! `127.0.0.1:<20000 + 100c + h>`. It knows nothing of the policies a test applies.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh_node::client::ApiClient;
use mesh_proto::api::{ApplyRequest, CredentialRequest};
use mesh_proto::resource::Resource;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::control::ControlCluster;
use crate::harness::{ProcSpec, bin_path};

/// How long fixtures and tests wait for a condition.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One workload to start.
#[derive(Debug, Clone)]
pub struct Workload {
    pub service: String,
    /// Last octet of the host address.
    pub host: u8,
    /// `meshd demo-app --fail-percent`.
    pub fail_percent: u8,
    pub upstreams: Vec<UpstreamSpec>,
    /// Port of a `Host`-routing HTTP proxy listener on the host's address.
    pub http_proxy_port: Option<u16>,
    /// Run the demo app as a TCP echo (`meshd demo-app --tcp`).
    pub tcp_app: bool,
    /// Locality zone (region is always `r1`).
    pub zone: &'static str,
}

/// One upstream listener of a workload.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub service: String,
    pub port: u16,
    /// Static endpoints: inbound listeners of the upstream's sidecars.
    pub endpoints: Vec<SocketAddr>,
    /// `protocol:` of the upstream (`auto` when `None`).
    pub protocol: Option<&'static str>,
}

/// A started workload.
#[derive(Debug, Clone)]
pub struct Host {
    pub service: String,
    pub ip: [u8; 4],
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub app: SocketAddr,
    /// Harness handles.
    pub agent: usize,
    pub app_proc: usize,
    pub data: PathBuf,
}

/// A control plane and sidecars.
pub struct Sidecars {
    pub cl: ControlCluster,
    pub op: Arc<ApiClient>,
    pub trust_domain: String,
    pub hosts: Vec<Host>,
}

/// An answer read to the end.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The head, lower-cased.
    pub headers: String,
    pub body: String,
}

impl Workload {
    pub fn new(service: &str, host: u8) -> Self {
        Self {
            service: service.to_owned(),
            host,
            fail_percent: 0,
            upstreams: Vec::new(),
            http_proxy_port: None,
            tcp_app: false,
            zone: "a",
        }
    }
}

/// The inbound listener of the workload on `host` of test cluster `cluster`.
pub fn inbound_of(cluster: u8, host: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, cluster, host], 15006))
}

impl Sidecars {
    /// Start the control plane of test cluster `cluster`, then every workload; returns when
    /// every sidecar is ready. Sidecars ask for SVIDs of `svid_ttl_secs`.
    pub async fn start(
        test: &str,
        test_file: &str,
        cluster: u8,
        control_nodes: u8,
        svid_ttl_secs: u64,
        workloads: &[Workload],
    ) -> anyhow::Result<Self> {
        let mut cl = ControlCluster::start(test, cluster, control_nodes)?;
        cl.env.set_reproduce(format!(
            "cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test {test_file} \
             {test} -- --nocapture"
        ));
        let op = cl.client()?;
        let trust_domain = format!("{}.mesh", cl.name);
        let control: Vec<String> = cl.nodes.iter().map(|n| n.api.to_string()).collect();
        let meshd = bin_path("meshd")?;
        let mut hosts = Vec::new();
        for w in workloads {
            let ip = [127, 0, cluster, w.host];
            let node = format!("host-{}", w.host);
            let app = SocketAddr::from((
                [127, 0, 0, 1],
                20000 + 100 * u16::from(cluster) + u16::from(w.host),
            ));
            let token = op
                .create_credential(&CredentialRequest {
                    node: node.clone(),
                    services: vec![w.service.clone()],
                    ttl_secs: 0,
                })
                .await?
                .token;
            let data = cl.env.data_dir(&format!("agent-{}", w.host));
            let token_file = cl.env.root().join(format!("{node}.token"));
            std::fs::write(&token_file, token)?;
            let services_file = cl.env.root().join(format!("{node}.services.yaml"));
            std::fs::write(&services_file, services_yaml(w, ip, app))?;
            let app_proc = cl.env.spawn(
                ProcSpec::new(format!("app-{}-{}", w.service, w.host), &meshd)
                    .args([
                        "demo-app".to_string(),
                        "--listen".into(),
                        app.to_string(),
                        "--name".into(),
                        format!("{}@{}", w.service, w.host),
                        "--fail-percent".into(),
                        w.fail_percent.to_string(),
                    ])
                    .args(w.tcp_app.then_some("--tcp")),
            )?;
            let admin = SocketAddr::from((ip, 15000));
            let agent = cl.env.spawn(
                ProcSpec::new(format!("agent-{}-{}", w.service, w.host), &meshd).args([
                    "agent".to_string(),
                    "--name".into(),
                    node,
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
                    "--svid-ttl-secs".into(),
                    svid_ttl_secs.to_string(),
                ]),
            )?;
            hosts.push(Host {
                service: w.service.clone(),
                ip,
                inbound: SocketAddr::from((ip, 15006)),
                admin,
                app,
                agent,
                app_proc,
                data,
            });
        }
        for h in &hosts {
            let admin = h.admin;
            wait_for(&format!("sidecar of {} ready", h.service), || async move {
                Ok(get(admin, "/ready").await?.status == 200)
            })
            .await?;
        }
        Ok(Self {
            cl,
            op,
            trust_domain,
            hosts,
        })
    }

    /// The workload ID of `service`.
    pub fn id(&self, service: &str) -> String {
        format!("spiffe://{}/ns/default/sa/{service}", self.trust_domain)
    }

    /// The upstream listener `port` of the workload at index `host` of `hosts`.
    pub fn upstream(&self, host: usize, port: u16) -> SocketAddr {
        SocketAddr::from((self.hosts[host].ip, port))
    }

    /// Apply resources given as `(kind, name, spec)`.
    pub async fn apply(&self, items: &[(&str, &str, serde_json::Value)]) -> anyhow::Result<u64> {
        let resources = items
            .iter()
            .map(|(kind, name, spec)| {
                serde_json::from_value::<Resource>(serde_json::json!({
                    "apiVersion": mesh_proto::resource::API_VERSION,
                    "kind": kind,
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": spec,
                }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let r = self
            .op
            .apply(&ApplyRequest {
                resources,
                dry_run: false,
            })
            .await?;
        Ok(r.version)
    }

    /// ALLOW `from` to call `to`.
    pub async fn allow(&self, from: &str, to: &str) -> anyhow::Result<u64> {
        let spec = serde_json::json!({
            "targetRef": {"kind": "Service", "name": to},
            "action": "ALLOW",
            "rules": [{"from": [{"principals": [self.id(from)]}]}],
        });
        self.apply(&[("AuthorizationPolicy", &format!("{to}-allow-{from}"), spec)])
            .await
    }

    /// `/stats` of the app of host index `host`: (served, failed).
    pub async fn app_stats(&self, host: usize) -> anyhow::Result<(u64, u64)> {
        let a = get(self.hosts[host].app, "/stats").await?;
        let v: serde_json::Value = serde_json::from_str(&a.body)?;
        Ok((
            v["served"].as_u64().context("served")?,
            v["failed"].as_u64().context("failed")?,
        ))
    }

    /// GET `path` through `via` until it answers 200 (the config has arrived).
    pub async fn first_200(&self, via: SocketAddr, path: &str) -> anyhow::Result<Answer> {
        let mut last = None;
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let a = get(via, path).await;
            if let Ok(a) = &a
                && a.status == 200
            {
                return Ok(a.clone());
            }
            last = Some(a);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no 200 from {path} within {DEADLINE:?}; last: {last:?}")
    }
}

fn services_yaml(w: &Workload, ip: [u8; 4], app: SocketAddr) -> String {
    let mut y = format!(
        "services:\n  - name: {}\n    port: {}\n    inbound: {}\n    locality: {{region: r1, zone: {}}}\n",
        w.service,
        app.port(),
        SocketAddr::from((ip, 15006)),
        w.zone,
    );
    if let Some(port) = w.http_proxy_port {
        y.push_str(&format!(
            "    httpProxy: {}\n",
            SocketAddr::from((ip, port))
        ));
    }
    if !w.upstreams.is_empty() {
        y.push_str("    upstreams:\n");
    }
    for u in &w.upstreams {
        let eps: Vec<String> = u.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        y.push_str(&format!(
            "      - service: {}\n        listen: {}\n        endpoints: [{}]\n",
            u.service,
            SocketAddr::from((ip, u.port)),
            eps.join(", ")
        ));
        if let Some(p) = u.protocol {
            y.push_str(&format!("        protocol: {p}\n"));
        }
    }
    y
}

/// One HTTP/1.1 GET with `connection: close`, read to the end (bounded).
pub async fn get(to: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let exchange = async {
        let mut s = TcpStream::connect(to).await?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: {to}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(1 << 20).read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("no answer within 10 s")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Poll `f` every 100 ms until it says true, failing after [`DEADLINE`] with its last word.
pub async fn wait_for<F, Fut>(what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        let last = match f().await {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {DEADLINE:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the first sample of `family` whose labels contain every one of `labels`.
pub fn sample(metrics: &str, family: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
