//! `meshctl check` decisions, in the `linkerd check` style (DESIGN §9): from what the API
//! reports (status, agent reports, the catalog, peerings) and `now`, a list of findings, each
//! √ ok, ‼ warning or × failure, with a hint that says what to do.
//!
//! ```text
//!  Inputs { status, agents, endpoints, peers, now } ─► evaluate ─► [Finding] (category order)
//!  any Fail ─► meshctl exits 1
//! ```
//!
//! It fetches nothing and prints nothing; `meshctl` gathers the inputs and renders the list.

use mesh_proto::api::{AgentsResponse, StatusResponse};
use mesh_proto::federation::{Peering, PeeringState};
use mesh_proto::resource::WorkloadEndpointSpec;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Warn when a CA expires within this long.
pub const CA_WARN_SECS: u64 = 30 * 86_400;
/// Warn when an SVID expires within this long (it renews at half-life, so this means stuck).
pub const SVID_WARN_SECS: u64 = 3600;
/// An agent report older than this is stale (agents report every 30 s).
pub const REPORT_STALE_MS: u64 = 120_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    /// `√`, `‼` or `×`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }

    pub fn mark(self) -> &'static str {
        match self {
            Level::Ok => "√",
            Level::Warn => "‼",
            Level::Fail => "×",
        }
    }
}

/// One checked fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub category: &'static str,
    pub level: Level,
    pub message: String,
    /// What to do, for warnings and failures.
    pub hint: Option<String>,
}

/// What the checks look at.
pub struct Inputs<'a> {
    pub status: &'a StatusResponse,
    pub agents: &'a AgentsResponse,
    pub endpoints: &'a [WorkloadEndpointSpec],
    /// `None` unless federation is checked.
    pub peers: Option<&'a [Peering]>,
    pub now_unix_ms: u64,
}

fn finding(category: &'static str, level: Level, message: String, hint: Option<&str>) -> Finding {
    Finding {
        category,
        level,
        message,
        hint: hint.map(str::to_owned),
    }
}

/// Every finding, control plane first.
pub fn evaluate(i: &Inputs<'_>) -> Vec<Finding> {
    let mut out = control_plane(i);
    out.extend(data_plane(i));
    if let Some(peers) = i.peers {
        out.extend(federation(peers, i.now_unix_ms));
    }
    out
}

/// True when any finding failed.
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Fail)
}

fn control_plane(i: &Inputs<'_>) -> Vec<Finding> {
    const C: &str = "control-plane";
    let s = i.status;
    let mut out = vec![finding(
        C,
        Level::Ok,
        format!("control API of cluster {} answers", s.cluster),
        None,
    )];
    out.push(match s.leader_id {
        Some(id) => finding(
            C,
            Level::Ok,
            format!("leader elected (node {id}, term {})", s.term),
            None,
        ),
        None => finding(
            C,
            Level::Fail,
            "no leader elected".into(),
            Some("a majority of control nodes must be up; see `meshctl status`"),
        ),
    });
    let voters = s.members.iter().filter(|m| m.role != "learner").count();
    out.push(if voters >= 3 && voters % 2 == 1 {
        finding(C, Level::Ok, format!("{voters} voters"), None)
    } else {
        finding(
            C,
            Level::Warn,
            format!(
                "{voters} voter(s): fewer than 3, or an even number, tolerates no more failures"
            ),
            Some("run 3 or 5 control nodes (`meshd control --join-token …`)"),
        )
    });
    out.push(expiry(
        C,
        "cluster CA",
        s.ca_not_after_unix,
        i.now_unix_ms / 1000,
        CA_WARN_SECS,
    ));
    out
}

fn data_plane(i: &Inputs<'_>) -> Vec<Finding> {
    const D: &str = "data-plane";
    let a = i.agents;
    let now = a.now_unix_ms.max(i.now_unix_ms);
    let mut out = Vec::new();
    if a.agents.is_empty() {
        out.push(finding(
            D,
            Level::Warn,
            "no agent has reported".into(),
            Some("start `meshd agent` with a credential from `meshctl credential create`"),
        ));
    }
    for r in &a.agents {
        let age_ms = now.saturating_sub(r.reported_unix_ms);
        if age_ms > REPORT_STALE_MS {
            out.push(finding(
                D,
                Level::Warn,
                format!("agent {} last reported {} s ago", r.node, age_ms / 1000),
                Some("is the agent running and able to reach the control API?"),
            ));
        } else if r.config_version < a.store_version {
            out.push(finding(
                D,
                Level::Warn,
                format!(
                    "agent {} applied config {} of {}",
                    r.node, r.config_version, a.store_version
                ),
                Some("it catches up within a watch round; if it stays behind, see its log"),
            ));
        } else {
            out.push(finding(
                D,
                Level::Ok,
                format!("agent {} in sync", r.node),
                None,
            ));
        }
        for c in &r.certs {
            out.push(expiry(
                D,
                &format!("SVID of {} on {}", c.service, r.node),
                c.expires_unix,
                now / 1000,
                SVID_WARN_SECS,
            ));
        }
    }
    let mut services: Vec<&str> = i.endpoints.iter().map(|e| e.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    for svc in services {
        let (healthy, all) = i
            .endpoints
            .iter()
            .filter(|e| e.service.as_str() == svc)
            .fold((0, 0), |(h, n), e| (h + usize::from(e.healthy), n + 1));
        out.push(if healthy > 0 {
            finding(
                D,
                Level::Ok,
                format!("service {svc}: {healthy}/{all} endpoints healthy"),
                None,
            )
        } else {
            finding(
                D,
                Level::Fail,
                format!("service {svc}: none of {all} endpoints healthy"),
                Some("check the app and its health check on each host (`meshctl get endpoints`)"),
            )
        });
    }
    out
}

fn federation(peers: &[Peering], now_unix_ms: u64) -> Vec<Finding> {
    const F: &str = "federation";
    if peers.is_empty() {
        return vec![finding(
            F,
            Level::Warn,
            "no peers".into(),
            Some("`meshctl federate token --peer NAME` here, then `meshctl federate join` there"),
        )];
    }
    let mut out = Vec::new();
    for p in peers {
        out.push(match p.state {
            PeeringState::Active => finding(F, Level::Ok, format!("peer {} ACTIVE", p.name), None),
            other => finding(
                F,
                Level::Fail,
                format!("peer {} is {}", p.name, other.as_str()),
                Some("see `meshctl federate list`; a new token re-establishes the peering"),
            ),
        });
        out.push(match ca_not_after(&p.ca_pem) {
            Some(at) => expiry(
                F,
                &format!("trust bundle of {}", p.trust_domain),
                at,
                now_unix_ms / 1000,
                CA_WARN_SECS,
            ),
            None => finding(
                F,
                Level::Fail,
                format!("trust bundle of {} is unreadable", p.trust_domain),
                Some("remove the peering and federate again"),
            ),
        });
    }
    out
}

fn expiry(category: &'static str, what: &str, not_after: u64, now: u64, warn: u64) -> Finding {
    if not_after <= now {
        return finding(
            category,
            Level::Fail,
            format!("{what} expired"),
            Some("rotate it; nothing signed by it is trusted any more"),
        );
    }
    let left = not_after - now;
    let days = left / 86_400;
    if left < warn {
        finding(
            category,
            Level::Warn,
            format!("{what} expires in {} h", left / 3600),
            Some("rotate it before it expires"),
        )
    } else {
        finding(
            category,
            Level::Ok,
            format!("{what} valid for {days} more days"),
            None,
        )
    }
}

/// The notAfter of the first certificate in `pem`, as Unix seconds.
fn ca_not_after(pem: &str) -> Option<u64> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

#[cfg(test)]
mod tests;
