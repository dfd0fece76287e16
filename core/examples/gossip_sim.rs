//! Run the gossip simulation from the command line:
//! `cargo run --release -p mesh-core --example gossip_sim -- N SEED LOSS RUN_SECS`.

use std::time::Duration;

use mesh_core::gossip::sim::{SimParams, run_simulation};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_owned());
    let n: usize = arg(1, "100").parse().unwrap_or(100);
    let mut p = SimParams::lan(n, arg(2, "1").parse().unwrap_or(1));
    p.loss = arg(3, "0.1").parse().unwrap_or(0.1);
    p.run = Duration::from_secs(arg(4, "60").parse().unwrap_or(60));
    p.kills = arg(5, "5").parse().unwrap_or(5);
    p.broadcasts = p.kills;
    if let Some(ms) = args.get(6).and_then(|s| s.parse().ok()) {
        p.config.suspect_to_down_after = Duration::from_millis(ms);
    }
    if let Some(ms) = args.get(7).and_then(|s| s.parse().ok()) {
        p.config.probe_period = Duration::from_millis(ms);
    }
    if let Some(ms) = args.get(8).and_then(|s| s.parse().ok()) {
        p.config.probe_rtt = Duration::from_millis(ms);
    }
    let started = std::time::Instant::now();
    let r = run_simulation(&p);
    println!("{r:?} in {:?}", started.elapsed());
}
