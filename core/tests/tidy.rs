//! Tidy: the rules clippy cannot check (STYLE.md "The teeth").
//!
//! - `mesh-core`'s normal dependency closure has no runtime, socket, storage or Raft crate;
//! - `mesh-core` never reads a clock (time is a parameter);
//! - every Rust source file in the workspace opens with a `//!` paragraph.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn core_dependency_closure_has_no_io_crates() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "mesh-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    for banned in [
        "tokio ",
        "quinn ",
        "sled ",
        "openraft ",
        "mio ",
        "hyper ",
        "axum ",
    ] {
        let hit: Vec<&str> = tree.lines().filter(|l| l.starts_with(banned)).collect();
        assert!(hit.is_empty(), "mesh-core depends on {banned}: {hit:?}");
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if !matches!(name, "target" | ".git" | "fuzz") {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn core_reads_no_clock() {
    let mut files = Vec::new();
    rust_files(&workspace().join("core/src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for banned in ["Instant::now", "SystemTime::now", "thread_rng", "rand::rng"] {
            assert!(
                !text.contains(banned),
                "{} calls {banned}; pass time/randomness in",
                f.display()
            );
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    for d in [
        "proto",
        "core",
        "raft-store",
        "node",
        "gateway",
        "chaos-tests",
        "bench",
    ] {
        rust_files(&workspace().join(d), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! opening paragraph: {missing:#?}"
    );
}
