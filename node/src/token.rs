//! Bearer tokens: generation, and the self-describing join token.
//!
//! A token is 256 bits from the OS RNG, base64url. The control plane stores only its SHA-256
//! (`mesh_core::state::token_sha256`). The join token also carries the CA fingerprint and API
//! addresses, so a joining node can pin the CA on first contact without a second secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const JOIN_PREFIX: &str = "meshfed-join1.";

/// A fresh random secret with a readable prefix, e.g. `mfop_...`.
pub fn random_token(prefix: &str) -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the OS random source failed"))?;
    Ok(format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(b)))
}

/// What a join token carries besides its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The bearer secret; its hash is in Raft.
    pub secret: String,
    /// `sha256:<hex>` of the cluster CA.
    pub ca_fingerprint: String,
    /// The cluster's trust domain, so the joiner can ask for the right identity.
    pub trust_domain: String,
    /// API addresses of control nodes known when the token was printed.
    pub api: Vec<String>,
}

impl JoinToken {
    pub fn encode(&self) -> anyhow::Result<String> {
        Ok(format!(
            "{JOIN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(self)?)
        ))
    }

    pub fn decode(s: &str) -> anyhow::Result<Self> {
        let body = s.trim().strip_prefix(JOIN_PREFIX).ok_or_else(|| {
            anyhow::anyhow!(
                "not a join token: it must start with {JOIN_PREFIX:?}; copy it from the \
                 bootstrap node's output"
            )
        })?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| anyhow::anyhow!("join token is damaged (base64: {e}); copy it again"))?;
        serde_json::from_slice(&raw)
            .map_err(|e| anyhow::anyhow!("join token is damaged (json: {e}); copy it again"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_round_trips_and_damage_is_named() {
        let t = JoinToken {
            secret: random_token("mfjoin").unwrap(),
            ca_fingerprint: "sha256:ab".into(),
            trust_domain: "east.mesh".into(),
            api: vec!["127.0.1.1:7443".into()],
        };
        assert_eq!(JoinToken::decode(&t.encode().unwrap()).unwrap(), t);
        assert!(
            JoinToken::decode("mfop_xyz")
                .unwrap_err()
                .to_string()
                .contains("not a join")
        );
        assert!(
            JoinToken::decode("meshfed-join1.!!!")
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
        assert_ne!(random_token("a").unwrap(), random_token("a").unwrap());
    }
}
