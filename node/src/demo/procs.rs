//! The demo's child processes: `meshd` roles started with their output in log files, waited
//! on by log line with deadlines, killed on request, and all killed (SIGKILL, then reaped)
//! when the set is dropped — on success, on error and on Ctrl-C alike — so no stray process
//! outlives `meshctl demo`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One started process.
struct Proc {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// Every process the demo started.
pub(crate) struct Procs {
    meshd: PathBuf,
    logs: PathBuf,
    procs: Vec<Proc>,
}

impl Procs {
    /// `meshd` is found next to this executable, else on `PATH`.
    pub(crate) fn new(logs: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs)?;
        let beside = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("meshd")))
            .filter(|p| p.is_file());
        let meshd = beside.unwrap_or_else(|| PathBuf::from("meshd"));
        Ok(Self {
            meshd,
            logs: logs.to_owned(),
            procs: Vec::new(),
        })
    }

    /// Start `meshd <args>` as `name`; returns its handle.
    pub(crate) fn spawn(&mut self, name: &str, args: Vec<String>) -> anyhow::Result<usize> {
        let log = self.logs.join(format!("{name}.log"));
        let child = start(&self.meshd, &args, &log)
            .with_context(|| format!("cannot start {} ({name})", self.meshd.display()))?;
        self.procs.push(Proc {
            name: name.to_owned(),
            args,
            log,
            child: Some(child),
        });
        Ok(self.procs.len() - 1)
    }

    /// The text `name`'s log holds so far.
    pub(crate) fn log(&self, h: usize) -> String {
        std::fs::read_to_string(&self.procs[h].log).unwrap_or_default()
    }

    /// Wait until `h`'s log contains `needle`, or fail naming the log.
    pub(crate) async fn wait_for_log(
        &mut self,
        h: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log(h);
            if text.contains(needle) {
                return Ok(text);
            }
            if let Some(c) = self.procs[h].child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!(
                    "{} exited ({status}) before printing {needle:?}; see {}",
                    self.procs[h].name,
                    self.procs[h].log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}; see {}",
                    self.procs[h].name,
                    self.procs[h].log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL `h` (the demo's failure scenario).
    pub(crate) fn kill(&mut self, h: usize) {
        if let Some(mut c) = self.procs[h].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start `h` again with the same arguments.
    pub(crate) fn restart(&mut self, h: usize) -> anyhow::Result<()> {
        self.kill(h);
        let p = &mut self.procs[h];
        p.child = Some(start(&self.meshd, &p.args, &p.log)?);
        Ok(())
    }

    pub(crate) fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.child.is_some()).count()
    }
}

fn start(meshd: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    Ok(Command::new(meshd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?)
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
