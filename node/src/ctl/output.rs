//! Output formats for meshctl read commands: borderless tables (kubectl style), JSON and YAML.

use comfy_table::{Table, presets};
use mesh_proto::api::{ApplyResponse, StatusResponse};
use mesh_proto::resource::{Kind, Resource};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

/// Print as JSON or YAML; false if the format is a table (the caller prints one).
fn structured<T: Serialize>(v: &T, fmt: Format) -> anyhow::Result<bool> {
    match fmt {
        Format::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(v)?),
        Format::Table | Format::Wide => return Ok(false),
    }
    Ok(true)
}

pub fn age(unix: u64) -> String {
    let now = crate::clock::now_unix();
    if unix <= now {
        return "expired".into();
    }
    let d = unix - now;
    match d {
        d if d >= 86400 * 2 => format!("{}d", d / 86400),
        d if d >= 7200 => format!("{}h", d / 3600),
        d => format!("{}m", d / 60),
    }
}

pub fn status(s: &StatusResponse, fmt: Format) -> anyhow::Result<()> {
    if structured(s, fmt)? {
        return Ok(());
    }
    println!(
        "cluster:        {} (trust domain {})",
        s.cluster, s.trust_domain
    );
    println!("answered by:    {} (id {})", s.node_name, s.node_id);
    println!(
        "leader:         {}",
        s.leader_id.map_or("none".into(), |l| l.to_string())
    );
    println!("term:           {}", s.term);
    println!(
        "commit index:   {}",
        s.commit_index.map_or("-".into(), |c| c.to_string())
    );
    println!("config version: {}", s.config_version);
    println!(
        "CA:             {} (expires in {})",
        s.ca_fingerprint,
        age(s.ca_not_after_unix)
    );
    println!();
    let mut t = table(&["ID", "NAME", "ROLE", "RAFT", "API", "MATCHED"]);
    for m in &s.members {
        t.add_row(vec![
            m.node_id.to_string(),
            m.name.clone(),
            m.role.clone(),
            m.raft_addr.clone(),
            m.api_addr.clone(),
            m.matched_index.map_or("-".into(), |i| i.to_string()),
        ]);
    }
    println!("{t}");
    Ok(())
}

pub fn applied(r: &ApplyResponse, fmt: Format) -> anyhow::Result<()> {
    if structured(r, fmt)? {
        return Ok(());
    }
    for x in &r.results {
        println!("{}/{}/{} {}", x.kind, x.namespace, x.name, x.outcome);
    }
    println!("config version {}", r.version);
    Ok(())
}

pub fn resources(kind: Kind, items: &[Resource], single: bool, fmt: Format) -> anyhow::Result<()> {
    let done = if single && items.len() == 1 {
        structured(&items[0], fmt)?
    } else {
        structured(&items, fmt)?
    };
    if done {
        return Ok(());
    }
    if items.is_empty() {
        eprintln!("no {kind} resources found");
        return Ok(());
    }
    let wide = fmt == Format::Wide;
    let mut header = vec!["NAMESPACE", "NAME", "VERSION"];
    if wide {
        header.extend(["LABELS", "SPEC"]);
    }
    let mut t = table(&header);
    for r in items {
        let mut row = vec![
            r.metadata.namespace.clone(),
            r.metadata.name.clone(),
            r.metadata.version.map_or("-".into(), |v| v.to_string()),
        ];
        if wide {
            let labels: Vec<String> = r
                .metadata
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            row.push(labels.join(","));
            let spec = r.spec.to_string();
            row.push(if spec.chars().count() > 60 {
                format!("{}…", spec.chars().take(60).collect::<String>())
            } else {
                spec
            });
        }
        t.add_row(row);
    }
    println!("{t}");
    Ok(())
}
