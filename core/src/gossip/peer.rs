//! The pool member as foca sees it: [`Peer`], foca's `Identity` over
//! `mesh_proto::gossip::MemberId`, and [`MeshCodec`], foca's `Codec` over the one mesh-proto
//! binary codec (no second wire format).
//!
//! Identity rules: a member's address is its UDP `addr`; of two identities on one address the
//! higher `generation` wins, and a member declared down renews itself with `generation + 1`, so
//! a restarted or falsely-failed process rejoins as a new member instead of waiting for the pool
//! to forget the old one.

use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Identity, Member};
use mesh_proto::codec::{self, CodecError};
use mesh_proto::gossip::MemberId;
use serde::{Deserialize, Serialize};

/// Largest header or member update decoded from a packet (a packet is at most 1400 bytes).
const MAX_ITEM_BYTES: usize = 2048;

/// A pool member's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Peer(pub MemberId);

impl Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        let mut next = self.0.clone();
        next.generation = next.generation.checked_add(1)?;
        Some(Peer(next))
    }

    fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.0.generation > adversary.0.generation
    }
}

/// foca's codec over mesh-proto's bounded bincode.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeshCodec;

impl MeshCodec {
    fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
        let bytes = codec::encode(value)?;
        if buf.remaining_mut() < bytes.len() {
            return Err(CodecError::TooLarge {
                len: bytes.len(),
                limit: buf.remaining_mut(),
            });
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, CodecError> {
        let (value, used) = codec::decode_prefix(buf.chunk(), MAX_ITEM_BYTES)?;
        buf.advance(used);
        Ok(value)
    }
}

impl Codec<Peer> for MeshCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<Peer>, buf: impl BufMut) -> Result<(), CodecError> {
        Self::put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<Peer>, CodecError> {
        Self::take(buf)
    }

    fn encode_member(&mut self, member: &Member<Peer>, buf: impl BufMut) -> Result<(), CodecError> {
        Self::put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<Peer>, CodecError> {
        Self::take(buf)
    }
}

#[cfg(test)]
mod tests {
    use foca::{Message, State};
    use mesh_proto::gossip::GossipRole;
    use mesh_proto::{ClusterName, NodeName};

    use super::*;

    pub(crate) fn peer(name: &str, port: u16, generation: u64) -> Peer {
        Peer(MemberId {
            name: NodeName::new(name).unwrap(),
            role: GossipRole::Agent,
            cluster: ClusterName::new("east").unwrap(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
            signing_key: [1; 32],
        })
    }

    #[test]
    fn headers_and_members_round_trip_and_consume_exactly_their_bytes() {
        let h = Header {
            src: peer("a", 1, 5),
            src_incarnation: 2,
            dst: peer("b", 2, 7),
            message: Message::Ping(9),
        };
        let m = Member::new(peer("c", 3, 1), 4, State::Suspect);
        let mut buf = Vec::new();
        MeshCodec.encode_header(&h, &mut buf).unwrap();
        MeshCodec.encode_member(&m, &mut buf).unwrap();
        buf.extend_from_slice(b"tail");
        let mut rd = &buf[..];
        assert_eq!(MeshCodec.decode_header(&mut rd).unwrap(), h);
        assert_eq!(MeshCodec.decode_member(&mut rd).unwrap(), m);
        assert_eq!(rd, b"tail");
        assert!(MeshCodec.decode_header(&b"\xff\xff"[..]).is_err());
    }

    #[test]
    fn a_renewed_identity_wins_its_address() {
        let old = peer("a", 1, 5);
        let new = old.renew().unwrap();
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }
}
