//! `meshctl members` (like `consul members`) and `meshctl gossip keyring
//! install|use|remove|list` (like `consul keyring`). Key material is never printed.

use mesh_proto::gossip::{KeyringRequest, KeyringResponse};

use super::output::{Format, structured, table};
use super::{Conn, explain};

/// The answering control node's view of the LAN pool.
pub async fn members(conn: &Conn, fmt: Format) -> anyhow::Result<()> {
    let r = conn.client()?.gossip_members().await.map_err(explain)?;
    if structured(&r, fmt)? {
        return Ok(());
    }
    let mut t = table(&[
        "NODE",
        "ADDRESS",
        "STATUS",
        "ROLE",
        "CLUSTER",
        "INCARNATION",
    ]);
    for m in &r.members {
        t.add_row(vec![
            m.node.clone(),
            m.address.clone(),
            m.status.clone(),
            m.role.clone(),
            m.cluster.clone(),
            format!("{}/{}", m.generation, m.incarnation),
        ]);
    }
    println!("{t}");
    if fmt == Format::Wide {
        let c = &r.counters;
        println!(
            "as seen by {}: packets in {} out {}; dropped: malformed {} unknown-key {} tampered {} replayed {}; records rejected {}",
            r.node,
            c.packets_received,
            c.packets_sent,
            c.dropped_malformed,
            c.dropped_unknown_key,
            c.dropped_tampered,
            c.dropped_replayed,
            c.records_rejected
        );
    }
    Ok(())
}

/// What `meshctl gossip keyring` does.
#[derive(Debug, Clone)]
pub enum KeyringCmd {
    /// Install a key (base64url, 32 bytes), or a generated one.
    Install {
        key: Option<String>,
    },
    Use {
        id: u32,
    },
    Remove {
        id: u32,
    },
    List,
}

pub async fn keyring(conn: &Conn, cmd: KeyringCmd, fmt: Format) -> anyhow::Result<()> {
    let client = conn.client()?;
    let req = |op: &str, key_b64, id| KeyringRequest {
        op: op.into(),
        key_b64,
        id,
    };
    let r = match cmd {
        KeyringCmd::List => client.gossip_keyring_list().await,
        KeyringCmd::Install { key } => client.gossip_keyring(&req("install", key, None)).await,
        KeyringCmd::Use { id } => client.gossip_keyring(&req("use", None, Some(id))).await,
        KeyringCmd::Remove { id } => client.gossip_keyring(&req("remove", None, Some(id))).await,
    }
    .map_err(explain)?;
    print_ring(&r, fmt)
}

fn print_ring(r: &KeyringResponse, fmt: Format) -> anyhow::Result<()> {
    if structured(r, fmt)? {
        return Ok(());
    }
    let mut t = table(&["KEY ID", "IN USE"]);
    for id in &r.ids {
        let used = if *id == r.primary {
            "seals + opens"
        } else {
            "opens"
        };
        t.add_row(vec![id.to_string(), used.to_string()]);
    }
    println!("{t}");
    Ok(())
}
