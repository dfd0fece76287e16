//! Services-file parsing: accepted files, and every problem reported with its field.

use super::*;

fn problems(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Err(ParseError::Invalid(p)) => p,
        Err(ParseError::Syntax(m)) => panic!("syntax error instead of problems: {m}"),
        Ok(c) => panic!("accepted: {c:?}"),
    }
}

#[test]
fn a_full_file_parses() {
    let c = parse(
        "services:\n  - name: api\n    port: 8080\n    inbound: 127.0.3.2:15006\n    \
         locality: {region: r1, zone: a}\n    upstreams:\n      - service: web\n        \
         listen: 127.0.0.1:9001\n        endpoints: [\"127.0.3.3:15006\"]\n",
    )
    .ok()
    .unwrap();
    let s = &c.services[0];
    assert_eq!(s.name.as_str(), "api");
    assert_eq!(s.app.to_string(), "127.0.0.1:8080");
    assert_eq!(s.locality.region, "r1");
    assert_eq!(s.upstreams[0].endpoints[0].to_string(), "127.0.3.3:15006");
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let p = problems(
        "services:\n  - name: Api\n    port: 0\n    inbound: nowhere\n    \
         locality: {zone: a}\n    health: {http: health, interval: 1h2s}\n    \
         upstreams:\n      - service: web\n        listen: 10.0.0.1:9001\n        \
         endpoints: [nowhere]\n",
    );
    let joined = p.join("\n");
    for field in [
        "services[0].name",
        "services[0].port",
        "services[0].inbound",
        "services[0].locality.zone",
        "services[0].health.http",
        "services[0].health.interval",
        "services[0].upstreams[0].listen",
        "services[0].upstreams[0].endpoints[0]",
    ] {
        assert!(joined.contains(field), "{field} not reported in:\n{joined}");
    }
}

#[test]
fn duplicates_are_refused() {
    let p = problems(
        "services:\n  - {name: a, port: 1, inbound: 127.0.0.1:5}\n  \
         - {name: a, port: 2, inbound: 127.0.0.1:5}\n",
    );
    assert!(p.iter().any(|m| m.contains("listed twice")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("used twice")), "{p:?}");
}

#[test]
fn unknown_fields_are_syntax_errors() {
    assert!(matches!(
        parse("services:\n  - {name: a, port: 1, inbound: 127.0.0.1:5, prot: 2}\n"),
        Err(ParseError::Syntax(_))
    ));
}

#[test]
fn health_defaults_to_a_tcp_connect_and_reads_http_checks() {
    let c = parse(
        "services:\n  - {name: a, port: 1, inbound: 127.0.0.1:5}\n  \
         - {name: b, port: 2, inbound: 127.0.0.1:6, health: {http: /healthz, interval: 500ms}}\n  \
         - {name: c, port: 3, inbound: 127.0.0.1:7, health: {tcp: true, timeout: 2s, interval: 5s}}\n",
    )
    .ok()
    .unwrap();
    assert_eq!(c.services[0].health, HealthCheck::default());
    assert_eq!(
        c.services[1].health,
        HealthCheck {
            probe: Probe::Http {
                path: "/healthz".into()
            },
            interval: std::time::Duration::from_millis(500),
            // The default timeout is capped at the interval.
            timeout: std::time::Duration::from_millis(500),
        }
    );
    assert_eq!(c.services[2].health.timeout.as_secs(), 2);
    assert!(c.services[0].upstreams.is_empty());
}

#[test]
fn contradictory_health_blocks_are_refused_with_their_field() {
    for (block, field, fragment) in [
        ("{http: /h, tcp: true}", "health", "not both"),
        ("{tcp: false}", "health.tcp", "not a check"),
        (
            "{interval: 1s, timeout: 2s}",
            "health.timeout",
            "longer than the interval",
        ),
        ("{interval: 10ms}", "health.interval", "out of range"),
        ("{interval: 5}", "health.interval", "unit"),
    ] {
        let p = problems(&format!(
            "services:\n  - {{name: a, port: 1, inbound: 127.0.0.1:5, health: {block}}}\n"
        ));
        let want = format!("services[0].{field}: ");
        assert!(
            p.iter()
                .any(|m| m.starts_with(&want) && m.contains(fragment)),
            "{block}: {p:?}"
        );
    }
}

#[test]
fn an_upstream_without_static_endpoints_is_left_to_the_catalog() {
    let c = parse(
        "services:\n  - name: a\n    port: 1\n    inbound: 127.0.0.1:5\n    upstreams:\n      \
         - {service: web, listen: 127.0.0.1:9001}\n",
    )
    .ok()
    .unwrap();
    assert!(c.services[0].upstreams[0].endpoints.is_empty());
}
