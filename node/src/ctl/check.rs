//! `meshctl check [--federation]`: gather what the API reports, let `mesh_core::check` judge
//! it, and print `linkerd check`-style lines (√ ‼ ×, by category, hints) or JSON. Exit 1 when
//! anything failed.

use mesh_core::check::{Finding, Inputs, Level, evaluate, failed};
use mesh_proto::resource::{Kind, WorkloadEndpointSpec};

use super::output::Format;
use super::{Conn, explain};

/// Run the checks; true when one failed.
pub async fn check(conn: &Conn, federation: bool, fmt: Format) -> anyhow::Result<bool> {
    let client = conn.client()?;
    let status = client.status().await.map_err(explain)?;
    let agents = client.agents().await.map_err(explain)?;
    let endpoints: Vec<WorkloadEndpointSpec> = client
        .list(Kind::WorkloadEndpoint, None)
        .await
        .map_err(explain)?
        .items
        .into_iter()
        .filter_map(|r| serde_json::from_value(r.spec).ok())
        .collect();
    let peers = if federation {
        Some(client.federation_peers().await.map_err(explain)?.peers)
    } else {
        None
    };
    let findings = evaluate(&Inputs {
        status: &status,
        agents: &agents,
        endpoints: &endpoints,
        peers: peers.as_deref(),
        now_unix_ms: crate::clock::now_unix_ms(),
    });
    print(&findings, fmt)?;
    Ok(failed(&findings))
}

fn print(findings: &[Finding], fmt: Format) -> anyhow::Result<()> {
    if matches!(fmt, Format::Json | Format::Yaml) {
        let rows: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "category": f.category,
                    "level": f.level.as_str(),
                    "message": f.message,
                    "hint": f.hint,
                })
            })
            .collect();
        let doc = serde_json::json!({ "success": !failed(findings), "checks": rows });
        match fmt {
            Format::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
            _ => print!("{}", serde_saphyr::to_string(&doc)?),
        }
        return Ok(());
    }
    let mut category = "";
    for f in findings {
        if f.category != category {
            if !category.is_empty() {
                println!();
            }
            category = f.category;
            println!("{category}");
            println!("{}", "-".repeat(category.len()));
        }
        println!("{} {}", f.level.mark(), f.message);
        if let (Some(hint), true) = (&f.hint, f.level != Level::Ok) {
            println!("    see: {hint}");
        }
    }
    println!();
    if failed(findings) {
        println!("Status check results are ×");
    } else {
        println!("Status check results are √");
    }
    Ok(())
}
