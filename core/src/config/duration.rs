//! Duration strings as config writes them: a sequence of number-unit pairs, `"250ms"`, `"5s"`,
//! `"1.5s"`, `"1m30s"`. Units are `ms`, `s`, `m` and `h`; there is no sign and no bare number,
//! because a bare `5` is ambiguous between seconds and milliseconds.
//!
//! Arithmetic is integral in nanoseconds, so `"0.1s"` is exactly 100ms, and anything longer than
//! `u64::MAX` nanoseconds (about 584 years) is refused rather than wrapped.

use std::time::Duration;

const UNITS: &str = "ms, s, m, h";

/// Parse a duration such as `"250ms"`, `"5s"`, `"1m"`, `"1h"`, `"1.5s"` or `"1m30s"`.
///
/// Refuses `""`, `"5"` (no unit), `"-1s"`, `"5x"` and values that overflow. The error says what
/// is wrong and how to write it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let example = "write a number and a unit, e.g. \"5s\" or \"250ms\"";
    if s.is_empty() {
        return Err(format!("duration is empty; {example}"));
    }
    if s.starts_with('-') {
        return Err(format!("duration {s:?} is negative; {example}"));
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        if number.is_empty() {
            return Err(format!(
                "duration {s:?} must start with a number; {example}"
            ));
        }
        let unit_nanos: u64 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "duration {s:?} has no unit; {example} (units: {UNITS})"
                ));
            }
            other => {
                return Err(format!(
                    "duration {s:?} has unknown unit {other:?}; use one of {UNITS}"
                ));
            }
        };
        let nanos =
            scaled(number, unit_nanos).map_err(|why| format!("duration {s:?} {why}; {example}"))?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| format!("duration {s:?} is too large; use a shorter duration"))?;
        rest = next;
    }
    Ok(Duration::from_nanos(total))
}

/// `number` (digits with an optional fraction) times `unit_nanos`, in nanoseconds.
fn scaled(number: &str, unit_nanos: u64) -> Result<u64, &'static str> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    if whole.is_empty() || fraction.is_some_and(|f| f.is_empty() || f.contains('.')) {
        return Err("has a malformed number");
    }
    let fraction = fraction.unwrap_or("");
    if fraction.len() > 9 {
        return Err("has more than 9 decimal places");
    }
    let too_large = "is too large; use a shorter duration";
    let whole: u128 = whole.parse().map_err(|_| too_large)?;
    let mut nanos = whole.checked_mul(u128::from(unit_nanos)).ok_or(too_large)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| "has a malformed number")?;
        let scale = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(9));
        nanos += digits * u128::from(unit_nanos) / scale;
    }
    u64::try_from(nanos).map_err(|_| too_large)
}
