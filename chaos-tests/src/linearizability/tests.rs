//! Tests of the linearizability checker: hand-written histories that must pass or fail, and
//! seeded random histories produced by a real sequential register.

use std::time::{Duration, Instant};

use super::{Limits, Op, OpKind, Outcome, Verdict, check, check_with_limits};

const BUDGET: Duration = Duration::from_secs(1);

fn op(id: u64, client: u32, kind: OpKind, span: (u64, Option<u64>), outcome: Outcome) -> Op {
    Op {
        id,
        client,
        key: "k".to_owned(),
        kind,
        invoke: Duration::from_millis(span.0),
        complete: span.1.map(Duration::from_millis),
        outcome,
    }
}

fn write(id: u64, client: u32, v: u64, from: u64, to: u64) -> Op {
    op(
        id,
        client,
        OpKind::Write(v),
        (from, Some(to)),
        Outcome::Ok(None),
    )
}

fn write_unknown(id: u64, client: u32, v: u64, from: u64) -> Op {
    op(id, client, OpKind::Write(v), (from, None), Outcome::Unknown)
}

fn write_failed(id: u64, client: u32, v: u64, from: u64, to: u64) -> Op {
    op(
        id,
        client,
        OpKind::Write(v),
        (from, Some(to)),
        Outcome::Fail,
    )
}

fn read(id: u64, client: u32, v: Option<u64>, from: u64, to: u64) -> Op {
    op(id, client, OpKind::Read, (from, Some(to)), Outcome::Ok(v))
}

fn delete(id: u64, client: u32, from: u64, to: u64) -> Op {
    op(
        id,
        client,
        OpKind::Delete,
        (from, Some(to)),
        Outcome::Ok(None),
    )
}

#[track_caller]
fn assert_linearizable(ops: &[Op]) {
    let verdict = check(ops, BUDGET);
    assert_eq!(verdict, Verdict::Linearizable, "history: {ops:#?}");
}

#[track_caller]
fn assert_not_linearizable(ops: &[Op]) -> String {
    match check(ops, BUDGET) {
        Verdict::NotLinearizable { explanation, .. } => explanation,
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        read(0, 1, None, 0, 1),
        write(1, 1, 1, 2, 3),
        read(2, 2, Some(1), 4, 5),
        write(3, 2, 2, 6, 7),
        read(4, 1, Some(2), 8, 9),
        delete(5, 1, 10, 11),
        read(6, 2, None, 12, 13),
    ]);
}

#[test]
fn read_overlapping_a_write_may_see_either_value() {
    let before = write(0, 1, 1, 0, 1);
    let overlapping = write(1, 1, 2, 2, 10);
    assert_linearizable(&[
        before.clone(),
        overlapping.clone(),
        read(2, 2, Some(1), 3, 4),
    ]);
    assert_linearizable(&[before, overlapping, read(2, 2, Some(2), 3, 4)]);
}

#[test]
fn concurrent_reads_may_see_old_then_new_but_not_new_then_old() {
    let ops = [write(0, 1, 1, 0, 1), write(1, 1, 2, 2, 20)];
    let mut ok = ops.to_vec();
    ok.extend([read(2, 2, Some(1), 3, 4), read(3, 3, Some(2), 5, 6)]);
    assert_linearizable(&ok);
    let mut flip = ops.to_vec();
    flip.extend([read(2, 2, Some(2), 3, 4), read(3, 3, Some(1), 5, 6)]);
    assert_not_linearizable(&flip);
}

#[test]
fn stale_read_after_completed_newer_write_is_not_linearizable() {
    let explanation = assert_not_linearizable(&[
        write(0, 1, 1, 0, 1),
        write(1, 1, 2, 2, 3),
        read(2, 2, Some(1), 4, 5),
    ]);
    assert!(
        explanation.contains("#2 client 2 read -> 1"),
        "{explanation}"
    );
    assert!(explanation.contains("register holds 2"), "{explanation}");
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    assert_not_linearizable(&[write(0, 1, 1, 0, 1), read(1, 2, Some(7), 2, 3)]);
}

#[test]
fn read_before_the_write_was_invoked_is_not_linearizable() {
    assert_not_linearizable(&[read(0, 2, Some(1), 0, 1), write(1, 1, 1, 2, 3)]);
}

#[test]
fn lost_acknowledged_write_is_not_linearizable() {
    assert_not_linearizable(&[
        write(0, 1, 1, 0, 1),
        write(1, 1, 2, 2, 3),
        read(2, 2, Some(1), 10, 11),
        read(3, 2, Some(1), 12, 13),
        read(4, 3, Some(1), 14, 15),
    ]);
}

#[test]
fn unknown_write_that_is_later_observed_is_linearizable() {
    assert_linearizable(&[
        write(0, 1, 1, 0, 1),
        write_unknown(1, 1, 2, 2),
        read(2, 2, Some(1), 10, 11),
        read(3, 2, Some(2), 12, 13),
        read(4, 3, Some(2), 14, 15),
    ]);
}

#[test]
fn unknown_write_never_observed_is_linearizable() {
    assert_linearizable(&[
        write(0, 1, 1, 0, 1),
        write_unknown(1, 1, 2, 2),
        read(2, 2, Some(1), 10, 11),
        read(3, 3, Some(1), 12, 13),
    ]);
}

#[test]
fn unknown_write_cannot_be_observed_and_then_undone() {
    assert_not_linearizable(&[
        write(0, 1, 1, 0, 1),
        write_unknown(1, 1, 2, 2),
        read(2, 2, Some(2), 10, 11),
        read(3, 3, Some(1), 12, 13),
    ]);
}

#[test]
fn unknown_write_cannot_be_observed_before_it_was_invoked() {
    assert_not_linearizable(&[
        write(0, 1, 1, 0, 1),
        read(1, 2, Some(2), 2, 3),
        write_unknown(2, 1, 2, 4),
    ]);
}

#[test]
fn failed_write_that_is_observed_is_not_linearizable() {
    assert_not_linearizable(&[write_failed(0, 1, 5, 0, 1), read(1, 2, Some(5), 2, 3)]);
}

#[test]
fn unknown_and_unfinished_reads_are_ignored() {
    assert_linearizable(&[
        write(0, 1, 1, 0, 1),
        op(1, 2, OpKind::Read, (2, None), Outcome::Unknown),
        op(2, 2, OpKind::Read, (3, Some(4)), Outcome::Unknown),
        op(3, 3, OpKind::Read, (5, Some(6)), Outcome::Fail),
    ]);
}

#[test]
fn unknown_delete_that_is_observed_is_linearizable() {
    assert_linearizable(&[
        write(0, 1, 1, 0, 1),
        op(1, 1, OpKind::Delete, (2, None), Outcome::Unknown),
        read(2, 2, Some(1), 3, 4),
        read(3, 2, None, 5, 6),
    ]);
}

#[test]
fn keys_are_checked_independently_and_the_bad_key_is_named() {
    let mut ops = vec![write(0, 1, 1, 0, 1), read(1, 2, Some(1), 2, 3)];
    let mut bad = [
        write(2, 1, 1, 0, 1),
        write(3, 1, 2, 2, 3),
        read(4, 2, Some(1), 4, 5),
    ];
    for op in &mut bad {
        op.key = "other".to_owned();
    }
    ops.extend(bad);
    match check(&ops, BUDGET) {
        Verdict::NotLinearizable { key, .. } => assert_eq!(key, "other"),
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

#[test]
fn state_bound_reports_timeout_instead_of_a_verdict() {
    // Ten fully concurrent writes read back in a late order force some search.
    let mut ops: Vec<Op> = (0..10).map(|i| write(i, i as u32, i, 0, 100)).collect();
    ops.push(read(10, 99, Some(3), 101, 102));
    let limits = Limits {
        budget: BUDGET,
        max_states: 3,
    };
    assert_eq!(
        check_with_limits(&ops, limits),
        Verdict::Timeout {
            key: "k".to_owned()
        }
    );
    assert_linearizable(&ops);
}

/// A small seeded LCG (Knuth's MMIX constants), so the tests need no rand crate.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A linearizable history: `clients` sequential clients with random gaps and durations; each
/// op takes effect at a random instant inside its interval on one real register. Some writes
/// fail (never applied) or end unknown (applied or not); some reads end unknown.
fn random_history(seed: u64, len: usize, clients: u32) -> Vec<Op> {
    let mut rng = Lcg(seed);
    let mut free_at = vec![0u64; clients as usize];
    let mut ops = Vec::with_capacity(len);
    // (effect time, op index, whether the op takes effect at all)
    let mut effects = Vec::with_capacity(len);
    for id in 0..len as u64 {
        let client = rng.below(u64::from(clients)) as u32;
        let start = free_at[client as usize] + rng.below(20);
        let end = start + 1 + rng.below(60);
        free_at[client as usize] = end + 1;
        let roll = rng.below(100);
        let kind = match roll {
            0..60 => OpKind::Read,
            60..92 => OpKind::Write(id + 1),
            _ => OpKind::Delete,
        };
        let fate = rng.below(100);
        let (outcome, complete, applies) = match kind {
            OpKind::Read if fate < 3 => (Outcome::Unknown, None, false),
            OpKind::Read => (Outcome::Ok(None), Some(end), true),
            _ if fate < 3 => (Outcome::Fail, Some(end), false),
            _ if fate < 8 => (Outcome::Unknown, None, rng.below(2) == 0),
            _ => (Outcome::Ok(None), Some(end), true),
        };
        effects.push((start + rng.below(end - start + 1), ops.len(), applies));
        let (invoke, complete) = (
            Duration::from_micros(start),
            complete.map(Duration::from_micros),
        );
        ops.push(Op {
            id,
            client,
            key: "k".to_owned(),
            kind,
            invoke,
            complete,
            outcome,
        });
    }
    effects.sort();
    let mut register = None;
    for (_, i, applies) in effects {
        let op = &mut ops[i];
        match (op.kind, applies) {
            (_, false) => {}
            (OpKind::Write(v), true) => register = Some(v),
            (OpKind::Delete, true) => register = None,
            (OpKind::Read, true) => op.outcome = Outcome::Ok(register),
        }
    }
    ops
}

/// Makes one read return a value that a later, completed write had definitely overwritten
/// before the read began; returns the read's id.
fn inject_stale_read(ops: &mut [Op]) -> u64 {
    let acked_writes: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Write(_)) && o.outcome == Outcome::Ok(None))
        .collect();
    let mut plan = None;
    'search: for r in ops
        .iter()
        .filter(|o| o.kind == OpKind::Read && o.complete.is_some())
    {
        for w2 in acked_writes.iter().filter(|w| w.complete < Some(r.invoke)) {
            let older = acked_writes.iter().find(|w1| w1.complete < Some(w2.invoke));
            if let Some(&&Op {
                kind: OpKind::Write(stale),
                ..
            }) = older
                && r.outcome != Outcome::Ok(Some(stale))
            {
                plan = Some((r.id, stale));
                break 'search;
            }
        }
    }
    let (id, stale) = plan.expect("a random history of this size has a stale-read candidate");
    let read = ops
        .iter_mut()
        .find(|o| o.id == id)
        .expect("the read exists");
    read.outcome = Outcome::Ok(Some(stale));
    id
}

#[test]
fn random_register_history_is_linearizable_within_a_second() {
    for seed in [1, 7, 42] {
        let ops = random_history(seed, 2000, 5);
        let started = Instant::now();
        assert_eq!(check(&ops, BUDGET), Verdict::Linearizable, "seed {seed}");
        assert!(
            started.elapsed() < BUDGET,
            "seed {seed} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn random_register_history_with_one_stale_read_is_not_linearizable() {
    for seed in [1, 7, 42] {
        let mut ops = random_history(seed, 2000, 5);
        // Pick a read late in the history so the search has a long prefix to get through.
        let mut tail = ops.split_off(1500);
        let id = inject_stale_read(&mut tail);
        ops.extend(tail);
        // Proving a negative explores every alternative of the prefix (about 0.1 s here, in a
        // debug build); the budget leaves room for a loaded CI machine.
        match check(&ops, Duration::from_secs(20)) {
            Verdict::NotLinearizable { explanation, .. } => {
                assert!(
                    explanation.contains(&format!("#{id} ")),
                    "seed {seed}: {explanation}"
                );
            }
            other => panic!("seed {seed}: expected NotLinearizable, got {other:?}"),
        }
    }
}

#[test]
fn random_multi_key_history_is_linearizable() {
    let mut ops = Vec::new();
    for (n, key) in ["a", "b", "c"].into_iter().enumerate() {
        let offset = ops.len() as u64;
        for mut op in random_history(100 + n as u64, 700, 4) {
            op.key = key.to_owned();
            op.id += offset;
            ops.push(op);
        }
    }
    assert_eq!(check(&ops, BUDGET), Verdict::Linearizable);
}

/// Every ordering of the acknowledged ops plus any subset of the unknown mutations, checked
/// directly against the register; exponential, for histories of a handful of ops.
fn brute_force_linearizable(ops: &[Op]) -> bool {
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|o| o.outcome != Outcome::Fail)
        .filter(|o| !(o.kind == OpKind::Read && o.outcome == Outcome::Unknown))
        .collect();
    let ret = |o: &Op| {
        (o.outcome != Outcome::Unknown)
            .then_some(o.complete)
            .flatten()
    };
    let optional: Vec<usize> = (0..ops.len()).filter(|&i| ret(ops[i]).is_none()).collect();
    (0..1u32 << optional.len()).any(|mask| {
        let included: Vec<usize> = (0..ops.len())
            .filter(|&i| match optional.iter().position(|&o| o == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .collect();
        let mut chosen = vec![false; ops.len()];
        search_orders(&ops, &included, &mut chosen, None, &ret)
    })
}

fn search_orders(
    ops: &[&Op],
    included: &[usize],
    chosen: &mut [bool],
    state: Option<u64>,
    ret: &dyn Fn(&Op) -> Option<Duration>,
) -> bool {
    if included.iter().all(|&i| chosen[i]) {
        return true;
    }
    for &x in included {
        if chosen[x] {
            continue;
        }
        // x may go next only if no unchosen included op returned before x was called.
        let blocked = included
            .iter()
            .any(|&y| !chosen[y] && y != x && ret(ops[y]).is_some_and(|r| r < ops[x].invoke));
        let next = match (ops[x].kind, ops[x].outcome) {
            (OpKind::Write(v), _) => Some(Some(v)),
            (OpKind::Delete, _) => Some(None),
            (OpKind::Read, Outcome::Ok(seen)) => (seen == state).then_some(state),
            (OpKind::Read, _) => None,
        };
        if let (false, Some(next)) = (blocked, next) {
            chosen[x] = true;
            let found = search_orders(ops, included, chosen, next, ret);
            chosen[x] = false;
            if found {
                return true;
            }
        }
    }
    false
}

fn random_small_history(rng: &mut Lcg) -> Vec<Op> {
    let len = 2 + rng.below(6);
    (0..len)
        .map(|id| {
            let start = rng.below(8);
            let end = start + rng.below(5);
            let kind = match rng.below(5) {
                0 | 1 => OpKind::Read,
                2 | 3 => OpKind::Write(1 + rng.below(2)),
                _ => OpKind::Delete,
            };
            let outcome = match (kind, rng.below(10)) {
                (_, 0) => Outcome::Unknown,
                (_, 1) => Outcome::Fail,
                (OpKind::Read, _) => Outcome::Ok(rng.below(3).checked_sub(1).map(|v| v + 1)),
                _ => Outcome::Ok(None),
            };
            let complete = (outcome != Outcome::Unknown).then_some(end);
            op(id, id as u32, kind, (start, complete), outcome)
        })
        .collect()
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let mut rng = Lcg(2024);
    let (mut linearizable, mut not) = (0, 0);
    for case in 0..20_000 {
        let ops = random_small_history(&mut rng);
        let expected = brute_force_linearizable(&ops);
        let verdict = check(&ops, BUDGET);
        assert!(
            !matches!(verdict, Verdict::Timeout { .. }),
            "case {case} timed out"
        );
        assert_eq!(
            verdict.is_linearizable(),
            expected,
            "case {case}: {verdict:?}\n{ops:#?}"
        );
        if expected {
            linearizable += 1;
        } else {
            not += 1;
        }
    }
    // Both answers must be well represented for the comparison to mean anything.
    assert!(
        linearizable > 2_000 && not > 2_000,
        "{linearizable} vs {not}"
    );
}

#[test]
fn a_violation_on_another_key_outranks_a_timeout() {
    // Key "k" needs more than the state bound; key "z", checked after it because it has more
    // ops, is plainly stale.
    let mut ops: Vec<Op> = (0..10).map(|i| write(i, i as u32, i, 0, 100)).collect();
    ops.push(read(10, 99, Some(3), 101, 102));
    let mut bad = vec![write(11, 1, 1, 0, 1)];
    bad.extend((0..12).map(|i| read(12 + i, 2, Some(1), 2 + 2 * i, 3 + 2 * i)));
    bad.extend([write(24, 1, 2, 30, 31), read(25, 2, Some(1), 32, 33)]);
    for op in &mut bad {
        op.key = "z".to_owned();
    }
    ops.extend(bad);
    let limits = Limits {
        budget: BUDGET,
        max_states: 30,
    };
    let k_only: Vec<Op> = ops.iter().filter(|op| op.key == "k").cloned().collect();
    assert_eq!(
        check_with_limits(&k_only, limits),
        Verdict::Timeout {
            key: "k".to_owned()
        }
    );
    match check_with_limits(&ops, limits) {
        Verdict::NotLinearizable { key, .. } => assert_eq!(key, "z"),
        other => panic!("expected NotLinearizable on z, got {other:?}"),
    }
}
