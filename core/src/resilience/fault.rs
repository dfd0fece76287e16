//! Fault injection: decides, per request, whether to delay it or answer it with an error
//! status, from the percentages of the `faultInjection` section.
//!
//! The two draws are independent, as in Envoy and Istio: a request can be delayed, aborted, or
//! delayed and then aborted. This module only decides; the shell sleeps and answers.

use std::time::Duration;

use mesh_proto::resource;

use crate::config::parse_duration;
use crate::rng::Rng;

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Hold the request for this long, then forward it.
    Delay(Duration),
    /// Answer with this status without forwarding.
    Abort(u16),
    /// Hold the request, then answer with the status.
    DelayThenAbort {
        delay: Duration,
        status: u16,
    },
}

/// The compiled `faultInjection` section.
///
/// Call order: [`FaultInjector::from_spec`], then [`FaultInjector::decide`] once per request
/// (not per retry attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultInjector {
    delay: Option<(PartsPerMillion, Duration)>,
    abort: Option<(PartsPerMillion, u16)>,
}

/// A percentage as an integer share of a million, so 0.1 % is exact and 100 % always fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartsPerMillion(u64);

const MILLION: u64 = 1_000_000;

impl PartsPerMillion {
    /// Percent clamped to `0..=100`; NaN is 0.
    fn from_percent(percent: f64) -> Self {
        if percent.is_nan() {
            return Self(0);
        }
        Self((percent.clamp(0.0, 100.0) * 10_000.0).round() as u64)
    }

    fn draw(self, rng: &mut impl Rng) -> bool {
        self.0 > 0 && rng.below(MILLION) < self.0
    }
}

impl FaultInjector {
    /// An unparsable delay duration disables the delay; a status outside 200..=599 becomes 500
    /// (config refuses both).
    pub fn from_spec(spec: &resource::FaultInjection) -> Self {
        Self {
            delay: spec.delay.as_ref().and_then(|d| {
                let length = parse_duration(&d.duration).ok()?;
                Some((PartsPerMillion::from_percent(d.percent), length))
            }),
            abort: spec.abort.as_ref().map(|a| {
                let status = if (200..=599).contains(&a.status) {
                    a.status
                } else {
                    500
                };
                (PartsPerMillion::from_percent(a.percent), status)
            }),
        }
    }

    /// Draw the fault for one request. Draws only for configured faults, so a policy with one
    /// fault consumes one number per request.
    pub fn decide(&self, rng: &mut impl Rng) -> Fault {
        let delay = self
            .delay
            .and_then(|(share, length)| share.draw(rng).then_some(length));
        let abort = self
            .abort
            .and_then(|(share, status)| share.draw(rng).then_some(status));
        match (delay, abort) {
            (None, None) => Fault::None,
            (Some(d), None) => Fault::Delay(d),
            (None, Some(s)) => Fault::Abort(s),
            (Some(delay), Some(status)) => Fault::DelayThenAbort { delay, status },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn injector(delay: Option<(f64, &str)>, abort: Option<(f64, u16)>) -> FaultInjector {
        FaultInjector::from_spec(&resource::FaultInjection {
            delay: delay.map(|(percent, d)| resource::FaultDelay {
                percent,
                duration: d.to_owned(),
            }),
            abort: abort.map(|(percent, status)| resource::FaultAbort { percent, status }),
        })
    }

    fn tally(f: &FaultInjector, n: u32) -> [u32; 4] {
        let mut rng = SplitMix64::new(11);
        let mut counts = [0; 4];
        for _ in 0..n {
            let i = match f.decide(&mut rng) {
                Fault::None => 0,
                Fault::Delay(_) => 1,
                Fault::Abort(_) => 2,
                Fault::DelayThenAbort { .. } => 3,
            };
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn none_zero_and_full_percentages() {
        assert_eq!(tally(&FaultInjector::default(), 1000), [1000, 0, 0, 0]);
        assert_eq!(
            tally(&injector(Some((0.0, "1s")), Some((0.0, 503))), 1000),
            [1000, 0, 0, 0]
        );
        assert_eq!(
            tally(&injector(Some((100.0, "1s")), None), 1000),
            [0, 1000, 0, 0]
        );
        assert_eq!(
            tally(&injector(None, Some((100.0, 503))), 1000),
            [0, 0, 1000, 0]
        );
        assert_eq!(
            tally(&injector(Some((100.0, "1s")), Some((100.0, 503))), 1000),
            [0, 0, 0, 1000]
        );
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            injector(Some((100.0, "250ms")), None).decide(&mut rng),
            Fault::Delay(Duration::from_millis(250))
        );
        assert_eq!(
            injector(None, Some((100.0, 503))).decide(&mut rng),
            Fault::Abort(503)
        );
    }

    #[test]
    fn partial_percentages_are_independent_draws() {
        // 20 % delay and 10 % abort over 100,000 requests: 72 % none, 18 % delay only,
        // 8 % abort only, 2 % both.
        let counts = tally(&injector(Some((20.0, "1s")), Some((10.0, 503))), 100_000);
        let expect = [72_000, 18_000, 8_000, 2_000];
        for (got, want) in counts.iter().zip(expect) {
            assert!(got.abs_diff(want) < 600, "{counts:?} vs {expect:?}");
        }
    }

    #[test]
    fn odd_values_are_clamped() {
        let f = injector(Some((f64::NAN, "1s")), Some((250.0, 42)));
        assert_eq!(f.delay.map(|d| d.0), Some(PartsPerMillion(0)));
        assert_eq!(f.abort, Some((PartsPerMillion(MILLION), 500)));
        assert_eq!(
            injector(Some((100.0, "soon")), None),
            FaultInjector::default()
        );
    }
}
