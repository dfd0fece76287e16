//! `meshctl federate`: print a token for a peer, join with a peer's token, list and remove
//! peers (DESIGN §7). The rules are the control plane's; this file turns flags into calls and
//! answers into tables or JSON.

use std::time::Duration;

use anyhow::Context;
use mesh_proto::federation::{FederationJoinRequest, FederationTokenRequest, PeerList};

use super::output::{Format, short_duration, structured, table};
use super::{Conn, explain};

/// `meshctl federate token --peer NAME --expires DUR`.
pub async fn token(
    conn: &Conn,
    peer: &str,
    expires: &str,
    gateways: Vec<String>,
    fmt: Format,
) -> anyhow::Result<()> {
    let ttl: Duration = mesh_core::config::parse_duration(expires)
        .map_err(|e| anyhow::anyhow!("--expires {expires:?}: {e}"))?;
    let r = conn
        .client()?
        .federation_token(&FederationTokenRequest {
            peer: peer.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
            gateways,
        })
        .await
        .map_err(explain)?;
    if structured(&r, fmt)? {
        return Ok(());
    }
    println!("{}", r.token);
    eprintln!(
        "single-use token for peer {}, valid until {}; on cluster {}, run: meshctl federate join <token>",
        r.peer,
        mesh_core::federation::rfc3339(r.expires_unix_ms),
        r.peer
    );
    Ok(())
}

/// `meshctl federate join TOKEN` (`-` reads the token from stdin).
pub async fn join(
    conn: &Conn,
    token: &str,
    gateways: Vec<String>,
    fmt: Format,
) -> anyhow::Result<()> {
    let token = if token == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the token from stdin")?
    } else {
        token.to_owned()
    };
    let p = conn
        .client()?
        .federation_join(&FederationJoinRequest { token, gateways })
        .await
        .map_err(explain)?;
    if structured(&p, fmt)? {
        return Ok(());
    }
    println!(
        "peering with cluster {} ({}) is {}",
        p.name,
        p.trust_domain,
        p.state.as_str()
    );
    Ok(())
}

/// `meshctl federate list`.
pub async fn list(conn: &Conn, fmt: Format) -> anyhow::Result<()> {
    let r = conn.client()?.federation_peers().await.map_err(explain)?;
    print_list(&r, fmt)
}

fn print_list(r: &PeerList, fmt: Format) -> anyhow::Result<()> {
    if structured(r, fmt)? {
        return Ok(());
    }
    if r.peers.is_empty() {
        eprintln!(
            "cluster {} has no peers; run `meshctl federate token --peer NAME` here, then \
             `meshctl federate join` there",
            r.cluster
        );
        return Ok(());
    }
    let now = crate::clock::now_unix_ms();
    let mut t = table(&[
        "PEER",
        "TRUST DOMAIN",
        "STATE",
        "EXPORTED",
        "IMPORTED",
        "GATEWAYS",
        "LAST HEARTBEAT",
    ]);
    for p in &r.peers {
        t.add_row(vec![
            p.name.to_string(),
            p.trust_domain.to_string(),
            p.state.as_str().to_owned(),
            r.exported_services.to_string(),
            // Imports arrive with WAN service summaries (issue D); none are known yet.
            "-".to_owned(),
            if p.gateways.is_empty() {
                "-".to_owned()
            } else {
                p.gateways.join(",")
            },
            if p.last_heartbeat_unix_ms == 0 {
                "never".to_owned()
            } else {
                format!(
                    "{} ago",
                    short_duration(now.saturating_sub(p.last_heartbeat_unix_ms) / 1000)
                )
            },
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `meshctl federate remove NAME`.
pub async fn remove(conn: &Conn, peer: &str) -> anyhow::Result<()> {
    conn.client()?
        .federation_remove(peer)
        .await
        .map_err(explain)?;
    println!("peering with {peer} removed on this cluster; run the same on {peer} to end it there");
    Ok(())
}
