//! Value checks of a `WorkloadEndpoint` (the catalog): its name is `<service>.<node>` and
//! matches the spec, it lives in namespace `default`, its address is an `ip:port` peers can
//! dial, and its locality is made of DNS labels.
//!
//! Whether the node and service belong to the writer's credential is the state machine's
//! check (`Need::Agent`), not this one: validation looks at one document only.

use std::net::SocketAddr;

use mesh_proto::Locality;
use mesh_proto::resource::{ENDPOINT_NAMESPACE, Metadata, WorkloadEndpointSpec};

use super::Report;
use super::common::dns_label;

/// The metadata rules of the kind, in place of the usual single-label name.
pub(super) fn check_metadata(report: &mut Report, meta: &Metadata) {
    let parts = meta.name.split_once('.');
    let ok =
        parts.is_some_and(|(service, node)| dns_label(service).is_ok() && dns_label(node).is_ok());
    if !ok {
        report.add(
            "metadata.name",
            format!(
                "name {:?} must be <service>.<node>, two lowercase DNS labels joined by '.', \
                 e.g. api.vm-1",
                meta.name
            ),
        );
    }
    if meta.namespace != ENDPOINT_NAMESPACE {
        report.add(
            "metadata.namespace",
            format!(
                "namespace {:?} cannot hold a WorkloadEndpoint; every endpoint lives in \
                 {ENDPOINT_NAMESPACE:?}, so remove metadata.namespace",
                meta.namespace
            ),
        );
    }
}

/// The spec rules, and that the name is the one the spec implies.
pub(super) fn check(report: &mut Report, name: &str, spec: &WorkloadEndpointSpec) {
    let want = WorkloadEndpointSpec::resource_name(&spec.service, &spec.node);
    if name != want {
        report.add(
            "metadata.name",
            format!("name {name:?} does not match spec.service and spec.node; name it {want:?}"),
        );
    }
    if let Err(why) = address(&spec.address) {
        report.add("spec.address", why);
    }
    for (field, message) in locality_problems(&spec.locality) {
        report.add(format!("spec.locality.{field}"), message);
    }
}

/// Why `value` is not an address a peer's sidecar can dial, if it is not.
fn address(value: &str) -> Result<(), String> {
    let addr: SocketAddr = value.parse().map_err(|_| {
        format!(
            "address {value:?} is not an ip:port; write the sidecar's mTLS inbound address, e.g. \
             10.0.3.2:15006"
        )
    })?;
    if addr.port() == 0 {
        return Err(format!("address {value:?} needs a port other than 0"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(format!(
            "address {value:?} cannot be dialled by a peer; register the address the inbound \
             listener is reached at, not a wildcard or multicast address"
        ));
    }
    Ok(())
}

/// Problems of a locality, as (`region` | `zone`, message): each is empty (unknown) or a DNS
/// label, and a zone needs its region. The agent checks its services file with the same rule.
pub fn locality_problems(l: &Locality) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !l.region.is_empty()
        && let Err(why) = dns_label(&l.region)
    {
        out.push(("region", format!("region {:?} {why}", l.region)));
    }
    if !l.zone.is_empty() {
        if l.region.is_empty() {
            out.push((
                "zone",
                "zone needs region; add the region that contains this zone".to_owned(),
            ));
        } else if let Err(why) = dns_label(&l.zone) {
            out.push(("zone", format!("zone {:?} {why}", l.zone)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::config::{Spec, parse_resource, validate};

    fn doc(name: &str, namespace: &str, spec: Value) -> Value {
        json!({
            "apiVersion": mesh_proto::resource::API_VERSION,
            "kind": "WorkloadEndpoint",
            "metadata": { "name": name, "namespace": namespace },
            "spec": spec,
        })
    }

    fn spec(address: &str, locality: Value) -> Value {
        json!({ "service": "api", "node": "vm-1", "address": address, "locality": locality })
    }

    /// The (field, message fragment) problems of `d`, in order; empty when it is valid.
    fn problems(d: &Value) -> Vec<(String, String)> {
        let res = match parse_resource(0, d) {
            Ok(r) => r,
            Err(p) => return p.into_iter().map(|p| (p.field, p.message)).collect(),
        };
        match validate(0, &res) {
            Ok(_) => vec![],
            Err(p) => p.into_iter().map(|p| (p.field, p.message)).collect(),
        }
    }

    #[test]
    fn a_valid_endpoint_is_stored_with_defaults_filled_in() {
        let d = doc(
            "api.vm-1",
            "default",
            json!({
            "service": "api", "node": "vm-1", "address": "10.0.3.2:15006" }),
        );
        let res = parse_resource(0, &d).unwrap();
        let v = validate(0, &res).unwrap();
        assert!(matches!(v.spec, Spec::WorkloadEndpoint(ref s) if s.healthy));
        assert_eq!(
            v.spec_json,
            r#"{"service":"api","node":"vm-1","address":"10.0.3.2:15006","locality":{"region":"","zone":""},"healthy":true}"#
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let r1a = json!({ "region": "r1", "zone": "a" });
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (
                doc("api.vm-2", "default", spec("10.0.3.2:15006", r1a.clone())),
                vec![("metadata.name", "name it \"api.vm-1\"")],
            ),
            (
                doc("api", "shop", spec("10.0.3.2:15006", r1a.clone())),
                vec![
                    ("metadata.name", "must be <service>.<node>"),
                    ("metadata.namespace", "every endpoint lives in \"default\""),
                    ("metadata.name", "does not match spec.service and spec.node"),
                ],
            ),
            (
                doc(
                    "api.vm-1",
                    "default",
                    spec("vm-1:15006", json!({ "zone": "a" })),
                ),
                vec![
                    ("spec.address", "is not an ip:port"),
                    ("spec.locality.zone", "zone needs region"),
                ],
            ),
            (
                doc("api.vm-1", "default", spec("0.0.0.0:15006", r1a.clone())),
                vec![("spec.address", "not a wildcard")],
            ),
            (
                doc(
                    "api.vm-1",
                    "default",
                    spec("10.0.3.2:0", json!({ "region": "R1" })),
                ),
                vec![
                    ("spec.address", "port other than 0"),
                    ("spec.locality.region", "lowercase"),
                ],
            ),
            (
                doc(
                    "api.vm-1",
                    "default",
                    spec("10.0.3.2:15006", json!({ "zon": "a" })),
                ),
                vec![("spec.locality.zon", "")],
            ),
            (
                doc(
                    "api.vm-1",
                    "default",
                    json!({
                    "service": "API", "node": "vm-1", "address": "10.0.3.2:15006" }),
                ),
                vec![("spec.service", "service name \"API\" is invalid")],
            ),
        ];
        for (d, want) in cases {
            let got = problems(&d);
            let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
            let want_fields: Vec<&str> = want.iter().map(|(f, _)| *f).collect();
            assert_eq!(fields, want_fields, "{d}: {got:#?}");
            for ((_, message), (_, fragment)) in got.iter().zip(&want) {
                assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
            }
        }
    }
}
