//! The data-plane figures: from the measured paths to the `--json` keys and the BENCHMARKS.md
//! section (every configuration's p50/p99, added latency over direct, CPU per 1000 rps, peak
//! RSS, ratios against nginx and haproxy); the notes and verdicts are in `notes`.
//!
//! Only arithmetic and table text live here; nothing is measured. A path that was not measured
//! keeps its keys `null` and the section says why.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::PathRun;
use super::loadgen::{Load, quantile};
use crate::Section;
use crate::report::Row;

mod notes;

/// DESIGN §10: added p99 per hop pair, mTLS, 1 KiB, 1000 rps.
const GOAL_ADDED_P99_US: f64 = 200.0;
/// DESIGN §10: proxy CPU per 1000 rps, per proxy.
const GOAL_CPU_PER_PROXY: f64 = 0.08;
/// DESIGN §10: sidecar peak RSS under load.
const GOAL_RSS_MB: f64 = 12.0;

/// Facts about the run that the section states.
pub(crate) struct Context {
    pub(crate) quick: bool,
    pub(crate) rounds: u32,
    pub(crate) load: Load,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) app_rss_kib: Option<u64>,
    /// Time spent waiting for a quiet machine before rounds, and rounds started without one.
    pub(crate) quiet_waited: std::time::Duration,
    pub(crate) unquiet_rounds: u32,
    pub(crate) quiet_pct: f64,
}

/// Above this median CPU pressure over the measured windows, a p99 measures the queue for the
/// CPU rather than the proxy, and the p99 keys are left null.
const MAX_PRESSURE_FOR_P99_PCT: f64 = 50.0;

/// One usable path, reduced to numbers.
pub(super) struct Fig {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    send_p50: f64,
    send_p99: f64,
    requests: usize,
    /// vCPU per 1000 rps of each proxy process.
    cpu_each: Vec<f64>,
    rss_each_mb: Vec<f64>,
}

impl Fig {
    pub(super) fn of(p: &PathRun) -> Option<Fig> {
        if !p.usable() || p.window_s <= 0.0 {
            return None;
        }
        let s = &p.samples.from_schedule_us;
        let rps = s.len() as f64 / p.window_s;
        Some(Fig {
            p50: median(p.rounds.iter().map(|r| r.0))?,
            p99: median(p.rounds.iter().map(|r| r.1))?,
            p999: quantile(s, 0.999),
            max: quantile(s, 1.0),
            send_p50: quantile(&p.samples.from_send_us, 0.5),
            send_p99: quantile(&p.samples.from_send_us, 0.99),
            requests: s.len(),
            cpu_each: p
                .cpu
                .iter()
                .map(|c| c.as_secs_f64() / p.window_s * 1000.0 / rps)
                .collect(),
            rss_each_mb: p.peak_rss_kib.iter().map(|k| *k as f64 / 1024.0).collect(),
        })
    }

    fn cpu_pair(&self) -> Option<f64> {
        (!self.cpu_each.is_empty()).then(|| self.cpu_each.iter().sum())
    }

    pub(super) fn rss_max(&self) -> Option<f64> {
        self.rss_each_mb.iter().copied().reduce(f64::max)
    }
}

/// The measured paths, with the per-round pairing against direct.
struct Summary<'a> {
    paths: &'a [PathRun],
    /// Why this run's p99 figures cannot be quoted, if they cannot.
    p99_problem: Option<String>,
}

impl<'a> Summary<'a> {
    fn new(paths: &'a [PathRun]) -> Self {
        let pressure = median(
            paths
                .iter()
                .flat_map(|p| p.machine.iter().map(|m| m.0))
                .filter(|p| !p.is_nan()),
        );
        let p99_problem = pressure.filter(|p| *p > MAX_PRESSURE_FOR_P99_PCT).map(|p| {
            format!(
                "the median CPU pressure over the measured windows was {p:.0} % (> {MAX_PRESSURE_FOR_P99_PCT:.0} %), so the p99s measure the wait for a CPU, not the proxies"
            )
        });
        Self { paths, p99_problem }
    }

    fn path(&self, name: &str) -> Option<&PathRun> {
        self.paths.iter().find(|p| p.name == name)
    }

    fn fig(&self, name: &str) -> Option<Fig> {
        self.path(name).and_then(Fig::of)
    }

    /// Per round: (p50, p99) of `name` minus direct's in the same round, so drift in the
    /// machine's background load cancels.
    fn diffs(&self, name: &str) -> Option<Vec<(f64, f64)>> {
        let (d, p) = (self.path("direct")?, self.path(name)?);
        (d.usable() && p.usable()).then(|| {
            p.rounds
                .iter()
                .zip(&d.rounds)
                .map(|(r, d)| (r.0 - d.0, r.1 - d.1))
                .collect()
        })
    }

    /// Added (p50, p99): the medians of the per-round differences.
    fn added(&self, name: &str) -> Option<(f64, f64)> {
        let d = self.diffs(name)?;
        Some((
            median(d.iter().map(|x| x.0))?,
            median(d.iter().map(|x| x.1))?,
        ))
    }

    /// The added p99 of `name` if it can be quoted, else why not (with the raw figure). It can
    /// be quoted when the machine was not saturated, it is not negative, and the middle half of
    /// its per-round values is no wider than the larger of the goal and the figure itself, so
    /// the number says at least which side of the goal it is on.
    fn added_p99(&self, name: &str) -> Result<f64, String> {
        let Some((_, a99)) = self.added(name) else {
            return Err("not measured".into());
        };
        if let Some(why) = &self.p99_problem {
            return Err(format!("measured {a99:+.0} µs, not quotable: {why}"));
        }
        if a99 < 0.0 {
            return Err(format!(
                "measured {a99:+.0} µs: below this run's round-to-round noise, not quotable"
            ));
        }
        if let Some((lo, hi)) = self.p99_quartiles(name)
            && hi - lo > GOAL_ADDED_P99_US.max(a99)
        {
            return Err(format!(
                "measured {a99:+.0} µs, not quotable: the middle half of rounds spans {:.0} µs, more than the figure and the {GOAL_ADDED_P99_US:.0} µs goal",
                hi - lo
            ));
        }
        Ok(a99)
    }

    /// First and third quartile of the per-round added p99 (`None` below 3 rounds).
    fn p99_quartiles(&self, name: &str) -> Option<(f64, f64)> {
        let mut d: Vec<f64> = self.diffs(name)?.iter().map(|x| x.1).collect();
        d.sort_by(f64::total_cmp);
        (d.len() >= 3).then(|| (quantile(&d, 0.25), quantile(&d, 0.75)))
    }

    /// The middle half of the per-round added p99: how far one round's figure can be trusted.
    fn p99_iqr(&self, name: &str) -> String {
        self.p99_quartiles(name).map_or(String::new(), |(lo, hi)| {
            format!(" (middle half of rounds {lo:+.0} … {hi:+.0})")
        })
    }

    fn cpu_text(&self, name: &str) -> String {
        match self
            .fig(name)
            .and_then(|f| f.cpu_pair().map(|c| (c, f.cpu_each)))
        {
            Some((c, e)) => format!("{c:.3} vCPU (A {})", join(&e, 3, ", B ")),
            None => "not measured".into(),
        }
    }

    fn rss_text(&self, name: &str) -> String {
        match self
            .fig(name)
            .and_then(|f| f.rss_max().map(|m| (m, f.rss_each_mb)))
        {
            Some((m, e)) => format!("{m:.1} MB (A {})", join(&e, 1, ", B ")),
            None => "not measured".into(),
        }
    }
}

/// Fill the data-plane keys and build the section.
pub(crate) fn section(
    paths: &[PathRun],
    cx: &Context,
    values: &mut BTreeMap<String, Value>,
) -> Section {
    let sum = Summary::new(paths);
    let mesh = sum.fig("meshfed");
    let mesh_add = sum.added("meshfed");
    let keys = [
        ("sidecar_added_p50_us", mesh_add.map(|a| round(a.0, 1))),
        (
            "sidecar_added_p99_us",
            sum.added_p99("meshfed").ok().map(|a| round(a, 1)),
        ),
        (
            "sidecar_cpu_per_1000rps",
            mesh.as_ref().and_then(Fig::cpu_pair).map(|c| round(c, 3)),
        ),
        (
            "sidecar_rss_mb",
            mesh.as_ref().and_then(Fig::rss_max).map(|m| round(m, 1)),
        ),
        (
            "nginx_added_p99_us",
            sum.added_p99("nginx").ok().map(|a| round(a, 1)),
        ),
        (
            "haproxy_added_p99_us",
            sum.added_p99("haproxy").ok().map(|a| round(a, 1)),
        ),
    ];
    for (k, v) in keys {
        values.insert(k.into(), v.map_or(Value::Null, |v| json!(v)));
    }
    let notes = notes::notes(
        paths,
        cx,
        sum.fig("direct").as_ref(),
        mesh.as_ref(),
        mesh_add.map(|a| {
            let p99 = sum
                .added_p99("meshfed")
                .map(|v| (v, sum.p99_quartiles("meshfed")));
            (a.0, p99)
        }),
    );
    Section {
        title: "Data plane: one hop pair, mTLS, HTTP/1.1, 1 KiB, 1000 req/s open loop".into(),
        command: format!(
            "cargo run --release -p mesh-bench -- {}--json [--only data-plane]",
            if cx.quick { "--quick " } else { "" }
        ),
        rows: rows(&sum),
        notes,
    }
}

fn rows(sum: &Summary<'_>) -> Vec<Row> {
    let mut rows = Vec::new();
    for p in sum.paths {
        let value = match Fig::of(p) {
            Some(f) => format!(
                "{:.0} / {:.0} µs (pooled: p99.9 {:.0}, max {:.0}; from actual send p50 {:.0}, p99 {:.0})",
                f.p50, f.p99, f.p999, f.max, f.send_p50, f.send_p99
            ),
            None => "not measured (see notes)".into(),
        };
        let vs = match sum.added(p.name) {
            Some((a50, a99)) if p.name != "direct" => {
                format!("added over direct: {a50:+.0} / {a99:+.0} µs")
            }
            _ => "baseline".into(),
        };
        let figure = format!("{}: p50 / p99, {}", p.name, p.describe);
        rows.push(Row::new(&figure, value, "—", &vs));
    }
    let (mesh_add, nginx_add, haproxy_add) = (
        sum.added("meshfed"),
        sum.added("nginx"),
        sum.added("haproxy"),
    );
    let mesh_p99 = sum.added_p99("meshfed");
    let ratio = |name: &str| match (&mesh_p99, sum.added_p99(name)) {
        (Ok(m), Ok(o)) if o > 0.0 => format!("{:.2}× {name} ({o:+.0} µs)", m / o),
        (_, Ok(o)) => format!("{name} {o:+.0} µs (no ratio)"),
        (_, Err(why)) => format!("{name}: {why}"),
    };
    let p99_text = |name: &str| match sum.added_p99(name) {
        Ok(v) => format!("{v:+.0} µs{}", sum.p99_iqr(name)),
        Err(why) => format!("null: {why}{}", sum.p99_iqr(name)),
    };
    rows.push(Row::new(
        "sidecar_added_p50_us (meshfed − direct, one hop pair)",
        opt_us(mesh_add.map(|a| a.0)),
        "—",
        &format!(
            "{}, {}; empty L7 proxy pair at 1000 rps +152 µs (perf.md §6.3, one vCPU); ztunnel pair +55–63 µs (perf.md §7, closed loop)",
            times(mesh_add.map(|a| a.0), nginx_add.map(|a| a.0), "nginx", "µs"),
            times(mesh_add.map(|a| a.0), haproxy_add.map(|a| a.0), "haproxy", "µs"),
        ),
    ));
    rows.push(Row::new(
        "sidecar_added_p99_us (meshfed − direct, one hop pair)",
        p99_text("meshfed"),
        "≤ 200 µs",
        &format!("{}; {}", ratio("nginx"), ratio("haproxy")),
    ));
    for name in ["nginx", "haproxy"] {
        rows.push(Row::new(
            &format!("{name}_added_p99_us"),
            p99_text(name),
            "—",
            "baseline",
        ));
    }
    let cpu = |n: &str| sum.fig(n).and_then(|f| f.cpu_pair());
    rows.push(Row::new(
        "sidecar_cpu_per_1000rps (utime+stime of both sidecars over the window, per 1000 rps)",
        sum.cpu_text("meshfed"),
        "≤ 0.08 vCPU per proxy",
        &format!(
            "nginx pair {}, {}; haproxy pair {}, {}",
            sum.cpu_text("nginx"),
            times(cpu("meshfed"), cpu("nginx"), "nginx", "vCPU"),
            sum.cpu_text("haproxy"),
            times(cpu("meshfed"), cpu("haproxy"), "haproxy", "vCPU"),
        ),
    ));
    rows.push(Row::new(
        "sidecar_rss_mb (peak VmHWM, the larger sidecar)",
        sum.rss_text("meshfed"),
        "≤ 12 MB",
        &format!(
            "nginx {}; haproxy {}",
            sum.rss_text("nginx"),
            sum.rss_text("haproxy")
        ),
    ));
    rows
}

/// "1.67× nginx (+142 µs)": meshfed's figure as a multiple of a baseline's.
fn times(mesh: Option<f64>, base: Option<f64>, name: &str, unit: &str) -> String {
    match (mesh, base) {
        (Some(m), Some(b)) if b > 0.0 => {
            let shown = if unit == "µs" {
                format!("{b:+.0}")
            } else {
                format!("{b:.3}")
            };
            format!("meshfed = {:.2}× {name} ({shown} {unit})", m / b)
        }
        (_, Some(b)) => format!("{name} {b:.0} {unit} (no ratio)"),
        _ => format!("{name} not measured"),
    }
}

fn opt_us(v: Option<f64>) -> String {
    v.map_or("not measured".into(), |v| format!("{v:+.0} µs"))
}

fn join(v: &[f64], decimals: usize, sep: &str) -> String {
    v.iter()
        .map(|x| format!("{x:.decimals$}"))
        .collect::<Vec<_>>()
        .join(sep)
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Median of a few values (the mean of the middle two for an even count); `None` when empty.
pub(super) fn median(v: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = v.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }
}
