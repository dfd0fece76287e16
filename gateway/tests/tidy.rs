//! Tidy: mesh-gateway's dependency rule (DESIGN §2: no `mesh-node`, no `mesh-raft-store`) and
//! its crypto rule (ring only: no aws-lc pulled in by quinn's default features).

use std::process::Command;

#[test]
fn gateway_depends_on_neither_node_nor_raft_store_nor_aws_lc() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "mesh-gateway",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    for banned in [
        "mesh-node ",
        "mesh-raft-store ",
        "aws-lc",
        "openraft ",
        "sled ",
    ] {
        let hit: Vec<&str> = tree.lines().filter(|l| l.starts_with(banned)).collect();
        assert!(hit.is_empty(), "mesh-gateway depends on {banned}: {hit:?}");
    }
    // DESIGN §12: quinn-proto >= 0.11.15.
    let patch = tree
        .lines()
        .find_map(|l| l.strip_prefix("quinn-proto v0.11."))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse::<u32>().ok());
    assert!(
        patch.is_some_and(|p| p >= 15),
        "quinn-proto 0.11.15 or later expected: {patch:?}"
    );
}
