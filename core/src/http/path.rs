//! The one definition of a canonical request path (DESIGN §8): [`canonicalize_path`] turns a
//! raw origin-form request target into the [`CanonicalPath`] that routing and authorization both
//! match on. Config validation calls the same function to decide whether a policy path is
//! canonical, so a rule can only name paths a request can canonicalise to.
//!
//! This module does not look at the query, headers or method, and it never clamps or repairs an
//! ambiguous path: anything two servers could read differently is a [`Refusal`].
//!
//! ```text
//!  raw target ─► length ─► whole-target bytes ─► strip "?query" ─► per-byte decode ─► "/" first
//!               (max_len)  ('#', NUL, controls,    (path only)     (unreserved only;   │
//!                           raw non-ASCII)                          refuse %2F %5C %00  ▼
//!                                                                   %25 ; \ ...)   merge "//",
//!                                                                                  resolve . ..
//!                                                                                  ─► fold case?
//! ```

use std::fmt;

use super::Refusal;

/// Limit on the path part of a request target when no other is configured.
pub const DEFAULT_MAX_PATH_LEN: usize = 4096;

/// How request paths are canonicalised. One value serves routing and authorization alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Fold ASCII letters to lower case (outside percent-encodings), for backends that match
    /// paths case-insensitively. Policy paths are folded the same way when matched.
    pub case_insensitive: bool,
    /// Longest path part (before `?`) accepted, in bytes.
    pub max_len: usize,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self {
            case_insensitive: false,
            max_len: DEFAULT_MAX_PATH_LEN,
        }
    }
}

/// A request path in canonical form. Only [`canonicalize_path`] constructs one, so holding one
/// proves the path passed every rule in this module.
///
/// Canonical form: starts with `/`; no empty, `.` or `..` segments (a trailing `/` is kept);
/// unreserved characters appear decoded; every other percent-encoding is in upper-case hex; no
/// `;`, `\`, `%2F`, `%5C`, `%25`, control characters or raw non-ASCII bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CanonicalPath {
    value: String,
    case_folded: bool,
}

impl CanonicalPath {
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Whether letters were folded to lower case ([`PathOptions::case_insensitive`]). Matchers
    /// compare against policy paths folded the same way.
    pub fn is_case_folded(&self) -> bool {
        self.case_folded
    }
}

impl fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// Canonicalise the path of an origin-form request target (`/path?query`). The query is
/// dropped; see the module docs and [`Refusal`] for every rule.
pub fn canonicalize_path(raw_target: &str, opts: PathOptions) -> Result<CanonicalPath, Refusal> {
    let path = raw_target
        .split_once('?')
        .map_or(raw_target, |(path, _query)| path);
    if path.len() > opts.max_len {
        return Err(Refusal::TooLong {
            len: path.len(),
            max: opts.max_len,
        });
    }
    check_target_bytes(raw_target)?;
    let decoded = decode(path.as_bytes())?;
    if !decoded.starts_with('/') {
        return Err(Refusal::NotAbsolute);
    }
    let resolved = resolve_segments(&decoded)?;
    let value = if opts.case_insensitive {
        fold_case(&resolved)
    } else {
        resolved
    };
    Ok(CanonicalPath {
        value,
        case_folded: opts.case_insensitive,
    })
}

/// Lower-case ASCII letters outside percent-encodings, whose hex digits stay upper case. Used
/// for request paths and, at compile time, for policy paths, so both fold identically.
pub(crate) fn fold_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut hex_left = 0;
    for c in path.chars() {
        if hex_left > 0 {
            hex_left -= 1;
            out.push(c);
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Bytes refused anywhere in the target, the query included: request targets are visible ASCII
/// (RFC 9112 §3.2), and a fragment is never sent by a conforming client.
fn check_target_bytes(target: &str) -> Result<(), Refusal> {
    for &b in target.as_bytes() {
        match b {
            b'#' => return Err(Refusal::Fragment),
            0 => return Err(Refusal::NulByte),
            b if b < 0x20 || b == 0x7f => return Err(Refusal::ControlChar { byte: b }),
            b if b >= 0x80 => return Err(Refusal::NonAscii { byte: b }),
            _ => {}
        }
    }
    Ok(())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters allowed unencoded in a path (RFC 3986 `pchar` and `/`), minus `;`, which is
/// refused separately.
fn is_raw_path_char(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,=:@/".contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The byte a `%XX` at `at` encodes, or why it is not a valid percent-encoding.
fn percent_byte(bytes: &[u8], at: usize) -> Result<u8, Refusal> {
    let digit = |i: usize| bytes.get(i).copied().and_then(hex_value);
    match (digit(at + 1), digit(at + 2)) {
        (Some(hi), Some(lo)) => Ok((hi << 4) | lo),
        _ => Err(Refusal::InvalidPercentEncoding { at }),
    }
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// Decode unreserved characters, refuse dangerous bytes, and re-encode everything else in
/// upper-case hex. No `/` is ever produced by decoding, so segments stay where they were.
fn decode(bytes: &[u8]) -> Result<String, Refusal> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            check_raw_byte(b)?;
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let v = percent_byte(bytes, i)?;
        if v >= 0x80 {
            i = decode_utf8_run(bytes, i, &mut out)?;
            continue;
        }
        check_encoded_byte(v)?;
        if is_unreserved(v) {
            out.push(char::from(v));
        } else {
            push_encoded(&mut out, v);
        }
        i += 3;
    }
    Ok(out)
}

fn check_raw_byte(b: u8) -> Result<(), Refusal> {
    match b {
        b'\\' => Err(Refusal::Backslash),
        b';' => Err(Refusal::PathParameter),
        b if is_raw_path_char(b) => Ok(()),
        b => Err(Refusal::InvalidChar { ch: char::from(b) }),
    }
}

fn check_encoded_byte(v: u8) -> Result<(), Refusal> {
    match v {
        0 => Err(Refusal::NulByte),
        b'/' => Err(Refusal::EncodedSlash),
        b'\\' => Err(Refusal::EncodedBackslash),
        b'%' => Err(Refusal::EncodedPercent),
        b';' => Err(Refusal::PathParameter),
        v if v < 0x20 || v == 0x7f => Err(Refusal::ControlChar { byte: v }),
        _ => Ok(()),
    }
}

/// A run of percent-encoded bytes at or above 0x80 must be valid UTF-8 (no overlong `%C0%AE`
/// for `.`); it stays encoded. Returns the index after the run.
fn decode_utf8_run(bytes: &[u8], start: usize, out: &mut String) -> Result<usize, Refusal> {
    let mut run = Vec::new();
    let mut i = start;
    while bytes.get(i) == Some(&b'%') {
        let v = percent_byte(bytes, i)?;
        if v < 0x80 {
            break;
        }
        run.push(v);
        i += 3;
    }
    if std::str::from_utf8(&run).is_err() {
        return Err(Refusal::InvalidUtf8);
    }
    for v in run {
        push_encoded(out, v);
    }
    Ok(i)
}

/// Merge empty segments and resolve `.` and `..` (RFC 3986 §5.2.4), refusing `..` above the
/// root. A path that ends in `/`, `/.` or `/..` keeps a trailing `/`, as §5.2.4 does.
fn resolve_segments(decoded: &str) -> Result<String, Refusal> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        if segment.starts_with("%20") || segment.ends_with("%20") {
            return Err(Refusal::SegmentEdgeWhitespace);
        }
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(Refusal::DotSegmentEscapesRoot);
                }
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact() -> PathOptions {
        PathOptions::default()
    }

    fn check(input: &str, expected: Result<&str, Refusal>) {
        let got = canonicalize_path(input, exact());
        let got = got
            .as_ref()
            .map(CanonicalPath::as_str)
            .map_err(Clone::clone);
        assert_eq!(got, expected, "canonicalize_path({input:?})");
    }

    #[test]
    fn canonical_forms() {
        for (input, expected) in [
            ("/", "/"),
            ("/api/v1", "/api/v1"),
            ("/api/v1/", "/api/v1/"),
            ("//admin", "/admin"),
            ("/a///b//", "/a/b/"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/admin/..", "/"),
            ("/x/%2e%2e", "/"),
            ("/x/%2E%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%7e%7E/%2D%5f", "/~~/-_"),
            ("/a%3ab", "/a%3Ab"),
            ("/a%20b", "/a%20b"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
            ("/admin?", "/admin"),
            ("/admin?x=../..&y=%2F", "/admin"),
            ("/a?b?c", "/a"),
            ("/...", "/..."),
            ("/a..b/.c", "/a..b/.c"),
        ] {
            check(input, Ok(expected));
        }
    }

    #[test]
    fn refusals() {
        use Refusal::*;
        for (input, expected) in [
            ("", NotAbsolute),
            ("admin", NotAbsolute),
            ("*", NotAbsolute),
            ("http://h/admin", NotAbsolute),
            ("%2Fadmin", EncodedSlash),
            ("/%2fadmin", EncodedSlash),
            ("/x/..%2fadmin", EncodedSlash),
            ("/a%5cb", EncodedBackslash),
            ("\\admin", Backslash),
            ("/a\\b", Backslash),
            ("/admin%00", NulByte),
            ("/admin\0", NulByte),
            ("/a%0ab", ControlChar { byte: 0x0a }),
            ("/a\tb", ControlChar { byte: 0x09 }),
            ("/a%7Fb", ControlChar { byte: 0x7f }),
            ("/caf\u{e9}", NonAscii { byte: 0xc3 }),
            ("/a b", InvalidChar { ch: ' ' }),
            ("/a|b", InvalidChar { ch: '|' }),
            ("/%", InvalidPercentEncoding { at: 1 }),
            ("/%2", InvalidPercentEncoding { at: 1 }),
            ("/a%G1", InvalidPercentEncoding { at: 2 }),
            ("/%u0061dmin", InvalidPercentEncoding { at: 1 }),
            ("/%C0%AE%C0%AE/admin", InvalidUtf8),
            ("/%C3", InvalidUtf8),
            ("/%2561dmin", EncodedPercent),
            ("/admin;x", PathParameter),
            ("/admin%3bx", PathParameter),
            ("/..;/admin", PathParameter),
            ("/admin%20", SegmentEdgeWhitespace),
            ("/%20admin", SegmentEdgeWhitespace),
            ("/..", DotSegmentEscapesRoot),
            ("/a/../..", DotSegmentEscapesRoot),
            ("/%2e%2e/admin", DotSegmentEscapesRoot),
            ("/admin#", Fragment),
            ("/admin?x#y", Fragment),
            ("/ok?\x01", ControlChar { byte: 1 }),
        ] {
            check(input, Err(expected));
        }
    }

    #[test]
    fn length_is_bounded_before_any_work() {
        let opts = PathOptions {
            case_insensitive: false,
            max_len: 8,
        };
        assert!(canonicalize_path("/abcdefg", opts).is_ok());
        assert!(canonicalize_path("/abcdefg?long-query-is-not-counted", opts).is_ok());
        assert_eq!(
            canonicalize_path("/abcdefgh", opts),
            Err(Refusal::TooLong { len: 9, max: 8 })
        );
    }

    #[test]
    fn case_folding_keeps_hex_upper() {
        let opts = PathOptions {
            case_insensitive: true,
            ..exact()
        };
        let path = canonicalize_path("/ADMIN/%41b%3a/Caf%c3%a9", opts).unwrap();
        assert_eq!(path.as_str(), "/admin/ab%3A/caf%C3%A9");
        assert!(path.is_case_folded());
        assert!(!canonicalize_path("/A", exact()).unwrap().is_case_folded());
    }

    /// Every path over a small hostile alphabet: canonicalising is idempotent, and the result
    /// never holds a dot segment, an empty segment or a refused byte.
    #[test]
    fn canonicalisation_is_idempotent() {
        const ALPHABET: &[&str] = &["/", ".", "a", "A", "%2e", "%2F", "%41", "%3a", "?", ";"];
        let mut inputs = vec![String::new()];
        let mut level = inputs.clone();
        for _ in 0..5 {
            level = level
                .iter()
                .flat_map(|s| ALPHABET.iter().map(move |c| format!("{s}{c}")))
                .collect();
            inputs.extend(level.iter().cloned());
        }
        let mut accepted = 0;
        for input in inputs.iter().map(|s| format!("/{s}")) {
            for case_insensitive in [false, true] {
                let opts = PathOptions {
                    case_insensitive,
                    ..exact()
                };
                let Ok(once) = canonicalize_path(&input, opts) else {
                    continue;
                };
                accepted += 1;
                let twice = canonicalize_path(once.as_str(), opts);
                assert_eq!(twice.as_ref(), Ok(&once), "not idempotent for {input:?}");
                let inner = once.as_str().strip_suffix('/').unwrap_or(once.as_str());
                assert!(
                    !inner
                        .split('/')
                        .skip(1)
                        .any(|s| matches!(s, "" | "." | ".."))
                        || once.as_str() == "/",
                    "{input:?} -> {once}"
                );
            }
        }
        assert!(accepted > 10_000, "only {accepted} inputs were accepted");
    }
}
