//! The agent's services file: which local services this host runs, where their mTLS inbound
//! listeners are, how their apps are health-checked, and which upstreams each may call
//! (Consul-style explicit upstreams, DESIGN §6).
//!
//! Parse, don't validate: [`load`] reads YAML into a raw serde shape, then [`ServicesConfig`] is
//! built from it through `TryFrom`, reporting every problem at once, each naming its field
//! (`services[0].upstreams[1].listen`) and value. This module does not open sockets or check that
//! addresses are free; binding does that and names the listener.
//!
//! ```yaml
//! services:
//!   - name: api
//!     port: 8080                # the local app, on 127.0.0.1
//!     inbound: 127.0.3.2:15006  # this service's mTLS listener
//!     locality: {region: r1, zone: a}
//!     health: {http: /healthz, interval: 2s, timeout: 1s}  # optional; default: TCP connect
//!     httpProxy: 127.0.0.1:15001  # optional; routes by Host (`http://web/...`) for HTTP_PROXY
//!     protocol: auto            # optional: auto (HTTP or TCP), http or tcp
//!     upstreams:
//!       - service: web
//!         listen: 127.0.0.1:9001
//!         protocol: auto        # optional: auto detects; tcp for server-first protocols
//!         endpoints: ["127.0.3.3:15006"]  # optional static endpoints; the catalog adds more
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mesh_proto::{Locality, ServiceName};
use serde::Deserialize;

mod health;

pub use health::{HealthCheck, Probe};

/// Largest services file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most services one agent runs.
pub(crate) const MAX_SERVICES: usize = 64;
/// Most upstreams one service declares.
pub(crate) const MAX_UPSTREAMS: usize = 64;
/// Most static endpoints one upstream lists.
pub(crate) const MAX_ENDPOINTS: usize = 256;

/// The validated services file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicesConfig {
    pub services: Vec<ServiceConfig>,
}

/// One local service: its app, its inbound listener and its upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: ServiceName,
    /// Where the local app listens (always 127.0.0.1).
    pub app: SocketAddr,
    /// This service's mTLS listener, which peers' sidecars connect to.
    pub inbound: SocketAddr,
    pub locality: Locality,
    /// How the app is checked before the endpoint is registered healthy.
    pub health: HealthCheck,
    pub upstreams: Vec<UpstreamConfig>,
    /// A loopback HTTP proxy listener that routes by `Host` to any mesh service (for apps
    /// configured with `HTTP_PROXY`).
    pub http_proxy: Option<SocketAddr>,
    /// What the local app speaks; the inbound listener offers only matching ALPNs.
    pub protocol: Protocol,
}

/// One service this service calls, through a plain-HTTP listener on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub service: ServiceName,
    pub listen: SocketAddr,
    /// Static inbound listeners of the upstream's sidecars, used besides those the catalog
    /// lists (may be empty).
    pub endpoints: Vec<SocketAddr>,
    /// What the local app speaks to this upstream.
    pub protocol: Protocol,
}

/// What a service or upstream speaks. `auto` detects on the first bytes (an upstream) or
/// accepts both (a service); `tcp` skips detection, so server-first protocols do not wait for
/// its timeout; `http` never falls back to opaque TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Auto,
    Http,
    Tcp,
}

fn protocol(field: &str, raw: Option<&str>, problems: &mut Vec<String>) -> Protocol {
    match raw {
        None | Some("auto") => Protocol::Auto,
        Some("http") => Protocol::Http,
        Some("tcp") => Protocol::Tcp,
        Some(other) => {
            problems.push(format!(
                "{field}: unknown protocol {other:?}; use auto, http or tcp"
            ));
            Protocol::Auto
        }
    }
}

/// Why the services file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read services file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("services file {path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("services file {path} is not valid YAML for the agent: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("services file {path} has {} problem(s):\n{}", problems.len(), Problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|p| format!("  - {p}")).collect();
        f.write_str(&lines.join("\n"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    port: u16,
    inbound: String,
    #[serde(default)]
    locality: Option<RawLocality>,
    #[serde(default)]
    health: Option<health::RawHealth>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default, rename = "httpProxy")]
    http_proxy: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocality {
    #[serde(default)]
    region: String,
    #[serde(default)]
    zone: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    service: String,
    listen: String,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    protocol: Option<String>,
}

/// Read and validate a services file.
pub fn load(path: &Path) -> Result<ServicesConfig, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            max: MAX_FILE_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse(&text).map_err(|e| match e {
        ParseError::Syntax(message) => ConfigError::Syntax {
            path: path.to_owned(),
            message,
        },
        ParseError::Invalid(problems) => ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        },
    })
}

enum ParseError {
    Syntax(String),
    Invalid(Vec<String>),
}

fn parse(text: &str) -> Result<ServicesConfig, ParseError> {
    let options = serde_saphyr::options! { with_snippet: false };
    let raw: RawFile = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| ParseError::Syntax(e.without_snippet().to_string()))?;
    ServicesConfig::try_from(raw).map_err(ParseError::Invalid)
}

impl TryFrom<RawFile> for ServicesConfig {
    type Error = Vec<String>;

    fn try_from(raw: RawFile) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        if raw.services.is_empty() {
            problems.push("services: list at least one service".to_owned());
        }
        if raw.services.len() > MAX_SERVICES {
            problems.push(format!(
                "services: {} services listed; at most {MAX_SERVICES} per agent",
                raw.services.len()
            ));
        }
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        let mut services = Vec::new();
        for (i, s) in raw.services.into_iter().enumerate() {
            let at = format!("services[{i}]");
            if let Some(svc) = service(&at, s, &mut problems) {
                if !names.insert(svc.name.clone()) {
                    problems.push(format!("{at}.name: service {:?} is listed twice", svc.name));
                }
                let listeners = std::iter::once((format!("{at}.inbound"), svc.inbound))
                    .chain(
                        svc.upstreams
                            .iter()
                            .enumerate()
                            .map(|(j, u)| (format!("{at}.upstreams[{j}].listen"), u.listen)),
                    )
                    .chain(svc.http_proxy.map(|a| (format!("{at}.httpProxy"), a)));
                for (field, addr) in listeners {
                    if !addrs.insert(addr) {
                        problems.push(format!("{field}: address {addr} is used twice"));
                    }
                }
                services.push(svc);
            }
        }
        if problems.is_empty() {
            Ok(ServicesConfig { services })
        } else {
            Err(problems)
        }
    }
}

fn service(at: &str, s: RawService, problems: &mut Vec<String>) -> Option<ServiceConfig> {
    let before = problems.len();
    let name = ServiceName::new(s.name.clone())
        .map_err(|e| problems.push(format!("{at}.name: {e}")))
        .ok();
    if s.port == 0 {
        problems.push(format!(
            "{at}.port: 0 is not a port; give the local app's port"
        ));
    }
    let inbound = socket_addr(&format!("{at}.inbound"), &s.inbound, problems);
    if s.upstreams.len() > MAX_UPSTREAMS {
        problems.push(format!(
            "{at}.upstreams: {} listed; at most {MAX_UPSTREAMS}",
            s.upstreams.len()
        ));
    }
    let upstreams: Vec<UpstreamConfig> = s
        .upstreams
        .into_iter()
        .enumerate()
        .filter_map(|(j, u)| upstream(&format!("{at}.upstreams[{j}]"), u, problems))
        .collect();
    let locality = s.locality.map_or_else(Locality::default, |l| Locality {
        region: l.region,
        zone: l.zone,
    });
    // The catalog refuses what the control plane's validation refuses; say so at start.
    for (field, why) in mesh_core::config::locality_problems(&locality) {
        problems.push(format!("{at}.locality.{field}: {why}"));
    }
    let health = health::health(at, s.health, problems);
    let app_protocol = protocol(&format!("{at}.protocol"), s.protocol.as_deref(), problems);
    let http_proxy = s.http_proxy.as_deref().and_then(|raw| {
        let field = format!("{at}.httpProxy");
        let addr = socket_addr(&field, raw, problems)?;
        if !addr.ip().is_loopback() {
            problems.push(format!(
                "{field}: {addr} is not a loopback address; the HTTP proxy listener speaks \
                 plain HTTP, so it must only be reachable from this host (use 127.0.0.1:<port>)"
            ));
        }
        Some(addr)
    });
    if problems.len() > before {
        return None;
    }
    Some(ServiceConfig {
        name: name?,
        app: SocketAddr::from(([127, 0, 0, 1], s.port)),
        inbound: inbound?,
        locality,
        health: health?,
        upstreams,
        http_proxy,
        protocol: app_protocol,
    })
}

fn upstream(at: &str, u: RawUpstream, problems: &mut Vec<String>) -> Option<UpstreamConfig> {
    let before = problems.len();
    let service = ServiceName::new(u.service.clone())
        .map_err(|e| problems.push(format!("{at}.service: {e}")))
        .ok();
    let listen = socket_addr(&format!("{at}.listen"), &u.listen, problems);
    let upstream_protocol = protocol(&format!("{at}.protocol"), u.protocol.as_deref(), problems);
    if let Some(l) = listen
        && !l.ip().is_loopback()
    {
        problems.push(format!(
            "{at}.listen: {l} is not a loopback address; the outbound listener speaks plain \
             HTTP, so it must only be reachable from this host (use 127.0.0.1:<port>)"
        ));
    }
    if u.endpoints.len() > MAX_ENDPOINTS {
        problems.push(format!(
            "{at}.endpoints: {} listed; at most {MAX_ENDPOINTS}",
            u.endpoints.len()
        ));
    }
    let endpoints: Vec<SocketAddr> = u
        .endpoints
        .iter()
        .enumerate()
        .filter_map(|(k, e)| socket_addr(&format!("{at}.endpoints[{k}]"), e, problems))
        .collect();
    if problems.len() > before {
        return None;
    }
    Some(UpstreamConfig {
        service: service?,
        listen: listen?,
        endpoints,
        protocol: upstream_protocol,
    })
}

fn socket_addr(field: &str, value: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            problems.push(format!("{field}: {value:?} needs a port other than 0"));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "{field}: {value:?} is not an IP:port address (e.g. 127.0.0.1:15006)"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests;
