//! Tests of `Proc` against small `/bin/sh` scripts: logs, start markers and every signal.

use super::*;

fn sh(name: &str, script: &str) -> ProcSpec {
    ProcSpec::new(name, "/bin/sh").args(["-c", script])
}

#[test]
fn log_collects_stdout_and_stderr_with_start_markers() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(
        sh(
            "echoer",
            "echo out-$GREETING; echo err-line >&2; exec sleep 30",
        )
        .env_var("GREETING", "hello"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        proc.wait_for_log("out-hello", Duration::from_secs(5))
            .unwrap(),
        "out-hello"
    );
    proc.wait_for_log("err-line", Duration::from_secs(5))
        .unwrap();
    proc.restart().unwrap();
    assert_eq!(proc.starts(), 2);
    proc.wait_for_log("out-hello", Duration::from_secs(5))
        .unwrap();
    let text = proc.log_text();
    assert!(
        text.contains("=== start #1 ") && text.contains("=== start #2 "),
        "{text}"
    );
    assert_eq!(text.matches("out-hello").count(), 2, "{text}");
    let second = proc.log_since(2);
    assert!(
        !second.contains("=== start") && second.contains("out-hello"),
        "{second}"
    );
}

#[test]
fn wait_for_log_only_counts_the_current_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(sh("once", "echo ready; exec sleep 30"), dir.path()).unwrap();
    proc.wait_for_log("ready", Duration::from_secs(5)).unwrap();
    proc.spec.args = vec!["-c".into(), "exec sleep 30".into()];
    proc.restart().unwrap();
    let err = proc
        .wait_for_log("ready", Duration::from_millis(200))
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    proc.wait_for_log_since("ready", 1, Duration::from_secs(1))
        .unwrap();
}

#[test]
fn wait_for_log_fails_fast_when_the_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::spawn(sh("crasher", "echo boom; exit 3"), dir.path()).unwrap();
    let started = Instant::now();
    let err = proc
        .wait_for_log("ready", Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not running") && err.contains("boom"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn kill9_stop_cont_and_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(sh("sleeper", "exec sleep 30"), dir.path()).unwrap();
    assert!(proc.is_running());
    proc.stop().unwrap();
    assert_eq!(proc_state(proc.pid().unwrap()), Some('T'));
    assert!(proc.is_running(), "a stopped process is still running");
    proc.cont().unwrap();
    assert!(!proc.is_stopped());
    proc.kill9().unwrap();
    assert!(!proc.is_running());
    assert_eq!(proc.pid(), None);
    assert!(
        proc.stop().is_err(),
        "signalling a dead process is an error"
    );

    proc.restart().unwrap();
    proc.stop().unwrap();
    // `sleep` dies of SIGTERM at once, even though it was stopped when asked.
    proc.terminate(Duration::from_secs(5)).unwrap();
    assert!(!proc.is_running());
    assert!(!proc.exit_status().unwrap().success());
}

#[test]
fn terminate_escalates_to_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(
        sh(
            "stubborn",
            "trap '' TERM; echo armed; while :; do sleep 0.05; done",
        ),
        dir.path(),
    )
    .unwrap();
    proc.wait_for_log("armed", Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    proc.terminate(Duration::from_millis(200)).unwrap();
    assert!(!proc.is_running());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn drop_kills_a_stopped_child() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Proc::spawn(sh("orphan", "exec sleep 30"), dir.path()).unwrap();
    proc.stop().unwrap();
    let pid = proc.pid().unwrap();
    drop(proc);
    assert_eq!(proc_state(pid), None, "pid {pid} survived the drop");
}
