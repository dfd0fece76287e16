//! A bounded recorder of client operations for the linearizability checker, shared by several
//! client threads.
//!
//! Timestamps come from one monotonic `Instant` base taken at [`History::new`], so every client
//! thread's times are comparable. `invoke` reads the clock before the client acts and `complete`
//! after it learns the outcome, so each recorded interval contains the real one. It records
//! nothing about the system under test itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::linearizability::{Op, OpKind, Outcome};

/// Default cap on recorded operations.
pub const DEFAULT_HISTORY_LIMIT: usize = 1_000_000;

/// Identifies one recorded operation; pass it back to [`History::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// The recorder. Clones share one history.
///
/// Operations start as `Unknown` with no completion, so an operation whose client thread dies
/// or times out without calling `complete` is checked as "may or may not have happened".
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Instant,
    limit: usize,
    ops: Mutex<Vec<Op>>,
    /// Invocations refused because the history was full.
    dropped: AtomicU64,
}

/// Returned for invocations past the limit; `complete` ignores it.
const DROPPED: OpId = OpId(u64::MAX);

impl History {
    pub fn new() -> Self {
        History::with_limit(DEFAULT_HISTORY_LIMIT)
    }

    /// A history that records at most `limit` operations.
    pub fn with_limit(limit: usize) -> Self {
        let inner = Inner {
            base: Instant::now(),
            limit,
            ops: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        };
        History {
            inner: Arc::new(inner),
        }
    }

    /// Records that `client` is about to perform `kind` on `key`.
    pub fn invoke(&self, client: u32, key: &str, kind: OpKind) -> OpId {
        let invoke = self.inner.base.elapsed();
        let mut ops = self.lock();
        if ops.len() >= self.inner.limit {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            return DROPPED;
        }
        let id = ops.len() as u64;
        let key = key.to_owned();
        ops.push(Op {
            id,
            client,
            key,
            kind,
            invoke,
            complete: None,
            outcome: Outcome::Unknown,
        });
        OpId(id)
    }

    /// Records the outcome of `id`. `Unknown` leaves the completion open (+∞ for the checker).
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let now = self.inner.base.elapsed();
        let mut ops = self.lock();
        let Some(op) = usize::try_from(id.0).ok().and_then(|i| ops.get_mut(i)) else {
            return;
        };
        op.outcome = outcome;
        op.complete = match outcome {
            Outcome::Unknown => None,
            Outcome::Ok(_) | Outcome::Fail => Some(now),
        };
    }

    /// A copy of every recorded operation, in invocation order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().clone()
    }

    /// How many invocations were not recorded because the history was full. A truncated history
    /// can make the checker report false anomalies (a read of an unrecorded write), so tests
    /// should assert this is zero.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The history as pretty JSON, for saving next to a failing test's logs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&*self.lock())
            .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Op>> {
        // A client thread that panicked mid-push cannot leave the Vec inconsistent: each critical
        // section is a single push or field update, so a poisoned lock is still usable.
        self.inner
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::linearizability::{Verdict, check};

    #[test]
    fn clients_on_threads_record_a_checkable_history() {
        let history = History::new();
        let register = Arc::new(Mutex::new(None::<u64>));
        let workers: Vec<_> = (0..4u32)
            .map(|client| {
                let (history, register) = (history.clone(), Arc::clone(&register));
                thread::spawn(move || {
                    for i in 0..50u64 {
                        let kind = if i % 3 == 0 {
                            OpKind::Write(u64::from(client) * 1000 + i)
                        } else {
                            OpKind::Read
                        };
                        let id = history.invoke(client, "k", kind);
                        let mut reg = register.lock().unwrap();
                        let ret = match kind {
                            OpKind::Write(v) => {
                                *reg = Some(v);
                                None
                            }
                            OpKind::Delete => {
                                *reg = None;
                                None
                            }
                            OpKind::Read => *reg,
                        };
                        drop(reg);
                        history.complete(id, Outcome::Ok(ret));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let ops = history.ops();
        assert_eq!(ops.len(), 200);
        assert!(
            ops.iter()
                .all(|op| op.complete.is_some_and(|c| c >= op.invoke))
        );
        assert_eq!(check(&ops, Duration::from_secs(5)), Verdict::Linearizable);
    }

    #[test]
    fn unknown_completion_stays_open_and_the_limit_is_counted() {
        let history = History::with_limit(2);
        let a = history.invoke(1, "k", OpKind::Write(1));
        let b = history.invoke(1, "k", OpKind::Read);
        let c = history.invoke(1, "k", OpKind::Read);
        history.complete(a, Outcome::Unknown);
        history.complete(b, Outcome::Fail);
        history.complete(c, Outcome::Ok(Some(1)));
        let ops = history.ops();
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].complete, ops[0].outcome), (None, Outcome::Unknown));
        assert_eq!(ops[1].outcome, Outcome::Fail);
        assert!(ops[1].complete.is_some());
        assert_eq!(history.dropped(), 1);
        assert!(history.to_json().contains("\"Write\""));
    }
}
