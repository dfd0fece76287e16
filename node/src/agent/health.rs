//! Health checks of the local apps: per service, a TCP connect or an HTTP `GET` against the app
//! every `interval`, each bounded by `timeout`, published on a `watch` channel that the catalog
//! registration follows.
//!
//! ```text
//!  every interval: probe(app, timeout) ─► Health::{Passing, Failing{reason}} ─► watch (on change)
//!                                                                    └─► catalog::register_forever
//! ```
//!
//! The verdict is the last probe's: one failure marks the endpoint unhealthy and one success
//! marks it healthy again, like Consul's default. This module does not decide what an unhealthy
//! endpoint means for traffic (`mesh_core::endpoints` does) and never touches the proxies, so a
//! slow app cannot stall serving.

use std::net::SocketAddr;

use mesh_proto::ServiceName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::config::{HealthCheck, Probe};

/// Most bytes of an HTTP answer read to find its status line.
const MAX_STATUS_LINE: usize = 1024;

/// What the agent knows of a local app's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    /// No check has finished yet.
    Unknown,
    Passing,
    Failing {
        reason: String,
    },
}

/// Check `app` forever, publishing every change of verdict on `tx`.
pub(crate) async fn check_forever(
    service: ServiceName,
    app: SocketAddr,
    check: HealthCheck,
    tx: watch::Sender<Health>,
) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let next = match probe(app, &check).await {
            Ok(()) => Health::Passing,
            Err(reason) => Health::Failing { reason },
        };
        let changed = tx.send_if_modified(|h| {
            let changed = *h != next;
            *h = next.clone();
            changed
        });
        if changed {
            match &next {
                Health::Failing { reason } => {
                    tracing::warn!(%service, %app, %reason, "health check fails");
                }
                _ => tracing::info!(%service, %app, "health check passes"),
            }
        }
    }
}

/// One check, bounded by its timeout (connect included).
pub(crate) async fn probe(app: SocketAddr, check: &HealthCheck) -> Result<(), String> {
    let attempt = async {
        let mut tcp = TcpStream::connect(app)
            .await
            .map_err(|e| format!("cannot connect to {app}: {e}"))?;
        match &check.probe {
            Probe::Tcp => Ok(()),
            Probe::Http { path } => http_status(&mut tcp, app, path).await,
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(verdict) => verdict,
        Err(_) => Err(format!("no answer from {app} within {:?}", check.timeout)),
    }
}

/// Send `GET path` and judge the status line: 200 to 399 passes.
async fn http_status(tcp: &mut TcpStream, app: SocketAddr, path: &str) -> Result<(), String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {app}\r\nuser-agent: meshfed-health\r\nconnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the check to {app}: {e}"))?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        if buf.len() >= MAX_STATUS_LINE {
            return Err(format!(
                "{app} sent no HTTP status line in {MAX_STATUS_LINE} bytes"
            ));
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the answer of {app}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "{app} closed the connection without an HTTP answer"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    judge_status_line(&buf)
}

fn judge_status_line(head: &[u8]) -> Result<(), String> {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let status = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(status))) if v.starts_with("HTTP/") => status,
        _ => return Err(format!("not an HTTP status line: {line:?}")),
    };
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn status_lines_pass_from_200_to_399() {
        for (line, ok) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], true),
            (b"HTTP/1.1 302 Found\r\n", true),
            (b"HTTP/1.0 404 Not Found\r\n", false),
            (b"HTTP/1.1 503 Service Unavailable\r\n", false),
            (b"SSH-2.0-OpenSSH\r\n", false),
            (b"HTTP/1.1 abc\r\n", false),
        ] {
            assert_eq!(judge_status_line(line).is_ok(), ok, "{line:?}");
        }
    }

    /// Serve one canned answer per connection on a loopback port.
    async fn app(answer: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn probes_pass_fail_and_time_out() {
        let http = |path: &str| HealthCheck {
            probe: Probe::Http { path: path.into() },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(300),
        };
        let ok = app("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(probe(ok, &http("/healthz")).await, Ok(()));
        assert_eq!(probe(ok, &HealthCheck::default()).await, Ok(()));
        let bad = app("HTTP/1.1 500 Oops\r\n\r\n").await;
        assert_eq!(
            probe(bad, &http("/healthz")).await,
            Err("GET answered 500".into())
        );
        // A listener that accepts but never answers: the timeout bounds the check.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let err = probe(silent_addr, &http("/")).await.unwrap_err();
        assert!(err.contains("within 300ms"), "{err}");
        drop(silent);
        let err = probe(silent_addr, &HealthCheck::default())
            .await
            .unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
    }
}
