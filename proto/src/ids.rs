//! Identifier newtypes. Each constructor checks syntax only, so that an id that exists is always
//! well formed; whether an id is *allowed* somewhere is a `mesh-core` decision.
//!
//! SPIFFE parsing is delegated to the `spiffe` crate so the spec's rules (lowercase trust domain,
//! no empty, `.` or `..` path segments, no query or fragment) are not re-implemented here.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} {value:?} is invalid: {reason}")]
    Invalid {
        kind: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(kind: &'static str, value: &str, reason: impl Into<String>) -> IdError {
    IdError::Invalid {
        kind,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A DNS-label-like name: 1..=63 chars of `[a-z0-9-]`, not starting or ending with `-`.
fn check_label(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() || value.len() > 63 {
        return Err(invalid(kind, value, "must be 1 to 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            kind,
            value,
            "may contain only lowercase letters, digits and '-'",
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid(kind, value, "must not start or end with '-'"));
    }
    Ok(())
}

macro_rules! label_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_label($kind, &value)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_newtype!(
    /// The name of one cluster, e.g. `east`. Unique within a federation.
    ClusterName,
    "cluster name"
);
label_newtype!(
    /// The name of one meshd host (control node, agent or gateway), unique within its cluster.
    NodeName,
    "node name"
);
label_newtype!(
    /// A logical service, e.g. `api`. Its workload identity is `ns/<namespace>/sa/<service>`.
    ServiceName,
    "service name"
);

/// A SPIFFE trust domain, e.g. `east.mesh`. One per cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let td = spiffe::TrustDomain::new(&value)
            .map_err(|e| invalid("trust domain", &value, e.to_string()))?;
        if td.to_string() != value {
            return Err(invalid(
                "trust domain",
                &value,
                "give the bare name, e.g. east.mesh",
            ));
        }
        Ok(Self(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

/// A SPIFFE ID, `spiffe://<trust domain>/<path>`, with a non-empty path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: String,
}

/// What a SPIFFE ID names, read from its path (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `/mesh/control/<node>`: a control node; may make Raft RPCs and sign certificates.
    Control(NodeName),
    /// `/mesh/agent/<node>`: an agent host.
    Agent(NodeName),
    /// `/mesh/gateway/<node>`: an east-west gateway.
    Gateway(NodeName),
    /// `/ns/<namespace>/sa/<service account>`: a workload.
    Workload {
        namespace: String,
        service_account: String,
    },
    /// Any other path. Never granted by the CA; kept so verifiers can name what they refused.
    Other,
}

impl SpiffeId {
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let id =
            spiffe::SpiffeId::new(value).map_err(|e| invalid("SPIFFE ID", value, e.to_string()))?;
        if id.path().is_empty() {
            return Err(invalid("SPIFFE ID", value, "the path must not be empty"));
        }
        if id.to_string() != value {
            return Err(invalid(
                "SPIFFE ID",
                value,
                format!("write it in canonical form: {id}"),
            ));
        }
        Ok(Self {
            trust_domain: TrustDomain(id.trust_domain_name().to_owned()),
            path: id.path().to_owned(),
        })
    }

    fn from_parts(td: &TrustDomain, path: String) -> Self {
        Self {
            trust_domain: td.clone(),
            path,
        }
    }

    pub fn control(td: &TrustDomain, node: &NodeName) -> Self {
        Self::from_parts(td, format!("/mesh/control/{node}"))
    }
    pub fn agent(td: &TrustDomain, node: &NodeName) -> Self {
        Self::from_parts(td, format!("/mesh/agent/{node}"))
    }
    pub fn gateway(td: &TrustDomain, node: &NodeName) -> Self {
        Self::from_parts(td, format!("/mesh/gateway/{node}"))
    }
    /// The workload identity of a service: `ns/<namespace>/sa/<service>`.
    pub fn workload(td: &TrustDomain, namespace: &str, service: &ServiceName) -> Self {
        Self::from_parts(td, format!("/ns/{namespace}/sa/{service}"))
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn role(&self) -> Role {
        let segs: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let node = |s: &str| NodeName::new(s).ok();
        match segs.as_slice() {
            ["mesh", "control", n] => node(n).map_or(Role::Other, Role::Control),
            ["mesh", "agent", n] => node(n).map_or(Role::Other, Role::Agent),
            ["mesh", "gateway", n] => node(n).map_or(Role::Other, Role::Gateway),
            ["ns", ns, "sa", sa] => Role::Workload {
                namespace: (*ns).to_owned(),
                service_account: (*sa).to_owned(),
            },
            _ => Role::Other,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

macro_rules! string_serde {
    ($name:ident, $parse:path) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(SpiffeId, SpiffeId::parse);
string_serde!(TrustDomain, TrustDomain::new);

/// Where an endpoint runs. Failover ranks candidates by it (DESIGN §6). An empty region or
/// zone means "not known"; either may be left out when written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Locality {
    pub region: String,
    pub zone: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ids_round_trip() {
        let td = TrustDomain::new("east.mesh").unwrap();
        let n = NodeName::new("c1").unwrap();
        let id = SpiffeId::control(&td, &n);
        assert_eq!(id.to_string(), "spiffe://east.mesh/mesh/control/c1");
        assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(id.role(), Role::Control(n));
        let svc = ServiceName::new("api").unwrap();
        let w = SpiffeId::workload(&td, "default", &svc);
        assert_eq!(
            w.role(),
            Role::Workload {
                namespace: "default".into(),
                service_account: "api".into()
            }
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "spiffe://East.mesh/x",
            "spiffe://east.mesh",
            "spiffe://east.mesh/",
            "spiffe://east.mesh/a/../b",
            "http://east.mesh/a",
            "spiffe://east.mesh/a?b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(TrustDomain::new("spiffe://east.mesh").is_err());
        assert!(ClusterName::new("East").is_err());
        assert!(ClusterName::new("-east").is_err());
        assert!(NodeName::new("").is_err());
    }
}
