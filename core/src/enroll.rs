//! VM enrollment decisions (DESIGN §7, Consul auto-config), without I/O: the intro token's text
//! form and the rule the control plane applies, in its log, when a node redeems one.
//!
//! ```text
//!  EnrollToken ─► encode_token ─► "meshfed-enroll1." + base64url(JSON)
//!  agent: decode_token ─► dial token.api pinned to token.ca_fingerprint ─► redeem request
//!  control log: redeem(pending?, node, services, now) ─► Ok (spend, issue credential) | Refusal
//! ```

use mesh_proto::command::EnrollRefusal;
use mesh_proto::enroll::{EnrollToken, PendingEnrollment};
use mesh_proto::{NodeName, ServiceName};

use crate::federation::rfc3339;

/// Every intro token starts with this.
pub const TOKEN_PREFIX: &str = "meshfed-enroll1.";
pub const TOKEN_VERSION: u32 = 1;

/// True when `text` looks like an intro token (rather than an agent credential).
pub fn is_enroll_token(text: &str) -> bool {
    text.trim().starts_with(TOKEN_PREFIX)
}

pub fn encode_token(token: &EnrollToken) -> String {
    crate::token_text::encode(TOKEN_PREFIX, token)
}

/// Parse an intro token; the error names what is wrong and what to do.
pub fn decode_token(text: &str) -> Result<EnrollToken, String> {
    let t: EnrollToken = crate::token_text::decode(TOKEN_PREFIX, text).map_err(|e| {
        format!("not a meshfed intro token ({e}); use the line `meshctl enroll token` printed")
    })?;
    if t.v != TOKEN_VERSION {
        return Err(format!(
            "intro token format {} is not supported by this meshd; upgrade it",
            t.v
        ));
    }
    Ok(t)
}

/// The rule for node `node` redeeming the token whose record is `pending` (absent when no
/// such secret was issued) for `services`, at `now_unix_ms`.
pub fn redeem(
    pending: Option<&PendingEnrollment>,
    node: &NodeName,
    services: &[ServiceName],
    now_unix_ms: u64,
) -> Result<(), EnrollRefusal> {
    let Some(p) = pending else {
        return Err(EnrollRefusal::Unknown);
    };
    if let Some(at) = p.used_unix_ms {
        return Err(EnrollRefusal::Used { at_unix_ms: at });
    }
    if now_unix_ms >= p.expires_unix_ms {
        return Err(EnrollRefusal::Expired {
            at_unix_ms: p.expires_unix_ms,
        });
    }
    if p.node != *node {
        return Err(EnrollRefusal::WrongNode {
            issued_for: p.node.clone(),
            got: node.clone(),
        });
    }
    if let Some(s) = services.iter().find(|s| !p.services.contains(s)) {
        return Err(EnrollRefusal::NotGranted {
            service: s.clone(),
            granted: p.services.clone(),
        });
    }
    Ok(())
}

/// A refusal as the person enrolling the node reads it.
pub fn refusal_message(r: &EnrollRefusal) -> String {
    match r {
        EnrollRefusal::Unknown => "this intro token was never issued by this cluster (forged, or \
                                   from another cluster); run `meshctl enroll token` for this node"
            .to_owned(),
        EnrollRefusal::Used { at_unix_ms } => format!(
            "this intro token was already used at {}; intro tokens are single-use: run \
             `meshctl enroll token` again (a restarted agent reuses its stored credential)",
            rfc3339(*at_unix_ms)
        ),
        EnrollRefusal::Expired { at_unix_ms } => format!(
            "this intro token expired at {}; run `meshctl enroll token` again",
            rfc3339(*at_unix_ms)
        ),
        EnrollRefusal::WrongNode { issued_for, got } => format!(
            "this intro token was issued for node {issued_for}, but this agent is {got}; use \
             {got}'s own token or start the agent with --name {issued_for}"
        ),
        EnrollRefusal::NotGranted { service, granted } => {
            let granted: Vec<&str> = granted.iter().map(ServiceName::as_str).collect();
            format!(
                "the services file asks for {service}, which this intro token does not grant \
                 (it grants {}); re-issue it with --service including {service}",
                granted.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn svc(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    #[test]
    fn redeem_refuses_each_bad_case_distinctly() {
        let p = PendingEnrollment {
            node: n("vm-1"),
            services: vec![svc("billing")],
            created_unix_ms: 0,
            expires_unix_ms: 100,
            used_unix_ms: None,
        };
        let ok = [svc("billing")];
        assert_eq!(redeem(Some(&p), &n("vm-1"), &ok, 10), Ok(()));
        let cases = [
            (redeem(None, &n("vm-1"), &ok, 10), "never issued"),
            (redeem(Some(&p), &n("vm-1"), &ok, 100), "expired"),
            (
                redeem(Some(&p), &n("vm-2"), &ok, 10),
                "issued for node vm-1",
            ),
            (
                redeem(Some(&p), &n("vm-1"), &[svc("billing"), svc("admin")], 10),
                "asks for admin",
            ),
            (
                redeem(
                    Some(&PendingEnrollment {
                        used_unix_ms: Some(5),
                        ..p.clone()
                    }),
                    &n("vm-1"),
                    &ok,
                    10,
                ),
                "already used",
            ),
        ];
        for (r, needle) in cases {
            let msg = refusal_message(&r.expect_err(needle));
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn a_token_round_trips_and_is_told_from_a_credential() {
        let t = EnrollToken {
            v: TOKEN_VERSION,
            node: n("vm-1"),
            services: vec![svc("billing")],
            ca_fingerprint: "sha256:00".into(),
            api: vec!["127.0.0.1:7443".into()],
            secret: "s".into(),
            expires_unix_ms: 9,
        };
        let text = encode_token(&t);
        assert!(is_enroll_token(&text) && !is_enroll_token("mfagent_abc"));
        assert_eq!(decode_token(&text).unwrap(), t);
        assert!(
            decode_token("meshfed-enroll1.@@")
                .unwrap_err()
                .contains("base64")
        );
    }
}
