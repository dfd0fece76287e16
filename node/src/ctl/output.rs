//! Output formats for meshctl read commands: borderless tables (kubectl style), JSON and YAML.
//! Tables of endpoints and of `proxy-status` read typed records; JSON and YAML print the full
//! record the API returned.

use comfy_table::{Table, presets};
use mesh_proto::Locality;
use mesh_proto::api::{AgentRecord, AgentsResponse, ApplyResponse, StatusResponse};
use mesh_proto::resource::{Kind, Resource, WorkloadEndpointSpec};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

/// Print as JSON or YAML; false if the format is a table (the caller prints one).
pub(crate) fn structured<T: Serialize>(v: &T, fmt: Format) -> anyhow::Result<bool> {
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
    if kind == Kind::WorkloadEndpoint {
        return endpoints(items);
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

/// `meshctl get endpoints`: one row per catalog entry.
fn endpoints(items: &[Resource]) -> anyhow::Result<()> {
    let mut t = table(&["SERVICE", "NODE", "ADDRESS", "LOCALITY", "HEALTHY"]);
    for r in items {
        match serde_json::from_value::<WorkloadEndpointSpec>(r.spec.clone()) {
            Ok(e) => t.add_row(vec![
                e.service.to_string(),
                e.node.to_string(),
                e.address,
                locality(&e.locality),
                e.healthy.to_string(),
            ]),
            // A spec this meshctl cannot read (a newer server): show the name, not nothing.
            Err(_) => t.add_row(vec![r.metadata.name.clone(), "?".into(), "?".into()]),
        };
    }
    println!("{t}");
    Ok(())
}

/// `region/zone`, `region`, or `-` when unknown.
fn locality(l: &Locality) -> String {
    match (l.region.as_str(), l.zone.as_str()) {
        ("", _) => "-".into(),
        (r, "") => r.into(),
        (r, z) => format!("{r}/{z}"),
    }
}

/// `meshctl proxy-status`: per agent, the config version it applied against the store's, how
/// old its report is, and its earliest SVID expiry. Times are relative to the leader's clock.
pub fn proxy_status(r: &AgentsResponse, fmt: Format) -> anyhow::Result<()> {
    if structured(r, fmt)? {
        return Ok(());
    }
    if r.agents.is_empty() {
        eprintln!("no agent has reported its status yet");
        return Ok(());
    }
    let mut t = table(&["NODE", "SERVICES", "CONFIG", "AGE", "CERT EXPIRY"]);
    for a in &r.agents {
        t.add_row(proxy_row(a, r.store_version, r.now_unix_ms));
    }
    println!("{t}");
    Ok(())
}

fn proxy_row(a: &AgentRecord, store_version: u64, now_unix_ms: u64) -> Vec<String> {
    let services: Vec<&str> = a.certs.iter().map(|c| c.service.as_str()).collect();
    let age = now_unix_ms.saturating_sub(a.reported_unix_ms) / 1000;
    let expiry = match a.certs.iter().map(|c| c.expires_unix).min() {
        None => "-".into(),
        Some(at) if at * 1000 <= now_unix_ms => "EXPIRED".into(),
        Some(at) => short_duration(at - now_unix_ms / 1000),
    };
    vec![
        a.node.to_string(),
        if services.is_empty() {
            "-".into()
        } else {
            services.join(",")
        },
        config_state(a.config_version, store_version),
        short_duration(age),
        expiry,
    ]
}

/// `12 SYNCED`, `10 STALE (store 12)`, or `13 AHEAD (store 12)` (a store restored from an
/// older backup).
fn config_state(applied: u64, store: u64) -> String {
    match applied.cmp(&store) {
        std::cmp::Ordering::Equal => format!("{applied} SYNCED"),
        std::cmp::Ordering::Less => format!("{applied} STALE (store {store})"),
        std::cmp::Ordering::Greater => format!("{applied} AHEAD (store {store})"),
    }
}

/// A duration as its two largest units: `4s`, `2m3s`, `23h59m`, `3d4h`.
fn short_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match secs {
        0..60 => format!("{s}s"),
        60..3600 => format!("{m}m{s}s"),
        3600..86400 => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::command::CertExpiry;
    use mesh_proto::{NodeName, ServiceName};

    use super::*;

    #[test]
    fn durations_show_their_two_largest_units() {
        for (secs, want) in [
            (0, "0s"),
            (4, "4s"),
            (59, "59s"),
            (123, "2m3s"),
            (86399, "23h59m"),
            (3 * 86400 + 4 * 3600 + 5, "3d4h"),
        ] {
            assert_eq!(short_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn a_proxy_status_row_names_sync_state_age_and_earliest_expiry() {
        let cert = |s: &str, at| CertExpiry {
            service: ServiceName::new(s).unwrap(),
            expires_unix: at,
        };
        let a = AgentRecord {
            node: NodeName::new("vm-1").unwrap(),
            config_version: 10,
            certs: vec![cert("api", 1_000 + 86_399), cert("db", 1_000 + 90_000)],
            reported_unix_ms: 996_000,
        };
        assert_eq!(
            proxy_row(&a, 12, 1_000_000),
            ["vm-1", "api,db", "10 STALE (store 12)", "4s", "23h59m"]
        );
        assert_eq!(proxy_row(&a, 10, 1_000_000)[2], "10 SYNCED");
        assert_eq!(proxy_row(&a, 9, 1_000_000)[2], "10 AHEAD (store 9)");
        assert_eq!(proxy_row(&a, 10, 90_000_000)[4], "EXPIRED");
        let none = AgentRecord { certs: vec![], ..a };
        assert_eq!(
            proxy_row(&none, 10, 1_000_000)[1..],
            ["-", "10 SYNCED", "4s", "-"]
        );
    }

    #[test]
    fn localities_print_compactly() {
        let l = |r: &str, z: &str| Locality {
            region: r.into(),
            zone: z.into(),
        };
        assert_eq!(locality(&l("", "")), "-");
        assert_eq!(locality(&l("r1", "")), "r1");
        assert_eq!(locality(&l("r1", "a")), "r1/a");
    }
}
