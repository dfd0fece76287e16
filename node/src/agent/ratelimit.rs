//! Local rate limiting on the inbound side (DESIGN §6): a `TrafficPolicy` with `rateLimit`
//! that targets a local service puts one token bucket in front of that service's app, as
//! Envoy's local rate limit filter does. Requests over the limit get 429 with `retry-after`
//! and the `RL` response flag.
//!
//! ```text
//!  snapshot ─► follow_config ─► per local service: Option<(RateLimit spec, TokenBucket)>
//!  authorized request ─► admit(service, now) ─► Ok | Err(retry after)
//! ```
//!
//! The bucket is the core's (`mesh_core::resilience::ratelimit`); this file only keeps one per
//! service and swaps it when the policy changes. A bucket whose spec did not change keeps its
//! tokens across config updates. The limit is per sidecar, not shared across replicas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mesh_core::resilience::ratelimit::TokenBucket;
use mesh_proto::ServiceName;
use mesh_proto::resource::{Kind, RateLimit, TrafficPolicySpec};

use super::watch::Snapshot;

/// The token bucket of each local service that has a limit.
pub(crate) struct RateLimits {
    by_service: HashMap<ServiceName, Mutex<Option<(RateLimit, TokenBucket)>>>,
}

impl RateLimits {
    /// No limits until a snapshot says otherwise.
    pub(crate) fn new(services: &[ServiceName]) -> Self {
        Self {
            by_service: services
                .iter()
                .map(|s| (s.clone(), Mutex::new(None)))
                .collect(),
        }
    }

    /// Take a token for a request to `service` at `now`; `Err` says how long until one is
    /// there. Services without a limit always admit.
    pub(crate) fn admit(&self, service: &ServiceName, now: Instant) -> Result<(), Duration> {
        let Some(slot) = self.by_service.get(service) else {
            return Ok(());
        };
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_mut() {
            Some((_, bucket)) => bucket.try_take(now).map_err(|r| r.0),
            None => Ok(()),
        }
    }

    /// Install the limits of `snap`.
    pub(crate) fn install(&self, snap: &Snapshot) {
        let mut specs: HashMap<&str, RateLimit> = HashMap::new();
        for r in snap.resources.values() {
            if r.key.kind != Kind::TrafficPolicy || r.key.namespace != "default" {
                continue;
            }
            if let Ok(p) = serde_json::from_str::<TrafficPolicySpec>(&r.spec_json)
                && let Some(limit) = p.rate_limit
                && let Ok(target) = ServiceName::new(p.target_ref.name.clone())
                && let Some((name, _)) = self.by_service.get_key_value(&target)
            {
                specs.insert(name.as_str(), limit);
            }
        }
        for (service, slot) in &self.by_service {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            match specs.remove(service.as_str()) {
                Some(spec) if slot.as_ref().is_some_and(|(old, _)| *old == spec) => {}
                Some(spec) => {
                    let bucket = TokenBucket::from_spec(&spec);
                    *slot = Some((spec, bucket));
                }
                None => *slot = None,
            }
        }
    }
}

/// Follow config snapshots into the limits until the task is dropped.
pub(crate) async fn follow_config(
    limits: Arc<RateLimits>,
    mut snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
) {
    loop {
        let snap = snapshots.borrow_and_update().clone();
        limits.install(&snap);
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_proto::resource::{ResourceKey, StoredResource};

    use super::*;

    fn snap_with(spec: &str) -> Snapshot {
        let mut snap = Snapshot::default();
        let key = ResourceKey {
            kind: Kind::TrafficPolicy,
            namespace: "default".into(),
            name: "p".into(),
        };
        snap.resources.insert(
            "TrafficPolicy/default/p".into(),
            StoredResource {
                key,
                labels: Default::default(),
                spec_json: spec.into(),
                version: 1,
            },
        );
        snap
    }

    #[test]
    fn a_policy_limits_its_target_and_keeps_tokens_across_identical_updates() {
        let api = ServiceName::new("api").unwrap();
        let web = ServiceName::new("web").unwrap();
        let limits = RateLimits::new(&[api.clone(), web.clone()]);
        let now = Instant::now();
        assert!(limits.admit(&api, now).is_ok(), "no policy, no limit");
        let spec = r#"{"targetRef":{"kind":"Service","name":"api"},"rateLimit":{"requestsPerSecond":2,"burst":2}}"#;
        limits.install(&snap_with(spec));
        assert!(limits.admit(&api, now).is_ok());
        assert!(limits.admit(&api, now).is_ok());
        limits.install(&snap_with(spec));
        let wait = limits.admit(&api, now).expect_err("burst spent");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(
            limits.admit(&web, now).is_ok(),
            "another service is not limited"
        );
        assert!(
            limits.admit(&api, now + Duration::from_millis(500)).is_ok(),
            "refilled"
        );
        limits.install(&Snapshot::default());
        assert!(limits.admit(&api, now).is_ok(), "policy removed");
    }
}
