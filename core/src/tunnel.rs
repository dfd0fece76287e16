//! Tunnel admission (DESIGN §6 "Cross-cluster path"): the pure decisions a gateway takes on the
//! first bytes of a tunnel connection or a QUIC stream.
//!
//! ```text
//!  local side:  sidecar's verified id + preamble ─► dispatch_tunnel ─► Forward{td, service, port}
//!                                                                     | Refuse{reason}
//!  remote side: peer gateway's verified id + preamble ─► admit_stream ─► Relay{service, port}
//!                                                                      | Probe | Refuse{reason}
//! ```
//!
//! The TLS verifiers already refuse unknown trust domains and (on the QUIC side) non-gateway
//! roles; these functions check again, so a misconfigured verifier cannot open the relay. They
//! take the decoded preamble (or why it did not decode) and never touch a socket or a clock.
//! Checks run in a fixed order: who the caller is, then the preamble's version and shape, then
//! what it asks for; the first failing check names the refusal.

use std::collections::{BTreeMap, BTreeSet};

use mesh_proto::tunnel::{Preamble, PreambleError, Refusal, Target};
use mesh_proto::{Role, ServiceName, SpiffeId, TrustDomain};

/// What the remote side of a gateway admits: its own trust domain, the trust domains it is
/// federated with, and the services it exports with their endpoints' ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub local: TrustDomain,
    pub federated: BTreeSet<TrustDomain>,
    /// Exported service → the ports of its endpoints (for the port selector).
    pub exported: BTreeMap<ServiceName, BTreeSet<u16>>,
}

/// The remote side's decision on one stream from a peer gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Connect to an endpoint of `service` (matching `port` when given) and relay bytes.
    Relay {
        service: ServiceName,
        port: Option<u16>,
    },
    /// Answer OK and close: a gateway probe.
    Probe,
    Refuse {
        reason: Refusal,
    },
}

/// The local side's decision on one tunnel connection from a local sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// Open a stream to the gateway of `trust_domain` and send it this preamble.
    Forward {
        preamble: Preamble,
    },
    Refuse {
        reason: Refusal,
    },
}

fn refuse(reason: Refusal) -> Admit {
    Admit::Refuse { reason }
}

/// Decides a stream opened by the peer gateway `peer` (its verified SPIFFE ID).
pub fn admit_stream(
    policy: &Admission,
    peer: &SpiffeId,
    preamble: &Result<Preamble, PreambleError>,
) -> Admit {
    let td = peer.trust_domain();
    if *td == policy.local || !policy.federated.contains(td) {
        return refuse(Refusal::UnfederatedTrustDomain);
    }
    if !matches!(peer.role(), Role::Gateway(_)) {
        return refuse(Refusal::WrongRole);
    }
    let preamble = match preamble {
        Ok(p) => p,
        Err(e) => return refuse(Refusal::from(e)),
    };
    match &preamble.target {
        Target::Probe { .. } => Admit::Probe,
        Target::Service {
            trust_domain,
            service,
            port,
        } => {
            if *trust_domain != policy.local {
                return refuse(Refusal::UnknownTargetCluster);
            }
            let Some(ports) = policy.exported.get(service) else {
                return refuse(Refusal::ServiceNotExported);
            };
            if port.is_some_and(|p| !ports.contains(&p)) || ports.is_empty() {
                return refuse(Refusal::NoEndpoint);
            }
            Admit::Relay {
                service: service.clone(),
                port: *port,
            }
        }
    }
}

/// Decides a tunnel opened by the local sidecar `caller` (its verified SPIFFE ID): only
/// workloads of `local` may tunnel, only to a trust domain in `peers` (those with a gateway).
pub fn dispatch_tunnel(
    local: &TrustDomain,
    peers: &BTreeSet<TrustDomain>,
    caller: &SpiffeId,
    preamble: &Result<Preamble, PreambleError>,
) -> Dispatch {
    let refuse = |reason| Dispatch::Refuse { reason };
    if caller.trust_domain() != local {
        return refuse(Refusal::UnfederatedTrustDomain);
    }
    if !matches!(caller.role(), Role::Workload { .. }) {
        return refuse(Refusal::WrongRole);
    }
    let preamble = match preamble {
        Ok(p) => p,
        Err(e) => return refuse(Refusal::from(e)),
    };
    match &preamble.target {
        Target::Probe { .. } => refuse(Refusal::Malformed),
        Target::Service { trust_domain, .. } => {
            if trust_domain == local || !peers.contains(trust_domain) {
                return refuse(Refusal::UnknownTargetCluster);
            }
            Dispatch::Forward {
                preamble: preamble.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::NodeName;
    use mesh_proto::tunnel::TUNNEL_VERSION;

    use super::*;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::new(s).unwrap()
    }
    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }
    fn gw(t: &str) -> SpiffeId {
        SpiffeId::gateway(&td(t), &NodeName::new("gw1").unwrap())
    }
    fn wl(t: &str, s: &str) -> SpiffeId {
        SpiffeId::workload(&td(t), "default", &svc(s))
    }
    fn to(t: &str, s: &str, port: Option<u16>) -> Result<Preamble, PreambleError> {
        Ok(Preamble::service(td(t), svc(s), port))
    }

    fn policy() -> Admission {
        Admission {
            local: td("west.mesh"),
            federated: [td("east.mesh")].into(),
            exported: [(svc("api"), [8443u16].into()), (svc("empty"), [].into())].into(),
        }
    }

    #[test]
    fn remote_side_admits_only_federated_gateways_to_exported_services() {
        use Refusal::*;
        let p = policy();
        let relay = |port| Admit::Relay {
            service: svc("api"),
            port,
        };
        let bad_version = Err(PreambleError::Version { got: 9 });
        let malformed = Err(PreambleError::Malformed { reason: "x".into() });
        let probe = Ok(Preamble {
            version: TUNNEL_VERSION,
            target: Target::Probe { nonce: 1 },
        });
        let cases: Vec<(&str, SpiffeId, Result<Preamble, PreambleError>, Admit)> = vec![
            (
                "ok",
                gw("east.mesh"),
                to("west.mesh", "api", None),
                relay(None),
            ),
            (
                "port",
                gw("east.mesh"),
                to("west.mesh", "api", Some(8443)),
                relay(Some(8443)),
            ),
            ("probe", gw("east.mesh"), probe, Admit::Probe),
            (
                "wrong port",
                gw("east.mesh"),
                to("west.mesh", "api", Some(1)),
                refuse(NoEndpoint),
            ),
            (
                "no endpoints",
                gw("east.mesh"),
                to("west.mesh", "empty", None),
                refuse(NoEndpoint),
            ),
            (
                "unfederated",
                gw("north.mesh"),
                to("west.mesh", "api", None),
                refuse(UnfederatedTrustDomain),
            ),
            (
                "own gateway",
                gw("west.mesh"),
                to("west.mesh", "api", None),
                refuse(UnfederatedTrustDomain),
            ),
            (
                "workload as gateway",
                wl("east.mesh", "api"),
                to("west.mesh", "api", None),
                refuse(WrongRole),
            ),
            (
                "not exported",
                gw("east.mesh"),
                to("west.mesh", "db", None),
                refuse(ServiceNotExported),
            ),
            (
                "other cluster",
                gw("east.mesh"),
                to("north.mesh", "api", None),
                refuse(UnknownTargetCluster),
            ),
            (
                "version",
                gw("east.mesh"),
                bad_version,
                refuse(VersionMismatch),
            ),
            (
                "malformed",
                gw("east.mesh"),
                malformed.clone(),
                refuse(Malformed),
            ),
            (
                "identity before preamble",
                gw("north.mesh"),
                malformed,
                refuse(UnfederatedTrustDomain),
            ),
        ];
        for (name, peer, preamble, want) in cases {
            assert_eq!(admit_stream(&p, &peer, &preamble), want, "{name}");
        }
    }

    #[test]
    fn local_side_forwards_only_local_workloads_to_peer_clusters() {
        use Refusal::*;
        let local = td("east.mesh");
        let peers: BTreeSet<TrustDomain> = [td("west.mesh")].into();
        let fwd = |t: &str, s: &str| Dispatch::Forward {
            preamble: Preamble::service(td(t), svc(s), None),
        };
        let no = |reason| Dispatch::Refuse { reason };
        let probe = Ok(Preamble {
            version: TUNNEL_VERSION,
            target: Target::Probe { nonce: 1 },
        });
        let cases: Vec<(&str, SpiffeId, Result<Preamble, PreambleError>, Dispatch)> = vec![
            (
                "ok",
                wl("east.mesh", "web"),
                to("west.mesh", "api", None),
                fwd("west.mesh", "api"),
            ),
            (
                "foreign caller",
                wl("west.mesh", "web"),
                to("west.mesh", "api", None),
                no(UnfederatedTrustDomain),
            ),
            (
                "gateway as sidecar",
                gw("east.mesh"),
                to("west.mesh", "api", None),
                no(WrongRole),
            ),
            (
                "hairpin",
                wl("east.mesh", "web"),
                to("east.mesh", "api", None),
                no(UnknownTargetCluster),
            ),
            (
                "no peer",
                wl("east.mesh", "web"),
                to("north.mesh", "api", None),
                no(UnknownTargetCluster),
            ),
            (
                "probe from a sidecar",
                wl("east.mesh", "web"),
                probe,
                no(Malformed),
            ),
            (
                "version",
                wl("east.mesh", "web"),
                Err(PreambleError::Version { got: 2 }),
                no(VersionMismatch),
            ),
            (
                "too large",
                wl("east.mesh", "web"),
                Err(PreambleError::TooLarge { len: 5000 }),
                no(Malformed),
            ),
        ];
        for (name, caller, preamble, want) in cases {
            assert_eq!(
                dispatch_tunnel(&local, &peers, &caller, &preamble),
                want,
                "{name}"
            );
        }
    }
}
