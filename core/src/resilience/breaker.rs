//! Circuit breaking by limits (Envoy's meaning, not a state machine that trips): at most
//! `maxConnections` open connections and `maxPendingRequests` requests waiting for one, per
//! upstream service. Over the limit, the shell fails the request fast instead of queueing it.
//!
//! ```text
//!  shell wants a connection ─► try_acquire_connection() ─┬─► Ok(permit) … connection closes
//!                                                        │        └─► release_connection(permit)
//!                                                        └─► Err(Overflow)  (fail fast, 503)
//! ```
//!
//! It hands out permits, plain values the shell gives back; it does not hold connections or
//! queues, and does not decide what a request does when refused.

use mesh_proto::resource;

/// Limits on connections and pending requests, with the current counts.
///
/// Call order: [`CircuitBreaker::from_spec`], then for each connection
/// [`CircuitBreaker::try_acquire_connection`] and, when it closes,
/// [`CircuitBreaker::release_connection`]; the same pair for each request that waits for a
/// connection. [`CircuitBreaker::reconfigure`] may come at any time and keeps the counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    max_connections: u32,
    max_pending_requests: u32,
    connections: u32,
    pending_requests: u32,
}

/// The right to hold one connection open. Not `Clone`: each permit is given back once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "give the permit back with release_connection when the connection closes"]
pub struct ConnectionPermit {
    _private: (),
}

/// The right to hold one request pending. Not `Clone`: each permit is given back once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "give the permit back with release_pending when the request leaves the queue"]
pub struct PendingPermit {
    _private: (),
}

/// A limit is reached; the request should fail fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub limit: Limit,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Connections,
    PendingRequests,
}

/// Limits when the spec leaves one out (Envoy's default of 1024 each), so that nothing is
/// unbounded even without a policy.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
pub const DEFAULT_MAX_PENDING_REQUESTS: u32 = 1024;

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PENDING_REQUESTS)
    }
}

impl CircuitBreaker {
    /// Limits of 0 are raised to 1: a breaker that refuses everything is never what was meant
    /// (config refuses 0).
    pub fn new(max_connections: u32, max_pending_requests: u32) -> Self {
        Self {
            max_connections: max_connections.max(1),
            max_pending_requests: max_pending_requests.max(1),
            connections: 0,
            pending_requests: 0,
        }
    }

    pub fn from_spec(spec: &resource::CircuitBreaker) -> Self {
        Self::new(
            spec.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            spec.max_pending_requests
                .unwrap_or(DEFAULT_MAX_PENDING_REQUESTS),
        )
    }

    /// Take new limits and keep the counts. Lowering a limit below the current count refuses
    /// new permits until enough are released; nothing open is cut.
    pub fn reconfigure(&mut self, spec: &resource::CircuitBreaker) {
        let next = Self::from_spec(spec);
        self.max_connections = next.max_connections;
        self.max_pending_requests = next.max_pending_requests;
    }

    pub fn try_acquire_connection(&mut self) -> Result<ConnectionPermit, Overflow> {
        if self.connections >= self.max_connections {
            return Err(Overflow {
                limit: Limit::Connections,
                max: self.max_connections,
            });
        }
        self.connections += 1;
        Ok(ConnectionPermit { _private: () })
    }

    pub fn release_connection(&mut self, permit: ConnectionPermit) {
        let ConnectionPermit { _private: () } = permit;
        self.connections = self.connections.saturating_sub(1);
    }

    pub fn try_acquire_pending(&mut self) -> Result<PendingPermit, Overflow> {
        if self.pending_requests >= self.max_pending_requests {
            return Err(Overflow {
                limit: Limit::PendingRequests,
                max: self.max_pending_requests,
            });
        }
        self.pending_requests += 1;
        Ok(PendingPermit { _private: () })
    }

    pub fn release_pending(&mut self, permit: PendingPermit) {
        let PendingPermit { _private: () } = permit;
        self.pending_requests = self.pending_requests.saturating_sub(1);
    }

    /// Open connections, for metrics.
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// Pending requests, for metrics.
    pub fn pending_requests(&self) -> u32 {
        self.pending_requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(conns: Option<u32>, pending: Option<u32>) -> resource::CircuitBreaker {
        resource::CircuitBreaker {
            max_connections: conns,
            max_pending_requests: pending,
        }
    }

    #[test]
    fn connections_are_limited_and_released() {
        let mut cb = CircuitBreaker::from_spec(&spec(Some(2), None));
        let a = cb.try_acquire_connection().unwrap();
        let b = cb.try_acquire_connection().unwrap();
        assert_eq!(
            cb.try_acquire_connection(),
            Err(Overflow {
                limit: Limit::Connections,
                max: 2
            })
        );
        // Pending requests have their own limit.
        let p = cb.try_acquire_pending().unwrap();
        cb.release_connection(a);
        let c = cb.try_acquire_connection().unwrap();
        assert_eq!(cb.connections(), 2);
        cb.release_connection(b);
        cb.release_connection(c);
        cb.release_pending(p);
        assert_eq!((cb.connections(), cb.pending_requests()), (0, 0));
    }

    #[test]
    fn pending_requests_are_limited() {
        let mut cb = CircuitBreaker::from_spec(&spec(None, Some(1)));
        let p = cb.try_acquire_pending().unwrap();
        assert_eq!(
            cb.try_acquire_pending(),
            Err(Overflow {
                limit: Limit::PendingRequests,
                max: 1
            })
        );
        cb.release_pending(p);
        assert!(cb.try_acquire_pending().is_ok());
    }

    #[test]
    fn lowering_a_limit_keeps_what_is_open() {
        let mut cb = CircuitBreaker::from_spec(&spec(Some(3), None));
        let permits: Vec<_> = (0..3)
            .map(|_| cb.try_acquire_connection().unwrap())
            .collect();
        cb.reconfigure(&spec(Some(1), None));
        assert_eq!(cb.connections(), 3);
        assert!(cb.try_acquire_connection().is_err());
        let mut permits = permits.into_iter();
        cb.release_connection(permits.next().unwrap());
        cb.release_connection(permits.next().unwrap());
        assert!(cb.try_acquire_connection().is_err());
        cb.release_connection(permits.next().unwrap());
        assert!(cb.try_acquire_connection().is_ok());
    }

    #[test]
    fn zero_and_missing_limits_are_clamped() {
        let mut cb = CircuitBreaker::from_spec(&spec(Some(0), None));
        assert!(cb.try_acquire_connection().is_ok());
        assert!(cb.try_acquire_connection().is_err());
        let cb = CircuitBreaker::from_spec(&spec(None, None));
        assert_eq!(cb, CircuitBreaker::default());
    }
}
