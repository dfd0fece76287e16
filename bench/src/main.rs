//! mesh-bench: the side-by-side benchmark harness (DESIGN §10). It runs every benchmark that
//! exists, rewrites BENCHMARKS.md with the machine, the commands, medians and ratios, and with
//! `--json` prints one JSON object whose keys are every figure DESIGN §10 defines (`null` until
//! measured).
//!
//! Pinning: the meshd processes (and the data plane's app, nginx and haproxy) run on CPU 1
//! (`taskset -c 1`), this process on CPU 0, so the client and the servers do not steal each
//! other's core and cross-vCPU noise is constant.
//!
//! `--only control-plane|data-plane` runs one part; the report keeps the other part's section
//! from the previous BENCHMARKS.md, marked as carried over. The hidden `serve-app` subcommand is
//! the data plane's upstream app, run as a separate pinned process.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

mod control_plane;
mod data_plane;
mod gossip;
mod report;
mod tunnel;

#[derive(Parser)]
#[command(
    name = "mesh-bench",
    about = "meshfed benchmarks; rewrites BENCHMARKS.md"
)]
struct Cli {
    /// Shorter runs (whole harness under 5 minutes).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object with every key on stdout.
    #[arg(long)]
    json: bool,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: std::path::PathBuf,
    /// Run only one part; the other part's section is kept from the existing report.
    #[arg(long, value_enum)]
    only: Option<Part>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// The parts of the harness.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Part {
    ControlPlane,
    DataPlane,
    Gossip,
    Tunnel,
}

impl Part {
    /// Every part, in report order.
    pub(crate) const ALL: [Part; 4] = [
        Part::ControlPlane,
        Part::DataPlane,
        Part::Gossip,
        Part::Tunnel,
    ];

    /// The prefix of the titles of this part's report sections.
    pub(crate) fn title_prefix(self) -> &'static str {
        match self {
            Part::ControlPlane => "Control plane",
            Part::DataPlane => "Data plane",
            Part::Gossip => "Gossip",
            Part::Tunnel => "Cross-cluster tunnel",
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// The data-plane benchmark's 1 KiB app (started by the harness itself).
    #[command(hide = true)]
    ServeApp {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

/// Every key DESIGN §10 defines, in order.
pub(crate) const KEYS: &[&str] = &[
    "raft_write_p50_ms",
    "raft_write_p99_ms",
    "raft_writes_per_s",
    "leader_failover_p99_ms",
    "csr_signs_per_s",
    "sidecar_added_p50_us",
    "sidecar_added_p99_us",
    "sidecar_cpu_per_1000rps",
    "sidecar_rss_mb",
    "nginx_added_p99_us",
    "haproxy_added_p99_us",
    "gossip_detect_p99_ms_n100",
    "gossip_disseminate_p999_ms_n100",
    "gossip_false_positives_n100",
    "gossip_detect_p99_ms_n1000",
    "tunnel_gbps",
    "raw_quinn_gbps",
    "tcp_tls_gbps",
    "cross_cluster_added_p99_us",
    "region_failover_ms",
    "region_failover_failed_pct",
];

/// One measured section of the report.
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) command: String,
    pub(crate) rows: Vec<report::Row>,
    pub(crate) notes: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::ServeApp { listen }) = cli.cmd {
        // Pinned by whoever started it; not pinned to the load generator's CPU here.
        return data_plane::serve_app(listen);
    }
    mesh_node::install_crypto_provider();
    pin_self("0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut values: BTreeMap<String, Value> =
        KEYS.iter().map(|k| (k.to_string(), Value::Null)).collect();
    let mut sections = Vec::new();
    let started = std::time::Instant::now();
    let runs = |p: Part| cli.only.is_none_or(|o| o == p);
    let mut skipped = Vec::new();
    for part in Part::ALL {
        if !runs(part) {
            skipped.push(part);
            continue;
        }
        let run = async {
            match part {
                Part::ControlPlane => control_plane::run(cli.quick, &mut values).await,
                Part::DataPlane => data_plane::run(cli.quick, &mut values).await,
                Part::Gossip => Ok(gossip::run(cli.quick, &mut values)),
                Part::Tunnel => tunnel::run(cli.quick, &mut values).await,
            }
        };
        // On Ctrl-C the run is dropped, and with it every process it started.
        let s = rt.block_on(async {
            tokio::select! {
                r = run => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        })?;
        sections.extend(s);
    }
    report::write(&cli.out, cli.quick, &sections, &skipped, started.elapsed())?;
    eprintln!("wrote {} in {:.0?}", cli.out.display(), started.elapsed());
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&json!(values))?);
    }
    Ok(())
}

/// Build the release binaries the benchmarks run and return the path of `name`. Benchmarks
/// never run debug builds: `cargo run --release -p mesh-bench` builds only this crate, so the
/// daemons are built here.
pub(crate) fn release_bin(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    // The same package set as `cargo build --release -p mesh-node -p mesh-bench`, so features
    // unify identically and neither build invalidates the other; only meshd's bins, so the
    // running mesh-bench binary is never replaced under us.
    build.args([
        "build",
        "--release",
        "-p",
        "mesh-node",
        "-p",
        "mesh-bench",
        "--bin",
        "meshd",
        "--bin",
        "meshctl",
    ]);
    // `cargo run` hands its package's CARGO_PKG_*/CARGO_MANIFEST_* to us; build scripts that
    // track those (ring's does) would see them change and rebuild half the tree, twice.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*k)
        {
            build.env_remove(&key);
        }
    }
    let status = build.status()?;
    anyhow::ensure!(
        status.success(),
        "cargo build --release -p mesh-node -p mesh-bench --bin meshd --bin meshctl failed"
    );
    let dir = std::env::current_exe()?
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let bin = dir.join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing after the release build",
        bin.display()
    );
    Ok(bin)
}

/// Pin this process to `cpus` (best effort: without taskset the numbers are noisier, and the
/// report says so).
fn pin_self(cpus: &str) {
    let pid = std::process::id().to_string();
    let ok = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("warning: taskset unavailable; results are unpinned");
    }
}

/// Median and p99 of a sample, in the sample's unit.
pub(crate) fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
