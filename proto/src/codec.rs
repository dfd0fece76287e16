//! The one binary codec (bincode 2, standard config) and length-prefixed framing.
//!
//! Every decode is bounded: a frame longer than the caller's limit is refused before any byte of
//! it is buffered, and bincode is told the same limit so a hostile length inside a frame cannot
//! make it allocate more. bincode is unmaintained (RUSTSEC-2025-0141); keeping it behind these
//! five functions means a switch touches one file.

use serde::{Serialize, de::DeserializeOwned};

/// Largest frame any meshfed peer may send, unless a caller passes a smaller limit.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode failed: {0}")]
    Encode(String),
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ MAX_FRAME_BYTES }>()
}

/// Encode a message body (no length prefix).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode a message body that must be exactly one `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Decode one `T` from the front of `bytes`, at most `limit` bytes long, and say how many
/// bytes it used (for formats that concatenate messages, such as foca's packets).
pub fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<(T, usize), CodecError> {
    let window = &bytes[..bytes.len().min(limit)];
    bincode::serde::decode_from_slice(window, config())
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// Decode one `T` from the start of `bytes` (at most [`MAX_FRAME_BYTES`] of them), returning
/// it and how many bytes it used; the rest is left alone. For reading a version field before
/// deciding how to read the remainder.
pub fn decode_leading<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    decode_prefix(bytes, MAX_FRAME_BYTES)
}

/// Prefix `body` with its length as a big-endian u32.
pub fn frame(body: &[u8]) -> Result<Vec<u8>, CodecError> {
    let len = u32::try_from(body.len()).map_err(|_| CodecError::TooLarge {
        len: body.len(),
        limit: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Read a frame header and check it against `limit` before the body is read.
pub fn frame_len(header: [u8; 4], limit: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(CodecError::TooLarge { len, limit });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_pin_the_encoding() {
        // (u64 300, "ab") in bincode 2 standard config: varint 300 = fb 2c 01, then len 2 + bytes.
        let bytes = encode(&(300u64, "ab".to_owned())).unwrap();
        assert_eq!(bytes, vec![0xfb, 0x2c, 0x01, 0x02, b'a', b'b']);
        let back: (u64, String) = decode(&bytes).unwrap();
        assert_eq!(back, (300, "ab".to_owned()));
    }

    #[test]
    fn hostile_lengths_are_refused() {
        // A Vec<u8> claiming u64::MAX elements must fail, not allocate.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        assert!(matches!(
            frame_len(1_000_000u32.to_be_bytes(), 1000),
            Err(CodecError::TooLarge { .. })
        ));
        let ok = encode(&7u8).unwrap();
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<u8>(&trailing),
            Err(CodecError::Trailing(1))
        ));
    }
}
