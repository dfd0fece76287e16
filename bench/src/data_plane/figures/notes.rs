//! The notes under the data-plane table: the workload, the method, the pinning, how each proxy
//! was configured, how busy the shared machine was, the verdicts against DESIGN §10 and the
//! per-round spread. Text only; every number comes from the parent module.

use super::{Context, Fig, GOAL_ADDED_P99_US, GOAL_CPU_PER_PROXY, GOAL_RSS_MB, median};
use crate::data_plane::PathRun;

/// meshfed's added p99 and its per-round quartiles, or why it cannot be quoted.
pub(super) type Added99 = Result<(f64, Option<(f64, f64)>), String>;

pub(super) fn notes(
    paths: &[PathRun],
    cx: &Context,
    direct: Option<&Fig>,
    mesh: Option<&Fig>,
    mesh_add: Option<(f64, Added99)>,
) -> Vec<String> {
    let l = cx.load;
    let mut n = vec![
        format!(
            "Workload: HTTP/1.1 `GET`, 1 KiB response body, open loop at {} req/s spread evenly over {} keep-alive connections (one blocking client thread each). {} rounds; in each round the configurations run one after the other (direct, meshfed, nginx, haproxy, starting one further along every round), each for {:?} of warm-up and {:?} measured, so {:.0} s measured per configuration in all, in this one run, against the same app process.",
            l.rate_per_s,
            l.connections,
            cx.rounds,
            l.warmup,
            l.window,
            l.window.as_secs_f64() * f64::from(cx.rounds)
        ),
        format!(
            "Before each round the harness waits until CPU pressure over 0.5 s is below {:.0} % (a bounded wait, so other tenants' build bursts are not measured as proxy latency): it waited {:.0} s in all, and {} round(s) started without a quiet machine once the wait budget was spent. An added-p99 key is left null when the median pressure over the measured windows is above 50 %, when the figure comes out negative, or when the middle half of its per-round values is wider than both the figure and the 200 µs goal (the run cannot tell which side of the goal it is on).",
            cx.quiet_pct,
            cx.quiet_waited.as_secs_f64(),
            cx.unquiet_rounds
        ),
        "Latency is timed from each request's scheduled send time to its last body byte (no coordinated omission); the figures \"from actual send\" exclude the generator's own wake-up lag. A configuration's p50 / p99 is the median over rounds of that round's p50 / p99 (nearest rank over every successful request of the round); added latency is the median over rounds of (the configuration's p50/p99 − direct's in the same round), so slow drift in the machine's background load cancels. p99.9 and max are over all rounds pooled.".into(),
        "Pinning (`taskset`): the load generator (this process, every thread) on CPU 0; the app, the control node, both sidecars and the nginx/haproxy processes on CPU 1. Everything on loopback.".into(),
        "meshfed: release `meshd control` (1 node) and two release `meshd agent` processes with default settings (access log per request at info to a file, Prometheus metrics), an AuthorizationPolicy allowing web → api, SVIDs ECDSA P-256, TLS 1.3 between the sidecars, one multiplexed HTTP/2 connection (ALPN h2); each agent also runs its gossip member, health check and catalog registration. nginx: two processes with `master_process off`, 1 worker each, keepalive upstream pools, access log to a file. haproxy: two processes `-db`, `nbthread 1`, `http-reuse always`, `option httplog` to stdout (a file). Baseline certificates: ECDSA P-256 from `openssl`, TLS 1.3 only, client certificate required and verified, server name verified.".into(),
        "CPU: utime+stime from `/proc/<pid>/stat` of each proxy process over the measured windows only, divided by the window, scaled to 1000 req/s; the key is both sidecars together, the goal is per proxy. RSS: peak `VmHWM` from `/proc/<pid>/status` after the last round.".into(),
        machine_note(paths, cx),
    ];
    if let Some(d) = direct {
        n.push(format!(
            "Direct path, {} requests: the load generator's own floor is in it (scheduled → actual send lag is part of every path's figure and cancels in the added figures). App peak RSS {}.",
            d.requests,
            cx.app_rss_kib.map_or("unknown".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
        ));
    }
    if let (Some(m), Some((a50, a99))) = (mesh, mesh_add) {
        n.extend(verdicts(m, a50, a99));
    }
    let d_rounds = paths.first().map(|p| p.rounds.clone()).unwrap_or_default();
    for p in paths.iter().skip(1).filter(|p| p.usable()) {
        let spread: Vec<String> = p
            .rounds
            .iter()
            .zip(&d_rounds)
            .enumerate()
            .map(|(i, (r, d))| {
                let busy = p
                    .machine
                    .get(i)
                    .map_or(String::new(), |m| format!(" [{:.0} %]", m.0));
                format!("{:+.0}/{:+.0}{busy}", r.0 - d.0, r.1 - d.1)
            })
            .collect();
        n.push(format!(
            "{} added p50/p99 by round (µs) [CPU pressure in that window]: {}; {} failed requests.",
            p.name,
            spread.join(", "),
            p.samples.errors
        ));
    }
    for p in paths.iter().filter(|p| !p.usable()) {
        n.push(format!(
            "{} not measured, keys left null: {}",
            p.name,
            p.unavailable.as_deref().unwrap_or("no samples")
        ));
    }
    n
}

/// meshfed against DESIGN §10's goals, saying by how much a goal is missed.
fn verdicts(m: &Fig, a50: f64, a99: Added99) -> [String; 2] {
    let g = GOAL_ADDED_P99_US;
    let latency = match a99 {
        // Judged on the middle half of the rounds, not on the median alone.
        Ok((a99, Some((_, hi)))) if hi <= g => format!(
            "adds {a99:+.0} µs p99: meets the ≤ {g:.0} µs goal, in at least three quarters of the rounds, with {:.0} µs to spare at the median",
            g - a99
        ),
        Ok((a99, Some((lo, _)))) if lo > g => format!(
            "adds {a99:+.0} µs p99: **misses** the ≤ {g:.0} µs goal by {:.0} µs ({:.1}× the goal), in at least three quarters of the rounds",
            a99 - g,
            a99 / g
        ),
        Ok((a99, Some((lo, hi)))) => format!(
            "adds {a99:+.0} µs p99 at the median, but the middle half of rounds ({lo:+.0} … {hi:+.0} µs) straddles the ≤ {g:.0} µs goal: {}",
            if a99 <= g {
                "meets it at the median only"
            } else {
                "**misses** it at the median"
            }
        ),
        Ok((a99, None)) if a99 <= g => format!("adds {a99:+.0} µs p99: meets the ≤ {g:.0} µs goal"),
        Ok((a99, None)) => format!(
            "adds {a99:+.0} µs p99: **misses** the ≤ {g:.0} µs goal by {:.0} µs",
            a99 - g
        ),
        Err(why) => {
            format!("cannot be judged against the ≤ {g:.0} µs p99 goal from this run ({why})")
        }
    };
    let worst_cpu = m.cpu_each.iter().copied().fold(0.0, f64::max);
    let cpu = if worst_cpu <= GOAL_CPU_PER_PROXY {
        "meets".to_owned()
    } else {
        format!(
            "**misses** by {:.3} vCPU ({:.1}×)",
            worst_cpu - GOAL_CPU_PER_PROXY,
            worst_cpu / GOAL_CPU_PER_PROXY
        )
    };
    let rss = m.rss_max().unwrap_or(f64::NAN);
    let rss_verdict = if rss <= GOAL_RSS_MB {
        "meets".to_owned()
    } else {
        format!("**misses** by {:.1} MB", rss - GOAL_RSS_MB)
    };
    [
        format!(
            "Verdict, latency: meshfed adds {a50:+.0} µs p50 per hop pair; at p99 it {latency}."
        ),
        format!(
            "Verdict, cost: the busier sidecar uses {worst_cpu:.3} vCPU per 1000 rps ({cpu} the ≤ {GOAL_CPU_PER_PROXY} vCPU per proxy goal); peak RSS {rss:.1} MB ({rss_verdict} the ≤ {GOAL_RSS_MB:.0} MB goal)."
        ),
    ]
}

/// How busy the shared machine was while the windows were measured.
fn machine_note(paths: &[PathRun], cx: &Context) -> String {
    let all: Vec<(f64, f64)> = paths
        .iter()
        .flat_map(|p| p.machine.iter().copied())
        .collect();
    let pressure = median(all.iter().map(|m| m.0).filter(|p| !p.is_nan()));
    let steal = median(all.iter().map(|m| m.1));
    let max = |f: fn(&(f64, f64)) -> f64| all.iter().map(f).fold(0.0, f64::max);
    let during = match (pressure, steal) {
        (Some(p), Some(s)) => format!(
            "during the measured windows, CPU pressure (`/proc/pressure/cpu` some: the share of time a runnable task waited for a CPU, every tenant and this benchmark included) was median {p:.0} % (max {:.0} %), hypervisor steal median {s:.1} % (max {:.1} %)",
            max(|m| m.0),
            max(|m| m.1)
        ),
        _ => "machine load during the windows unknown".into(),
    };
    format!(
        "This VM is shared with other engineers' builds; {during}; load average {} before, {} after. Their bursts and the hypervisor's steal land as millisecond stalls in single rounds, which is why p99 moves by hundreds of µs from round to round (per-round figures below) while p50 stays put: quote the medians over rounds, and the p50s first.",
        cx.load_before, cx.load_after
    )
}
