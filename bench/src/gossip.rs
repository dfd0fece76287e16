//! Gossip figures (DESIGN §5, §10): the seeded in-process simulation of many foca members
//! (`mesh_core::gossip::sim`) over a lossy, delayed network with kills, at N = 100 and, in a
//! full run, N = 1000. Virtual time, so the figures do not depend on this machine's load.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh_core::gossip::sim::{SimParams, run_simulation};
use serde_json::{Value, json};

use crate::Section;
use crate::report::Row;

pub(crate) fn run(quick: bool, values: &mut BTreeMap<String, Value>) -> Vec<Section> {
    let started = Instant::now();
    let p100 = SimParams::lan(100, 1);
    let r = run_simulation(&p100);
    values.insert(
        "gossip_detect_p99_ms_n100".into(),
        json!(r.detect_p99_ms.round()),
    );
    values.insert(
        "gossip_disseminate_p999_ms_n100".into(),
        json!(r.disseminate_p999_ms.round()),
    );
    values.insert(
        "gossip_false_positives_n100".into(),
        json!(r.false_positives),
    );
    let mut rows = vec![
        Row::new(
            "gossip_detect_p99_ms_n100 (kill → every survivor marks it down), p50 / p99",
            format!(
                "{:.0} / {:.0} ms ({} undetected)",
                r.detect_p50_ms, r.detect_p99_ms, r.undetected
            ),
            "p99 ≤ 3000 ms",
            "Serf LAN defaults: ≈ 8 s suspicion at N = 100",
        ),
        Row::new(
            "gossip_disseminate_p999_ms_n100 (broadcast → every member), p50 / p99.9",
            format!(
                "{:.0} / {:.0} ms ({} not reached)",
                r.disseminate_p50_ms, r.disseminate_p999_ms, r.not_disseminated
            ),
            "p99.9 ≤ 2000 ms",
            "—",
        ),
        Row::new(
            "gossip_false_positives_n100 (live members declared down)",
            r.false_positives.to_string(),
            "0",
            "—",
        ),
    ];
    let mut notes = vec![format!(
        "N = 100, seed 1, {:.0} % loss, {:?}–{:?} one-way delay, {:?} of virtual time, {} kills, {} broadcasts (`SimParams::lan`).",
        p100.loss * 100.0,
        p100.delay_min,
        p100.delay_max,
        p100.run,
        p100.kills,
        p100.broadcasts
    ), "The core test (`core/tests/gossip_sim.rs`) pins seed 1 with 5 kills over 40 s, which meets every target. This longer run (10 kills over 60 s) is harder: a broadcast that misses a member is not repaired (no push-pull anti-entropy yet), so p99.9 dissemination is the run's end. Seeds 2 and 3 also missed the detection target (3.71 s, 3.11 s p99) and seed 2 had a false positive: foca's suspicion timeout is fixed, not Lifeguard-dynamic.".to_owned()];
    if quick {
        notes.push("gossip_detect_p99_ms_n1000: not run in --quick (null).".into());
    } else {
        let mut p = SimParams::lan(1000, 1);
        p.run = Duration::from_secs(20);
        p.kills = 3;
        p.broadcasts = 3;
        let r = run_simulation(&p);
        values.insert(
            "gossip_detect_p99_ms_n1000".into(),
            json!(r.detect_p99_ms.round()),
        );
        rows.push(Row::new(
            "gossip_detect_p99_ms_n1000, p50 / p99",
            format!(
                "{:.0} / {:.0} ms ({} undetected)",
                r.detect_p50_ms, r.detect_p99_ms, r.undetected
            ),
            "—",
            "—",
        ));
        notes.push("N = 1000: 20 s of virtual time, 3 kills, 3 broadcasts.".into());
    }
    notes.push(format!(
        "Simulated in {:.1} s of wall time.",
        started.elapsed().as_secs_f64()
    ));
    vec![Section {
        title: "Gossip: foca SWIM simulation, 10 % loss (virtual time)".into(),
        command: "cargo run --release -p mesh-bench -- --only gossip --json".into(),
        rows,
        notes,
    }]
}
