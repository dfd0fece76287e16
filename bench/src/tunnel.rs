//! Cross-cluster tunnel throughput (DESIGN §10): bulk bytes over one QUIC connection through
//! two in-process gateways (outer mTLS from the sidecar, QUIC between gateways) against raw
//! quinn between the same two identities, side by side in one run (`mesh_gateway`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Section;
use crate::report::Row;

pub(crate) async fn run(
    quick: bool,
    values: &mut BTreeMap<String, Value>,
) -> anyhow::Result<Vec<Section>> {
    let bytes: u64 = if quick { 128 << 20 } else { 512 << 20 };
    let rounds = if quick { 1 } else { 3 };
    let (mut tunnel, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        tunnel.push(mesh_gateway::measure_tunnel_gbps(bytes).await?);
        raw.push(mesh_gateway::raw_quinn_gbps(bytes).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (t, r) = (median(&mut tunnel), median(&mut raw));
    values.insert("tunnel_gbps".into(), json!((t * 100.0).round() / 100.0));
    values.insert("raw_quinn_gbps".into(), json!((r * 100.0).round() / 100.0));
    Ok(vec![Section {
        title: "Cross-cluster tunnel: one QUIC connection, bulk".into(),
        command: "cargo run --release -p mesh-bench -- --only tunnel --json".into(),
        rows: vec![
            Row::new("raw_quinn_gbps (one connection, one stream, same TLS identities)", format!("{r:.2} Gbit/s"), "—", "baseline"),
            Row::new(
                "tunnel_gbps (sidecar TLS → gateway A → QUIC → gateway B → sink)",
                format!("{t:.2} Gbit/s"),
                "≥ 80 % of raw quinn",
                &format!("{:.2}× raw quinn", t / r),
            ),
        ],
        notes: vec![
            format!("{} MiB per transfer, median of {rounds}; client, both gateways and the sink share this machine's two vCPUs, and the tunnel path does twice the crypto (outer TLS + QUIC).", bytes >> 20),
            "tcp_tls_gbps, cross_cluster_added_p99_us, region_failover_*: not measured yet (null): the sidecars do not use the tunnel yet.".into(),
        ],
    }])
}
