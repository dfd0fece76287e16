//! The `meshd gateway --config` file: peer gateways (until federation tokens replace it) and
//! the services this cluster exports with their endpoints (until the catalog wiring lands).
//!
//! ```yaml
//! peers:
//!   - trust_domain: west.mesh
//!     address: 127.0.62.10:7600       # the peer gateway's QUIC (UDP) address
//!     ca_pem_file: /etc/meshfed/west-ca.pem
//! exports:
//!   - name: api
//!     endpoints: ["127.0.61.20:15006"]
//! ```
//!
//! Parse, don't validate: the raw serde shape becomes a [`GatewayFile`] of checked types, and
//! every problem is reported at once with its field path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mesh_gateway::PeerConfig;
use mesh_proto::{ServiceName, TrustDomain};
use serde::Deserialize;

/// Why the gateway config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum GatewayConfigError {
    #[error("cannot read the gateway config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The checked file.
#[derive(Debug, Clone)]
pub struct GatewayFile {
    pub peers: Vec<PeerConfig>,
    pub exports: BTreeMap<ServiceName, Vec<SocketAddr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    exports: Vec<RawExport>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    trust_domain: String,
    address: String,
    ca_pem_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    name: String,
    #[serde(default)]
    endpoints: Vec<String>,
}

/// Reads and checks `path`; relative `ca_pem_file`s are resolved against its directory.
pub(crate) fn load(path: &Path) -> Result<GatewayFile, GatewayConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| GatewayConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let options = serde_saphyr::options! { with_snippet: false };
    let raw: RawFile = serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
        GatewayConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    check(raw, base).map_err(|problems| GatewayConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

fn check(raw: RawFile, base: &Path) -> Result<GatewayFile, Vec<String>> {
    let mut problems = Vec::new();
    let mut peers = Vec::new();
    for (i, p) in raw.peers.into_iter().enumerate() {
        let at = |field: &str| format!("peers[{i}].{field}");
        let td = TrustDomain::new(p.trust_domain.clone())
            .map_err(|e| problems.push(format!("{}: {e}", at("trust_domain"))))
            .ok();
        if td
            .as_ref()
            .is_some_and(|td| peers.iter().any(|q: &PeerConfig| q.trust_domain == *td))
        {
            problems.push(format!(
                "{}: {:?} is listed twice",
                at("trust_domain"),
                p.trust_domain
            ));
        }
        let address = p
            .address
            .parse::<SocketAddr>()
            .map_err(|e| {
                problems.push(format!(
                    "{}: {:?} is not an ip:port ({e})",
                    at("address"),
                    p.address
                ))
            })
            .ok();
        let file = base.join(&p.ca_pem_file);
        let ca_pem = std::fs::read_to_string(&file)
            .map_err(|e| {
                problems.push(format!(
                    "{}: cannot read {}: {e}",
                    at("ca_pem_file"),
                    file.display()
                ))
            })
            .ok();
        if let Some(pem) = &ca_pem
            && let Some(td) = &td
        {
            let mut probe = mesh_core::identity::TrustBundles::new();
            if let Err(e) = probe.insert_pem(td.clone(), pem) {
                problems.push(format!("{}: {}: {e}", at("ca_pem_file"), file.display()));
            }
        }
        if let (Some(trust_domain), Some(address), Some(ca_pem)) = (td, address, ca_pem) {
            peers.push(PeerConfig {
                trust_domain,
                address,
                ca_pem,
            });
        }
    }
    let mut exports = BTreeMap::new();
    for (i, e) in raw.exports.into_iter().enumerate() {
        let name = ServiceName::new(e.name.clone())
            .map_err(|err| problems.push(format!("exports[{i}].name: {err}")))
            .ok();
        if e.endpoints.is_empty() {
            problems.push(format!("exports[{i}].endpoints: list at least one ip:port"));
        }
        let mut addrs = Vec::new();
        for (j, a) in e.endpoints.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(addr) => addrs.push(addr),
                Err(err) => problems.push(format!(
                    "exports[{i}].endpoints[{j}]: {a:?} is not an ip:port ({err})"
                )),
            }
        }
        if let Some(name) = name
            && exports.insert(name, addrs).is_some()
        {
            problems.push(format!("exports[{i}].name: {:?} is listed twice", e.name));
        }
    }
    if problems.is_empty() {
        Ok(GatewayFile { peers, exports })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, ca: Option<&str>) -> Result<GatewayFile, GatewayConfigError> {
        let dir = tempfile::tempdir().unwrap();
        if let Some(ca) = ca {
            std::fs::write(dir.path().join("west.pem"), ca).unwrap();
        }
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn a_good_file_loads_and_every_problem_names_its_field() {
        let td = TrustDomain::new("west.mesh").unwrap();
        let ca = mesh_core::identity::generate_ca(
            &mesh_proto::ClusterName::new("west").unwrap(),
            &td,
            1_750_000_000,
        )
        .unwrap();
        let good = "peers:\n  - trust_domain: west.mesh\n    address: 127.0.0.1:7600\n    ca_pem_file: west.pem\nexports:\n  - name: api\n    endpoints: [\"127.0.0.1:9000\"]\n";
        let f = load_text(good, Some(&ca.cert_pem)).unwrap();
        assert_eq!(f.peers.len(), 1);
        assert_eq!(f.peers[0].trust_domain, td);
        assert_eq!(f.exports.len(), 1);

        let bad = "peers:\n  - trust_domain: West\n    address: nowhere\n    ca_pem_file: missing.pem\nexports:\n  - name: API\n    endpoints: [\"x\"]\n  - name: db\n";
        let err = load_text(bad, None).unwrap_err().to_string();
        for field in [
            "peers[0].trust_domain",
            "peers[0].address",
            "peers[0].ca_pem_file",
            "exports[0].name",
            "exports[0].endpoints[0]",
            "exports[1].endpoints",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
        let not_ca = load_text(good, Some("garbage")).unwrap_err().to_string();
        assert!(not_ca.contains("peers[0].ca_pem_file"), "{not_ca}");
        let unknown = load_text("peer: []\n", None).unwrap_err().to_string();
        assert!(unknown.contains("peer"), "{unknown}");
    }
}
