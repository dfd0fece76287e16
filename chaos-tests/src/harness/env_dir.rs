//! A test's environment: a temporary directory with `data/` and `logs/`, the processes spawned
//! in it, and what happens to both when the test ends.
//!
//! On a passing test every process is killed and the directory deleted. On a panicking test the
//! processes are killed, each log's tail is printed to stderr, the directory is kept and its path
//! printed, and so is the `REPRODUCE WITH:` command the test registered. It does not decide what
//! to run; tests build [`ProcSpec`]s themselves.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tempfile::TempDir;

use super::process::{Proc, ProcSpec};

/// Set to `1` to keep every test directory, passing or not.
pub const KEEP_DIRS_ENV: &str = "MESHFED_KEEP_TEST_DIRS";

/// Log lines printed per process when a test fails.
const DUMP_TAIL_LINES: usize = 200;

/// The temporary directory and processes of one test; see the module docs for its drop rules.
#[derive(Debug)]
pub struct TestEnv {
    name: String,
    /// `None` only during drop, after the directory has been kept.
    dir: Option<TempDir>,
    root: PathBuf,
    log_dir: PathBuf,
    procs: Vec<Proc>,
    reproduce: Option<String>,
}

impl TestEnv {
    /// Creates `meshfed-<test_name>-XXXX/{data,logs}` under the system temp dir.
    pub fn new(test_name: &str) -> anyhow::Result<Self> {
        let safe: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix(&format!("meshfed-{safe}-"))
            .tempdir()
            .context("create the test's temp dir")?;
        let root = dir.path().to_path_buf();
        let log_dir = root.join("logs");
        for sub in [&log_dir, &root.join("data")] {
            fs::create_dir_all(sub).with_context(|| format!("create {}", sub.display()))?;
        }
        Ok(TestEnv {
            name: test_name.to_owned(),
            dir: Some(dir),
            root,
            log_dir,
            procs: Vec::new(),
            reproduce: None,
        })
    }

    /// The test's temporary directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `data/<proc_name>`, created if missing.
    pub fn data_dir(&self, proc_name: &str) -> PathBuf {
        let dir = self.root.join("data").join(proc_name);
        if let Err(err) = fs::create_dir_all(&dir) {
            // The caller will fail on first use with the path in its error; say why here.
            eprintln!("[{}] cannot create {}: {err}", self.name, dir.display());
        }
        dir
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Spawns a process whose log goes to `logs/<name>.log`; returns its handle.
    pub fn spawn(&mut self, spec: ProcSpec) -> anyhow::Result<usize> {
        anyhow::ensure!(
            self.handle(&spec.name).is_none(),
            "a process named {:?} already exists in test {}",
            spec.name,
            self.name
        );
        self.procs.push(Proc::spawn(spec, &self.log_dir)?);
        Ok(self.procs.len() - 1)
    }

    /// The process behind a handle from [`TestEnv::spawn`]. Panics on a handle it never issued.
    pub fn proc(&mut self, handle: usize) -> &mut Proc {
        &mut self.procs[handle]
    }

    /// The handle of the process called `name`.
    pub fn handle(&self, name: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.name() == name)
    }

    /// Every process, in spawn order (handle = index).
    pub fn procs(&mut self) -> &mut [Proc] {
        &mut self.procs
    }

    /// The command printed as `REPRODUCE WITH:` if the test fails (e.g. with its seed).
    pub fn set_reproduce(&mut self, cmd: impl Into<String>) {
        self.reproduce = Some(cmd.into());
    }

    /// Prints the last lines of every process log to stderr, with headers.
    pub fn dump_logs(&self) {
        for proc in &self.procs {
            eprintln!(
                "===== {} ({}), last {DUMP_TAIL_LINES} lines =====",
                proc.name(),
                proc.log_path().display()
            );
            eprintln!("{}", proc.log_tail(DUMP_TAIL_LINES));
        }
        eprintln!("===== end of logs for {} =====", self.name);
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            if proc.is_stopped() {
                let _ = proc.cont();
            }
            let _ = proc.kill9();
        }
        let failing = std::thread::panicking();
        if failing {
            self.dump_logs();
            if let Some(cmd) = &self.reproduce {
                eprintln!("REPRODUCE WITH: {cmd}");
            }
        }
        let keep_always = env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1");
        if (failing || keep_always)
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("[{}] test directory kept at {}", self.name, kept.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic;
    use std::time::Duration;

    use super::*;

    #[test]
    fn passing_test_kills_processes_and_removes_its_directory() {
        let mut env = TestEnv::new("passing test/with odd:name").unwrap();
        let data = env.data_dir("east-c1");
        assert!(data.is_dir());
        let h = env
            .spawn(ProcSpec::new("east-c1", "/bin/sh").args(["-c", "echo up; exec sleep 30"]))
            .unwrap();
        env.proc(h)
            .wait_for_log("up", Duration::from_secs(5))
            .unwrap();
        assert!(
            env.spawn(ProcSpec::new("east-c1", "/bin/true")).is_err(),
            "names are unique"
        );
        let pid = env.proc(h).pid().unwrap();
        let root = env.root().to_path_buf();
        assert!(
            root.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("meshfed-passing_test_")
        );
        drop(env);
        assert!(!root.exists());
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn panicking_test_keeps_its_directory() {
        let root = panic::catch_unwind(|| {
            let mut env = TestEnv::new("panicking").unwrap();
            env.set_reproduce("cargo test -p mesh-chaos-tests panicking");
            env.spawn(ProcSpec::new("n1", "/bin/sh").args(["-c", "echo hi; exec sleep 30"]))
                .unwrap();
            let root = env.root().to_path_buf();
            panic::panic_any(root);
        })
        .unwrap_err()
        .downcast::<PathBuf>()
        .unwrap();
        assert!(root.join("logs/n1.log").is_file());
        fs::remove_dir_all(&*root).unwrap();
    }
}
