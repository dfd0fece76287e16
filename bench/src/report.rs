//! BENCHMARKS.md writer: machine facts, commands, and one table per section.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::Section;

pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) value: String,
    pub(crate) goal: String,
    pub(crate) baseline: String,
}

impl Row {
    pub(crate) fn new(figure: &str, value: String, goal: &str, baseline: &str) -> Self {
        Self {
            figure: figure.into(),
            value,
            goal: goal.into(),
            baseline: baseline.into(),
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Not available_parallelism(): this process is pinned to one CPU by then.
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} vCPU ({cpu}), Linux {}", kernel.trim())
}

pub(crate) fn write(
    out: &Path,
    quick: bool,
    sections: &[Section],
    took: Duration,
) -> anyhow::Result<()> {
    let mut s = String::new();
    writeln!(s, "# meshfed benchmarks\n")?;
    writeln!(
        s,
        "Written by `mesh-bench`{}; do not edit by hand. Rerun: `cargo run --release -p mesh-bench -- --json`.\n",
        if quick { " --quick" } else { "" }
    )?;
    writeln!(s, "- Machine: {}", machine())?;
    writeln!(
        s,
        "- Mode: {} run, {:.0} s in all",
        if quick { "quick" } else { "full" },
        took.as_secs_f64()
    )?;
    writeln!(
        s,
        "- Figures are medians (p50) and p99 of the samples in this run; goals are DESIGN §10's.\n"
    )?;
    writeln!(
        s,
        "Not measured yet (null in `--json`): data-plane sidecar figures and nginx/haproxy baselines (issue B), gossip (issue C), tunnel and failover (issue D).\n"
    )?;
    for sec in sections {
        writeln!(s, "## {}\n", sec.title)?;
        writeln!(s, "Command: `{}`\n", sec.command)?;
        writeln!(s, "| figure | measured | goal | compared with |")?;
        writeln!(s, "|---|---|---|---|")?;
        for r in &sec.rows {
            writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.figure, r.value, r.goal, r.baseline
            )?;
        }
        writeln!(s)?;
        for n in &sec.notes {
            writeln!(s, "- {n}")?;
        }
        writeln!(s)?;
    }
    std::fs::write(out, s)?;
    Ok(())
}
