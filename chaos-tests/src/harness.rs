//! The multi-process test harness: where the workspace binaries are, loopback addressing,
//! polling with deadlines, and (in submodules) managed processes, the per-test environment and
//! the operation history recorder.
//!
//! Tests are the shell of the project, so this module reads the real clock and the environment.
//! It does not inject network faults (see [`crate::relay`]) and it does not know how to talk to
//! `meshd`; tests build their own clients on top of it.
//!
//! ```text
//!   TestEnv ── temp dir ── data/<proc>/   logs/<proc>.log   (kept and dumped on panic)
//!      └── Proc × n ── ProcSpec (program, args, env) ── kill9 / stop / cont / terminate / restart
//!   History ── shared by client threads ── ops() ── linearizability::check
//! ```

use std::env;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

mod env_dir;
mod history;
mod process;

pub use env_dir::{KEEP_DIRS_ENV, TestEnv};
pub use history::{DEFAULT_HISTORY_LIMIT, History, OpId};
pub use process::{Proc, ProcSpec};

/// Environment variable naming a directory that holds `meshd` and `meshctl`; it overrides the
/// search of the workspace target directory.
pub const BIN_DIR_ENV: &str = "MESHFED_BIN_DIR";

/// Cargo's own target-directory override, honoured when looking for binaries.
const CARGO_TARGET_DIR_ENV: &str = "CARGO_TARGET_DIR";

/// Absolute path of a workspace binary such as `meshd` or `meshctl`.
///
/// Uses `$MESHFED_BIN_DIR/<name>` if that variable is set. Otherwise it looks in the `debug` and
/// `release` directories of the target directory (`$CARGO_TARGET_DIR`, `<workspace>/target`, and
/// the one holding the running test binary) and picks the most recently built file.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = env::var_os(BIN_DIR_ENV) {
        let path = PathBuf::from(&dir).join(name);
        if path.is_file() {
            return Ok(absolute(path));
        }
        bail!(
            "{BIN_DIR_ENV} is {} but it holds no `{name}`; build it or unset {BIN_DIR_ENV}",
            Path::new(&dir).display()
        );
    }
    let candidates = bin_candidates(name);
    let newest = candidates
        .iter()
        .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
        .filter(|(_, path)| path.is_file())
        .max_by_key(|(modified, _)| *modified);
    match newest {
        Some((_, path)) => Ok(absolute(path.clone())),
        None => bail!(
            "binary `{name}` not found (looked at {}); run `cargo build -p mesh-node` first, or set \
             {BIN_DIR_ENV}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Loopback address of node `node` of cluster `cluster`: `127.0.<cluster>.<node>:<port>`.
/// Clusters and nodes count from 1; every 127/8 address works on Linux loopback without setup.
pub fn node_addr(cluster: u8, node: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, cluster, node], port))
}

/// A TCP port that was free on `ip` a moment ago (bind port 0, read it, close). Another process
/// may take it before the caller binds it; tests that race should retry on `AddrInUse`.
pub fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((ip, 0)).with_context(|| format!("bind {ip}:0 to find a free port"))?;
    Ok(listener
        .local_addr()
        .context("read the bound address")?
        .port())
}

/// Calls `f` every `every` until it returns `Some`, or fails once `timeout` has passed. The error
/// names `what` and the last error or `None` that `f` returned.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let last = match f() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "the condition did not hold yet".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "timed out after {:?} ({attempts} attempts) waiting for {what}; last result: {last}",
                now - started
            );
        }
        thread::sleep(every.min(deadline - now));
    }
}

fn bin_candidates(name: &str) -> Vec<PathBuf> {
    let mut targets = Vec::new();
    if let Some(dir) = env::var_os(CARGO_TARGET_DIR_ENV) {
        targets.push(PathBuf::from(dir));
    }
    // CARGO_MANIFEST_DIR is this crate, `chaos-tests/`, one level below the workspace root.
    if let Some(workspace) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        targets.push(workspace.join("target"));
    }
    let mut candidates = Vec::new();
    for target in targets {
        for profile in ["debug", "release"] {
            candidates.push(target.join(profile).join(name));
        }
    }
    // Test binaries run from <target>/<profile>/deps/, next to the profile directory.
    if let Ok(exe) = env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        let path = profile_dir.join(name);
        if !candidates.contains(&path) {
            candidates.push(path);
        }
    }
    candidates
}

fn absolute(path: PathBuf) -> PathBuf {
    path.canonicalize().unwrap_or(path)
}

/// Used by `Proc` for log markers; wall-clock time is only informational there.
fn unix_now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    #[test]
    fn node_addr_puts_cluster_and_node_in_the_address() {
        assert_eq!(node_addr(2, 3, 7000).to_string(), "127.0.2.3:7000");
    }

    #[test]
    fn free_port_is_bindable_on_a_non_default_loopback_address() {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 7));
        let port = free_port(ip).unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((ip, port)).unwrap();
    }

    #[test]
    fn wait_until_returns_the_first_some() {
        let calls = Cell::new(0);
        let got = wait_until(
            "third call",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls.set(calls.get() + 1);
                Ok((calls.get() == 3).then_some(calls.get()))
            },
        )
        .unwrap();
        assert_eq!(got, 3);
    }

    #[test]
    fn wait_until_names_what_and_the_last_error() {
        let err = wait_until::<()>(
            "leader election",
            Duration::from_millis(30),
            Duration::from_millis(5),
            || bail!("connection refused"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("leader election"), "{err}");
        assert!(err.contains("connection refused"), "{err}");
    }

    #[test]
    fn bin_path_reports_how_to_build_a_missing_binary() {
        if env::var_os(BIN_DIR_ENV).is_some() {
            return;
        }
        let err = bin_path("no-such-meshfed-binary").unwrap_err().to_string();
        assert!(err.contains("cargo build -p mesh-node"), "{err}");
    }
}
