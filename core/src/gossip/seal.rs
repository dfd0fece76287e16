//! Sealed gossip packets: every UDP datagram of the pool is AES-256-GCM under a key of the
//! Raft keyring, with a replay window per sender. Pure: the sender tag comes from the caller,
//! nothing reads a clock or an ambient RNG.
//!
//! ```text
//!  0      1          5                    21         29                     len-16   len
//!  │ v=1  │ key id   │ sender tag (16 B)  │ seq (u64) │ ciphertext           │ GCM tag │
//!  └──────┴─ BE ─────┴────────────────────┴─ BE ──────┴──────────────────────┴─────────┘
//!   header = bytes 0..29, authenticated as associated data
//! ```
//!
//! Nonce safety: every member seals with the shared key, so the AEAD key is derived per sender
//! (HKDF-SHA256 of the ring key, salted with the sender's random 128-bit tag) and the nonce is
//! the sender's packet counter. Two members would need the same 128-bit tag to reuse a nonce.
//!
//! Call order: [`Sealer::seal`] for each packet to send; [`Opener::open`] for each one received.
//! The replay window of a sender advances only after a packet of it authenticates, so forged
//! packets cannot push a real sender's window forward.

use std::collections::BTreeMap;

use ring::aead::{self, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};

use super::keyring::Keyring;

/// Bytes of the clear header.
pub const HEADER_BYTES: usize = 29;
/// Bytes sealing adds to a payload.
pub const OVERHEAD_BYTES: usize = HEADER_BYTES + 16;
/// Senders whose replay windows are kept; the least recently heard is forgotten first.
pub const MAX_SENDERS: usize = 4096;
/// How far behind the newest packet of a sender an older one may arrive (reordering).
pub const WINDOW: u64 = 64;

const VERSION: u8 = 1;
const INFO: &[u8] = b"meshfed gossip v1";

/// Why a packet was dropped; each is counted by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("not a sealed gossip packet")]
    Malformed,
    #[error("sealed with key {id}, which this member's keyring does not hold")]
    UnknownKey { id: u32 },
    #[error("authentication failed (tampered, or a wrong key under a known id)")]
    Tampered,
    #[error("replayed, or older than the replay window")]
    Replayed,
}

/// One member's sending side.
#[derive(Debug, Clone)]
pub struct Sealer {
    tag: [u8; 16],
    seq: u64,
}

impl Sealer {
    /// `tag` must be random per process start (the shell draws it from the OS RNG).
    pub fn new(tag: [u8; 16]) -> Self {
        Self { tag, seq: 0 }
    }

    /// Seal `plain` under the ring's primary key. `None` only if the crypto library fails
    /// (a payload beyond GCM's limit, which a datagram cannot be).
    pub fn seal(&mut self, ring: &Keyring, plain: &[u8]) -> Option<Vec<u8>> {
        self.seq += 1;
        let (id, key) = ring.primary();
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD_BYTES);
        out.push(VERSION);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&self.seq.to_be_bytes());
        let mut body = plain.to_vec();
        derive(key, &self.tag)?
            .seal_in_place_append_tag(nonce(self.seq), Aad::from(&out[..HEADER_BYTES]), &mut body)
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }
}

/// Per sender: the newest sequence number and a bitmap of the [`WINDOW`] before it.
#[derive(Debug, Clone, Copy)]
struct Window {
    top: u64,
    seen: u64,
    /// When it was last advanced, in opens, for eviction.
    touched: u64,
}

/// One member's receiving side: the replay windows of every sender it hears.
#[derive(Debug, Clone, Default)]
pub struct Opener {
    windows: BTreeMap<[u8; 16], Window>,
    opens: u64,
}

impl Opener {
    pub fn new() -> Self {
        Self::default()
    }

    /// Open `packet` with the key its header names. Returns the plaintext, or why it dropped.
    pub fn open(&mut self, ring: &Keyring, packet: &[u8]) -> Result<Vec<u8>, Dropped> {
        if packet.len() < OVERHEAD_BYTES || packet[0] != VERSION {
            return Err(Dropped::Malformed);
        }
        let id = u32::from_be_bytes(array(&packet[1..5]));
        let tag: [u8; 16] = array(&packet[5..21]);
        let seq = u64::from_be_bytes(array(&packet[21..29]));
        let key = ring.key(id).ok_or(Dropped::UnknownKey { id })?;
        if !self.fresh(&tag, seq) {
            return Err(Dropped::Replayed);
        }
        let mut body = packet[HEADER_BYTES..].to_vec();
        let aead = derive(key, &tag).ok_or(Dropped::Tampered)?;
        let plain_len = aead
            .open_in_place(nonce(seq), Aad::from(&packet[..HEADER_BYTES]), &mut body)
            .map_err(|_| Dropped::Tampered)?
            .len();
        body.truncate(plain_len);
        self.advance(tag, seq);
        Ok(body)
    }

    fn fresh(&self, tag: &[u8; 16], seq: u64) -> bool {
        match self.windows.get(tag) {
            None => seq > 0,
            Some(w) if seq > w.top => true,
            Some(w) => {
                let behind = w.top - seq;
                behind < WINDOW && behind > 0 && w.seen & (1 << behind) == 0
            }
        }
    }

    fn advance(&mut self, tag: [u8; 16], seq: u64) {
        self.opens += 1;
        let opens = self.opens;
        if !self.windows.contains_key(&tag) && self.windows.len() >= MAX_SENDERS {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.touched)
                .map(|(t, _)| *t);
            if let Some(t) = oldest {
                self.windows.remove(&t);
            }
        }
        let w = self.windows.entry(tag).or_insert(Window {
            top: seq,
            seen: 1,
            touched: opens,
        });
        if seq > w.top {
            let shift = seq - w.top;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.top = seq;
        } else {
            w.seen |= 1 << (w.top - seq);
        }
        w.touched = opens;
    }

    /// Senders whose windows are kept.
    pub fn senders(&self) -> usize {
        self.windows.len()
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The sender's AEAD key: HKDF-SHA256(ring key, salt = sender tag). `None` only if ring
/// refuses an output length it documents as valid.
fn derive(key: &[u8; 32], tag: &[u8; 16]) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, tag).extract(key);
    let okm = prk.expand(&[INFO], &AES_256_GCM).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

#[cfg(test)]
mod tests;
