//! The text form shared by meshfed's printed tokens (federation, enrollment): a versioned
//! prefix, then base64url (no padding) of JSON. Decoding is bounded and says what is wrong.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest token text accepted (a CA certificate and a few addresses fit easily).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `prefix` + base64url(JSON of `value`).
pub fn encode<T: Serialize>(prefix: &str, value: &T) -> String {
    // Serialising a struct of strings, lists and integers cannot fail.
    let json = serde_json::to_vec(value).unwrap_or_default();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(json))
}

/// Parse text made by [`encode`], ignoring surrounding whitespace. The error says why.
pub fn decode<T: DeserializeOwned>(prefix: &str, text: &str) -> Result<T, String> {
    let text = text.trim();
    if text.len() > MAX_TOKEN_BYTES {
        return Err(format!("{} bytes, more than {MAX_TOKEN_BYTES}", text.len()));
    }
    let body = text
        .strip_prefix(prefix)
        .ok_or_else(|| format!("it does not start with {prefix}"))?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| format!("base64: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("JSON: {e}"))
}
