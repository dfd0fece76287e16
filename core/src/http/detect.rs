//! Protocol detection on the first bytes a local app sends (DESIGN §6): HTTP/2 with prior
//! knowledge (h2c), HTTP/1.x, or anything else, which is proxied as opaque TCP.
//!
//! ```text
//!  peeked bytes ─► detect ─┬─► NeedMore   (read more, unless the detect timeout has passed)
//!                          ├─► H2c        (the 24-byte connection preface)
//!                          ├─► Http1      (`TOKEN SP` with a known or token-shaped method)
//!                          └─► Opaque
//! ```
//!
//! It reads nothing and keeps no state: the shell peeks, calls, and on `NeedMore` past its
//! timeout (a server-first protocol sends nothing) treats the connection as opaque.

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token looked at; longer ones are treated as opaque bytes.
const MAX_METHOD: usize = 20;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    NeedMore,
    H2c,
    Http1,
    Opaque,
}

/// Classify the bytes seen so far.
pub fn detect(prefix: &[u8]) -> Detected {
    let n = prefix.len().min(H2_PREFACE.len());
    if prefix[..n] == H2_PREFACE[..n] {
        // `PRI ` is also a method token shape; only the full preface decides h2c.
        return if n == H2_PREFACE.len() {
            Detected::H2c
        } else {
            Detected::NeedMore
        };
    }
    for (i, &b) in prefix.iter().enumerate().take(MAX_METHOD + 1) {
        if b == b' ' {
            return if i > 0 {
                Detected::Http1
            } else {
                Detected::Opaque
            };
        }
        if !(b.is_ascii_uppercase() || b == b'-' || b == b'_') {
            return Detected::Opaque;
        }
    }
    if prefix.len() > MAX_METHOD {
        Detected::Opaque
    } else {
        Detected::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_table() {
        for (input, want) in [
            (&b""[..], Detected::NeedMore),
            (b"G", Detected::NeedMore),
            (b"GET", Detected::NeedMore),
            (b"GET /x HTTP/1.1\r\n", Detected::Http1),
            (b"M-SEARCH * HTTP/1.1", Detected::Http1),
            (b"PRI * HTTP/2.0\r\n", Detected::NeedMore),
            (H2_PREFACE, Detected::H2c),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", Detected::H2c),
            (b"PRI * HTTP/1.1\r\n", Detected::Http1),
            (b"\x16\x03\x01\x02\x00", Detected::Opaque),
            (b"get / HTTP/1.1", Detected::Opaque),
            (b" GET", Detected::Opaque),
            (b"*2\r\n$4\r\nPING\r\n", Detected::Opaque),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Detected::Opaque),
        ] {
            assert_eq!(detect(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }
}
