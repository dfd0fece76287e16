//! Every file in `deploy/` is checked against the code, so manifests cannot drift from it:
//! each flag a systemd unit passes exists in `meshd <role> --help`, each `MESHFED_*` name in
//! the environment file is a flag's env form, the example services file loads with the
//! agent's own loader, and the example resources pass the one validation function. Where
//! `systemd-analyze` exists, it verifies the units too.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn meshd_help(role: &str) -> String {
    match Command::new(env!("CARGO_BIN_EXE_meshd"))
        .args([role, "--help"])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        other => panic!("meshd {role} --help failed: {other:?}"),
    }
}

fn units() -> Vec<PathBuf> {
    let dir = deploy().join("systemd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("cannot read {}", dir.display());
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no units in deploy/systemd");
    v
}

#[test]
fn every_flag_a_unit_passes_exists_in_meshd_help() {
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{}: no ExecStart", unit.display()));
        let mut words = exec.split_whitespace();
        assert!(words.next().unwrap().ends_with("/meshd"), "{exec}");
        let role = words.next().unwrap();
        let help = meshd_help(role);
        for flag in words.filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: `meshd {role}` has no flag {flag}",
                unit.display()
            );
        }
        for key in [
            "Restart=on-failure",
            "LimitNOFILE=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
        ] {
            assert!(text.contains(key), "{}: missing {key}", unit.display());
        }
    }
}

#[test]
fn every_variable_in_the_environment_file_is_a_flags_env_form() {
    let help = format!("{}{}", meshd_help("control"), meshd_help("agent"));
    let env = std::fs::read_to_string(deploy().join("systemd/meshd.env")).unwrap();
    for line in env.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if !name.starts_with("MESHFED_") {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}=")),
            "meshd.env sets {name}, which no meshd flag reads"
        );
    }
}

#[test]
fn the_example_services_file_loads() {
    let path = deploy().join("examples/services.yaml");
    let cfg = mesh_node::agent::load_services_file(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!cfg.services.is_empty());
}

#[test]
fn the_example_resources_validate() {
    let examples = [
        deploy().join("examples/mesh.yaml"),
        deploy().join("../examples/config/routes.yaml"),
        deploy().join("../examples/config/authz.yaml"),
    ];
    for path in examples {
        let docs = mesh_node::manifest::read_paths(std::slice::from_ref(&path), None)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn systemd_analyze_accepts_the_units_where_it_exists() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed; unit syntax checked by the other tests only");
        return;
    };
    if !probe.status.success() {
        return;
    }
    for unit in units() {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The binary path and the env file do not exist on a build machine; anything else is a
        // real problem with the unit.
        let real: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.contains("/usr/local/bin/meshd") && !l.contains("meshd.env"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(real.is_empty(), "{}: {}", unit.display(), real.join("\n"));
    }
}
