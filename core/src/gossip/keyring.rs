//! The gossip keyring's rules: how a [`KeyringOp`] changes the replicated key list, and the
//! decoded ring a member seals and opens with.
//!
//! The list's order is the meaning: the first key seals, every key opens. Rotation is install
//! (every member learns the new key and accepts it), then use (members switch the sealing key;
//! those a step behind still open it), then remove. Nothing here reads the keys' bytes except
//! [`Keyring::from_keys`], which refuses a malformed key rather than guessing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_proto::command::{CommandResponse, GossipKey};
use mesh_proto::gossip::{GOSSIP_KEY_BYTES, KeyringOp, MAX_GOSSIP_KEYS};

/// A keyring a member can use: `(id, key)` pairs, the sealing key first. Never empty.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<(u32, [u8; GOSSIP_KEY_BYTES])>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material never reaches a log line.
        f.debug_struct("Keyring").field("ids", &self.ids()).finish()
    }
}

/// Why a replicated key list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("the gossip keyring is empty")]
    Empty,
    #[error("gossip key {id} is not {GOSSIP_KEY_BYTES} bytes of base64url")]
    BadKey { id: u32 },
}

impl Keyring {
    /// Decode a replicated key list (the sealing key first).
    pub fn from_keys(keys: &[GossipKey]) -> Result<Self, KeyringError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys.iter().take(MAX_GOSSIP_KEYS) {
            out.push((
                k.id,
                decode_key(&k.key_b64).ok_or(KeyringError::BadKey { id: k.id })?,
            ));
        }
        if out.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keys: out })
    }

    /// A ring of raw keys, the first sealing (tests and the simulation).
    pub fn from_raw(keys: Vec<(u32, [u8; GOSSIP_KEY_BYTES])>) -> Result<Self, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keys })
    }

    /// The key that seals.
    pub fn primary(&self) -> (u32, &[u8; GOSSIP_KEY_BYTES]) {
        let (id, key) = &self.keys[0];
        (*id, key)
    }

    /// The key with `id`, if the ring holds it.
    pub fn key(&self, id: u32) -> Option<&[u8; GOSSIP_KEY_BYTES]> {
        self.keys.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(id, _)| *id).collect()
    }
}

/// A base64url key of exactly [`GOSSIP_KEY_BYTES`] bytes.
pub fn decode_key(b64: &str) -> Option<[u8; GOSSIP_KEY_BYTES]> {
    let raw = URL_SAFE_NO_PAD.decode(b64.trim()).ok()?;
    raw.try_into().ok()
}

/// Apply one keyring change to the replicated list. Deterministic; a refusal changes nothing.
pub fn apply(keys: &mut Vec<GossipKey>, op: &KeyringOp) -> CommandResponse {
    let refuse = |reason: String| CommandResponse::KeyringRefused { reason };
    match op {
        KeyringOp::Install { key_b64 } => {
            if decode_key(key_b64).is_none() {
                return refuse(format!(
                    "a gossip key is {GOSSIP_KEY_BYTES} bytes of base64url; leave --key out to \
                     have one generated"
                ));
            }
            if keys.iter().any(|k| k.key_b64 == *key_b64) {
                return refuse("that key is already installed".into());
            }
            if keys.len() >= MAX_GOSSIP_KEYS {
                return refuse(format!(
                    "the keyring holds {MAX_GOSSIP_KEYS} keys; remove one first \
                     (`meshctl gossip keyring remove ID`)"
                ));
            }
            let id = keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
            keys.push(GossipKey {
                id,
                key_b64: key_b64.clone(),
            });
        }
        KeyringOp::Use { id } => {
            let Some(at) = keys.iter().position(|k| k.id == *id) else {
                return refuse(format!("no gossip key {id}; install it first"));
            };
            let key = keys.remove(at);
            keys.insert(0, key);
        }
        KeyringOp::Remove { id } => match keys.iter().position(|k| k.id == *id) {
            None => return refuse(format!("no gossip key {id}")),
            Some(0) => {
                return refuse(format!(
                    "gossip key {id} is in use; `meshctl gossip keyring use` another first"
                ));
            }
            Some(at) => {
                keys.remove(at);
            }
        },
    }
    CommandResponse::Keyring {
        ids: keys.iter().map(|k| k.id).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        URL_SAFE_NO_PAD.encode([byte; GOSSIP_KEY_BYTES])
    }

    #[test]
    fn install_use_remove_follow_the_rotation_rules() {
        let mut ring = vec![GossipKey {
            id: 1,
            key_b64: key(1),
        }];
        let ids = |r: CommandResponse| match r {
            CommandResponse::Keyring { ids } => Ok(ids),
            CommandResponse::KeyringRefused { reason } => Err(reason),
            other => panic!("{other:?}"),
        };
        let cases: Vec<(KeyringOp, Result<Vec<u32>, &str>)> = vec![
            (KeyringOp::Install { key_b64: key(2) }, Ok(vec![1, 2])),
            (
                KeyringOp::Install { key_b64: key(2) },
                Err("already installed"),
            ),
            (
                KeyringOp::Install {
                    key_b64: "short".into(),
                },
                Err("32 bytes"),
            ),
            (KeyringOp::Remove { id: 1 }, Err("in use")),
            (KeyringOp::Use { id: 9 }, Err("no gossip key 9")),
            (KeyringOp::Use { id: 2 }, Ok(vec![2, 1])),
            (KeyringOp::Remove { id: 1 }, Ok(vec![2])),
            (KeyringOp::Remove { id: 1 }, Err("no gossip key 1")),
            (KeyringOp::Install { key_b64: key(3) }, Ok(vec![2, 3])),
        ];
        for (op, want) in cases {
            let before = ring.clone();
            let got = ids(apply(&mut ring, &op));
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{op:?}"),
                (Err(g), Err(w)) => {
                    assert!(g.contains(w), "{op:?}: {g}");
                    assert_eq!(ring, before, "a refusal changed the ring");
                }
                _ => panic!("{op:?}: got {got:?}, want {want:?}"),
            }
        }
        let decoded = Keyring::from_keys(&ring).unwrap();
        assert_eq!(decoded.primary().0, 2);
        assert_eq!(decoded.key(3), Some(&[3u8; GOSSIP_KEY_BYTES]));
        assert!(!format!("{decoded:?}").contains(&key(3)));
    }

    #[test]
    fn a_full_ring_refuses_another_key() {
        let mut ring = Vec::new();
        for b in 0..MAX_GOSSIP_KEYS as u8 {
            apply(&mut ring, &KeyringOp::Install { key_b64: key(b) });
        }
        assert_eq!(ring.len(), MAX_GOSSIP_KEYS);
        let r = apply(&mut ring, &KeyringOp::Install { key_b64: key(99) });
        assert!(matches!(r, CommandResponse::KeyringRefused { .. }));
    }
}
