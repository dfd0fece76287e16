//! The `health:` block of a service in the services file: how the agent checks that the local
//! app is up, before it registers the endpoint healthy in the catalog.
//!
//! ```yaml
//! health: {http: /healthz, interval: 2s, timeout: 1s}   # or {tcp: true}; default: TCP connect
//! ```
//!
//! Parsing only: running the check is `agent::health`.

use std::time::Duration;

use mesh_core::config::parse_duration;
use serde::Deserialize;

/// Default time between two checks.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default deadline of one check (capped at the interval).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_PATH: usize = 1024;

/// How the agent checks a local app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    /// Deadline of one check, connect included; never above `interval`.
    pub timeout: Duration,
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Passes when a TCP connection to the app's port opens.
    Tcp,
    /// Passes when `GET <path>` answers 200 to 399.
    Http { path: String },
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            probe: Probe::Tcp,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    #[serde(default)]
    http: Option<String>,
    #[serde(default)]
    tcp: Option<bool>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// The check of the service at `at` (`services[0]`), or `None` after recording its problems.
pub(super) fn health(
    at: &str,
    raw: Option<RawHealth>,
    problems: &mut Vec<String>,
) -> Option<HealthCheck> {
    let Some(raw) = raw else {
        return Some(HealthCheck::default());
    };
    let at = format!("{at}.health");
    let before = problems.len();
    let probe = match (raw.http, raw.tcp) {
        (Some(_), Some(_)) => {
            problems.push(format!("{at}: set either http or tcp, not both"));
            None
        }
        (Some(path), None) => http_path(&format!("{at}.http"), path, problems),
        (None, Some(true) | None) => Some(Probe::Tcp),
        (None, Some(false)) => {
            problems.push(format!(
                "{at}.tcp: false is not a check; write `tcp: true` or `http: /path`, or leave \
                 out health to check the app's port"
            ));
            None
        }
    };
    let interval = duration(
        &format!("{at}.interval"),
        raw.interval,
        DEFAULT_INTERVAL,
        problems,
    )
    .filter(|d| {
        let ok = (MIN_INTERVAL..=MAX_INTERVAL).contains(d);
        if !ok {
            problems.push(format!(
                "{at}.interval: {d:?} is out of range; use {MIN_INTERVAL:?} to {MAX_INTERVAL:?}"
            ));
        }
        ok
    });
    let default_timeout = interval.map_or(DEFAULT_TIMEOUT, |i| i.min(DEFAULT_TIMEOUT));
    let timeout = duration(
        &format!("{at}.timeout"),
        raw.timeout,
        default_timeout,
        problems,
    );
    if let (Some(t), Some(i)) = (timeout, interval) {
        if t < MIN_TIMEOUT {
            problems.push(format!(
                "{at}.timeout: {t:?} is too short to connect; use at least {MIN_TIMEOUT:?}"
            ));
        } else if t > i {
            problems.push(format!(
                "{at}.timeout: {t:?} is longer than the interval {i:?}; a check must end before \
                 the next one starts"
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(HealthCheck {
        probe: probe?,
        interval: interval?,
        timeout: timeout?,
    })
}

fn http_path(field: &str, path: String, problems: &mut Vec<String>) -> Option<Probe> {
    let ok = path.starts_with('/')
        && path.len() <= MAX_PATH
        && !path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
    if ok {
        Some(Probe::Http { path })
    } else {
        problems.push(format!(
            "{field}: {path:?} is not a request path; write one that starts with '/' and has no \
             spaces, e.g. /healthz"
        ));
        None
    }
}

fn duration(
    field: &str,
    raw: Option<String>,
    default: Duration,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    match raw {
        None => Some(default),
        Some(text) => parse_duration(&text)
            .map_err(|why| problems.push(format!("{field}: {why}")))
            .ok(),
    }
}
