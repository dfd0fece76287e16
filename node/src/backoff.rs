//! The one capped-exponential retry loop for start-up calls to the control plane (an agent's
//! or a gateway's first SVID, its trust domain): retry while the failure is transient, stop on
//! one retrying cannot fix (the control plane answered and said no).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// First pause between attempts; it doubles up to the caller's cap.
const FIRST_DELAY: Duration = Duration::from_millis(200);

/// An error that knows whether retrying can help.
pub(crate) trait Transient {
    /// True if retrying cannot help.
    fn is_permanent(&self) -> bool;
}

/// Run `f` until it succeeds or fails permanently, backing off from 200 ms up to `max_delay`
/// and logging each transient failure as "cannot `what` yet".
pub(crate) async fn retrying<T, E, F, Fut>(
    what: &str,
    max_delay: Duration,
    mut f: F,
) -> Result<T, E>
where
    E: Transient + Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot {what} yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_delay);
            }
        }
    }
}
