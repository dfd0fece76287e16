//! Control-plane benchmarks: Raft write latency and throughput through the real API, leader
//! failover under kill -9, and CSR signing rate — with the disk's own fsync latency measured in
//! the same run as the floor they are compared against.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mesh_chaos_tests::control::{ClusterOptions, ControlCluster, export_resource};
use mesh_node::client::ApiClient;
use mesh_proto::api::ApplyRequest;
use serde_json::{Value, json};

use crate::report::Row;
use crate::{Section, ms, percentiles};

async fn write(c: &ApiClient, key: &str, v: u64) -> bool {
    c.apply(&ApplyRequest {
        resources: vec![export_resource(key, v)],
        dry_run: false,
    })
    .await
    .is_ok()
}

/// p50/p99 of write(4 KiB) + fdatasync in the bench's temp dir: the floor any durable write pays.
fn fsync_floor(dir: &std::path::Path, n: usize) -> anyhow::Result<(f64, f64)> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![7u8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(ms(t.elapsed()));
    }
    std::fs::remove_file(&path)?;
    Ok(percentiles(lat))
}

pub(crate) async fn run(
    quick: bool,
    values: &mut BTreeMap<String, Value>,
) -> anyhow::Result<Vec<Section>> {
    let (n_lat, tput_secs, kills, n_csr) = if quick {
        (300, 5, 3, 300)
    } else {
        (2000, 15, 10, 3000)
    };
    let opts = ClusterOptions {
        cpus: Some("1".into()),
        meshd: Some(crate::release_bin("meshd")?),
        ..ClusterOptions::default()
    };
    let mut cl = ControlCluster::start_with("bench_control", 41, 3, opts)?;
    let all = [0usize, 1, 2];
    let leader = cl.leader(&all, Duration::from_secs(20)).await?;
    let c = cl.client_on(&[leader])?;
    let (fs50, fs99) = fsync_floor(cl.env.root(), 200)?;

    for i in 0..50 {
        write(&c, &format!("w{}", i % 10), i).await;
    }
    let mut lat = Vec::with_capacity(n_lat);
    for i in 0..n_lat as u64 {
        let t = Instant::now();
        if write(&c, &format!("b{}", i % 100), i).await {
            lat.push(ms(t.elapsed()));
        }
    }
    let (p50, p99) = percentiles(lat.clone());

    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(tput_secs);
    let shared = Arc::new(c.clone_settings());
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let (c, done) = (shared.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while Instant::now() < until {
                    i += 1;
                    if write(&c, &format!("t{t}"), i).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let wps = done.load(Ordering::Relaxed) as f64 / tput_secs as f64;

    let mut failovers = Vec::new();
    for round in 0..kills {
        let leader = cl.leader(&all, Duration::from_secs(20)).await?;
        let probe = {
            let mut p = cl.client()?.clone_settings();
            p.attempt_timeout = Duration::from_millis(700);
            p.retry_for = Duration::ZERO;
            p
        };
        let t = Instant::now();
        cl.kill9(leader)?;
        let mut n = 0;
        loop {
            n += 1;
            if write(&probe, "probe", round * 10_000 + n).await {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "no failover within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failovers.push(ms(t.elapsed()));
        cl.restart(leader)?;
        cl.wait_ready(leader, Duration::from_secs(30)).await?;
        cl.wait_caught_up(0, Duration::from_secs(30)).await?;
    }
    let (f50, f99) = percentiles(failovers.clone());
    drop(cl);

    let signs = csr_rate(n_csr)?;
    values.insert("raft_write_p50_ms".into(), json!(round2(p50)));
    values.insert("raft_write_p99_ms".into(), json!(round2(p99)));
    values.insert("raft_writes_per_s".into(), json!(wps.round()));
    values.insert("leader_failover_p99_ms".into(), json!(f99.round()));
    values.insert("csr_signs_per_s".into(), json!(signs.round()));

    let raft = Section {
        title: "Control plane: Raft writes through the API (3 voters, fsync)".into(),
        command: "cargo run --release -p mesh-bench -- [--quick] --json".into(),
        rows: vec![
            Row::new("fsync floor: write 4 KiB + fdatasync, p50 / p99", format!("{fs50:.2} / {fs99:.2} ms"), "—", "baseline"),
            Row::new("raft_write_p50_ms (1 client, HTTPS+JSON apply)", format!("{p50:.2} ms"), "—", &format!("{:.1}× fsync p50", p50 / fs50)),
            Row::new("raft_write_p99_ms (1 client)", format!("{p99:.2} ms"), "≤ 5 ms", &format!("{:.1}× fsync p99", p99 / fs99)),
            Row::new("raft_writes_per_s (64 clients)", format!("{wps:.0}"), "≥ 5000", "—"),
            Row::new(&format!("leader failover, kill -9 → next committed write (n={kills}) p50 / p99"), format!("{f50:.0} / {f99:.0} ms"), "p99 ≤ 1000 ms", "Raft paper median 287 ms"),
            Row::new("csr_signs_per_s (1 core, check + sign, ECDSA P-256)", format!("{signs:.0}"), "≥ 2000", "—"),
        ],
        notes: vec![
            format!("{} latency samples, {tput_secs} s throughput window, {kills} leader kills, {n_csr} CSRs.", lat.len()),
            "meshd pinned to CPU 1, the client to CPU 0. Writes go to the leader's API directly (no follower forwarding); each is one `POST /v1/apply` of one ServiceExport over a kept-alive TLS 1.3 connection, so the latency includes HTTP, JSON, validation, Raft replication to a quorum and two fsyncs (log and applied state).".into(),
        ],
    };
    Ok(vec![raft])
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Single-core signing rate: CSR checks and signatures in this process, CSRs made beforehand.
fn csr_rate(n: usize) -> anyhow::Result<f64> {
    use mesh_core::identity::{self, Requester};
    use mesh_proto::{ClusterName, ServiceName, SpiffeId, TrustDomain};
    let td = TrustDomain::new("bench.mesh")?;
    let ca = identity::generate_ca(
        &ClusterName::new("bench")?,
        &td,
        mesh_node::clock::now_unix(),
    )?;
    let svc = ServiceName::new("api")?;
    let id = SpiffeId::workload(&td, "default", &svc);
    let csrs: Vec<String> = (0..n)
        .map(|_| identity::generate_csr(&id).map(|k| k.csr_pem))
        .collect::<Result<_, _>>()?;
    let now = mesh_node::clock::now_unix();
    let t = Instant::now();
    for csr in &csrs {
        let checked = identity::check_csr(csr, &td, &Requester::Operator)?;
        identity::sign_svid(&ca, csr, &checked, identity::DEFAULT_SVID_TTL_SECS, now)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
