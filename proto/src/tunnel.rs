//! The cross-cluster tunnel's wire vocabulary (DESIGN §6 "Cross-cluster path"): the preamble a
//! sidecar sends first on its tunnel connection to the local gateway, and a gateway sends first
//! on each QUIC stream to a peer gateway, and the one-byte status that answers it.
//!
//! ```text
//!  sidecar ──outer mTLS──► local gateway ══QUIC stream══► peer gateway ──TCP──► endpoint
//!    [u32 BE len][preamble]   [u32 BE len][preamble]
//!    ◄── [status byte]        ◄── [status byte]
//!    then opaque bytes both ways (the inner TLS session; gateways never decrypt it)
//! ```
//!
//! The body is the codec's encoding of a [`Preamble`], whose first field is the protocol
//! version, so a peer speaking another version is told so ([`PreambleError::Version`]) rather
//! than "malformed". This file owns shapes and the bounded decode; whether a preamble is
//! admitted is `mesh-core`'s `tunnel` decision.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::ids::{ServiceName, TrustDomain};

/// The tunnel protocol version this build speaks.
pub const TUNNEL_VERSION: u16 = 1;
/// Largest preamble body (after the 4-byte length prefix) a gateway reads.
pub const MAX_PREAMBLE_BYTES: usize = 1024;
/// ALPN of the QUIC connection between gateways.
pub const ALPN_GATEWAY: &[u8] = b"meshfed/1";
/// ALPN of a sidecar's outer mTLS tunnel connection to its local gateway.
pub const ALPN_TUNNEL: &[u8] = b"meshfed-tunnel/1";

/// What a tunnel connection (or gateway stream) asks for. Fields are appended last only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preamble {
    /// Always [`TUNNEL_VERSION`] when sent by this build; checked before anything else.
    pub version: u16,
    pub target: Target,
}

/// Where the stream goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A service of the cluster whose trust domain is `trust_domain`.
    Service {
        trust_domain: TrustDomain,
        service: ServiceName,
        /// Which endpoint: `None` = any endpoint of the service, `Some(p)` = one whose port is `p`.
        port: Option<u16>,
    },
    /// A liveness and RTT probe between gateways; answered with a status and nothing else.
    Probe { nonce: u64 },
}

/// Why a gateway refused a tunnel or stream. Each reason has its own status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The preamble's version is not [`TUNNEL_VERSION`].
    VersionMismatch,
    /// The preamble did not decode, was too long, or did not arrive in time.
    Malformed,
    /// The caller's trust domain is not federated with this cluster.
    UnfederatedTrustDomain,
    /// The caller's identity has the wrong role (a workload acting as a gateway, or the reverse).
    WrongRole,
    /// The target trust domain is not this cluster's (remote side) or no peer gateway serves it
    /// (local side).
    UnknownTargetCluster,
    /// The target service is not exported to peers.
    ServiceNotExported,
    /// The service is exported but no endpoint matches the selector, or none accepted a connect.
    NoEndpoint,
    /// The local gateway has no working connection to the target cluster's gateway.
    PeerUnreachable,
    /// The peer gateway did not answer with a status in time, or answered garbage.
    PeerTimeout,
    /// The gateway is at its limit of concurrent tunnels.
    Overloaded,
}

/// The one-byte reply to a preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Refused(Refusal),
}

/// Why a preamble body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    #[error("preamble of {len} bytes exceeds the limit of {MAX_PREAMBLE_BYTES} bytes")]
    TooLarge { len: usize },
    #[error("preamble speaks tunnel version {got}; this gateway speaks {TUNNEL_VERSION}")]
    Version { got: u16 },
    #[error("preamble does not decode: {reason}")]
    Malformed { reason: String },
}

impl Preamble {
    /// A preamble for a service of another cluster, at this build's version.
    pub fn service(trust_domain: TrustDomain, service: ServiceName, port: Option<u16>) -> Self {
        Self {
            version: TUNNEL_VERSION,
            target: Target::Service {
                trust_domain,
                service,
                port,
            },
        }
    }

    /// The framed bytes to send: 4-byte big-endian length, then the body.
    pub fn to_frame(&self) -> Result<Vec<u8>, CodecError> {
        let body = codec::encode(self)?;
        if body.len() > MAX_PREAMBLE_BYTES {
            return Err(CodecError::TooLarge {
                len: body.len(),
                limit: MAX_PREAMBLE_BYTES,
            });
        }
        codec::frame(&body)
    }

    /// Checks a frame header against [`MAX_PREAMBLE_BYTES`] before any body byte is read.
    pub fn body_len(header: [u8; 4]) -> Result<usize, PreambleError> {
        codec::frame_len(header, MAX_PREAMBLE_BYTES).map_err(|_| PreambleError::TooLarge {
            len: u32::from_be_bytes(header) as usize,
        })
    }

    /// Decodes a body: the version first, so a newer peer learns it is a version problem.
    pub fn decode(body: &[u8]) -> Result<Self, PreambleError> {
        if body.len() > MAX_PREAMBLE_BYTES {
            return Err(PreambleError::TooLarge { len: body.len() });
        }
        let malformed = |e: CodecError| PreambleError::Malformed {
            reason: e.to_string(),
        };
        let (version, _) = codec::decode_leading::<u16>(body).map_err(malformed)?;
        if version != TUNNEL_VERSION {
            return Err(PreambleError::Version { got: version });
        }
        codec::decode(body).map_err(malformed)
    }
}

impl Refusal {
    const ALL: [Refusal; 10] = [
        Self::VersionMismatch,
        Self::Malformed,
        Self::UnfederatedTrustDomain,
        Self::WrongRole,
        Self::UnknownTargetCluster,
        Self::ServiceNotExported,
        Self::NoEndpoint,
        Self::PeerUnreachable,
        Self::PeerTimeout,
        Self::Overloaded,
    ];

    fn code(self) -> u8 {
        match self {
            Self::VersionMismatch => 1,
            Self::Malformed => 2,
            Self::UnfederatedTrustDomain => 3,
            Self::WrongRole => 4,
            Self::UnknownTargetCluster => 5,
            Self::ServiceNotExported => 6,
            Self::NoEndpoint => 7,
            Self::PeerUnreachable => 8,
            Self::PeerTimeout => 9,
            Self::Overloaded => 10,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::VersionMismatch => "tunnel protocol version mismatch",
            Self::Malformed => "malformed preamble",
            Self::UnfederatedTrustDomain => "caller's trust domain is not federated",
            Self::WrongRole => "caller's identity has the wrong role",
            Self::UnknownTargetCluster => "no such target cluster here",
            Self::ServiceNotExported => "service is not exported",
            Self::NoEndpoint => "no reachable endpoint for the service",
            Self::PeerUnreachable => "peer gateway unreachable",
            Self::PeerTimeout => "peer gateway did not answer in time",
            Self::Overloaded => "gateway at its tunnel limit",
        })
    }
}

impl Status {
    /// The byte on the wire: 0 = OK, 1..=10 a [`Refusal`].
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Refused(r) => r.code(),
        }
    }

    /// `None` for a byte no version of the protocol sends.
    pub fn from_byte(b: u8) -> Option<Self> {
        if b == 0 {
            return Some(Self::Ok);
        }
        Refusal::ALL
            .into_iter()
            .find(|r| r.code() == b)
            .map(Self::Refused)
    }
}

impl From<&PreambleError> for Refusal {
    fn from(e: &PreambleError) -> Self {
        match e {
            PreambleError::Version { .. } => Self::VersionMismatch,
            PreambleError::TooLarge { .. } | PreambleError::Malformed { .. } => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Preamble {
        Preamble::service(
            TrustDomain::new("west.mesh").unwrap(),
            ServiceName::new("api").unwrap(),
            Some(8443),
        )
    }

    #[test]
    fn golden_bytes_pin_the_preamble_encoding() {
        let frame = sample().to_frame().unwrap();
        let mut want = vec![0, 0, 0, 20, 1, 0, 9];
        want.extend_from_slice(b"west.mesh");
        want.push(3);
        want.extend_from_slice(b"api");
        want.extend_from_slice(&[1, 0xfb, 0xfb, 0x20]);
        assert_eq!(frame, want);
        let len = Preamble::body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(Preamble::decode(&frame[4..4 + len]).unwrap(), sample());
        let probe = Preamble {
            version: TUNNEL_VERSION,
            target: Target::Probe { nonce: 7 },
        };
        assert_eq!(probe.to_frame().unwrap(), vec![0, 0, 0, 3, 1, 1, 7]);
    }

    #[test]
    fn version_is_read_before_the_rest_and_limits_hold() {
        let mut body = sample().to_frame().unwrap()[4..].to_vec();
        body[0] = 2;
        assert_eq!(
            Preamble::decode(&body),
            Err(PreambleError::Version { got: 2 })
        );
        // A future version with a body this build cannot read is still a version problem.
        assert_eq!(
            Preamble::decode(&[2, 0xff, 0xff]),
            Err(PreambleError::Version { got: 2 })
        );
        assert!(matches!(
            Preamble::decode(&[1, 9]),
            Err(PreambleError::Malformed { .. })
        ));
        assert!(matches!(
            Preamble::decode(&[]),
            Err(PreambleError::Malformed { .. })
        ));
        assert_eq!(
            Preamble::body_len(1025u32.to_be_bytes()),
            Err(PreambleError::TooLarge { len: 1025 })
        );
        assert_eq!(Preamble::body_len(1024u32.to_be_bytes()), Ok(1024));
    }

    #[test]
    fn status_bytes_round_trip_and_are_distinct() {
        assert_eq!(Status::from_byte(0), Some(Status::Ok));
        let mut seen = std::collections::HashSet::new();
        for r in Refusal::ALL {
            let b = Status::Refused(r).to_byte();
            assert!(seen.insert(b), "{r:?} reuses byte {b}");
            assert_eq!(Status::from_byte(b), Some(Status::Refused(r)));
        }
        assert_eq!(Status::from_byte(11), None);
        assert_eq!(Status::from_byte(255), None);
    }
}
