//! What a proxy process costs, read from `/proc`: CPU time (utime + stime of every thread, from
//! `/proc/<pid>/stat`) and peak resident memory (`VmHWM` from `/proc/<pid>/status`).
//!
//! It also reads how contended the whole machine is (steal, CPU pressure), because this VM is
//! shared and the report has to say so. It reads counters only; turning them into figures is
//! the caller's job. A process that has gone away reads as `None`, never as zero.

use std::time::{Duration, Instant};

/// CPU time a process has used so far, user plus system, all threads.
pub(crate) fn cpu_time(pid: u32, ticks_per_s: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; fields after it start at 3.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14 and stime field 15 (1-based, proc(5)); `rest` starts at field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_s.max(1) as f64,
    ))
}

/// Peak resident set size so far, KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The kernel's clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100, the
/// Linux default, if that cannot be run).
pub(crate) fn ticks_per_s() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// How contended the whole machine is: hypervisor steal (from `/proc/stat`) and CPU pressure
/// (`/proc/pressure/cpu`, the time some runnable task waited for a CPU). Busy ticks are not used:
/// `/proc/stat` samples them at the tick, which misses a proxy's 100 µs bursts on an otherwise
/// idle tickless CPU, while PSI is accounted exactly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MachineLoad {
    steal_ticks: u64,
    total_ticks: u64,
    pressure_us: Option<u64>,
    at: Instant,
}

impl MachineLoad {
    pub(crate) fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let t: Vec<u64> = line
            .split_whitespace()
            .take(8)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal
        let total_ticks = t.iter().sum();
        let steal_ticks = *t.get(7)?;
        let pressure_us = std::fs::read_to_string("/proc/pressure/cpu")
            .ok()
            .and_then(|p| {
                p.lines()
                    .find(|l| l.starts_with("some "))?
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("total="))?
                    .parse()
                    .ok()
            });
        Some(Self {
            steal_ticks,
            total_ticks,
            pressure_us,
            at: Instant::now(),
        })
    }

    /// (CPU pressure %, steal %) between `self` and a later reading; pressure is NaN where the
    /// kernel has no PSI.
    pub(crate) fn pressure_steal_pct(self, later: Self) -> (f64, f64) {
        let wall_us = later.at.duration_since(self.at).as_micros().max(1) as f64;
        let pressure = match (self.pressure_us, later.pressure_us) {
            (Some(a), Some(b)) => 100.0 * b.saturating_sub(a) as f64 / wall_us,
            _ => f64::NAN,
        };
        let total = later.total_ticks.saturating_sub(self.total_ticks).max(1) as f64;
        let steal = 100.0 * later.steal_ticks.saturating_sub(self.steal_ticks) as f64 / total;
        (pressure, steal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss() {
        let me = std::process::id();
        assert!(cpu_time(me, ticks_per_s()).is_some());
        assert!(peak_rss_kib(me).is_some_and(|k| k > 0));
        assert!(cpu_time(u32::MAX, 100).is_none());
        let m = MachineLoad::read().unwrap();
        let (_pressure, steal) = m.pressure_steal_pct(MachineLoad::read().unwrap());
        assert!((0.0..=100.0).contains(&steal));
    }
}
