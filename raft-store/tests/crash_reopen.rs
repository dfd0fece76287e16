//! Property: every write the store acknowledged survives the process being killed, and a clean
//! reopen gives back exactly what was written (DESIGN §4, "an acknowledged write is fsynced").
//!
//! Each SIGKILL test re-runs this test binary as a child that filters down to `crash_child`. The
//! child appends, votes, commits and applies one entry per step, printing `ACKED <kind> <i>`
//! after each write returns (append's `LogFlushed` callback included). The parent SIGKILLs it
//! after at least 200 steps, reopens the directory and checks every acknowledged write. One test
//! kills the child wherever it happens to be; the others park it right after one kind of ack, so
//! that a later fsync cannot mask a missing one. A failure prints the data directory it left
//! behind, to reproduce by reopening it.
//!
//! What this does not test: power loss. A killed process loses only what it had not yet handed
//! to the kernel; a lying disk cache needs a VM-level fault test (the chaos tier).

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not their helpers.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is how a test reports failure"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mesh_proto::command::{Command, ResourceWrite};
use mesh_proto::resource::{Kind, ResourceKey};
use mesh_raft_store::{Applied, LogStore, StateMachineStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder,
    Vote,
};

const CHILD_DIR_ENV: &str = "MESHFED_CRASH_CHILD";
const PARK_AFTER_ENV: &str = "MESHFED_CRASH_PARK_AFTER";
const ACKS_BEFORE_KILL: u64 = 200;
const DEADLINE: Duration = Duration::from_secs(120);

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn key(i: u64) -> ResourceKey {
    ResourceKey {
        kind: Kind::ServiceExport,
        namespace: "default".into(),
        name: format!("svc-{i}"),
    }
}

fn entry(i: u64) -> Entry<TypeConfig> {
    let write = ResourceWrite {
        key: key(i),
        labels: BTreeMap::new(),
        spec_json: "{}".into(),
        expect_version: None,
    };
    let cmd = Command::ApplyResources {
        resources: vec![write],
        now_unix_ms: 0,
    };
    Entry {
        log_id: log_id(i),
        payload: EntryPayload::Normal(cmd),
    }
}

fn vote(i: u64) -> Vote<u64> {
    Vote::new(i, 1)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn open(dir: &Path) -> (LogStore, StateMachineStore) {
    mesh_raft_store::open(dir).await.unwrap()
}

/// What the child reported as acknowledged, per kind of write.
#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    log: u64,
    vote: u64,
    apply: u64,
}

impl Acked {
    /// Counts one ack and returns its kind.
    fn record(&mut self, (kind, n): (String, u64)) -> String {
        let slot = match kind.as_str() {
            "log" => &mut self.log,
            "vote" => &mut self.vote,
            "apply" => &mut self.apply,
            other => panic!("unknown ack kind {other}"),
        };
        assert_eq!(n, *slot + 1, "{kind} acks out of order");
        *slot = n;
        kind
    }
}

/// The child side of the SIGKILL tests; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let park_after = std::env::var(PARK_AFTER_ENV).ok();
    let park_after = park_after.as_deref();
    runtime().block_on(async move {
        let (mut log, mut sm) = open(Path::new(&dir)).await;
        for i in 1.. {
            log.blocking_append([entry(i)]).await.unwrap();
            ack("log", i, park_after).await;
            log.save_vote(&vote(i)).await.unwrap();
            ack("vote", i, park_after).await;
            log.save_committed(Some(log_id(i))).await.unwrap();
            sm.apply([entry(i)]).await.unwrap();
            ack("apply", i, park_after).await;
        }
    });
}

/// Reports one acknowledged write; with `park_after` naming it, stops writing at the
/// `ACKS_BEFORE_KILL`th and waits to be killed, so nothing written later can hide a missing fsync.
async fn ack(kind: &str, i: u64, park_after: Option<&str>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ACKED {kind} {i}").unwrap();
    out.flush().unwrap();
    drop(out);
    if i >= ACKS_BEFORE_KILL && park_after == Some(kind) {
        std::future::pending::<()>().await;
    }
}

/// Runs the child until it has acknowledged `ACKS_BEFORE_KILL` steps (or, with `park_after`,
/// until it parks after that write), SIGKILLs it and checks the reopened store.
fn crash_and_check(park_after: Option<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(kind) = park_after {
        child.env(PARK_AFTER_ENV, kind);
    }
    let mut child = child.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(String, u64)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may put its own "test crash_child ... " before the first line.
            let Some(rest) = line.split("ACKED ").nth(1) else {
                continue;
            };
            if let Some((kind, n)) = rest.trim().split_once(' ')
                && let Ok(n) = n.parse()
            {
                let _ = tx.send((kind.to_owned(), n));
            }
        }
    });

    let mut acked = Acked::default();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let ack = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(ack) => ack,
            Err(e) => {
                let _ = child.kill();
                panic!("the child stopped at {acked:?} ({e}); see its stderr above");
            }
        };
        let n = ack.1;
        let kind = acked.record(ack);
        let parked = park_after == Some(kind.as_str()) && n >= ACKS_BEFORE_KILL;
        if parked || (park_after.is_none() && acked.apply >= ACKS_BEFORE_KILL) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Acks already in the pipe when the child died count too.
    reader.join().unwrap();
    for ack in rx.try_iter() {
        acked.record(ack);
    }

    let dir = dir.keep();
    runtime().block_on(check_after_crash(&dir, acked, park_after.is_some()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every acknowledged write is back. With `parked`, nothing was written after the last ack, so
/// the vote must be exactly the last acknowledged one.
async fn check_after_crash(dir: &Path, acked: Acked, parked: bool) {
    let ctx = format!("after SIGKILL at {acked:?}; data left in {}", dir.display());
    let (mut log, mut sm) = open(dir).await;

    let state = log.get_log_state().await.unwrap();
    let last_log = state.last_log_id.map_or(0, |l| l.index);
    assert!(last_log >= acked.log, "{ctx}: last log index {last_log}");
    let entries = log.try_get_log_entries(1..=last_log).await.unwrap();
    assert_eq!(entries.len() as u64, last_log, "{ctx}: the log has a hole");
    for (i, got) in (1..).zip(&entries) {
        assert_eq!(*got, entry(i), "{ctx}: entry {i}");
    }

    let got_vote = log.read_vote().await.unwrap();
    // Free-running, the child may have saved the next vote before it was killed.
    let next_ok = !parked && got_vote == Some(vote(acked.vote + 1));
    assert!(
        got_vote == Some(vote(acked.vote)) || next_ok,
        "{ctx}: vote {got_vote:?}"
    );
    let committed = log.read_committed().await.unwrap().map_or(0, |c| c.index);
    assert!(committed >= acked.apply, "{ctx}: committed {committed}");

    let applied = sm.applied_state().await.unwrap().0.map_or(0, |l| l.index);
    assert!(applied >= acked.apply, "{ctx}: applied {applied}");
    let handle = sm.handle();
    let Applied {
        log_index,
        config_version,
    } = handle.applied();
    assert_eq!(log_index, applied, "{ctx}");
    assert_eq!(
        config_version, applied,
        "{ctx}: one version per applied entry"
    );
    handle.read(|s| {
        for i in 1..=acked.apply {
            assert!(s.resource(&key(i)).is_some(), "{ctx}: svc-{i} missing");
        }
    });
}

#[test]
fn acknowledged_writes_survive_sigkill_at_a_random_point() {
    crash_and_check(None);
}

#[test]
fn appended_entries_survive_sigkill_right_after_their_ack() {
    crash_and_check(Some("log"));
}

#[test]
fn vote_survives_sigkill_right_after_its_ack() {
    crash_and_check(Some("vote"));
}

#[test]
fn applied_state_survives_sigkill_right_after_its_ack() {
    crash_and_check(Some("apply"));
}

#[test]
fn reopen_after_drop_keeps_log_vote_committed_state_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (state, applied, snapshot_meta) = rt.block_on(async {
        let (mut log, mut sm) = open(dir.path()).await;
        log.blocking_append((1..=10).map(entry)).await.unwrap();
        log.purge(log_id(2)).await.unwrap();
        log.truncate(log_id(9)).await.unwrap();
        log.save_vote(&vote(7)).await.unwrap();
        log.save_committed(Some(log_id(8))).await.unwrap();
        sm.apply((1..=8).map(entry)).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        (
            sm.handle().read(|s| s.clone()),
            sm.applied_state().await.unwrap(),
            snap.meta,
        )
    });

    rt.block_on(async {
        let (mut log, mut sm) = open(dir.path()).await;
        let want = LogState {
            last_purged_log_id: Some(log_id(2)),
            last_log_id: Some(log_id(8)),
        };
        assert_eq!(log.get_log_state().await.unwrap(), want);
        let entries = log.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(entries, (3..=8).map(entry).collect::<Vec<_>>());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote(7)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(8)));
        assert_eq!(sm.applied_state().await.unwrap(), applied);
        assert_eq!(sm.handle().read(|s| s.clone()), state);
        assert_eq!(
            sm.handle().applied(),
            Applied {
                log_index: 8,
                config_version: 8
            }
        );
        assert_eq!(
            sm.get_current_snapshot().await.unwrap().unwrap().meta,
            snapshot_meta
        );
    });
}
