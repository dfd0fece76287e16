//! Request authorization (DESIGN §8): the `AuthorizationPolicy` specs that target one service,
//! compiled into an [`Authorizer`] that decides, default-deny, whether an authenticated peer may
//! make a canonicalised request.
//!
//! ```text
//!  policies ─► Authorizer::compile(service, policies)      (once per config change)
//!  peer SVID id + RequestFacts ─► decide ─► Verdict::Allow { policy, rule }
//!                                         │ Verdict::Deny { DenyRule | NoAllowRule | .. }
//!   order: unusable policy? ─► unusable header? ─► any DENY rule matches? ─► any ALLOW rule?
//! ```
//!
//! Every uncertainty resolves towards Deny: a policy this build cannot read denies everything
//! for its service (old data planes fail closed, cf. Istio CVE-2022-21679), a header a rule
//! names but the request repeated denies, and a DENY rule's header match also matches any one
//! element of a comma-separated value while an ALLOW rule's must equal the whole value
//! (Istio CVE-2026-26308 matched only the first value).
//!
//! This module does not authenticate peers (the TLS verifier hands in a verified `SpiffeId`),
//! canonicalise requests (`crate::http` does, once), or log decisions (the shell does).

use std::fmt;

use mesh_proto::resource::{AuthorizationPolicySpec, AuthzAction, AuthzOperation, AuthzRule};
use mesh_proto::{SpiffeId, TrustDomain};

use crate::http::{HeaderValue, Method, PathOptions, RequestFacts, canonicalize_path, fold_case};

/// The compiled policies of one service. Built by [`Authorizer::compile`], then asked
/// [`Authorizer::decide`] once per request; it holds no state between decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    deny: Vec<Rule>,
    allow: Vec<Rule>,
    header_names: Vec<String>,
    unusable: Option<(String, String)>,
}

/// The outcome of one decision, naming the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow { policy: String, rule: usize },
    Deny { reason: DenyReason },
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// Rule `rule` (0-based) of DENY policy `policy` matched.
    DenyRule { policy: String, rule: usize },
    /// No ALLOW rule matched: the default.
    NoAllowRule,
    /// A policy for this service could not be compiled, so nothing is allowed until it is fixed.
    UnusablePolicy { policy: String, problem: String },
    /// The request repeated a header a rule matches on, or sent it as non-text.
    UnusableHeader { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    policy: String,
    index: usize,
    from: Vec<Source>,
    to: Vec<Operation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    principals: Vec<String>,
    /// Bare trust domains, or `*` for any.
    trust_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Operation {
    methods: Vec<Method>,
    paths: Vec<PathPattern>,
    /// Lower-cased name and the exact value.
    headers: Vec<(String, String)>,
}

/// A policy path as written, and folded for case-insensitive requests.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathPattern {
    exact: Pattern,
    folded: Pattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `/prefix/*`: the path `prefix` itself (`is`) or anything that starts with `under`
    /// (`prefix/`). `/*` is `is: "/"`, `under: "/"`.
    Prefix {
        is: String,
        under: String,
    },
}

impl Authorizer {
    /// Compile the policies whose `targetRef` is Service `target_service`; the others are
    /// ignored. Policies are taken in name order, so verdicts do not depend on store order.
    pub fn compile(target_service: &str, policies: &[(String, AuthorizationPolicySpec)]) -> Self {
        let mut targeted: Vec<&(String, AuthorizationPolicySpec)> = policies
            .iter()
            .filter(|(_, s)| s.target_ref.kind == "Service" && s.target_ref.name == target_service)
            .collect();
        targeted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Self {
            deny: Vec::new(),
            allow: Vec::new(),
            header_names: Vec::new(),
            unusable: None,
        };
        for (name, spec) in targeted {
            for (index, rule) in spec.rules.iter().enumerate() {
                match compile_rule(name, index, rule) {
                    Ok(rule) if spec.action == AuthzAction::Deny => out.deny.push(rule),
                    Ok(rule) => out.allow.push(rule),
                    Err(problem) => {
                        let problem = format!("rule {index}: {problem}");
                        out.unusable.get_or_insert((name.clone(), problem));
                    }
                }
            }
        }
        let ops = out.deny.iter().chain(&out.allow).flat_map(|r| &r.to);
        let mut names: Vec<String> = ops.flat_map(|o| &o.headers).map(|h| h.0.clone()).collect();
        names.sort();
        names.dedup();
        out.header_names = names;
        out
    }

    /// The lower-cased header names the rules match on. Pass them to
    /// [`crate::http::request_facts`] so their duplicates are refused up front.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// DENY rules are evaluated first: any match → Deny. Then ALLOW rules: any match → Allow.
    /// Otherwise Deny (default deny).
    pub fn decide(&self, peer: &SpiffeId, req: &RequestFacts) -> Verdict {
        let deny = |reason| Verdict::Deny { reason };
        if let Some((policy, problem)) = &self.unusable {
            return deny(DenyReason::UnusablePolicy {
                policy: policy.clone(),
                problem: problem.clone(),
            });
        }
        for name in &self.header_names {
            if matches!(
                req.headers.get(name),
                HeaderValue::Repeated | HeaderValue::NotText
            ) {
                return deny(DenyReason::UnusableHeader { name: name.clone() });
            }
        }
        let peer_id = peer.to_string();
        if let Some(r) = self
            .deny
            .iter()
            .find(|r| r.matches(&peer_id, peer, req, true))
        {
            return deny(DenyReason::DenyRule {
                policy: r.policy.clone(),
                rule: r.index,
            });
        }
        match self
            .allow
            .iter()
            .find(|r| r.matches(&peer_id, peer, req, false))
        {
            Some(r) => Verdict::Allow {
                policy: r.policy.clone(),
                rule: r.index,
            },
            None => deny(DenyReason::NoAllowRule),
        }
    }
}

impl Authorizer {
    /// Decide an opaque TCP connection, which has no method, path or headers. As in Istio, a
    /// DENY rule matches on its `from` alone (its HTTP conditions cannot be checked, so the
    /// conservative reading applies), while an ALLOW rule with any `to` condition never matches.
    pub fn decide_connection(&self, peer: &SpiffeId) -> Verdict {
        if let Some((policy, problem)) = &self.unusable {
            return Verdict::Deny {
                reason: DenyReason::UnusablePolicy {
                    policy: policy.clone(),
                    problem: problem.clone(),
                },
            };
        }
        let peer_id = peer.to_string();
        let from = |r: &Rule| r.from.is_empty() || r.from.iter().any(|s| s.matches(&peer_id, peer));
        if let Some(r) = self.deny.iter().find(|r| from(r)) {
            return Verdict::Deny {
                reason: DenyReason::DenyRule {
                    policy: r.policy.clone(),
                    rule: r.index,
                },
            };
        }
        match self.allow.iter().find(|r| r.to.is_empty() && from(r)) {
            Some(r) => Verdict::Allow {
                policy: r.policy.clone(),
                rule: r.index,
            },
            None => Verdict::Deny {
                reason: DenyReason::NoAllowRule,
            },
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DenyRule { policy, rule } => {
                write!(f, "denied by rule {rule} of DENY policy {policy:?}")
            }
            Self::NoAllowRule => f.write_str("no ALLOW rule matches (the default is deny)"),
            Self::UnusablePolicy { policy, problem } => write!(
                f,
                "policy {policy:?} cannot be used ({problem}), so all requests are denied; \
                 fix it and re-apply it with `meshctl apply`"
            ),
            Self::UnusableHeader { name } => write!(
                f,
                "header {name:?}, which a policy matches on, was repeated or not text"
            ),
        }
    }
}

impl Rule {
    fn matches(&self, peer_id: &str, peer: &SpiffeId, req: &RequestFacts, deny: bool) -> bool {
        let from = self.from.is_empty() || self.from.iter().any(|s| s.matches(peer_id, peer));
        from && (self.to.is_empty() || self.to.iter().any(|o| o.matches(req, deny)))
    }
}

impl Source {
    fn matches(&self, peer_id: &str, peer: &SpiffeId) -> bool {
        let td = peer.trust_domain().as_str();
        self.principals.iter().any(|p| p == peer_id)
            || self.trust_domains.iter().any(|t| t == "*" || t == td)
    }
}

impl Operation {
    fn matches(&self, req: &RequestFacts, deny: bool) -> bool {
        let method = self.methods.is_empty() || self.methods.contains(&req.method);
        let path = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(&req.path));
        let headers = self
            .headers
            .iter()
            .all(|(name, want)| match req.headers.get(name) {
                HeaderValue::One(v) if deny => v == want || v.split(',').any(|e| e.trim() == want),
                HeaderValue::One(v) => v == want,
                _ => false,
            });
        method && path && headers
    }
}

impl PathPattern {
    fn matches(&self, path: &crate::http::CanonicalPath) -> bool {
        let pattern = if path.is_case_folded() {
            &self.folded
        } else {
            &self.exact
        };
        let path = path.as_str();
        match pattern {
            Pattern::Exact(p) => path == p,
            Pattern::Prefix { is, under } => path == is || path.starts_with(under.as_str()),
        }
    }
}

fn compile_rule(policy: &str, index: usize, rule: &AuthzRule) -> Result<Rule, String> {
    let mut from = Vec::with_capacity(rule.from.len());
    for source in &rule.from {
        for p in &source.principals {
            SpiffeId::parse(p).map_err(|e| format!("principal: {e}"))?;
        }
        for td in source.trust_domains.iter().filter(|td| *td != "*") {
            TrustDomain::new(td.as_str()).map_err(|e| format!("trust domain: {e}"))?;
        }
        from.push(Source {
            principals: source.principals.clone(),
            trust_domains: source.trust_domains.clone(),
        });
    }
    let to = rule
        .to
        .iter()
        .map(compile_operation)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        policy: policy.to_owned(),
        index,
        from,
        to,
    })
}

fn compile_operation(op: &AuthzOperation) -> Result<Operation, String> {
    let methods = op
        .methods
        .iter()
        .map(|m| Method::parse(m).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let paths = op
        .paths
        .iter()
        .map(|p| compile_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut headers = Vec::with_capacity(op.headers.len());
    for h in &op.headers {
        let name = h.name.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(format!("header name {:?} is not a token", h.name));
        }
        headers.push((name, h.value.clone()));
    }
    Ok(Operation {
        methods,
        paths,
        headers,
    })
}

/// An exact canonical path, or a canonical prefix followed by `/*`. A path that is not canonical
/// could never match a request, so it makes the policy unusable rather than silently inert.
fn compile_path(written: &str) -> Result<PathPattern, String> {
    let (base, prefix) = match written.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (written, false),
    };
    let check = if base.is_empty() { "/" } else { base };
    let opts = PathOptions {
        case_insensitive: false,
        max_len: usize::MAX,
    };
    if check.contains('*') {
        return Err(format!(
            "path {written:?} has a '*' that is not a trailing \"/*\""
        ));
    }
    match canonicalize_path(check, opts) {
        Ok(c) if c.as_str() == check => {}
        Ok(c) => {
            return Err(format!(
                "path {written:?} is not canonical (it reads as {c})"
            ));
        }
        Err(refusal) => return Err(format!("path {written:?}: {refusal}")),
    }
    let pattern = |base: &str| match prefix {
        false => Pattern::Exact(base.to_owned()),
        true => Pattern::Prefix {
            is: if base.is_empty() { "/" } else { base }.to_owned(),
            under: format!("{}/", base.trim_end_matches('/')),
        },
    };
    Ok(PathPattern {
        exact: pattern(base),
        folded: pattern(&fold_case(base)),
    })
}

#[cfg(test)]
mod tests;
