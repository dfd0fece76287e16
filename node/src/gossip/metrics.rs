//! Prometheus families of the gossip member, registered on a caller's registry: the agent's
//! admin endpoint registers them with [`register_later`] (its member joins after start); the
//! same counters are in `GET /v1/gossip/members` on control nodes.
//!
//! Families (prometheus-client adds `_total`): `gossip_packets_received`, `gossip_packets_sent`,
//! `gossip_packets_dropped{reason=malformed|unknown_key|tampered|replayed}`,
//! `gossip_records_rejected`, `gossip_members_failed`, and the gauge `gossip_members{status}`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::GossipHandle;

/// Register the gossip families of `handle` on `registry`; values are read at scrape time.
pub fn register(registry: &mut Registry, handle: GossipHandle) {
    let slot = std::sync::OnceLock::new();
    let _ = slot.set(handle);
    registry.register_collector(Box::new(GossipCollector(Arc::new(slot))));
}

/// Like [`register`] for a member that joins later (the agent): nothing is encoded until
/// `member` is set.
pub fn register_later(registry: &mut Registry, member: Arc<std::sync::OnceLock<GossipHandle>>) {
    registry.register_collector(Box::new(GossipCollector(member)));
}

#[derive(Clone)]
struct GossipCollector(Arc<std::sync::OnceLock<GossipHandle>>);

impl std::fmt::Debug for GossipCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipCollector")
    }
}

impl Collector for GossipCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(handle) = self.0.get() else {
            return Ok(());
        };
        let s = handle.state();
        let c = &s.counters;
        let counters = [
            (
                "gossip_packets_received",
                "Gossip datagrams received",
                c.packets_received,
            ),
            (
                "gossip_packets_sent",
                "Gossip datagrams sent",
                c.packets_sent,
            ),
            (
                "gossip_records_rejected",
                "Gossip records refused (signature, authority)",
                c.records_rejected,
            ),
            (
                "gossip_members_failed",
                "Members declared dead without a leave",
                c.members_failed,
            ),
        ];
        for (name, help, v) in counters {
            let m = ConstCounter::new(v);
            m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)?;
        }
        let drops = [
            ("malformed", c.dropped_malformed),
            ("unknown_key", c.dropped_unknown_key),
            ("tampered", c.dropped_tampered),
            ("replayed", c.dropped_replayed),
        ];
        let mut family = enc.encode_descriptor(
            "gossip_packets_dropped",
            "Gossip datagrams dropped, by reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, v) in drops {
            let m = ConstCounter::new(v);
            let labels = [("reason", reason)];
            m.encode(family.encode_family(&labels)?)?;
        }
        let mut members = enc.encode_descriptor(
            "gossip_members",
            "Members of the pool by status, as this member sees them",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for status in ["alive", "suspect", "failed", "left"] {
            let n = s.members.iter().filter(|m| m.status == status).count();
            let m = ConstGauge::new(n as i64);
            m.encode(members.encode_family(&[("status", status)])?)?;
        }
        Ok(())
    }
}
