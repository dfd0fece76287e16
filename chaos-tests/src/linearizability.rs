//! A per-key linearizability checker for a register history: the model, the history types that
//! [`crate::harness::History`] records, and the readable verdict.
//!
//! The model is one register per key holding `Option<u64>` (`None` = absent), with `Write(v)`,
//! `Read` and `Delete`. Keys are checked independently (P-compositionality, as Porcupine and
//! Knossos split Jepsen histories per key), each with the Wing & Gong search plus Lowe's
//! memoisation, which lives in `linearizability/wgl.rs` (its memo in `linearizability/cache.rs`).
//!
//! How outcomes enter the search:
//!
//! ```text
//!   Ok(_)    call ----------- return        must take effect inside its interval
//!   Fail     (dropped)                      definitely did not happen
//!   Unknown  call -------------------> ∞    may take effect any time after its call, or never;
//!                                           unknown reads are dropped (they constrain nothing)
//! ```
//!
//! An unknown write or delete that no read could have observed is dropped before the search: if a
//! linearization includes it, removing it leaves every read's value unchanged. The others are
//! only ever linearized right before a read they explain (see `wgl.rs`), so "maybe" operations
//! do not multiply the search's states.
//!
//! It does not check transactions or multi-key invariants (use an Elle-style checker for those),
//! and it trusts the recorded timestamps to come from one monotonic clock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod cache;
mod wgl;

/// What a client asked the register to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    Write(u64),
    Read,
    Delete,
}

/// How the operation ended, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged. Carries the value a read returned; writes and deletes carry `None` (any
    /// value they carry is ignored).
    Ok(Option<u64>),
    /// Definitely did not happen, e.g. a validation refusal or a write rejected before it was
    /// proposed.
    Fail,
    /// Timed out or the connection was lost: it may or may not have happened.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    pub key: String,
    pub kind: OpKind,
    /// Time the client invoked it, on the history's clock.
    pub invoke: Duration,
    /// Time the client saw the outcome; `None` when the outcome is unknown.
    pub complete: Option<Duration>,
    pub outcome: Outcome,
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        key: String,
        /// The longest linearizable prefix found, the operation that could not follow it, and
        /// why, in readable lines.
        explanation: String,
    },
    /// The time budget or the state bound ran out while checking `key`.
    Timeout {
        key: String,
    },
}

/// Bounds on one [`check_with_limits`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget for the whole history (all keys).
    pub budget: Duration,
    /// Most memoised states per key. The checker also caps the cache's memory on its own.
    pub max_states: usize,
}

/// Default [`Limits::max_states`].
pub const DEFAULT_MAX_STATES: usize = 2_000_000;

/// Cache memory cap, in 64-bit words of linearized-set bitsets, so that long histories (whose
/// bitsets are wide) get proportionally fewer states: 16 Mi words is 128 MiB.
const MAX_CACHE_WORDS: usize = 16 << 20;

/// How many ops of the longest prefix an explanation shows.
const EXPLAIN_PREFIX_OPS: usize = 12;

/// How many candidate ops an explanation lists.
const EXPLAIN_CANDIDATES: usize = 16;

/// An operation as the search sees it: `ret` is `None` for an unknown outcome (return at +∞).
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    op: &'a Op,
    call: Duration,
    ret: Option<Duration>,
    /// For reads, the value returned; unused otherwise.
    read: Option<u64>,
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            budget: Duration::from_secs(10),
            max_states: DEFAULT_MAX_STATES,
        }
    }
}

impl Entry<'_> {
    /// The register model: the state after this op, or `None` if the op cannot happen in `state`.
    fn step(&self, state: Option<u64>) -> Option<Option<u64>> {
        match self.op.kind {
            OpKind::Write(v) => Some(Some(v)),
            OpKind::Delete => Some(None),
            OpKind::Read => (state == self.read).then_some(state),
        }
    }

    /// What a write or delete leaves in the register; `None` for reads.
    fn effect(&self) -> Option<Option<u64>> {
        match self.op.kind {
            OpKind::Write(v) => Some(Some(v)),
            OpKind::Delete => Some(None),
            OpKind::Read => None,
        }
    }

    fn is_required(&self) -> bool {
        self.ret.is_some()
    }
}

/// Checks `ops` within `budget`, with the default state bound.
pub fn check(ops: &[Op], budget: Duration) -> Verdict {
    check_with_limits(
        ops,
        Limits {
            budget,
            ..Limits::default()
        },
    )
}

/// Checks `ops` key by key, smallest key first. Returns the first key that is not
/// linearizable; failing that, the first key that ran out of budget or states.
pub fn check_with_limits(ops: &[Op], limits: Limits) -> Verdict {
    let deadline = Instant::now() + limits.budget;
    let mut per_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        per_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut keys: Vec<(&str, Vec<&Op>)> = per_key.into_iter().collect();
    keys.sort_by_key(|(key, ops)| (ops.len(), *key));
    let mut timed_out = None;
    for (key, key_ops) in keys {
        let entries = prepare(&key_ops);
        let words = entries.len().div_ceil(64).max(1);
        // Each state costs its bitset plus about six words of state, chain and table slot.
        let max_states = limits.max_states.min(MAX_CACHE_WORDS / (words + 6)).max(1);
        match wgl::search(&entries, deadline, max_states) {
            wgl::Outcome::Linearizable => {}
            // Keep going: a later key may still prove a violation, which matters more.
            wgl::Outcome::Exhausted => {
                timed_out.get_or_insert_with(|| key.to_owned());
            }
            wgl::Outcome::Stuck(stuck) => {
                let explanation = explain(key, &entries, &stuck);
                return Verdict::NotLinearizable {
                    key: key.to_owned(),
                    explanation,
                };
            }
        }
    }
    match timed_out {
        Some(key) => Verdict::Timeout { key },
        None => Verdict::Linearizable,
    }
}

/// Turns one key's ops into search entries: drops failures and unknown reads, opens the return of
/// unknown ops to +∞, and drops unknown mutations that no read could have observed.
fn prepare<'a>(ops: &[&'a Op]) -> Vec<Entry<'a>> {
    let mut entries = Vec::with_capacity(ops.len());
    for op in ops {
        let (ret, read) = match (op.outcome, op.complete) {
            (Outcome::Fail, _) => continue,
            (Outcome::Ok(read), Some(done)) => (Some(done.max(op.invoke)), read),
            (Outcome::Ok(_) | Outcome::Unknown, _) if op.kind == OpKind::Read => continue,
            (Outcome::Ok(_) | Outcome::Unknown, _) => (None, None),
        };
        entries.push(Entry {
            op,
            call: op.invoke,
            ret,
            read,
        });
    }
    let observable = |m: &Entry<'_>| {
        entries.iter().any(|r| {
            r.op.kind == OpKind::Read
                && m.effect() == Some(r.read)
                && r.ret.is_some_and(|ret| ret >= m.call)
        })
    };
    let keep: Vec<bool> = entries
        .iter()
        .map(|e| e.is_required() || observable(e))
        .collect();
    entries
        .into_iter()
        .zip(keep)
        .filter_map(|(e, keep)| keep.then_some(e))
        .collect()
}

/// Renders why the search got stuck, for a human reading a failed test.
fn explain(key: &str, entries: &[Entry<'_>], stuck: &wgl::Stuck) -> String {
    let required = entries.iter().filter(|e| e.is_required()).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "key {key:?}: no linearization exists. The longest linearizable prefix has {} ops \
         ({required} acknowledged ops in all).",
        stuck.prefix.len()
    );
    let shown = stuck.prefix.len().saturating_sub(EXPLAIN_PREFIX_OPS);
    if shown > 0 {
        let _ = writeln!(out, "  ... {shown} earlier ops");
    }
    for &i in &stuck.prefix[shown..] {
        let _ = writeln!(out, "  {}", describe(&entries[i]));
    }
    let _ = writeln!(
        out,
        "register after that prefix: {}",
        show_value(stuck.state)
    );
    let blocked = &entries[stuck.blocked];
    let _ = writeln!(
        out,
        "{} had to take effect before it returned, but no op that could go next fits:",
        describe(blocked)
    );
    for &i in stuck.candidates.iter().take(EXPLAIN_CANDIDATES) {
        let entry = &entries[i];
        let why = match (entry.effect(), entry.step(stuck.state)) {
            (Some(effect), _) if !entry.is_required() => {
                format!(
                    "outcome unknown; could only explain a read of {}",
                    show_value(effect)
                )
            }
            (_, None) => format!("refused: register holds {}", show_value(stuck.state)),
            (_, Some(_)) => "allowed, but every continuation after it fails".to_owned(),
        };
        let _ = writeln!(out, "  {} -- {why}", describe(entry));
    }
    if stuck.candidates.len() > EXPLAIN_CANDIDATES {
        let _ = writeln!(
            out,
            "  ... {} more",
            stuck.candidates.len() - EXPLAIN_CANDIDATES
        );
    }
    out
}

fn describe(entry: &Entry<'_>) -> String {
    let op = entry.op;
    let what = match (op.kind, entry.ret) {
        (OpKind::Write(v), Some(_)) => format!("write({v}) ok"),
        (OpKind::Write(v), None) => format!("write({v}) unknown"),
        (OpKind::Delete, Some(_)) => "delete ok".to_owned(),
        (OpKind::Delete, None) => "delete unknown".to_owned(),
        (OpKind::Read, _) => format!("read -> {}", show_value(entry.read)),
    };
    let ret = entry
        .ret
        .map_or_else(|| "inf".to_owned(), |r| format!("{r:?}"));
    format!(
        "#{} client {} {what} [{:?} .. {ret}]",
        op.id, op.client, entry.call
    )
}

fn show_value(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests;
