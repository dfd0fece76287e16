//! `meshctl demo`: a federated two-cluster mesh on loopback, brought up with the flows an
//! operator uses (bootstrap and join tokens, agent credentials, `federate token`/`join`),
//! driven with sample traffic and shown live; every process is stopped at the end, on error
//! and on Ctrl-C.
//!
//! ```text
//!  east (127.0.201.x): 3 control, web (zone a) ─► api (zone a), api (zone b)
//!  west (127.0.202.x): 3 control, api (zone a)       east ══ federated (token flow) ══ west
//!  load: web's app ─► 127.0.201.10:9001 ─► sidecar ─mTLS─► api sidecars ─► api apps
//!  --scenario failover: kill east's zone-a api sidecar at a third of the run, restart it
//!  at two thirds
//! ```
//!
//! Sidecars do not send through gateways yet, so the sample traffic stays inside east and
//! `cross_cluster_requests` is 0; the federation itself is real. This module orchestrates;
//! every decision is made by the processes it starts.

mod procs;
mod topology;
mod traffic;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mesh_proto::api::ApplyRequest;
use mesh_proto::federation::{FederationJoinRequest, FederationTokenRequest};
use mesh_proto::resource::Resource;

use self::procs::Procs;
use self::topology::{Cluster, HostSpec, start_cluster, start_host};
use self::traffic::{Stats, request};

/// What the demo does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Bring up, federate, drive traffic.
    Basic,
    /// As basic, then lose east's zone-a endpoint a third of the way in.
    Failover,
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    pub scenario: Scenario,
    /// One JSON object on stdout instead of the live view.
    pub json: bool,
}

/// The run's result, printed as JSON with `-o json`.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub clusters: Vec<String>,
    pub federation: String,
    pub requests_total: u64,
    pub requests_failed: u64,
    pub cross_cluster_requests: u64,
    pub peer_identity_seen: Option<String>,
    pub failover_ms: Option<u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub answered_by: std::collections::BTreeMap<String, u64>,
    pub passed: bool,
    pub problems: Vec<String>,
}

/// Pause between requests of the load loop (about 200 requests a second at most).
const PACE: Duration = Duration::from_millis(5);

fn note(json: bool, msg: &str) {
    if !json {
        eprintln!("{msg}");
    }
}

fn resource(kind: &str, name: &str, spec: serde_json::Value) -> anyhow::Result<Resource> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": mesh_proto::resource::API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))?)
}

async fn apply(c: &Cluster, items: Vec<Resource>) -> anyhow::Result<()> {
    c.client
        .apply(&ApplyRequest {
            resources: items,
            dry_run: false,
        })
        .await?;
    Ok(())
}

/// Run the demo; the report says whether the mesh behaved as specified.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Report> {
    let dir = work_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let mut procs = Procs::new(&dir.join("logs"))?;
    let result = tokio::select! {
        r = drive(&mut procs, &dir, &opts) => r,
        () = crate::signals::shutdown() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(procs);
    match &result {
        Ok(r) if r.passed => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        _ => eprintln!("logs kept in {}", dir.join("logs").display()),
    }
    result
}

async fn drive(
    procs: &mut Procs,
    dir: &std::path::Path,
    opts: &DemoOptions,
) -> anyhow::Result<Report> {
    let data = dir.join("data");
    let json = opts.json;
    let started = Instant::now();
    note(
        json,
        "starting cluster east: 3 control nodes on 127.0.201.1-3 …",
    );
    let east = start_cluster(procs, &data, "east", 201, 3).await?;
    note(
        json,
        "starting cluster west: 3 control nodes on 127.0.202.1-3 …",
    );
    let west = start_cluster(procs, &data, "west", 202, 3).await?;
    note(
        json,
        "starting workloads: east web (zone a), api (zones a, b); west api (zone a) …",
    );
    let web = start_host(
        procs,
        &data,
        &east,
        &HostSpec {
            host: 10,
            service: "web",
            zone: "a",
            calls: Some("api"),
        },
    )
    .await?;
    let api_a = start_host(
        procs,
        &data,
        &east,
        &HostSpec {
            host: 11,
            service: "api",
            zone: "a",
            calls: None,
        },
    )
    .await?;
    let api_b = start_host(
        procs,
        &data,
        &east,
        &HostSpec {
            host: 12,
            service: "api",
            zone: "b",
            calls: None,
        },
    )
    .await?;
    let _west_api = start_host(
        procs,
        &data,
        &west,
        &HostSpec {
            host: 11,
            service: "api",
            zone: "a",
            calls: None,
        },
    )
    .await?;
    let allow = |from: &str| {
        resource(
            "AuthorizationPolicy",
            "api-allow-web",
            serde_json::json!({
                "targetRef": {"kind": "Service", "name": "api"},
                "action": "ALLOW",
                "rules": [{"from": [{"principals": [from]}]}],
            }),
        )
    };
    let traffic_policy = resource(
        "TrafficPolicy",
        "api",
        serde_json::json!({
            "targetRef": {"kind": "Service", "name": "api"},
            "outlierDetection": {"consecutiveConnectFailures": 1, "baseEjectionTime": "5s"},
        }),
    )?;
    apply(
        &east,
        vec![
            allow("spiffe://east.mesh/ns/default/sa/web")?,
            traffic_policy,
        ],
    )
    .await?;
    apply(&west, vec![allow("spiffe://east.mesh/ns/default/sa/web")?]).await?;

    note(
        json,
        "federating: `meshctl federate token --peer west` on east, `federate join` on west …",
    );
    let token = east
        .client
        .federation_token(&FederationTokenRequest {
            peer: "west".into(),
            ttl_secs: 600,
            gateways: vec![],
        })
        .await?
        .token;
    let peering = west
        .client
        .federation_join(&FederationJoinRequest {
            token,
            gateways: vec![],
        })
        .await?;
    let federation = format!("east ⇄ west {}", peering.state.as_str());
    note(
        json,
        &format!(
            "federation: {federation} (west holds east's CA {})",
            peering.ca_fingerprint
        ),
    );

    let via = web
        .upstream
        .ok_or_else(|| anyhow::anyhow!("web has no upstream listener"))?;
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !request(via, "/warm").await.ok {
        if Instant::now() > ready_by {
            anyhow::bail!("no successful request through web's sidecar within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    note(
        json,
        &format!("mesh up in {:.1} s", started.elapsed().as_secs_f64()),
    );
    if !json {
        explore(&east, via);
    }

    let mut stats = Stats::default();
    let load_started = Instant::now();
    let kill_at = opts.duration.map(|d| load_started + d / 3);
    let restore_at = opts.duration.map(|d| load_started + d * 2 / 3);
    let mut killed_at: Option<Instant> = None;
    let mut restored = false;
    let mut failover_ms = None;
    let mut next_view = Instant::now() + Duration::from_secs(2);
    let mut window = (0u64, 0u64);
    let mut i = 0u64;
    loop {
        let now = Instant::now();
        if opts.duration.is_some_and(|d| now >= load_started + d) {
            break;
        }
        if opts.scenario == Scenario::Failover
            && killed_at.is_none()
            && kill_at.is_some_and(|k| now >= k)
        {
            procs.kill(api_a.agent);
            killed_at = Some(now);
            note(
                json,
                "scenario failover: killed east's zone-a api sidecar (kill -9)",
            );
        }
        if killed_at.is_some() && !restored && restore_at.is_some_and(|r| now >= r) {
            procs.restart(api_a.agent)?;
            restored = true;
            note(
                json,
                "scenario failover: restarted it; traffic returns to zone a after its ejection",
            );
        }
        i += 1;
        let o = request(via, &format!("/demo/{i}")).await;
        if let (Some(k), None, true) = (killed_at, failover_ms, o.ok)
            && o.app
                .as_deref()
                .is_some_and(|a| a.ends_with(&format!("/{}", api_b.zone)))
        {
            failover_ms = Some(u64::try_from(k.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
        window.0 += 1;
        window.1 += u64::from(!o.ok);
        stats.record(Instant::now(), o);
        if !json && Instant::now() >= next_view {
            view(&stats, window, procs.running());
            window = (0, 0);
            next_view = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(PACE).await;
    }
    Ok(report(opts, &stats, federation, failover_ms))
}

fn view(stats: &Stats, window: (u64, u64), running: usize) {
    let rps = window.0 as f64 / 2.0;
    let ok = if window.0 == 0 {
        100.0
    } else {
        100.0 * (window.0 - window.1) as f64 / window.0 as f64
    };
    let by: Vec<String> = stats
        .by_app
        .iter()
        .map(|(a, n)| format!("{a}={n}"))
        .collect();
    eprintln!(
        "{running} processes | {rps:.0} req/s | success {ok:.2} % | p99 {:.1} ms | total {} failed {} | {}",
        stats.quantile_ms(0.99),
        stats.total,
        stats.failed,
        by.join(" ")
    );
}

fn explore(east: &Cluster, via: std::net::SocketAddr) {
    let api: Vec<String> = east.api.iter().map(ToString::to_string).collect();
    eprintln!(
        "\nexplore (in another terminal, while the demo runs):\n  export MESHFED_API={} MESHFED_CA_FINGERPRINT={} MESHFED_TOKEN={}\n  meshctl status; meshctl get endpoints; meshctl proxy-status; meshctl check --federation; meshctl federate list\n  curl http://{via}/hello      # web's sidecar: mTLS to api, the app echoes the caller's SPIFFE ID\n",
        api.join(","),
        east.ca_fingerprint,
        east.token
    );
}

fn report(
    opts: &DemoOptions,
    stats: &Stats,
    federation: String,
    failover_ms: Option<u64>,
) -> Report {
    let mut problems = Vec::new();
    let want_id = "spiffe://east.mesh/ns/default/sa/web";
    if stats.total == 0 {
        problems.push("no request was made".to_owned());
    }
    if stats.failed * 100 >= stats.total.max(1) {
        problems.push(format!(
            "{} of {} requests failed (≥ 1 %)",
            stats.failed, stats.total
        ));
    }
    if stats.peer_identity.as_deref() != Some(want_id) {
        problems.push(format!(
            "the server saw {:?}, not {want_id}",
            stats.peer_identity
        ));
    }
    if !federation.ends_with("ACTIVE") {
        problems.push(format!("federation is {federation}"));
    }
    if opts.scenario == Scenario::Failover && failover_ms.is_none() {
        problems.push("traffic never moved to zone b after zone a was lost".to_owned());
    }
    Report {
        scenario: match opts.scenario {
            Scenario::Basic => "basic",
            Scenario::Failover => "failover",
        },
        clusters: vec!["east".into(), "west".into()],
        federation,
        requests_total: stats.total,
        requests_failed: stats.failed,
        cross_cluster_requests: 0,
        peer_identity_seen: stats.peer_identity.clone(),
        failover_ms,
        p50_ms: stats.quantile_ms(0.5),
        p99_ms: stats.quantile_ms(0.99),
        answered_by: stats.by_app.clone(),
        passed: problems.is_empty(),
        problems,
    }
}

/// Where the demo keeps its data and logs while it runs.
pub fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("meshfed-demo-{}", std::process::id()))
}
