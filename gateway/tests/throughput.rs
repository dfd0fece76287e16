//! Prints the tunnel and raw-quinn throughput figures side by side (same process, same run).
//! Ignored by default: a figure, not a pass/fail check (DESIGN §10: benchmarks are never timed
//! tests). Run: `cargo test --release -p mesh-gateway --test throughput -- --ignored --nocapture`.

#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failed setup step is a test failure"
)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand or from bench"]
async fn tunnel_vs_raw_quinn() {
    let bytes = std::env::var("MESHFED_THROUGHPUT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512u64 << 20);
    // Warm-up, then three of each, interleaved; medians.
    let _ = mesh_gateway::raw_quinn_gbps(16 << 20).await.unwrap();
    let _ = mesh_gateway::measure_tunnel_gbps(16 << 20).await.unwrap();
    let (mut tunnel, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        raw.push(mesh_gateway::raw_quinn_gbps(bytes).await.unwrap());
        tunnel.push(mesh_gateway::measure_tunnel_gbps(bytes).await.unwrap());
    }
    tunnel.sort_by(f64::total_cmp);
    raw.sort_by(f64::total_cmp);
    println!(
        "bytes={bytes} tunnel_gbps={:.2} raw_quinn_gbps={:.2} ratio={:.2} (tunnel {tunnel:.2?}, raw {raw:.2?})",
        tunnel[1],
        raw[1],
        tunnel[1] / raw[1]
    );
}
