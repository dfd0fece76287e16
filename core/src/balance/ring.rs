//! The consistent-hash ring: each endpoint owns [`VNODES`] points (fewer for very large sets,
//! so the ring stays bounded), and a key belongs to the first point at or after its hash. Adding
//! or removing one of `n` endpoints moves about `1/n` of the keys, and only to or from it.
//!
//! Points come from [`stable_hash`] of the endpoint address, so every sidecar builds the same
//! ring from the same set. The ring knows nothing of eligibility beyond the predicate it is
//! given.

use crate::rng::{mix64, stable_hash};

use super::EndpointId;

/// Points per endpoint (as in Ketama).
pub(super) const VNODES: usize = 160;
/// Most points on the ring; larger sets get fewer points per endpoint, at least one.
pub(super) const MAX_POINTS: usize = 1 << 16;

#[derive(Debug, Clone, Default)]
pub(super) struct Ring {
    /// `(point, endpoint index)`, sorted.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// Build from endpoints in index order.
    pub(super) fn build<'a>(endpoints: impl ExactSizeIterator<Item = &'a EndpointId>) -> Self {
        let n = endpoints.len();
        let vnodes = (MAX_POINTS / n.max(1)).clamp(1, VNODES);
        let mut points = Vec::with_capacity(n.saturating_mul(vnodes));
        for (index, id) in endpoints.enumerate() {
            let base = stable_hash(id.as_str().as_bytes());
            for v in 1..=vnodes as u64 {
                points.push((mix64(base ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15)), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The endpoint owning `hash`: the first point clockwise from it whose endpoint is
    /// `eligible`, wrapping around once.
    pub(super) fn lookup(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|(p, _)| *p < hash);
        let (wrapped, clockwise) = self.points.split_at(start);
        clockwise
            .iter()
            .chain(wrapped)
            .map(|(_, index)| *index)
            .find(|index| eligible(*index))
    }

    /// Points on the ring.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.points.len()
    }
}
