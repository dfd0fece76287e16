//! `meshctl enroll`: print an intro token for a node, list tokens, revoke a node (DESIGN §7).

use std::time::Duration;

use mesh_proto::enroll::EnrollTokenRequest;

use super::output::{Format, structured, table};
use super::{Conn, explain};

/// `meshctl enroll token --node NAME --service A[,B] --ttl DUR`.
pub async fn token(
    conn: &Conn,
    node: &str,
    services: Vec<String>,
    ttl: &str,
    fmt: Format,
) -> anyhow::Result<()> {
    let ttl: Duration = mesh_core::config::parse_duration(ttl)
        .map_err(|e| anyhow::anyhow!("--ttl {ttl:?}: {e}"))?;
    let r = conn
        .client()?
        .enroll_token(&EnrollTokenRequest {
            node: node.to_owned(),
            services,
            ttl_secs: ttl.as_secs().max(1),
        })
        .await
        .map_err(explain)?;
    if structured(&r, fmt)? {
        return Ok(());
    }
    println!("{}", r.token);
    eprintln!(
        "single-use intro token for node {}, valid until {}; on the node: put it in a file and run \
         `meshd agent --name {} --token-file FILE --services SERVICES.yaml`",
        r.node,
        mesh_core::federation::rfc3339(r.expires_unix_ms),
        r.node
    );
    Ok(())
}

/// `meshctl enroll list`.
pub async fn list(conn: &Conn, fmt: Format) -> anyhow::Result<()> {
    let r = conn.client()?.enroll_list().await.map_err(explain)?;
    if structured(&r, fmt)? {
        return Ok(());
    }
    if r.tokens.is_empty() {
        eprintln!(
            "no intro tokens; print one with `meshctl enroll token --node NAME --service SVC`"
        );
        return Ok(());
    }
    let now = crate::clock::now_unix_ms();
    let mut t = table(&["NODE", "SERVICES", "STATE", "EXPIRES"]);
    for p in &r.tokens {
        let services: Vec<&str> = p.services.iter().map(|s| s.as_str()).collect();
        let state = match p.used_unix_ms {
            Some(at) => format!("ENROLLED {}", mesh_core::federation::rfc3339(at)),
            None if p.expires_unix_ms <= now => "EXPIRED".to_owned(),
            None => "PENDING".to_owned(),
        };
        t.add_row(vec![
            p.node.to_string(),
            services.join(","),
            state,
            mesh_core::federation::rfc3339(p.expires_unix_ms),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `meshctl enroll revoke NAME`.
pub async fn revoke(conn: &Conn, node: &str) -> anyhow::Result<()> {
    let r = conn.client()?.enroll_revoke(node).await.map_err(explain)?;
    println!(
        "node {node}: {} credential(s) revoked; it can no longer renew SVIDs or call the control API",
        r["credentials_revoked"]
    );
    Ok(())
}
