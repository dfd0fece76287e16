//! The Wing & Gong linearizability search with Lowe's memoisation, for one key's entries.
//!
//! It owns only the search: the model (`Entry::step`), the preparation of entries and the
//! explanation live in the parent module.
//!
//! The history becomes a doubly linked list of call and return events in time order (calls
//! before returns at equal times, which errs towards "concurrent"). The search walks it:
//!
//! ```text
//!   call event   -> try the op in the model; if allowed and (linearized ∪ {op}, state) is new,
//!                   push it, lift its call and return out of the list, restart at the head
//!   return event -> that op should already be linearized: pop the last choice, put it back,
//!                   and try the next call after it
//!   stack empty at a return event -> not linearizable
//! ```
//!
//! Unknown ops have no return event, so they stay callable until the end and never force a
//! backtrack; they are linearized only as helpers of a read (see `Frame::helper`). The search
//! succeeds once every acknowledged op is linearized.

use std::time::Instant;

use super::Entry;
use super::cache::{Bits, Cache};

/// Result of one key's search.
#[derive(Debug)]
pub(super) enum Outcome {
    Linearizable,
    /// Deadline or state bound reached.
    Exhausted,
    Stuck(Stuck),
}

/// The deepest point the search reached before failing, as indices into the entries.
#[derive(Debug)]
pub(super) struct Stuck {
    /// Entries linearized, in order.
    pub(super) prefix: Vec<usize>,
    /// Register after `prefix`.
    pub(super) state: Option<u64>,
    /// The acknowledged entry whose return came next.
    pub(super) blocked: usize,
    /// Entries whose call came before that return and were not yet linearized.
    pub(super) candidates: Vec<usize>,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// How often (in search steps) the deadline is read.
const CLOCK_EVERY_STEPS: u64 = 1024;

/// The event list: node 0 is the head; every other node is a call or a return of one entry.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The entry index of each node (unused for the head).
    entry: Vec<usize>,
    /// For a call node, its return node (NIL for unknown ops); NIL for return nodes.
    ret_of: Vec<usize>,
    is_call: Vec<bool>,
}

/// The deepest point reached so far. `frames[..shared]` always equals the live stack's first
/// frames, so recording a new deepest point copies only the frames pushed since the last pop
/// below it, rather than the whole stack.
struct Deepest {
    frames: Vec<Frame>,
    shared: usize,
    depth: usize,
    state: Option<u64>,
    blocked: Option<usize>,
    candidates: Vec<usize>,
}

/// One step of the search: a required op, possibly preceded by an unknown mutation.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Call node of the required op.
    node: usize,
    /// Call node of an unknown write or delete linearized just before `node`, or NIL.
    ///
    /// Unknown ops are only ever linearized right before a read that returns what they wrote,
    /// and only when the register does not already hold that value. Any linearization can be
    /// put in that form: an unknown op that no read observes before the next mutation can be
    /// removed, and one that is observed already sits right before its first observer. Unknown
    /// ops with the same effect are interchangeable once both are callable (they never return),
    /// so only the earliest is tried. Without this, every unknown op would double the states.
    helper: usize,
    /// Register before this frame.
    before: Option<u64>,
}

impl Events {
    fn new(entries: &[Entry<'_>]) -> Self {
        // (time, is_return, entry): calls sort before returns at equal times.
        let mut events = Vec::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            events.push((e.call, false, i));
            if let Some(ret) = e.ret {
                events.push((ret, true, i));
            }
        }
        events.sort();
        let nodes = events.len() + 1;
        let mut list = Events {
            next: (1..=nodes)
                .map(|n| if n == nodes { NIL } else { n })
                .collect(),
            prev: (0..nodes)
                .map(|n| if n == 0 { NIL } else { n - 1 })
                .collect(),
            entry: vec![NIL; nodes],
            ret_of: vec![NIL; nodes],
            is_call: vec![false; nodes],
        };
        let mut call_node = vec![NIL; entries.len()];
        for (k, &(_, is_return, i)) in events.iter().enumerate() {
            let node = k + 1;
            list.entry[node] = i;
            list.is_call[node] = !is_return;
            if is_return {
                list.ret_of[call_node[i]] = node;
            } else {
                call_node[i] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Undoes `unlink(node)`; valid only in the reverse order of the unlinks (dancing links).
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if self.ret_of[call] != NIL {
            self.unlink(self.ret_of[call]);
        }
    }

    fn unlift(&mut self, call: usize) {
        if self.ret_of[call] != NIL {
            self.relink(self.ret_of[call]);
        }
        self.relink(call);
    }

    /// The earliest callable unknown mutation that leaves the register holding what `read`
    /// returned.
    fn helper_for(&self, entries: &[Entry<'_>], read: &Entry<'_>) -> Option<usize> {
        let mut node = self.next[HEAD];
        while node != NIL && self.is_call[node] {
            let entry = &entries[self.entry[node]];
            if !entry.is_required() && entry.effect() == Some(read.read) {
                return Some(node);
            }
            node = self.next[node];
        }
        None
    }

    /// The calls before the first return from the head, and that return's entry.
    fn frontier(&self) -> (Vec<usize>, Option<usize>) {
        let mut calls = Vec::new();
        let mut node = self.next[HEAD];
        while node != NIL {
            if !self.is_call[node] {
                return (calls, Some(self.entry[node]));
            }
            calls.push(self.entry[node]);
            node = self.next[node];
        }
        (calls, None)
    }
}

/// Searches for a linearization of `entries`, starting from an absent register.
pub(super) fn search(entries: &[Entry<'_>], deadline: Instant, max_states: usize) -> Outcome {
    let mut list = Events::new(entries);
    let mut linearized = Bits::new(entries.len());
    let mut cache = Cache::new(entries.len());
    let mut stack: Vec<Frame> = Vec::new();
    let mut state: Option<u64> = None;
    let mut remaining = entries.iter().filter(|e| e.is_required()).count();
    let mut deepest = Deepest::new(&list);
    let mut depth = 0;
    let mut node = list.next[HEAD];
    let mut steps: u64 = 0;

    while remaining > 0 {
        steps += 1;
        if steps.is_multiple_of(CLOCK_EVERY_STEPS) && Instant::now() >= deadline {
            return Outcome::Exhausted;
        }
        // A required entry's return is still in the list and every walk from the head stops at
        // the first return, so `node` is never NIL here; treat it as a return if it were.
        if node != NIL && list.is_call[node] {
            let entry = &entries[list.entry[node]];
            // Unknown ops never go alone; see `Frame::helper`.
            let attempt = if !entry.is_required() {
                None
            } else if let Some(next_state) = entry.step(state) {
                Some((NIL, next_state))
            } else {
                list.helper_for(entries, entry)
                    .map(|helper| (helper, entry.read))
            };
            if let Some((helper, next_state)) = attempt {
                let frame = Frame {
                    node,
                    helper,
                    before: state,
                };
                frame.nodes().for_each(|n| linearized.set(list.entry[n]));
                if cache.insert(&linearized, next_state) {
                    if cache.len() > max_states {
                        return Outcome::Exhausted;
                    }
                    for n in frame.nodes() {
                        list.lift(n);
                        depth += 1;
                    }
                    stack.push(frame);
                    state = next_state;
                    remaining -= 1;
                    if depth > deepest.depth {
                        deepest.record(&list, &stack, depth, state);
                    }
                    node = list.next[HEAD];
                    continue;
                }
                frame.nodes().for_each(|n| linearized.clear(list.entry[n]));
            }
            node = list.next[node];
        } else {
            let Some(frame) = stack.pop() else {
                return Outcome::Stuck(deepest.into_stuck(&list));
            };
            deepest.shared = deepest.shared.min(stack.len());
            for n in frame.nodes().rev() {
                list.unlift(n);
                linearized.clear(list.entry[n]);
                depth -= 1;
            }
            state = frame.before;
            remaining += 1;
            node = list.next[frame.node];
        }
    }
    Outcome::Linearizable
}

impl Frame {
    /// The call nodes this frame linearized, in order (helper first).
    fn nodes(&self) -> impl DoubleEndedIterator<Item = usize> + Clone {
        [self.helper, self.node].into_iter().filter(|&n| n != NIL)
    }
}

impl Deepest {
    fn new(list: &Events) -> Self {
        let (candidates, blocked) = list.frontier();
        Deepest {
            frames: Vec::new(),
            shared: 0,
            depth: 0,
            state: None,
            blocked,
            candidates,
        }
    }

    fn record(&mut self, list: &Events, stack: &[Frame], depth: usize, state: Option<u64>) {
        self.frames.truncate(self.shared);
        self.frames.extend_from_slice(&stack[self.shared..]);
        self.shared = stack.len();
        self.depth = depth;
        self.state = state;
        (self.candidates, self.blocked) = list.frontier();
    }

    fn into_stuck(self, list: &Events) -> Stuck {
        Stuck {
            prefix: self
                .frames
                .iter()
                .flat_map(Frame::nodes)
                .map(|n| list.entry[n])
                .collect(),
            state: self.state,
            // The search only gets stuck with a required op left, whose return blocks.
            blocked: self.blocked.unwrap_or(0),
            candidates: self.candidates,
        }
    }
}
