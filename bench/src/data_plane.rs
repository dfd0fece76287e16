//! Data-plane benchmark (issue B, DESIGN §10): what one hop pair of sidecars adds to a request,
//! and what it costs in CPU and memory, side by side with an nginx and a haproxy TLS proxy pair
//! in the same run, on the same app, under the same load generator.
//!
//! ```text
//!   direct   client ─────────────────────────────────────────────► app
//!   meshfed  client ─► sidecar A ══ mTLS (SVIDs) ══► sidecar B ───► app
//!   nginx    client ─► nginx A   ══ TLS 1.3 + client cert ══► B ──► app
//!   haproxy  client ─► haproxy A ══ TLS 1.3 + client cert ══► B ──► app
//!
//!   for each of 5 (--quick) or 15 rounds: wait for a quiet machine (bounded), then
//!       direct, meshfed, nginx, haproxy (order rotated by one each round)
//!       each: 0.5 s warm-up, then a 2 s measured window
//!   figure = median over rounds of (path's p50/p99 − direct's p50/p99 in the same round)
//! ```
//!
//! Workload: HTTP/1.1 GET, 1 KiB body, open loop at 1000 req/s over 4 keep-alive connections.
//! The load generator (this process) runs on CPU 0; the app and every proxy on CPU 1. This
//! file owns the plan and the bookkeeping; the load generator, the app, the processes and the
//! report text live in the submodules. A path that cannot be started is reported (its keys stay
//! `null`), never fatal, and every process started lives in a `TestEnv` that kills it on drop.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::bail;
use mesh_chaos_tests::harness::{ProcSpec, TestEnv, free_port};
use serde_json::Value;

use crate::Section;

mod app;
mod baselines;
mod figures;
mod loadgen;
mod mesh;
mod procstat;

pub(crate) use app::serve as serve_app;

/// CPU the app and every proxy run on; the load generator has the other one.
const SERVER_CPUS: &str = "1";
/// One round on one path. Many short rounds, interleaved across the paths, let a burst of
/// load from the machine's other tenants spoil a round rather than a whole path.
const LOAD: loadgen::Load = loadgen::Load {
    rate_per_s: 1000,
    connections: 4,
    warmup: Duration::from_millis(500),
    window: Duration::from_secs(2),
};
/// Rounds per path: 10 s measured per path in `--quick`, 30 s otherwise.
const ROUNDS_QUICK: u32 = 5;
const ROUNDS_FULL: u32 = 15;
/// A round starts once CPU pressure (the share of time some runnable task waits for a CPU)
/// has been below this over half a second, so other tenants' build bursts are not measured as
/// proxy latency; the wait is bounded by a budget per run.
const QUIET_PRESSURE_PCT: f64 = 25.0;
const QUIET_SAMPLE: Duration = Duration::from_millis(500);
const QUIET_BUDGET_QUICK: Duration = Duration::from_secs(60);
const QUIET_BUDGET_FULL: Duration = Duration::from_secs(300);
/// A configuration with more failed requests than this is not reported.
const MAX_ERROR_FRACTION: f64 = 0.001;
/// How long the app and the baseline proxies may take to answer their first request.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// One configuration and everything measured on it so far.
pub(crate) struct PathRun {
    pub(crate) name: &'static str,
    pub(crate) describe: String,
    entry: Option<SocketAddr>,
    /// The proxies whose CPU and memory are charged to this path (none for direct).
    pub(crate) pids: Vec<u32>,
    pub(crate) samples: loadgen::Samples,
    /// CPU time per pid over all measured windows.
    pub(crate) cpu: Vec<Duration>,
    pub(crate) window_s: f64,
    /// (p50, p99) µs of each round, for the spread.
    pub(crate) rounds: Vec<(f64, f64)>,
    /// Whole-machine (CPU pressure %, steal %) during each round's window.
    pub(crate) machine: Vec<(f64, f64)>,
    pub(crate) peak_rss_kib: Vec<u64>,
    /// Why this path has no figures, if it has none.
    pub(crate) unavailable: Option<String>,
}

impl PathRun {
    fn new(name: &'static str, describe: String) -> Self {
        Self {
            name,
            describe,
            entry: None,
            pids: Vec::new(),
            samples: loadgen::Samples::default(),
            cpu: Vec::new(),
            window_s: 0.0,
            rounds: Vec::new(),
            machine: Vec::new(),
            peak_rss_kib: Vec::new(),
            unavailable: None,
        }
    }

    fn fail(&mut self, why: String) {
        eprintln!("data plane: {}: {why}", self.name);
        self.unavailable = Some(why);
        self.entry = None;
    }

    /// Whether the figures of this path can be quoted.
    pub(crate) fn usable(&self) -> bool {
        self.unavailable.is_none() && !self.samples.from_schedule_us.is_empty()
    }
}

/// Run the data-plane benchmark, fill its keys in `values` and return its report section.
pub(crate) async fn run(
    quick: bool,
    values: &mut BTreeMap<String, Value>,
) -> anyhow::Result<Vec<Section>> {
    let rounds = if quick { ROUNDS_QUICK } else { ROUNDS_FULL };
    let meshd = crate::release_bin("meshd")?;
    let exe = std::env::current_exe()?;
    let ticks = procstat::ticks_per_s();
    let load_before = loadavg();

    let mut env = TestEnv::new("bench_data_plane_baselines")?;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let app = SocketAddr::new(localhost, free_port(localhost)?);
    let app_handle = env.spawn(ProcSpec::new("app", "taskset").args([
        "-c".to_string(),
        SERVER_CPUS.into(),
        exe.display().to_string(),
        "serve-app".into(),
        "--listen".into(),
        app.to_string(),
    ]))?;
    wait_for("the bench app answers", READY_DEADLINE, move || {
        loadgen::probe(app).map(|(s, n)| s == 200 && n == app::BODY_BYTES)
    })
    .await?;

    let mut paths = vec![PathRun::new("direct", "client → app".into())];
    paths[0].entry = Some(app);
    let mut meshfed = PathRun::new(
        "meshfed",
        "client → sidecar A outbound (plain) → mTLS TLS 1.3 → sidecar B inbound → app".into(),
    );
    // Kept alive (and its processes running) until the end of the function.
    let _mesh = match mesh::start(&meshd, app.port(), SERVER_CPUS).await {
        Ok(mut m) => {
            meshfed.entry = Some(m.entry);
            meshfed.pids = m
                .sidecars
                .iter()
                .filter_map(|&h| m.cluster.env.proc(h).pid())
                .collect();
            Some(m)
        }
        Err(e) => {
            meshfed.fail(format!("meshfed path could not be started: {e:#}"));
            None
        }
    };
    paths.push(meshfed);
    paths.extend(start_baselines(&mut env, app).await);
    let app_pid = env.proc(app_handle).pid();

    let mut quiet = QuietWait {
        budget: if quick {
            QUIET_BUDGET_QUICK
        } else {
            QUIET_BUDGET_FULL
        },
        waited: Duration::ZERO,
        unquiet_rounds: 0,
    };
    for round in 0..rounds {
        let pressure = quiet.wait().await;
        eprintln!(
            "data plane: round {}/{rounds} (CPU pressure {pressure:.0} % at start)",
            round + 1
        );
        // The order rotates every round, so no configuration always runs first after the wait.
        let n = paths.len();
        for i in 0..n {
            let p = &mut paths[(i + round as usize) % n];
            let Some(entry) = p.entry else { continue };
            if let Err(e) = measure(p, entry, ticks).await {
                p.fail(format!("round {}: {e:#}", round + 1));
            }
        }
    }
    for p in paths.iter_mut() {
        p.peak_rss_kib = p
            .pids
            .iter()
            .filter_map(|&pid| procstat::peak_rss_kib(pid))
            .collect();
        let total = p.samples.from_schedule_us.len() as u64 + p.samples.errors;
        if p.samples.errors as f64 > MAX_ERROR_FRACTION * total.max(1) as f64 {
            let first = p.samples.first_error.clone().unwrap_or_default();
            p.fail(format!(
                "{} of {total} requests failed (first: {first})",
                p.samples.errors
            ));
        }
    }
    let context = figures::Context {
        quick,
        rounds,
        load: LOAD,
        load_before,
        load_after: loadavg(),
        app_rss_kib: app_pid.and_then(procstat::peak_rss_kib),
        quiet_waited: quiet.waited,
        unquiet_rounds: quiet.unquiet_rounds,
        quiet_pct: QUIET_PRESSURE_PCT,
    };
    let section = figures::section(&paths, &context, values);
    Ok(vec![section])
}

/// Waiting for a quiet machine before each round, within one budget for the whole run.
struct QuietWait {
    budget: Duration,
    waited: Duration,
    /// Rounds started with the budget spent and the machine still busy.
    unquiet_rounds: u32,
}

impl QuietWait {
    /// Wait until the CPU pressure over [`QUIET_SAMPLE`] is below [`QUIET_PRESSURE_PCT`], or
    /// the budget is spent; returns the last pressure seen (NaN without PSI).
    async fn wait(&mut self) -> f64 {
        loop {
            let started = Instant::now();
            let a = procstat::MachineLoad::read();
            tokio::time::sleep(QUIET_SAMPLE).await;
            let pressure = match (a, procstat::MachineLoad::read()) {
                (Some(a), Some(b)) => a.pressure_steal_pct(b).0,
                _ => f64::NAN,
            };
            if pressure.is_nan() || pressure < QUIET_PRESSURE_PCT {
                return pressure;
            }
            if self.waited >= self.budget {
                self.unquiet_rounds += 1;
                return pressure;
            }
            self.waited += started.elapsed();
        }
    }
}

/// Install (if needed) and start the nginx and haproxy pairs; a pair that cannot be started is
/// returned with the reason instead.
async fn start_baselines(env: &mut TestEnv, app: SocketAddr) -> Vec<PathRun> {
    let installed = tokio::task::block_in_place(baselines::ensure_installed);
    let dir = env.root().join("baselines");
    let certs = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| baselines::make_certs(&dir));
    let mut out = Vec::new();
    for (kind, bin) in installed {
        let mut p = PathRun::new(
            kind.name(),
            format!(
                "client → {0} A (plain) → TLS 1.3, client cert → {0} B → app",
                kind.name()
            ),
        );
        let started = match (&bin, &certs) {
            (Err(why), _) => Err(anyhow::anyhow!("{why}")),
            (_, Err(e)) => Err(anyhow::anyhow!("certificates: {e:#}")),
            (Ok(bin), Ok(())) => baselines::start(env, kind, bin, &dir, app, SERVER_CPUS),
        };
        match started {
            Ok(pair) => {
                let entry = pair.entry;
                let ready = wait_for(
                    &format!("a 200 through the {} pair", kind.name()),
                    READY_DEADLINE,
                    move || loadgen::probe(entry).map(|(s, n)| s == 200 && n == app::BODY_BYTES),
                )
                .await;
                match ready {
                    Ok(()) => {
                        p.entry = Some(entry);
                        p.pids = pair
                            .handles
                            .iter()
                            .filter_map(|&h| env.proc(h).pid())
                            .collect();
                        p.describe = format!("{} ({})", p.describe, pair.version);
                    }
                    Err(e) => {
                        let logs: Vec<String> = pair
                            .handles
                            .iter()
                            .map(|&h| env.proc(h).log_tail(5))
                            .collect();
                        p.fail(format!("{e:#}; logs: {}", logs.join(" | ")));
                    }
                }
            }
            Err(e) => p.fail(format!("{e:#}")),
        }
        out.push(p);
    }
    out
}

/// One warm-up plus window of load on `p`, added to its totals.
async fn measure(p: &mut PathRun, entry: SocketAddr, ticks: u64) -> anyhow::Result<()> {
    let pids = p.pids.clone();
    let (samples, before, after) = tokio::task::spawn_blocking(move || {
        loadgen::run(entry, app::BODY_BYTES, LOAD, || {
            let per_pid: Vec<_> = pids
                .iter()
                .map(|&pid| procstat::cpu_time(pid, ticks))
                .collect();
            (per_pid, procstat::MachineLoad::read())
        })
    })
    .await??;
    let ((before, m0), (after, m1)) = (before, after);
    if let (Some(m0), Some(m1)) = (m0, m1) {
        p.machine.push(m0.pressure_steal_pct(m1));
    }
    if samples.from_schedule_us.is_empty() {
        bail!(
            "no successful request; first error: {}",
            samples.first_error.unwrap_or_default()
        );
    }
    let cpu: Option<Vec<Duration>> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| Some((*a)?.saturating_sub((*b)?)))
        .collect();
    let Some(cpu) = cpu else {
        bail!("a proxy process exited during the window");
    };
    if p.cpu.is_empty() {
        p.cpu = vec![Duration::ZERO; cpu.len()];
    }
    for (total, c) in p.cpu.iter_mut().zip(cpu) {
        *total += c;
    }
    p.window_s += LOAD.window.as_secs_f64();
    let s = &samples.from_schedule_us;
    p.rounds
        .push((loadgen::quantile(s, 0.5), loadgen::quantile(s, 0.99)));
    p.samples.extend(samples);
    Ok(())
}

/// Poll `f` (a blocking check) every 50 ms until it holds, for at most `deadline`.
pub(crate) async fn wait_for(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    loop {
        let last = match tokio::task::block_in_place(&mut f) {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > until {
            bail!("timed out after {deadline:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/proc/loadavg`'s first three fields: how busy the shared machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
