//! The catalog and `proxy-status` against real processes (issue B): `meshd control`, `meshd
//! agent` sidecars and `meshd demo-app` apps on loopback.
//!
//! Property: the control plane's catalog tells the truth about the workloads agents run, and
//! only the agents that run them can write it (DESIGN §4 config store, §6 failover detection,
//! §9 CLI, `istioctl proxy-status` and Consul's catalog as the models):
//! - each agent registers its service with its mTLS inbound address and locality; a failing
//!   health check flips the endpoint to unhealthy within seconds and a passing one flips it
//!   back; SIGTERM deregisters it; other agents learn the endpoints through their watch and
//!   cache them for static stability;
//! - `GET /v1/agents` and `meshctl proxy-status` show every agent with the config version it
//!   applied equal to the store's after an apply, and a fresh report;
//! - an agent credential cannot register a service it does not own, is told why, and cannot
//!   read other agents' status; identical re-registration changes nothing.
//!
//! Layout of test cluster `c`: control node `127.0.c.1`; sidecar of `web` on `127.0.c.10`, of
//! `api` on `127.0.c.11` (inbound :15006, admin :15000); apps on
//! `127.0.0.1:<18000 + 10c + 1|2>`.
//!
//! Reproduce one test: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests
//! --test catalog <name> -- --nocapture`. On failure every process log is printed and the data
//! directories are kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_chaos_tests::agents::{AgentRef, AgentSpec, DEADLINE, start_agent, wait_for};
use mesh_chaos_tests::control::{ControlCluster, export_resource};
use mesh_node::client::{ApiClient, ClientError};
use mesh_proto::api::{AgentStatusReport, ApplyRequest, CatalogRegistration, CredentialRequest};
use mesh_proto::command::CertExpiry;
use mesh_proto::resource::{Kind, WorkloadEndpointSpec};
use mesh_proto::{Locality, ServiceName};

/// How quickly a health flip must reach the catalog (checks run every 200 ms).
const HEALTH_DEADLINE: Duration = Duration::from_secs(10);

/// A control node, and the `web` and `api` hosts.
struct Mesh {
    cl: ControlCluster,
    op: Arc<ApiClient>,
    web: AgentRef,
    api: AgentRef,
}

impl Mesh {
    async fn start(test: &str, cluster: u8) -> anyhow::Result<Self> {
        let mut cl = ControlCluster::start(test, cluster, 1)?;
        cl.env.set_reproduce(format!(
            "cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test catalog \
             {test} -- --nocapture"
        ));
        let op = cl.client()?;
        let app_port = |i: u16| 18000 + 10 * u16::from(cluster) + i;
        // web calls api with no static endpoint: it learns api's from the catalog.
        let web = AgentSpec {
            node: "host-web".into(),
            service: "web".into(),
            host: 10,
            app_port: app_port(1),
            region: "r1".into(),
            zone: "a".into(),
            extra_yaml: format!(
                "    upstreams:\n      - {{service: api, listen: 127.0.{cluster}.10:9001}}\n"
            ),
        };
        let api = AgentSpec {
            node: "host-api".into(),
            service: "api".into(),
            host: 11,
            app_port: app_port(2),
            region: "r1".into(),
            zone: "b".into(),
            extra_yaml: "    health: {http: /healthz, interval: 200ms, timeout: 200ms}\n".into(),
        };
        let web = start_agent(&mut cl, &op, &web).await?;
        let api = start_agent(&mut cl, &op, &api).await?;
        Ok(Mesh { cl, op, web, api })
    }

    /// The catalog entry of `agent`'s service, if registered.
    async fn endpoint(&self, agent: &AgentRef) -> anyhow::Result<Option<WorkloadEndpointSpec>> {
        let name = format!("{}.{}", agent.service, agent.node);
        let list = self.op.list(Kind::WorkloadEndpoint, None).await?;
        let Some(r) = list.items.into_iter().find(|r| r.metadata.name == name) else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_value(r.spec)?))
    }

    /// Wait until `agent`'s endpoint is registered with `healthy`; returns how long it took.
    async fn wait_health(&self, agent: &AgentRef, healthy: bool) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let what = format!("{} registered with healthy={healthy}", agent.service);
        wait_for(&what, HEALTH_DEADLINE, || async {
            Ok(self
                .endpoint(agent)
                .await?
                .filter(|e| e.healthy == healthy)
                .map(|_| start.elapsed()))
        })
        .await
    }

    fn meshctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(self.cl.meshctl()?)
            .args(args)
            .env(
                "MESHCTL_CONFIG",
                self.cl.env.root().join("no-meshctl-config.json"),
            )
            .env("MESHFED_API", self.cl.nodes[0].api.to_string())
            .env("MESHFED_TOKEN", &self.cl.token)
            .env("MESHFED_CA_FINGERPRINT", &self.cl.ca_fingerprint)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "meshctl {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_registration_health_and_graceful_shutdown() {
    let mut mesh = Mesh::start("catalog_health", 31).await.expect("start mesh");

    // (a) Both services appear with their inbound address and locality.
    for (agent, zone) in [(&mesh.web, "a"), (&mesh.api, "b")] {
        mesh.wait_health(agent, true)
            .await
            .expect("registered healthy");
        let e = mesh.endpoint(agent).await.unwrap().unwrap();
        assert_eq!(e.address, agent.inbound.to_string(), "{e:?}");
        assert_eq!(e.node.as_str(), agent.node, "{e:?}");
        let want = Locality {
            region: "r1".into(),
            zone: zone.into(),
        };
        assert_eq!(e.locality, want, "{e:?}");
    }
    let table = mesh
        .meshctl(&["get", "endpoints"])
        .expect("meshctl get endpoints");
    println!("{table}");
    for want in [
        "SERVICE",
        "NODE",
        "ADDRESS",
        "LOCALITY",
        "HEALTHY",
        "127.0.31.11:15006",
        "r1/b",
    ] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }
    // web learns api's endpoint through its watch, and caches it for static stability.
    let web_agent = mesh.web.agent;
    mesh.cl
        .env
        .proc(web_agent)
        .wait_for_log("127.0.31.11:15006", DEADLINE)
        .expect("web's discovery offers api's endpoint");
    let cache = mesh.web.data.join("config.json");
    wait_for("web caches the catalog", DEADLINE, || {
        let cache = cache.clone();
        async move {
            let text = std::fs::read_to_string(&cache).unwrap_or_default();
            Ok(text
                .contains("WorkloadEndpoint/default/api.host-api")
                .then_some(()))
        }
    })
    .await
    .expect("catalog cached in config.json");

    // (b) A dead app flips its endpoint to unhealthy; a restarted one flips it back.
    let app = mesh.api.app;
    mesh.cl.env.proc(app).kill9().expect("kill -9 api app");
    let took = mesh
        .wait_health(&mesh.api, false)
        .await
        .expect("flip to unhealthy");
    println!("api unhealthy in the catalog {took:?} after its app died");
    mesh.cl
        .env
        .proc(web_agent)
        .wait_for_log("upstream has no healthy endpoint", DEADLINE)
        .expect("web's discovery drops the unhealthy endpoint");
    mesh.cl.env.proc(app).restart().expect("restart api app");
    let took = mesh
        .wait_health(&mesh.api, true)
        .await
        .expect("flip back to healthy");
    println!("api healthy again {took:?} after its app restarted");

    // SIGTERM deregisters; kill -9 of the other agent would not (its entry stays).
    let api_agent = mesh.api.agent;
    mesh.cl
        .env
        .proc(api_agent)
        .terminate(Duration::from_secs(10))
        .expect("SIGTERM api agent");
    assert!(
        mesh.cl
            .env
            .proc(api_agent)
            .log_text()
            .contains("deregistered from the catalog"),
        "the api agent did not log its deregistration"
    );
    let gone = mesh.endpoint(&mesh.api).await.expect("list endpoints");
    assert_eq!(
        gone, None,
        "api's endpoint outlived its agent's graceful shutdown"
    );
    assert!(mesh.endpoint(&mesh.web).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_shows_every_agent_synced_with_the_store() {
    let mesh = Mesh::start("catalog_proxy_status", 32)
        .await
        .expect("start mesh");
    for agent in [&mesh.web, &mesh.api] {
        mesh.wait_health(agent, true).await.expect("registered");
    }
    let applied = mesh
        .op
        .apply(&ApplyRequest {
            resources: vec![export_resource("billing", 1)],
            dry_run: false,
        })
        .await
        .expect("apply");
    let nodes = [mesh.web.node.clone(), mesh.api.node.clone()];
    let status = wait_for("both agents synced and fresh", DEADLINE, || async {
        let r = mesh.op.agents().await?;
        let synced = nodes.iter().all(|n| {
            r.agents.iter().any(|a| {
                a.node.as_str() == n
                    && a.config_version == r.store_version
                    && r.now_unix_ms.saturating_sub(a.reported_unix_ms) < 10_000
            })
        });
        Ok((synced && r.store_version >= applied.version).then_some(r))
    })
    .await
    .expect("proxy status");
    for a in &status.agents {
        assert_eq!(a.certs.len(), 1, "{a:?}");
        assert!(
            a.certs[0].expires_unix * 1000 > status.now_unix_ms + 3_600_000,
            "SVID expiry not in the future: {a:?}"
        );
    }
    let table = mesh
        .meshctl(&["proxy-status"])
        .expect("meshctl proxy-status");
    println!("{table}");
    for want in [
        "NODE",
        "SERVICES",
        "CONFIG",
        "AGE",
        "CERT EXPIRY",
        "host-web",
        "host-api",
    ] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }
    assert_eq!(table.matches("SYNCED").count(), 2, "{table}");
    let json = mesh.meshctl(&["proxy-status", "-o", "json"]).expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    assert_eq!(v["agents"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(v["agents"][0]["certs"][0]["expires_unix"].is_u64(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_credential_speaks_only_for_its_own_services() {
    let cl = ControlCluster::start("catalog_authz", 33, 1).expect("start control");
    let op = cl.client().expect("operator client");
    let token = op
        .create_credential(&CredentialRequest {
            node: "host-web".into(),
            services: vec!["web".into()],
            ttl_secs: 0,
        })
        .await
        .expect("credential")
        .token;
    let agent = cl.client_with_token(Some(token)).expect("agent client");
    let web = ServiceName::new("web").unwrap();
    let api = ServiceName::new("api").unwrap();
    let reg = |address: &str| CatalogRegistration {
        address: address.into(),
        locality: Locality::default(),
        healthy: true,
    };

    forbidden(
        agent
            .register_endpoint(&api, &reg("127.0.33.10:15006"))
            .await,
        "may not register service api",
    );
    forbidden(agent.agents().await, "operator");
    forbidden(
        op.register_endpoint(&web, &reg("127.0.33.10:15006")).await,
        "needs an agent credential",
    );
    match agent.register_endpoint(&web, &reg("0.0.0.0:15006")).await {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status.as_u16(), 422, "{error:?}");
            assert!(
                error.details.iter().any(|d| d.field == "spec.address"),
                "{error:?}"
            );
        }
        other => panic!("a wildcard address was not refused: {other:?}"),
    }
    match agent
        .report_status(&AgentStatusReport {
            config_version: 0,
            certs: vec![CertExpiry {
                service: api.clone(),
                expires_unix: 1,
            }],
        })
        .await
    {
        Err(ClientError::Api { status, .. }) => assert_eq!(status.as_u16(), 400),
        other => panic!("a report for another service was accepted: {other:?}"),
    }
    let listed = op.list(Kind::WorkloadEndpoint, None).await.unwrap();
    assert!(listed.items.is_empty(), "a refused registration was stored");

    let first = agent
        .register_endpoint(&web, &reg("127.0.33.10:15006"))
        .await
        .expect("own service");
    assert_eq!(first.results[0].outcome, "created");
    assert_eq!(first.results[0].name, "web.host-web");
    let again = agent
        .register_endpoint(&web, &reg("127.0.33.10:15006"))
        .await
        .expect("re-registration");
    assert_eq!(again.results[0].outcome, "unchanged");
    assert_eq!(
        again.version, first.version,
        "identical re-registration bumped the store"
    );
    agent.deregister_endpoint(&web).await.expect("deregister");
    match agent.deregister_endpoint(&web).await {
        Err(e) => assert_eq!(e.code(), Some("not_found"), "{e}"),
        Ok(r) => panic!("deregistered twice: {r:?}"),
    }
}

/// Assert a 403 whose message contains `fragment`.
#[track_caller]
fn forbidden<T: std::fmt::Debug>(r: Result<T, ClientError>, fragment: &str) {
    match r {
        Err(ClientError::Api { status, error }) => {
            assert_eq!(status.as_u16(), 403, "{error:?}");
            assert!(
                error.message.contains(fragment),
                "{:?} lacks {fragment:?}",
                error.message
            );
        }
        Err(e) => panic!("expected 403, got {e}"),
        Ok(r) => panic!("expected 403, got {r:?}"),
    }
}
