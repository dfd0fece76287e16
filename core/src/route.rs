//! The HTTP route table of one service: compiles the `HTTPRoute` specs attached to it (Gateway
//! API / GAMMA, DESIGN §8) and picks the rule and weighted backend for a request.
//!
//! ```text
//!  [HttpRouteSpec] ─► RouteTable::from_specs ─► matches sorted by precedence
//!  request (RouteRequest) + rng ─► RouteTable::pick ─► RouteDecision::{Backend, NoBackend, NoRoute}
//! ```
//!
//! It owns match semantics and precedence only. It does not canonicalise paths or refuse
//! duplicate headers (the request layer does that once, for routing and policy alike), does not
//! filter routes by `parentRefs` (the caller hands in the routes of one service), and knows
//! nothing of endpoints: a backend here is a service name, which the balancer resolves.

use std::time::Duration;

use mesh_proto::resource::{HttpRouteMatch, HttpRouteRule, HttpRouteSpec, PathMatchType};

use crate::config::parse_duration;
use crate::rng::Rng;

/// What routing needs to know about a request. The request layer implements it over its
/// canonical request facts; [`RouteInput`] is a plain implementation.
pub trait RouteRequest {
    /// The request method as sent, e.g. `GET`. Methods are case-sensitive (RFC 9110 §9.1).
    fn method(&self) -> &str;
    /// The canonical path: decoded, without query or fragment, dot segments resolved.
    fn path(&self) -> &str;
    /// The value of header `name`, compared case-insensitively; `None` when absent. `name` is
    /// passed in lower case. Requests with a duplicated header never reach routing.
    fn header(&self, name: &str) -> Option<&str>;
}

impl RouteRequest for crate::http::RequestFacts {
    fn method(&self) -> &str {
        self.method.as_str()
    }

    fn path(&self) -> &str {
        self.path.as_str()
    }

    fn header(&self, name: &str) -> Option<&str> {
        match self.headers.get(name) {
            crate::http::HeaderValue::One(v) => Some(v),
            _ => None,
        }
    }
}

/// A request as plain borrowed parts.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

impl RouteRequest for RouteInput<'_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Which rule of which route a decision came from: indexes into the specs given to
/// [`RouteTable::from_specs`] and into that spec's `rules`, so `meshctl` can explain a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    pub route: usize,
    pub rule: usize,
}

/// The outcome of routing one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// Send to `backend` (a service name), on `port` if the rule names one, within `timeout`.
    Backend {
        rule: RuleRef,
        backend: String,
        port: Option<u16>,
        timeout: Option<Duration>,
    },
    /// A rule matched but every backend has weight 0; Gateway API answers 500.
    NoBackend { rule: RuleRef },
    /// No rule matched; the caller answers 404.
    NoRoute,
}

/// The compiled routes of one service.
///
/// Call order: [`RouteTable::from_specs`] when the routes change, then [`RouteTable::pick`]
/// once per request. A table is immutable; a config change builds a new one.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Every match of every rule, highest precedence first.
    matches: Vec<CompiledMatch>,
    rules: Vec<CompiledRule>,
}

#[derive(Debug, Clone)]
struct CompiledMatch {
    path: PathRule,
    method: Option<String>,
    /// Lower-case names, exact values.
    headers: Vec<(String, String)>,
    /// Index into `RouteTable::rules`.
    rule: usize,
}

#[derive(Debug, Clone)]
enum PathRule {
    Exact(String),
    /// The prefix with any trailing `/` removed, so `/` is the empty prefix.
    Prefix(String),
}

#[derive(Debug, Clone)]
struct CompiledRule {
    at: RuleRef,
    backends: Vec<Backend>,
    total_weight: u64,
    timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Backend {
    name: String,
    port: Option<u16>,
    weight: u64,
}

/// Gateway API precedence of a match, compared in field order; larger wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    exact_path: bool,
    prefix_len: usize,
    has_method: bool,
    header_count: usize,
}

impl RouteTable {
    /// Compile the routes of one service. `specs` must come in a stable order (the store's key
    /// order); when two matches have equal precedence, the earlier route and rule win, standing
    /// in for Gateway API's creation-time tie-break, which the store does not keep.
    ///
    /// Input is assumed validated. Odd values do not panic: an unparsable or zero timeout means
    /// no timeout, and a rule whose weights are all 0 yields [`RouteDecision::NoBackend`].
    pub fn from_specs(specs: &[HttpRouteSpec]) -> Self {
        let mut rules = Vec::new();
        let mut ranked: Vec<(Precedence, usize, CompiledMatch)> = Vec::new();
        for (route, spec) in specs.iter().enumerate() {
            for (rule_index, rule) in spec.rules.iter().enumerate() {
                let id = rules.len();
                rules.push(compile_rule(
                    RuleRef {
                        route,
                        rule: rule_index,
                    },
                    rule,
                ));
                // Gateway API: a rule without matches matches every request, like `PathPrefix /`.
                let implicit = [HttpRouteMatch {
                    path: None,
                    headers: Vec::new(),
                    method: None,
                }];
                let matches = if rule.matches.is_empty() {
                    &implicit[..]
                } else {
                    &rule.matches[..]
                };
                for m in matches {
                    let compiled = compile_match(m, id);
                    ranked.push((compiled.precedence(), ranked.len(), compiled));
                }
            }
        }
        // Highest precedence first; equal precedence keeps spec order (the index breaks ties).
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        Self {
            matches: ranked.into_iter().map(|(_, _, m)| m).collect(),
            rules,
        }
    }

    /// Route one request: the rule of the highest-precedence match that holds, then a backend
    /// of that rule drawn by weight from `rng`. Weight-0 backends are never chosen.
    pub fn pick(&self, request: &impl RouteRequest, rng: &mut impl Rng) -> RouteDecision {
        let Some(rule) = self
            .matches
            .iter()
            .find(|m| m.holds(request))
            .and_then(|m| self.rules.get(m.rule))
        else {
            return RouteDecision::NoRoute;
        };
        match rule.draw(rng) {
            Some(b) => RouteDecision::Backend {
                rule: rule.at,
                backend: b.name.clone(),
                port: b.port,
                timeout: rule.timeout,
            },
            None => RouteDecision::NoBackend { rule: rule.at },
        }
    }

    /// True when no route is attached, so every request gets [`RouteDecision::NoRoute`].
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }
}

fn compile_rule(at: RuleRef, rule: &HttpRouteRule) -> CompiledRule {
    let backends: Vec<Backend> = rule
        .backend_refs
        .iter()
        .map(|b| Backend {
            name: b.name.clone(),
            port: b.port,
            weight: u64::from(b.weight),
        })
        .collect();
    let timeout = rule
        .timeouts
        .as_ref()
        .and_then(|t| t.request.as_deref())
        .and_then(|s| parse_duration(s).ok())
        .filter(|d| !d.is_zero());
    CompiledRule {
        at,
        total_weight: backends.iter().map(|b| b.weight).sum(),
        backends,
        timeout,
    }
}

fn compile_match(m: &HttpRouteMatch, rule: usize) -> CompiledMatch {
    let path = match &m.path {
        Some(p) if p.match_type == PathMatchType::Exact => PathRule::Exact(p.value.clone()),
        Some(p) => PathRule::Prefix(p.value.trim_end_matches('/').to_owned()),
        None => PathRule::Prefix(String::new()),
    };
    CompiledMatch {
        path,
        method: m.method.clone(),
        headers: m
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        rule,
    }
}

impl CompiledMatch {
    fn precedence(&self) -> Precedence {
        let (exact_path, prefix_len) = match &self.path {
            PathRule::Exact(_) => (true, 0),
            // `/` counts as one character, as Gateway API counts the prefix as written.
            PathRule::Prefix(p) => (false, p.len() + 1),
        };
        Precedence {
            exact_path,
            prefix_len,
            has_method: self.method.is_some(),
            header_count: self.headers.len(),
        }
    }

    fn holds(&self, request: &impl RouteRequest) -> bool {
        let path = request.path();
        let path_ok = match &self.path {
            PathRule::Exact(p) => path == p,
            PathRule::Prefix(p) => prefix_matches(p, path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| m == request.method())
            && self
                .headers
                .iter()
                .all(|(name, value)| request.header(name) == Some(value.as_str()))
    }
}

/// Prefix match on whole path segments: `/v1` matches `/v1`, `/v1/` and `/v1/x`, not `/v10`.
/// `prefix` has no trailing `/`; the empty prefix (written `/`) matches every path.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.is_empty() || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl CompiledRule {
    fn draw(&self, rng: &mut impl Rng) -> Option<&Backend> {
        if self.total_weight == 0 {
            return None;
        }
        let mut point = rng.below(self.total_weight);
        for b in &self.backends {
            if point < b.weight {
                return Some(b);
            }
            point -= b.weight;
        }
        None
    }
}

#[cfg(test)]
mod tests;
