//! BENCHMARKS.md writer: machine facts, commands, and one table per section. Sections of a part
//! that was not run this time (`--only`) are carried over verbatim from the previous file and
//! marked as such, so a partial run never erases the other part's figures.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::{Part, Section};

/// The line that marks a section copied from the previous report.
const CARRIED: &str = "_Carried over from the previous BENCHMARKS.md: not rerun by the run that wrote this file (`--only`), so its keys are null in that run's `--json`._";

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

/// `## ` sections of an existing report whose titles start with `prefix`, verbatim (heading
/// included), without an earlier carry-over mark.
fn previous_sections(old: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in old.split("\n## ").skip(1) {
        if chunk.starts_with(prefix) {
            let text: Vec<&str> = chunk.lines().filter(|l| *l != CARRIED).collect();
            out.push(format!("## {}\n", text.join("\n").trim_end()));
        }
    }
    out
}

pub(crate) fn write(
    out: &Path,
    quick: bool,
    sections: &[Section],
    skipped: &[Part],
    took: Duration,
) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(out).unwrap_or_default();
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
        "Not measured yet (null in `--json`): tcp_tls_gbps, cross_cluster_added_p99_us and region failover (issue D), and the data-plane p99 keys where this run's noise made them unquotable (see below).\n"
    )?;
    // Parts in their fixed order: this run's sections, or the previous file's for a skipped part.
    for part in Part::ALL {
        if skipped.contains(&part) {
            for carried in previous_sections(&old, part.title_prefix()) {
                let (heading, body) = carried.split_once('\n').unwrap_or((&carried, ""));
                writeln!(s, "{heading}\n\n{CARRIED}\n\n{}\n", body.trim())?;
            }
            continue;
        }
        for sec in sections
            .iter()
            .filter(|sec| sec.title.starts_with(part.title_prefix()))
        {
            write_section(&mut s, sec)?;
        }
    }
    std::fs::write(out, s)?;
    Ok(())
}

fn write_section(s: &mut String, sec: &Section) -> std::fmt::Result {
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
    writeln!(s)
}
