//! One managed OS process: spawning with its output appended to a log file, the Jepsen process
//! faults (kill -9, pause, resume, graceful stop, restart), and waiting for log lines.
//!
//! Signals other than SIGKILL go through `/bin/kill`, because the workspace forbids `unsafe`
//! (and so `libc::kill`). A `Proc` only signals a child it has not reaped, so a recycled pid is
//! never hit. It does not put children in their own process group or arrange for them to die
//! with the test process: if the test binary itself is SIGKILLed, its children survive.
//!
//! ```text
//!   spawn ─► running ◄─► stopped (stop / cont)
//!               │ kill9 / terminate / exits
//!               ▼
//!            not running ── restart ─► running (start #n+1, same spec, same log file)
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// What to run: the same spec is reused by [`Proc::restart`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSpec {
    /// Unique within a test, e.g. `east-c1`; names the log file.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to the inherited environment.
    pub env: Vec<(String, String)>,
}

/// One managed child process. Its stdout and stderr are appended to `<log_dir>/<name>.log`, and
/// every start writes a `=== start #n ... ===` marker line first.
#[derive(Debug)]
pub struct Proc {
    spec: ProcSpec,
    log_path: PathBuf,
    /// The running (or exited but not yet reaped) child; `None` once reaped.
    child: Option<Child>,
    starts: u32,
    stopped: bool,
    last_exit: Option<ExitStatus>,
}

const KILL_BIN: &str = "/bin/kill";
const POLL_EVERY: Duration = Duration::from_millis(10);
const LOG_POLL_EVERY: Duration = Duration::from_millis(20);
/// How long `stop` waits for the kernel to report the process as stopped.
const STOP_SETTLE: Duration = Duration::from_secs(2);
/// Log lines quoted in `wait_for_log` errors.
const ERROR_TAIL_LINES: usize = 30;

impl ProcSpec {
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        ProcSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

impl Proc {
    /// Starts `spec`, appending its output to `<log_dir>/<name>.log`.
    pub fn spawn(spec: ProcSpec, log_dir: &Path) -> anyhow::Result<Proc> {
        fs::create_dir_all(log_dir)
            .with_context(|| format!("create log dir {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{}.log", spec.name));
        let mut proc = Proc {
            spec,
            log_path,
            child: None,
            starts: 0,
            stopped: false,
            last_exit: None,
        };
        proc.start()?;
        Ok(proc)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &ProcSpec {
        &self.spec
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// How many times the process has been started (1 after `spawn`).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The child's pid while it has not been reaped (it may have exited already).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child is alive (a stopped child counts as running). Reaps it if it exited.
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.last_exit = Some(status);
                self.forget_child();
                false
            }
            // Only ECHILD is possible for our own child: someone else reaped it.
            Err(_) => {
                self.forget_child();
                false
            }
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Exit status of the last incarnation, once reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// SIGKILL and reap. A no-op if the process is not running.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // SIGKILL also ends a stopped process. `kill` only fails if the child already exited,
        // in which case `wait` below returns at once.
        let _ = child.kill();
        let status = child
            .wait()
            .with_context(|| format!("reap {} after SIGKILL", self.name()))?;
        self.last_exit = Some(status);
        self.forget_child();
        Ok(())
    }

    /// SIGSTOP, then wait until the kernel reports the process stopped (Jepsen's "pause").
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")?;
        self.stopped = true;
        let pid = self.pid().unwrap_or(0);
        let deadline = Instant::now() + STOP_SETTLE;
        while Instant::now() < deadline {
            if matches!(proc_state(pid), Some('T' | 't') | None) {
                return Ok(());
            }
            thread::sleep(POLL_EVERY);
        }
        bail!(
            "{} (pid {pid}) got SIGSTOP but did not stop within {STOP_SETTLE:?}",
            self.name()
        )
    }

    /// SIGCONT.
    pub fn cont(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")?;
        self.stopped = false;
        Ok(())
    }

    /// SIGTERM (resuming a stopped process first), wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        if self.stopped {
            self.cont()?;
        }
        self.signal("TERM")?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return Ok(());
            }
            thread::sleep(POLL_EVERY);
        }
        self.kill9()
    }

    /// Starts the same spec again, SIGKILLing the current incarnation first if it still runs.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            self.kill9()?;
        }
        self.start()
    }

    /// The whole log so far, across restarts.
    pub fn log_text(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log written since start number `start`'s marker (the whole log if there is none).
    pub fn log_since(&self, start: u32) -> String {
        let text = self.log_text();
        let marker = marker_prefix(start);
        let mut offset = 0;
        let mut found = None;
        for line in text.split_inclusive('\n') {
            offset += line.len();
            if line.starts_with(&marker) {
                found = Some(offset);
            }
        }
        found.map_or(text.clone(), |at| text[at..].to_owned())
    }

    /// The last `lines` lines of the whole log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_text(), lines)
    }

    /// Waits until a complete line written since the current start contains `needle`; returns
    /// that line. Fails early if the process exits first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_log_since(needle, self.starts, timeout)
    }

    /// Like [`Proc::wait_for_log`], counting only lines written since start number `start`.
    pub fn wait_for_log_since(
        &self,
        needle: &str,
        start: u32,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Sample exit before reading, so a process found exited has its final output in
            // `text`.
            let exited = match self.pid() {
                None => true,
                Some(pid) => matches!(proc_state(pid), Some('Z' | 'X')),
            };
            let text = self.log_since(start);
            // Only complete lines, unless it exited: it may be halfway through the last one.
            let complete = match text.rfind('\n') {
                _ if exited => &text[..],
                Some(end) => &text[..end],
                None => "",
            };
            if let Some(line) = complete.lines().find(|line| line.contains(needle)) {
                return Ok(line.to_owned());
            }
            if exited {
                bail!(
                    "{} is not running, and it never logged {needle:?}; last log lines:\n{}",
                    self.name(),
                    tail(&text, ERROR_TAIL_LINES)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {} to log {needle:?}; last log lines:\n{}",
                    self.name(),
                    tail(&text, ERROR_TAIL_LINES)
                );
            }
            thread::sleep(LOG_POLL_EVERY);
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let number = self.starts + 1;
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .with_context(|| format!("open log {}", self.log_path.display()))
        };
        let mut log = open_log()?;
        writeln!(
            log,
            "{}unix_ms={} ===",
            marker_prefix(number),
            super::unix_now_ms()
        )
        .with_context(|| format!("write log {}", self.log_path.display()))?;
        let child = Command::new(&self.spec.program)
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("spawn {} ({})", self.spec.name, self.spec.program.display())
            })?;
        self.starts = number;
        self.child = Some(child);
        self.stopped = false;
        self.last_exit = None;
        Ok(())
    }

    fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        if !self.is_running() {
            bail!(
                "cannot send SIG{signal} to {}: it is not running",
                self.name()
            );
        }
        let pid = self.pid().map(|pid| pid.to_string()).unwrap_or_default();
        let output = Command::new(KILL_BIN)
            .args(["-s", signal, &pid])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {KILL_BIN} -s {signal} {pid}"))?;
        if !output.status.success() {
            bail!(
                "{KILL_BIN} -s {signal} {pid} ({}) failed: {}",
                self.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    fn forget_child(&mut self) {
        self.child = None;
        self.stopped = false;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stopped {
            let _ = self.cont();
        }
        let _ = self.kill9();
    }
}

/// `=== start #n ` (with the trailing space, so #1 does not match #10).
fn marker_prefix(start: u32) -> String {
    format!("=== start #{start} ")
}

/// The state letter from `/proc/<pid>/stat` (R, S, T, Z, ...), if readable.
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces or ')'; the state follows the
    // last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests;
