//! Fixtures for tests and benchmarks: a throwaway cluster CA per trust domain, SVIDs issued by
//! it, and gateway configs on loopback. Nothing here is used by a running gateway.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_core::identity::{
    self, IdentityError, SvidSlot, TrustBundles, generate_ca, generate_csr, sign_svid,
};
use mesh_proto::command::CaMaterial;
use mesh_proto::{ClusterName, NodeName, ServiceName, SpiffeId, TrustDomain};

use crate::config::{GatewayIdentity, PeerConfig};
use crate::relay::{RelayTap, TapPoint};

/// One cluster's CA.
pub struct Pki {
    pub trust_domain: TrustDomain,
    pub ca: CaMaterial,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pki {
    /// A fresh CA for cluster `cluster`, trust domain `<cluster>.mesh`.
    pub fn new(cluster: &str) -> Result<Self, IdentityError> {
        let name = ClusterName::new(cluster).map_err(|e| IdentityError::InvalidCa {
            reason: e.to_string(),
        })?;
        let trust_domain =
            TrustDomain::new(format!("{cluster}.mesh")).map_err(|e| IdentityError::InvalidCa {
                reason: e.to_string(),
            })?;
        let ca = generate_ca(&name, &trust_domain, now_unix())?;
        Ok(Self { trust_domain, ca })
    }

    /// (chain PEM = leaf + CA, key PEM) for `id`, valid for an hour.
    pub fn issue(&self, id: &SpiffeId) -> Result<(String, String), IdentityError> {
        let kc = generate_csr(id)?;
        let svid = sign_svid(&self.ca, &kc.csr_pem, id, 3600, now_unix())?;
        Ok((format!("{}{}", svid.cert_pem, self.ca.cert_pem), kc.key_pem))
    }

    pub fn slot(&self, id: &SpiffeId) -> Result<Arc<SvidSlot>, IdentityError> {
        let (chain, key) = self.issue(id)?;
        SvidSlot::from_pem(&chain, &key)
    }

    pub fn gateway_id(&self, node: &NodeName) -> SpiffeId {
        SpiffeId::gateway(&self.trust_domain, node)
    }

    pub fn workload_id(&self, service: &ServiceName) -> SpiffeId {
        SpiffeId::workload(&self.trust_domain, "default", service)
    }

    pub fn gateway_identity(&self, node: &NodeName) -> Result<GatewayIdentity, IdentityError> {
        let id = self.gateway_id(node);
        Ok(GatewayIdentity {
            slot: self.slot(&id)?,
            id,
            local_ca_pem: self.ca.cert_pem.clone(),
        })
    }

    /// This cluster's bundle alone.
    pub fn bundles(&self) -> Result<Arc<TrustBundles>, IdentityError> {
        let mut b = TrustBundles::new();
        b.insert_pem(self.trust_domain.clone(), &self.ca.cert_pem)?;
        Ok(Arc::new(b))
    }

    /// This cluster as another gateway's peer at `address`.
    pub fn as_peer(&self, address: SocketAddr) -> PeerConfig {
        PeerConfig {
            trust_domain: self.trust_domain.clone(),
            address,
            ca_pem: self.ca.cert_pem.clone(),
        }
    }
}

/// A loopback UDP port that was free a moment ago (for wiring two gateways to each other).
pub fn free_udp_addr() -> std::io::Result<SocketAddr> {
    UdpSocket::bind("127.0.0.1:0")?.local_addr()
}

/// A [`RelayTap`] that keeps every byte it sees, per tap point.
#[derive(Default)]
pub struct RecordingTap {
    seen: Mutex<Vec<(TapPoint, Vec<u8>)>>,
}

impl RecordingTap {
    /// Everything seen, concatenated per tap point, in arrival order.
    pub fn bytes(&self) -> Vec<(TapPoint, Vec<u8>)> {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<(TapPoint, Vec<u8>)> = Vec::new();
        for (p, b) in seen.iter() {
            match out.iter_mut().find(|(q, _)| q == p) {
                Some((_, all)) => all.extend_from_slice(b),
                None => out.push((*p, b.clone())),
            }
        }
        out
    }

    pub fn total(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, b)| b.len())
            .sum()
    }
}

impl RelayTap for RecordingTap {
    fn observe(&self, point: TapPoint, bytes: &[u8]) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((point, bytes.to_vec()));
    }
}

/// Re-export for callers building their own verifiers in tests.
pub use identity::PeerPolicy;
