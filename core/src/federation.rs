//! Federation decisions (DESIGN §7), without I/O: the text form of a federation token, the
//! checks a redeemer makes before it dials the issuer, and the issuer's redeem rule that the
//! state machine applies at the token's log position.
//!
//! ```text
//!  FederationToken ─► encode_token ─► "meshfed1." + base64url(JSON)
//!  text ─► decode_token ─► check_before_join(token, this cluster, now) ─► dial issuer pinned
//!  issuer log: redeem(pending?, redeemer, now) ─► Ok (spend token, record peering) | Refusal
//! ```
//!
//! Every refusal says what happened and what to do, naming the clusters involved. This module
//! does not store tokens, dial peers or read a clock: `now` is a parameter.

use mesh_proto::ClusterName;
use mesh_proto::command::RedeemRefusal;
use mesh_proto::federation::{FederationToken, PendingToken};

use crate::identity;
pub use crate::token_text::MAX_TOKEN_BYTES;

/// Every federation token starts with this.
pub const TOKEN_PREFIX: &str = "meshfed1.";
/// The token format this build reads and writes.
pub const TOKEN_VERSION: u32 = 1;

/// Why a token cannot be used, found by the redeemer before contacting the issuer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "not a meshfed federation token ({0}); copy the whole `meshfed1.…` line that \
         `meshctl federate token` printed"
    )]
    Malformed(String),
    #[error("federation token format {0} is not supported by this meshd; upgrade it")]
    Version(u32),
    #[error(
        "federation token from cluster {issuer} expired at {at}; run `meshctl federate token \
         --peer {peer}` on cluster {issuer} again"
    )]
    Expired {
        issuer: ClusterName,
        peer: ClusterName,
        at: String,
    },
    #[error(
        "this federation token was issued by cluster {issuer} for peer {issued_for}, but this \
         cluster is {this}; ask cluster {issuer} for a token with `--peer {this}`"
    )]
    WrongPeer {
        issuer: ClusterName,
        issued_for: ClusterName,
        this: ClusterName,
    },
    #[error("cluster {0} cannot federate with itself")]
    SelfPeer(ClusterName),
    #[error(
        "the federation token's CA certificate does not match its fingerprint: the token was \
         altered or damaged; ask cluster {0} for a new one"
    )]
    Tampered(ClusterName),
}

/// The text form of `token`.
pub fn encode_token(token: &FederationToken) -> String {
    crate::token_text::encode(TOKEN_PREFIX, token)
}

/// Parse token text, bounded. Whitespace around it is ignored.
pub fn decode_token(text: &str) -> Result<FederationToken, TokenError> {
    let token: FederationToken =
        crate::token_text::decode(TOKEN_PREFIX, text).map_err(TokenError::Malformed)?;
    if token.v != TOKEN_VERSION {
        return Err(TokenError::Version(token.v));
    }
    Ok(token)
}

/// What the redeeming cluster `this` checks before it dials the issuer: the token is for it,
/// not from itself, not expired at `now_unix_ms`, and its CA matches its fingerprint (so the
/// pin it dials with is the CA it will store).
pub fn check_before_join(
    token: &FederationToken,
    this: &ClusterName,
    now_unix_ms: u64,
) -> Result<(), TokenError> {
    if token.cluster == *this {
        return Err(TokenError::SelfPeer(this.clone()));
    }
    if token.peer != *this {
        return Err(TokenError::WrongPeer {
            issuer: token.cluster.clone(),
            issued_for: token.peer.clone(),
            this: this.clone(),
        });
    }
    if now_unix_ms >= token.expires_unix_ms {
        return Err(TokenError::Expired {
            issuer: token.cluster.clone(),
            peer: token.peer.clone(),
            at: rfc3339(token.expires_unix_ms),
        });
    }
    match identity::fingerprint_of_pem(&token.ca_pem) {
        Ok(fp) if fp == token.ca_fingerprint => Ok(()),
        _ => Err(TokenError::Tampered(token.cluster.clone())),
    }
}

/// The issuer's rule for redeeming the token whose record is `pending` (absent if no such
/// secret was ever issued) by cluster `redeemer` at `now_unix_ms`.
pub fn redeem(
    pending: Option<&PendingToken>,
    redeemer: &ClusterName,
    now_unix_ms: u64,
) -> Result<(), RedeemRefusal> {
    let Some(p) = pending else {
        return Err(RedeemRefusal::Unknown);
    };
    if let Some(at) = p.used_unix_ms {
        return Err(RedeemRefusal::Used { at_unix_ms: at });
    }
    if now_unix_ms >= p.expires_unix_ms {
        return Err(RedeemRefusal::Expired {
            at_unix_ms: p.expires_unix_ms,
        });
    }
    if p.peer != *redeemer {
        return Err(RedeemRefusal::WrongPeer {
            issued_for: p.peer.clone(),
            redeemer: redeemer.clone(),
        });
    }
    Ok(())
}

/// A refusal as the operator of the redeeming cluster reads it.
pub fn refusal_message(r: &RedeemRefusal, issuer: &str) -> String {
    match r {
        RedeemRefusal::Unknown => format!(
            "cluster {issuer} never issued this token (forged, or from another cluster); ask \
             cluster {issuer} to run `meshctl federate token`"
        ),
        RedeemRefusal::Used { at_unix_ms } => format!(
            "this federation token was already used at {}; tokens are single-use: ask cluster \
             {issuer} for a new one",
            rfc3339(*at_unix_ms)
        ),
        RedeemRefusal::Expired { at_unix_ms } => format!(
            "federation token expired at {}; run `meshctl federate token` on cluster {issuer} \
             again",
            rfc3339(*at_unix_ms)
        ),
        RedeemRefusal::WrongPeer {
            issued_for,
            redeemer,
        } => format!(
            "cluster {issuer} issued this token for peer {issued_for}, not {redeemer}; ask for a \
             token with `--peer {redeemer}`"
        ),
    }
}

/// `2026-12-02T05:37:57Z` from Unix milliseconds (UTC, civil calendar).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
