//! The one place the shell reads wall-clock time. Cores take `now` as a parameter; this module
//! is where the shell gets it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. A clock before 1970 reads as 0.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    now_unix_ms() / 1000
}
