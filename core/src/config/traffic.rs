//! Value checks of a `TrafficPolicy` spec: timeouts, retries and their budget, circuit breaker,
//! outlier detection, load balancing, rate limit and fault injection.
//!
//! Every knob here is optional; a policy that sets nothing is valid and changes nothing.

use mesh_proto::resource::{
    CircuitBreaker, FaultInjection, LoadBalancer, LoadBalancerPolicy, OutlierDetection, RateLimit,
    RetryPolicy, TrafficPolicySpec,
};

use super::Report;
use super::common::{header_name, positive_duration, service_ref};

/// Conditions `retries.retryOn` may name.
pub(super) const RETRY_ON: [&str; 5] = [
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "retriable-4xx",
];

/// Most attempts a request may take, the first included.
pub(super) const MAX_ATTEMPTS: u32 = 10;

pub(super) fn check(report: &mut Report, spec: &TrafficPolicySpec) {
    service_ref(report, "spec.targetRef", &spec.target_ref);
    if let Some(t) = &spec.timeouts {
        if let Some(request) = &t.request {
            positive_duration(report, "spec.timeouts.request", request);
        }
        if let Some(connect) = &t.connect {
            positive_duration(report, "spec.timeouts.connect", connect);
        }
    }
    if let Some(r) = &spec.retries {
        check_retries(report, r);
    }
    if let Some(cb) = &spec.circuit_breaker {
        check_circuit_breaker(report, cb);
    }
    if let Some(od) = &spec.outlier_detection {
        check_outlier_detection(report, od);
    }
    if let Some(lb) = &spec.load_balancer {
        check_load_balancer(report, lb);
    }
    if let Some(rl) = &spec.rate_limit {
        check_rate_limit(report, rl);
    }
    if let Some(fi) = &spec.fault_injection {
        check_fault_injection(report, fi);
    }
}

fn check_retries(report: &mut Report, r: &RetryPolicy) {
    if !(1..=MAX_ATTEMPTS).contains(&r.attempts) {
        report.add(
            "spec.retries.attempts",
            format!(
                "attempts {} is out of range; use 1 to {MAX_ATTEMPTS}",
                r.attempts
            ),
        );
    }
    if let Some(t) = &r.per_try_timeout {
        positive_duration(report, "spec.retries.perTryTimeout", t);
    }
    for (i, cond) in r.retry_on.iter().enumerate() {
        let at = format!("spec.retries.retryOn[{i}]");
        if !RETRY_ON.contains(&cond.as_str()) {
            report.add(
                at,
                format!(
                    "unknown retry condition {cond:?}; use one of {}",
                    RETRY_ON.join(", ")
                ),
            );
        } else if r.retry_on[..i].contains(cond) {
            report.add(
                at,
                format!("{cond:?} is listed twice; remove the duplicate"),
            );
        }
    }
    if let Some(b) = &r.budget
        && !(0.0..=1.0).contains(&b.ratio)
    {
        report.add(
            "spec.retries.budget.ratio",
            format!(
                "ratio {} is out of range; use 0.0 to 1.0, e.g. 0.2 for 20%",
                b.ratio
            ),
        );
    }
}

fn at_least_one(report: &mut Report, at: &str, value: Option<u32>) {
    if value == Some(0) {
        report.add(
            at,
            "0 is out of range; use 1 or more, or leave the field out for no limit",
        );
    }
}

fn check_circuit_breaker(report: &mut Report, cb: &CircuitBreaker) {
    at_least_one(
        report,
        "spec.circuitBreaker.maxConnections",
        cb.max_connections,
    );
    at_least_one(
        report,
        "spec.circuitBreaker.maxPendingRequests",
        cb.max_pending_requests,
    );
}

fn check_outlier_detection(report: &mut Report, od: &OutlierDetection) {
    at_least_one(
        report,
        "spec.outlierDetection.consecutive5xx",
        od.consecutive_5xx,
    );
    at_least_one(
        report,
        "spec.outlierDetection.consecutiveConnectFailures",
        od.consecutive_connect_failures,
    );
    if let Some(t) = &od.base_ejection_time {
        positive_duration(report, "spec.outlierDetection.baseEjectionTime", t);
    }
    if let Some(p) = od.max_ejection_percent.filter(|p| *p > 100) {
        report.add(
            "spec.outlierDetection.maxEjectionPercent",
            format!("{p} is out of range; use 0 to 100"),
        );
    }
}

fn check_load_balancer(report: &mut Report, lb: &LoadBalancer) {
    let at = "spec.loadBalancer.hashHeader";
    match (lb.policy, &lb.hash_header) {
        (LoadBalancerPolicy::ConsistentHash, None) => report.add(
            at,
            "policy consistentHash needs hashHeader; name the header to hash, e.g. x-user-id",
        ),
        (LoadBalancerPolicy::ConsistentHash, Some(h)) => {
            if let Err(why) = header_name(h) {
                report.add(at, format!("header name {h:?} {why}"));
            }
        }
        (_, Some(_)) => report.add(
            at,
            "hashHeader applies only to policy consistentHash; remove it or set policy: \
             consistentHash",
        ),
        (_, None) => {}
    }
}

fn check_rate_limit(report: &mut Report, rl: &RateLimit) {
    if rl.requests_per_second == 0 {
        report.add(
            "spec.rateLimit.requestsPerSecond",
            "requestsPerSecond 0 would refuse every request; use 1 or more",
        );
    }
    if rl.burst == Some(0) {
        report.add(
            "spec.rateLimit.burst",
            "burst 0 would refuse every request; use 1 or more, or leave it out",
        );
    }
}

fn percent(report: &mut Report, at: &str, value: f64) {
    if !(0.0..=100.0).contains(&value) {
        report.add(at, format!("percent {value} is out of range; use 0 to 100"));
    }
}

fn check_fault_injection(report: &mut Report, fi: &FaultInjection) {
    if let Some(d) = &fi.delay {
        percent(report, "spec.faultInjection.delay.percent", d.percent);
        positive_duration(report, "spec.faultInjection.delay.duration", &d.duration);
    }
    if let Some(a) = &fi.abort {
        percent(report, "spec.faultInjection.abort.percent", a.percent);
        if !(200..=599).contains(&a.status) {
            report.add(
                "spec.faultInjection.abort.status",
                format!(
                    "status {} is out of range; use an HTTP status from 200 to 599",
                    a.status
                ),
            );
        }
    }
}
