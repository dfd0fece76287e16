//! Value checks of the federation kinds: `FailoverPolicy` (an ordered list of localities and
//! peer clusters) and `ServiceExport` (which peers may reach a service).
//!
//! Whether a named peer is actually federated is a fact of the store, checked elsewhere.

use mesh_proto::resource::{FailoverPolicySpec, FailoverTarget, ServiceExportSpec};

use super::common::{bound, cluster_name, distinct_clusters, dns_label, non_empty, service_name};
use super::{Report, field_index, field_key};

const MAX_TARGETS: usize = 32;
const MAX_PEERS: usize = 256;

pub(super) fn check_failover(report: &mut Report, spec: &FailoverPolicySpec) {
    service_name(report, "spec.service", &spec.service);
    non_empty(report, "spec.targets", spec.targets.len(), "target");
    bound(
        report,
        "spec.targets",
        spec.targets.len(),
        MAX_TARGETS,
        "targets",
    );
    for (i, target) in spec.targets.iter().enumerate() {
        let at = field_index("spec.targets", i);
        check_target(report, &at, target);
        if spec.targets[..i].contains(target) {
            report.add(at, "this target is listed twice; remove the duplicate");
        }
    }
}

fn check_target(report: &mut Report, at: &str, t: &FailoverTarget) {
    match (&t.cluster, &t.region) {
        (Some(_), Some(_)) => report.add(
            at,
            "a target names a cluster or a region, not both; split it into two targets",
        ),
        (None, None) => report.add(
            at,
            "a target needs a cluster (a peer) or a region (a locality of this cluster); add one",
        ),
        _ => {}
    }
    if let Some(cluster) = &t.cluster {
        cluster_name(report, &field_key(at, "cluster"), cluster);
    }
    if let Some(region) = &t.region
        && let Err(why) = dns_label(region)
    {
        report.add(field_key(at, "region"), format!("region {region:?} {why}"));
    }
    if let Some(zone) = &t.zone {
        let zone_at = field_key(at, "zone");
        if t.region.is_none() {
            report.add(
                zone_at,
                "zone needs region; add the region that contains this zone",
            );
        } else if let Err(why) = dns_label(zone) {
            report.add(zone_at, format!("zone {zone:?} {why}"));
        }
    }
}

pub(super) fn check_export(report: &mut Report, spec: &ServiceExportSpec) {
    service_name(report, "spec.service", &spec.service);
    non_empty(report, "spec.peers", spec.peers.len(), "peer");
    bound(report, "spec.peers", spec.peers.len(), MAX_PEERS, "peers");
    distinct_clusters(report, "spec.peers", &spec.peers);
}
