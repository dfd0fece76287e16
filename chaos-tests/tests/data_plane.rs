//! The data plane's first vertical slice against real processes (issue B): `meshd control`,
//! two `meshd agent` sidecars and two `meshd demo-app` apps on loopback.
//!
//! Properties:
//! - a request flows app → sidecar → mTLS → sidecar → app, and the app sees the caller's
//!   verified SPIFFE ID, never one a client wrote (DESIGN §6 inbound, §3 workload IDs);
//! - STRICT mTLS and default deny (DESIGN §3): with no ALLOW rule a request is 403; plaintext
//!   and a certificate from another CA with the same trust-domain name are refused at the
//!   handshake, while a certificate from the cluster's CA is admitted to authorization;
//! - static stability (DESIGN §6, §11): with every control node killed, sidecars keep serving
//!   from their SVID and last good config, even across a sidecar restart;
//! - an upstream endpoint that refuses connections is skipped, and with none left the answer is
//!   503 `UF` (DESIGN §9 response flags);
//! - SVIDs renew at half their lifetime without failing a request (DESIGN §3).
//!
//! Layout of test cluster `c`: control nodes on `127.0.c.1..`; sidecar of `web` on
//! `127.0.c.10`, of `api` on `127.0.c.11` (inbound :15006, admin :15000, web's upstream
//! listener for api on :9001, whose endpoints are a dead `127.0.c.12:15006` and api's
//! inbound); apps on `127.0.0.1:<18000 + 10c + 1|2>`.
//!
//! Reproduce one test: `cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests
//! --test data_plane <name> -- --nocapture`. On failure every process log is printed and the
//! data directories are kept.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh_chaos_tests::control::ControlCluster;
use mesh_chaos_tests::harness::{ProcSpec, bin_path};
use mesh_chaos_tests::sidecars::{Answer, DEADLINE, get, sample, wait_for};
use mesh_core::identity::{self, PeerPolicy, SpiffeServerVerifier, TrustBundles};
use mesh_node::client::{ApiClient, ClientError};
use mesh_proto::api::{ApplyRequest, CredentialRequest, SignRequest};
use mesh_proto::resource::{API_VERSION, Metadata, Resource};
use mesh_proto::{ClusterName, SpiffeId, TrustDomain};

const DAY: u64 = 24 * 3600;

/// A control plane, two apps and their sidecars.
struct Mesh {
    cl: ControlCluster,
    op: Arc<ApiClient>,
    td: String,
    /// web's upstream listener for api.
    web_to_api: SocketAddr,
    api_inbound: SocketAddr,
    api_admin: SocketAddr,
    api_agent: usize,
    api_data: PathBuf,
}

fn addr(cluster: u8, host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, cluster, host], port))
}

impl Mesh {
    /// Start the mesh of test cluster `cluster`. Sidecars ask for SVIDs of `svid_ttl_secs`.
    async fn start(
        test: &str,
        cluster: u8,
        control_nodes: u8,
        svid_ttl_secs: u64,
    ) -> anyhow::Result<Self> {
        let mut cl = ControlCluster::start(test, cluster, control_nodes)?;
        cl.env.set_reproduce(format!(
            "cargo build -p mesh-node --bins && cargo test -p mesh-chaos-tests --test data_plane \
             {test} -- --nocapture"
        ));
        let op = cl.client()?;
        let td = format!("{}.mesh", cl.name);
        let control: Vec<String> = cl.nodes.iter().map(|n| n.api.to_string()).collect();
        let meshd = bin_path("meshd")?;
        let app_port = |i: u16| 18000 + 10 * u16::from(cluster) + i;
        let (web_host, api_host) = (addr(cluster, 10, 0), addr(cluster, 11, 0));
        let web_to_api = addr(cluster, 10, 9001);
        // Nothing listens here: every request whose pick lands on it must move on to api.
        let dead_endpoint = addr(cluster, 12, 15006);
        let inbound = |a: SocketAddr| SocketAddr::new(a.ip(), 15006);
        let admin = |a: SocketAddr| SocketAddr::new(a.ip(), 15000);
        let mut api_agent = 0;
        let mut api_data = PathBuf::new();
        for (svc, host, port, upstreams) in [
            (
                "web",
                web_host,
                app_port(1),
                format!(
                    "    upstreams:\n      - service: api\n        listen: {web_to_api}\n        \
                 endpoints: [\"{dead_endpoint}\", \"{}\"]\n",
                    inbound(api_host)
                ),
            ),
            ("api", api_host, app_port(2), String::new()),
        ] {
            let token = op
                .create_credential(&CredentialRequest {
                    node: format!("host-{svc}"),
                    services: vec![svc.into()],
                    ttl_secs: 0,
                })
                .await?
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
                    inbound(host)
                ),
            )?;
            cl.env
                .spawn(ProcSpec::new(format!("app-{svc}"), &meshd).args([
                    "demo-app".to_string(),
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                    "--name".into(),
                    svc.into(),
                ]))?;
            let handle = cl
                .env
                .spawn(ProcSpec::new(format!("agent-{svc}"), &meshd).args([
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
                    admin(host).to_string(),
                    "--svid-ttl-secs".into(),
                    svid_ttl_secs.to_string(),
                ]))?;
            if svc == "api" {
                api_agent = handle;
                api_data = data;
            }
        }
        let mesh = Mesh {
            cl,
            op,
            td,
            web_to_api,
            api_inbound: inbound(api_host),
            api_admin: admin(api_host),
            api_agent,
            api_data,
        };
        for host in [web_host, api_host] {
            wait_for(&format!("sidecar on {} ready", host.ip()), || async move {
                Ok(get(admin(host), "/ready").await?.status == 200)
            })
            .await?;
        }
        Ok(mesh)
    }

    fn id(&self, svc: &str) -> String {
        format!("spiffe://{}/ns/default/sa/{svc}", self.td)
    }

    /// ALLOW web → api.
    async fn allow_web_to_api(&self) -> anyhow::Result<()> {
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
                "rules": [{"from": [{"principals": [self.id("web")]}]}],
            }),
        };
        self.op
            .apply(&ApplyRequest {
                resources: vec![policy],
                dry_run: false,
            })
            .await?;
        Ok(())
    }

    /// An SVID for `svc` from the cluster CA, obtained with the operator token.
    async fn cluster_svid(&self, svc: &str) -> anyhow::Result<(String, String)> {
        let kc = identity::generate_csr(&SpiffeId::parse(&self.id(svc))?)?;
        let signed = self
            .op
            .sign(&SignRequest {
                csr_pem: kc.csr_pem,
                ttl_secs: Some(600),
            })
            .await?;
        Ok((format!("{}{}", signed.cert_pem, signed.ca_pem), kc.key_pem))
    }

    /// An mTLS client straight to api's inbound listener, presenting `chain`/`key` and
    /// verifying the server as api against the CA the api sidecar holds.
    fn direct_to_api(&self, chain: &str, key: &str) -> anyhow::Result<ApiClient> {
        let ca_pem = std::fs::read_to_string(self.api_data.join("ca.pem"))?;
        let mut bundles = TrustBundles::new();
        bundles.insert_pem(TrustDomain::new(self.td.clone())?, &ca_pem)?;
        let verifier = SpiffeServerVerifier::new(
            Arc::new(bundles),
            PeerPolicy::Exactly(SpiffeId::parse(&self.id("api"))?),
        );
        let tls = identity::client_config(verifier, Some((chain, key)), &[b"http/1.1"])?;
        let mut c =
            ApiClient::with_config(vec![self.api_inbound.to_string()], Arc::new(tls), None)?;
        c.retry_for = Duration::ZERO;
        c.attempt_timeout = Duration::from_secs(5);
        Ok(c)
    }

    /// GET through web's sidecar to api until it answers 200 (the policy has arrived).
    async fn first_200(&self, path: &str) -> anyhow::Result<Answer> {
        let mut last = None;
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let a = get(self.web_to_api, path).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_flows_app_to_sidecar_to_sidecar_to_app_with_peer_identity() {
    let mesh = Mesh::start("dp_flow", 21, 1, DAY)
        .await
        .expect("start mesh");
    mesh.allow_web_to_api().await.expect("apply policy");
    let a = mesh
        .first_200("/hello")
        .await
        .expect("request through the mesh");
    let json: serde_json::Value = serde_json::from_str(&a.body).expect("app answers JSON");
    assert_eq!(json["app"], "api", "{json}");
    assert_eq!(json["path"], "/hello", "{json}");
    assert_eq!(
        json["peer_identity"], "spiffe://c21.mesh/ns/default/sa/web",
        "{json}"
    );
    assert!(
        json["request_id"].is_string(),
        "x-request-id is set: {json}"
    );
    assert!(
        json["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-")),
        "{json}"
    );

    // A peer cannot forge the identity header: the api sidecar replaces it with the verified
    // one. (web's own sidecar strips it too, so this goes straight to api's inbound.)
    let (chain, key) = mesh.cluster_svid("web").await.expect("web SVID");
    let direct = mesh.direct_to_api(&chain, &key).expect("mTLS client");
    let forged = (
        "x-meshfed-peer-identity",
        "spiffe://c21.mesh/ns/default/sa/admin".to_string(),
    );
    let r = direct
        .raw(http::Method::GET, "/forged", None, &[forged], None)
        .await
        .expect("direct mTLS request");
    assert_eq!(r.status.as_u16(), 200);
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        json["peer_identity"], "spiffe://c21.mesh/ns/default/sa/web",
        "{json}"
    );

    let metrics = get(mesh.api_admin, "/metrics")
        .await
        .expect("scrape api sidecar");
    let inbound = [
        "direction=\"inbound\"",
        "src_workload=\"web\"",
        "dst_workload=\"api\"",
        "src_cluster=\"c21.mesh\"",
        "dst_cluster=\"c21.mesh\"",
        "tls=\"true\"",
    ];
    let requests = sample(&metrics.body, "request_total", &inbound);
    assert!(
        requests.is_some_and(|n| n >= 1.0),
        "request_total: {}",
        metrics.body
    );
    let ok = [
        &inbound[..],
        &["status_code=\"200\"", "classification=\"success\""],
    ]
    .concat();
    let responses = sample(&metrics.body, "response_total", &ok);
    assert!(
        responses.is_some_and(|n| n >= 1.0),
        "response_total: {}",
        metrics.body
    );
    assert!(
        sample(
            &metrics.body,
            "identity_cert_expiration_timestamp_seconds",
            &["workload=\"api\""]
        )
        .is_some_and(|t| t > 0.0),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_allow_rule_is_403_and_plaintext_and_foreign_ca_are_refused() {
    let mut mesh = Mesh::start("dp_refusals", 22, 1, DAY)
        .await
        .expect("start mesh");

    // Default deny, through the outbound path.
    let a = get(mesh.web_to_api, "/hello").await.expect("request");
    assert_eq!(a.status, 403, "{a:?}");
    assert!(
        a.headers.contains("x-meshfed-response-flags: rbac"),
        "{a:?}"
    );
    assert!(a.body.contains("no ALLOW rule"), "{a:?}");
    // The deny is counted and logged by the api sidecar, where it was decided.
    let m = get(mesh.api_admin, "/metrics")
        .await
        .expect("scrape api sidecar");
    let denied = [
        "direction=\"inbound\"",
        "src_workload=\"web\"",
        "status_code=\"403\"",
    ];
    assert!(
        sample(&m.body, "response_total", &denied).is_some_and(|n| n >= 1.0),
        "{}",
        m.body
    );
    mesh.cl
        .env
        .proc(mesh.api_agent)
        .wait_for_log("inbound \"GET /hello\" 403 RBAC", DEADLINE)
        .expect("the access log records the deny with the RBAC flag");

    // Plaintext HTTP straight to the inbound port gets no HTTP answer at all.
    let plain = get(mesh.api_inbound, "/hello").await;
    assert!(plain.is_err(), "plaintext got an HTTP answer: {plain:?}");

    // Control: web's identity from the cluster CA reaches authorization (403, not a refusal).
    let (chain, key) = mesh.cluster_svid("web").await.expect("web SVID");
    let good = mesh.direct_to_api(&chain, &key).expect("mTLS client");
    match good.raw(http::Method::GET, "/hello", None, &[], None).await {
        Ok(r) => assert_eq!(r.status.as_u16(), 403, "cluster-CA client reached authz"),
        Err(e) => panic!("a client with a cluster-CA SVID was refused: {e}"),
    }

    // The same identity from another CA that claims the same trust domain name.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let td = TrustDomain::new(mesh.td.clone()).unwrap();
    let web = SpiffeId::parse(&mesh.id("web")).unwrap();
    let rogue = identity::generate_ca(&ClusterName::new("rogue").unwrap(), &td, now - 60).unwrap();
    let kc = identity::generate_csr(&web).unwrap();
    let svid = identity::sign_svid(&rogue, &kc.csr_pem, &web, 600, now).unwrap();
    let foreign = mesh
        .direct_to_api(&format!("{}{}", svid.cert_pem, rogue.cert_pem), &kc.key_pem)
        .expect("mTLS client");
    let res = foreign
        .raw(http::Method::GET, "/hello", None, &[], None)
        .await;
    assert!(
        matches!(
            res,
            Err(ClientError::Connect { .. } | ClientError::Io { .. })
        ),
        "foreign-CA client was not refused at the handshake: {:?}",
        res.map(|r| r.status)
    );
    let h = mesh.api_agent;
    mesh.cl
        .env
        .proc(h)
        .wait_for_log("does not chain to a root of c22.mesh", DEADLINE)
        .expect("the api sidecar logs the refused handshake");

    // With api's sidecar gone, both endpoints refuse: 503 with the UF flag.
    mesh.cl.env.proc(h).kill9().expect("kill -9 api sidecar");
    let a = get(mesh.web_to_api, "/hello").await.expect("request");
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.headers.contains("x-meshfed-response-flags: uf"), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_keep_serving_with_the_control_plane_down() {
    let mut mesh = Mesh::start("dp_static", 23, 3, DAY)
        .await
        .expect("start mesh");
    mesh.allow_web_to_api().await.expect("apply policy");
    mesh.first_200("/before")
        .await
        .expect("request before the outage");
    // The api sidecar has cached the policy once it serves 200; wait for the file anyway.
    let cache = mesh.api_data.join("config.json");
    wait_for("api sidecar caches its config", || {
        let cache = cache.clone();
        async move { Ok(std::fs::read_to_string(&cache).is_ok_and(|t| t.contains("api-allow-web"))) }
    })
    .await
    .expect("config cached");
    for i in 0..mesh.cl.nodes.len() {
        mesh.cl.kill9(i).expect("kill -9 control node");
    }
    for n in 0..20 {
        let a = get(mesh.web_to_api, &format!("/during/{n}"))
            .await
            .expect("request");
        assert_eq!(
            a.status, 200,
            "request {n} with the control plane down: {a:?}"
        );
    }
    // A sidecar restarted during the outage serves from its cached SVID and config.
    let h = mesh.api_agent;
    mesh.cl.env.proc(h).restart().expect("restart api sidecar");
    mesh.cl
        .env
        .proc(h)
        .wait_for_log("serving with the cached SVID", DEADLINE)
        .expect("restart uses the cached SVID");
    let admin = mesh.api_admin;
    wait_for("restarted api sidecar ready", || async move {
        Ok(get(admin, "/ready").await?.status == 200)
    })
    .await
    .expect("ready");
    for n in 0..20 {
        let a = get(mesh.web_to_api, &format!("/after-restart/{n}"))
            .await
            .expect("request");
        assert_eq!(
            a.status, 200,
            "request {n} after the restart, control plane down: {a:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_renew_at_half_life_without_failing_a_request() {
    let mesh = Mesh::start("dp_renewal", 24, 1, 20)
        .await
        .expect("start mesh");
    mesh.allow_web_to_api().await.expect("apply policy");
    mesh.first_200("/before").await.expect("first request");
    let expiry = || async {
        let m = get(mesh.api_admin, "/metrics").await?;
        sample(
            &m.body,
            "identity_cert_expiration_timestamp_seconds",
            &["workload=\"api\""],
        )
        .context("no expiry gauge for api")
    };
    let first = expiry().await.expect("first expiry");
    // Requests keep succeeding while both sidecars renew (at ~10 s of a 20 s lifetime).
    let deadline = Instant::now() + DEADLINE;
    let mut n = 0;
    loop {
        n += 1;
        let a = get(mesh.web_to_api, &format!("/during/{n}"))
            .await
            .expect("request");
        assert_eq!(a.status, 200, "request {n} during renewal: {a:?}");
        if expiry().await.expect("expiry") > first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "api's SVID was not renewed within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once the first SVID has expired, a new connection still succeeds: the inbound listener
    // presents the renewed one.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    while now() <= first + 1.0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (chain, key) = mesh.cluster_svid("web").await.expect("web SVID");
    let direct = mesh.direct_to_api(&chain, &key).expect("mTLS client");
    let r = direct
        .raw(http::Method::GET, "/after", None, &[], None)
        .await
        .expect("new connection after the first SVID expired");
    assert_eq!(r.status.as_u16(), 200);
    let a = get(mesh.web_to_api, "/after").await.expect("request");
    assert_eq!(a.status, 200, "{a:?}");
}
