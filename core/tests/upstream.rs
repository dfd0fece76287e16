//! Event in, exact decision out, for the upstream state machine (`mesh_core::upstream`). Here,
//! not in `core/src`, because the tests hold a real `Instant` (the tidy test bans clock reads
//! inside the crate).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh_proto::resource::{HttpRouteSpec, TrafficPolicySpec};

use mesh_core::balance::EndpointId;
use mesh_core::resilience::AttemptOutcome;
use mesh_core::resilience::outlier::OutlierEvent;
use mesh_core::resilience::retry::GiveUpReason;
use mesh_core::rng::SplitMix64;
use mesh_core::route::RouteInput;
use mesh_core::upstream::{GiveUp, InFlight, Next, Start, Upstream};

fn get(path: &str) -> RouteInput<'_> {
    RouteInput {
        method: "GET",
        path,
        headers: &[],
    }
}

fn route(json: serde_json::Value) -> HttpRouteSpec {
    match serde_json::from_value(json) {
        Ok(r) => r,
        Err(e) => panic!("test route does not parse: {e}"),
    }
}

fn policies(target: &str, json: serde_json::Value) -> BTreeMap<String, TrafficPolicySpec> {
    let mut spec = json;
    spec["targetRef"] = serde_json::json!({"kind": "Service", "name": target});
    let spec: TrafficPolicySpec = match serde_json::from_value(spec) {
        Ok(p) => p,
        Err(e) => panic!("test policy does not parse: {e}"),
    };
    BTreeMap::from([(target.to_owned(), spec)])
}

fn eps(names: &[&str]) -> Vec<EndpointId> {
    names.iter().map(|n| EndpointId::new(n)).collect()
}

fn forward(s: Start) -> InFlight {
    match s {
        Start::Forward(f) => f,
        Start::Reply(r) => panic!("expected a forward, got {r:?}"),
    }
}

fn canary() -> HttpRouteSpec {
    route(serde_json::json!({
        "parentRefs": [{"kind": "Service", "name": "api"}],
        "rules": [{"backendRefs": [
            {"name": "api-v1", "weight": 90},
            {"name": "api-v2", "weight": 10}
        ]}]
    }))
}

#[test]
fn without_routes_the_upstream_is_its_own_backend() {
    let mut up = Upstream::new("api");
    assert_eq!(up.backends().collect::<Vec<_>>(), ["api"]);
    up.handle_endpoints("api", eps(&["10.0.0.1:1"]));
    let f = forward(up.start(Instant::now(), &get("/"), &mut SplitMix64::new(1)));
    assert_eq!(f.backend, "api");
    assert_eq!(f.endpoint.as_str(), "10.0.0.1:1");
    assert_eq!(f.rule, None);
}

#[test]
fn a_weighted_route_splits_between_backends() {
    let mut up = Upstream::new("api");
    up.handle_config(&[canary()], &BTreeMap::new());
    assert_eq!(up.backends().collect::<Vec<_>>(), ["api-v1", "api-v2"]);
    up.handle_endpoints("api-v1", eps(&["10.0.0.1:1"]));
    up.handle_endpoints("api-v2", eps(&["10.0.0.2:1"]));
    let mut rng = SplitMix64::new(7);
    let now = Instant::now();
    let mut v2 = 0;
    for _ in 0..10_000 {
        let mut f = forward(up.start(now, &get("/"), &mut rng));
        if f.backend == "api-v2" {
            v2 += 1;
        }
        up.finish(&mut f);
    }
    assert!((900..=1100).contains(&v2), "api-v2 got {v2} of 10000");
}

#[test]
fn no_matching_route_is_404_nr_and_a_missing_endpoint_is_503_uh() {
    let mut up = Upstream::new("api");
    let only_v1 = route(serde_json::json!({
        "parentRefs": [{"kind": "Service", "name": "api"}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                   "backendRefs": [{"name": "api-v1"}]}]
    }));
    up.handle_config(&[only_v1], &BTreeMap::new());
    let mut rng = SplitMix64::new(1);
    match up.start(Instant::now(), &get("/v2/x"), &mut rng) {
        Start::Reply(r) => assert_eq!((r.status, r.flags), (404, "NR")),
        other => panic!("{other:?}"),
    }
    match up.start(Instant::now(), &get("/v1/x"), &mut rng) {
        Start::Reply(r) => {
            assert_eq!((r.status, r.flags), (503, "UH"));
            assert!(r.message.contains("api-v1"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        up.pending("api-v1"),
        Some(0),
        "a refused request holds no permit"
    );
}

#[test]
fn a_connect_failure_ejects_the_endpoint_and_retries_another_by_default() {
    let mut up = Upstream::new("api");
    up.handle_endpoints("api", eps(&["a:1", "b:1"]));
    let mut rng = SplitMix64::new(3);
    let now = Instant::now();
    let mut f = forward(up.start(now, &get("/"), &mut rng));
    let first = f.endpoint.clone();
    let next = up.handle_outcome(
        now,
        &mut f,
        AttemptOutcome::ConnectFailure,
        Duration::ZERO,
        &mut rng,
    );
    assert!(matches!(next, Next::Retry { .. }), "{next:?}");
    assert_ne!(f.endpoint, first);
    assert_eq!(f.attempt, 2);
    assert!(matches!(
        up.poll_event(),
        Some((b, OutlierEvent::Ejected { endpoint, .. })) if b == "api" && endpoint == first
    ));
    // A 503 is not retried without a policy that says so.
    let done = up.handle_outcome(
        now,
        &mut f,
        AttemptOutcome::Status(503),
        Duration::ZERO,
        &mut rng,
    );
    assert_eq!(done, Next::Done);
    up.finish(&mut f);
    // While ejected, every new request goes to the other endpoint.
    for _ in 0..20 {
        let mut g = forward(up.start(now + Duration::from_secs(1), &get("/"), &mut rng));
        assert_ne!(g.endpoint, first);
        up.finish(&mut g);
    }
    // After the ejection time it is picked again.
    let later = now + Duration::from_secs(31);
    let picked: Vec<EndpointId> = (0..20)
        .map(|_| {
            let mut g = forward(up.start(later, &get("/"), &mut rng));
            up.finish(&mut g);
            g.endpoint.clone()
        })
        .collect();
    assert!(picked.contains(&first), "never returned: {picked:?}");
}

#[test]
fn a_policy_retries_5xx_until_the_attempts_run_out() {
    let mut up = Upstream::new("api");
    up.handle_config(
        &[],
        &policies(
            "api",
            serde_json::json!({"retries": {"attempts": 3, "retryOn": ["5xx"]},
                               "outlierDetection": {"consecutive5xx": 100}}),
        ),
    );
    up.handle_endpoints("api", eps(&["a:1", "b:1", "c:1"]));
    let mut rng = SplitMix64::new(5);
    let now = Instant::now();
    let mut f = forward(up.start(now, &get("/"), &mut rng));
    let mut seen = vec![f.endpoint.clone()];
    for _ in 0..2 {
        let n = up.handle_outcome(
            now,
            &mut f,
            AttemptOutcome::Status(503),
            Duration::ZERO,
            &mut rng,
        );
        assert!(matches!(n, Next::Retry { .. }), "{n:?}");
        assert!(
            !seen.contains(&f.endpoint),
            "retried an endpoint already tried"
        );
        seen.push(f.endpoint.clone());
    }
    let n = up.handle_outcome(
        now,
        &mut f,
        AttemptOutcome::Status(503),
        Duration::ZERO,
        &mut rng,
    );
    assert_eq!(
        n,
        Next::GiveUp {
            reason: GiveUp::Retry(GiveUpReason::AttemptsExhausted { attempts: 3 })
        }
    );
}

#[test]
fn the_budget_caps_retries_of_a_failing_backend_at_its_ratio() {
    let mut up = Upstream::new("api");
    up.handle_config(
        &[],
        &policies(
            "api",
            serde_json::json!({"retries": {"attempts": 5, "retryOn": ["5xx"],
                                           "budget": {"ratio": 0.2, "minPerSecond": 0}},
                               "outlierDetection": {"consecutive5xx": 1000000}}),
        ),
    );
    up.handle_endpoints("api", eps(&["a:1", "b:1"]));
    let mut rng = SplitMix64::new(9);
    let now = Instant::now();
    let (mut requests, mut attempts) = (0u32, 0u32);
    for i in 0..1000u64 {
        let t = now + Duration::from_millis(i);
        let mut f = forward(up.start(t, &get("/"), &mut rng));
        requests += 1;
        loop {
            attempts += 1;
            match up.handle_outcome(
                t,
                &mut f,
                AttemptOutcome::Status(503),
                Duration::ZERO,
                &mut rng,
            ) {
                Next::Retry { .. } => continue,
                _ => break,
            }
        }
        up.finish(&mut f);
    }
    let extra = f64::from(attempts - requests) / f64::from(requests);
    assert!(extra <= 0.2 + 1e-9, "retries added {extra:.3} of the load");
    assert!(extra >= 0.15, "budget barely used: {extra:.3}");
}

#[test]
fn the_breaker_refuses_past_its_pending_limit_and_finish_frees_a_slot() {
    let mut up = Upstream::new("api");
    up.handle_config(
        &[],
        &policies(
            "api",
            serde_json::json!({"circuitBreaker": {"maxPendingRequests": 2}}),
        ),
    );
    up.handle_endpoints("api", eps(&["a:1"]));
    let mut rng = SplitMix64::new(1);
    let now = Instant::now();
    let mut a = forward(up.start(now, &get("/"), &mut rng));
    let _b = forward(up.start(now, &get("/"), &mut rng));
    match up.start(now, &get("/"), &mut rng) {
        Start::Reply(r) => assert_eq!((r.status, r.flags), (503, "UO")),
        other => panic!("{other:?}"),
    }
    up.finish(&mut a);
    up.finish(&mut a);
    assert_eq!(up.pending("api"), Some(1), "finish is idempotent");
    let _c = forward(up.start(now, &get("/"), &mut rng));
}

#[test]
fn fault_injection_aborts_and_delays_by_policy() {
    let mut up = Upstream::new("api");
    up.handle_config(
        &[],
        &policies(
            "api",
            serde_json::json!({"faultInjection": {
                "abort": {"percent": 100.0, "status": 418}}}),
        ),
    );
    up.handle_endpoints("api", eps(&["a:1"]));
    match up.start(Instant::now(), &get("/"), &mut SplitMix64::new(1)) {
        Start::Reply(r) => assert_eq!((r.status, r.flags), (418, "FI")),
        other => panic!("{other:?}"),
    }
    up.handle_config(
        &[],
        &policies(
            "api",
            serde_json::json!({"faultInjection": {
                "delay": {"percent": 100.0, "duration": "50ms"}}}),
        ),
    );
    let f = forward(up.start(Instant::now(), &get("/"), &mut SplitMix64::new(1)));
    assert_eq!(f.delay, Some(Duration::from_millis(50)));
}

#[test]
fn a_backend_without_a_policy_takes_the_upstreams_and_keeps_endpoints_across_config() {
    let mut up = Upstream::new("api");
    up.handle_config(&[canary()], &BTreeMap::new());
    up.handle_endpoints("api-v1", eps(&["a:1"]));
    up.handle_endpoints("api-v2", eps(&["b:1"]));
    up.handle_config(
        &[canary()],
        &policies("api", serde_json::json!({"timeouts": {"request": "2s"}})),
    );
    let mut rng = SplitMix64::new(2);
    let f = forward(up.start(Instant::now(), &get("/"), &mut rng));
    assert_eq!(f.timeout, Some(Duration::from_secs(2)));
}

#[test]
fn without_a_retry_policy_a_reset_is_retried_only_for_idempotent_methods() {
    let mut up = Upstream::new("api");
    up.handle_endpoints("api", eps(&["a:1", "b:1"]));
    let mut rng = SplitMix64::new(4);
    let now = Instant::now();
    let mut f = forward(up.start(now, &get("/"), &mut rng));
    let n = up.handle_outcome(now, &mut f, AttemptOutcome::Reset, Duration::ZERO, &mut rng);
    assert!(matches!(n, Next::Retry { .. }), "{n:?}");
    up.finish(&mut f);
    let post = RouteInput {
        method: "POST",
        path: "/",
        headers: &[],
    };
    let mut f = forward(up.start(now, &post, &mut rng));
    let n = up.handle_outcome(now, &mut f, AttemptOutcome::Reset, Duration::ZERO, &mut rng);
    assert_eq!(
        n,
        Next::Done,
        "a POST may have been applied; never resend it by default"
    );
}

#[test]
fn a_tcp_connection_moves_to_another_endpoint_after_a_connect_failure() {
    let mut up = Upstream::new("db");
    up.handle_endpoints("db", eps(&["a:1", "b:1"]));
    let mut rng = SplitMix64::new(8);
    let now = Instant::now();
    let mut f = forward(up.start_connection(now, &mut rng));
    let first = f.endpoint.clone();
    assert!(up.handle_connect_result(now, &mut f, false, &mut rng));
    assert_ne!(f.endpoint, first);
    assert!(
        !up.handle_connect_result(now, &mut f, false, &mut rng),
        "one retry only"
    );
    up.finish(&mut f);
    match up.start_connection(now, &mut rng) {
        Start::Reply(r) => assert_eq!((r.status, r.flags), (503, "UH")),
        other => panic!("both endpoints failed and are ejected: {other:?}"),
    }
}

#[test]
fn traffic_stays_in_the_nearest_tier_fails_over_when_it_is_ejected_and_returns() {
    let mut up = Upstream::new("api");
    up.handle_ranked_endpoints(
        "api",
        vec![
            (EndpointId::new("zone-a:1"), 0),
            (EndpointId::new("zone-b:1"), 1),
            (EndpointId::new("region-2:1"), 2),
        ],
    );
    let mut rng = SplitMix64::new(11);
    let now = Instant::now();
    let pick = |up: &mut Upstream, at: Instant, rng: &mut SplitMix64| {
        let mut f = forward(up.start(at, &get("/"), rng));
        up.finish(&mut f);
        f.endpoint.as_str().to_owned()
    };
    for _ in 0..20 {
        assert_eq!(pick(&mut up, now, &mut rng), "zone-a:1");
    }
    // zone a's endpoint fails to connect: ejected; the retry and every request go to zone b.
    let mut f = forward(up.start(now, &get("/"), &mut rng));
    let n = up.handle_outcome(
        now,
        &mut f,
        AttemptOutcome::ConnectFailure,
        Duration::ZERO,
        &mut rng,
    );
    assert!(matches!(n, Next::Retry { .. }));
    assert_eq!(f.endpoint.as_str(), "zone-b:1");
    up.finish(&mut f);
    for _ in 0..20 {
        assert_eq!(pick(&mut up, now, &mut rng), "zone-b:1");
    }
    // After the ejection time zone a is back and takes the traffic again.
    let later = now + Duration::from_secs(31);
    assert_eq!(pick(&mut up, later, &mut rng), "zone-a:1");
}
