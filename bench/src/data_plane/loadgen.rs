//! The open-loop HTTP/1.1 load generator every data-plane configuration is measured with: a
//! fixed request rate spread evenly over a few keep-alive connections, one blocking thread per
//! connection, latency timed from each request's *scheduled* send time so a slow response that
//! delays the next send is charged to the path, not hidden (no coordinated omission).
//!
//! ```text
//!  connection k of C, rate R:  sends at t0 + k/R + i·C/R   (i = 0, 1, ...)
//!     sleep until the slot ─► write GET ─► read head + body ─► record done − slot
//!     (a late response makes the next slot already due: it is sent at once and charged)
//! ```
//!
//! Threads use `std::thread::sleep` (an hrtimer, ~50 µs slack) rather than tokio timers, whose
//! 1 ms granularity would swamp the figures. This module knows nothing about proxies, CPU or
//! reports; it returns sorted samples. It also offers [`probe`], one bounded GET used to wait
//! for a path to be ready.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Largest response head or body the generator accepts.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Per-read deadline on a connection; a stuck path fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past the planned end a backlogged connection may keep draining its schedule.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Reconnects one connection may make before its thread gives up.
const MAX_RECONNECTS: u32 = 100;

/// The workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) rate_per_s: u32,
    pub(crate) connections: u32,
    /// Sent at the same rate before the window and not recorded (connections, pools, TLS).
    pub(crate) warmup: Duration,
    pub(crate) window: Duration,
}

/// What one run recorded, over the measured window only.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    /// Scheduled send → last body byte, µs, sorted.
    pub(crate) from_schedule_us: Vec<f64>,
    /// Actual send → last body byte, µs, sorted (the service time alone).
    pub(crate) from_send_us: Vec<f64>,
    /// Actual send − scheduled send, µs, sorted (the generator's own lag).
    pub(crate) send_lag_us: Vec<f64>,
    /// Requests that failed (I/O error, non-200, wrong body length).
    pub(crate) errors: u64,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
}

impl Samples {
    pub(crate) fn extend(&mut self, other: Samples) {
        self.from_schedule_us.extend(other.from_schedule_us);
        self.from_send_us.extend(other.from_send_us);
        self.send_lag_us.extend(other.send_lag_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for v in [
            &mut self.from_schedule_us,
            &mut self.from_send_us,
            &mut self.send_lag_us,
        ] {
            v.sort_by(f64::total_cmp);
        }
    }
}

/// Quantile `q` of a sorted sample (nearest rank); NaN when empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Run `load` against `target`, expecting `200` with a body of `body_len` bytes. `probe` is
/// called right at the start and right at the end of the measured window (for CPU counters);
/// both values are returned with the samples.
pub(crate) fn run<P>(
    target: SocketAddr,
    body_len: usize,
    load: Load,
    mut probe: impl FnMut() -> P,
) -> anyhow::Result<(Samples, P, P)> {
    anyhow::ensure!(
        load.rate_per_s > 0 && load.connections > 0,
        "rate and connections must be positive"
    );
    let slot = Duration::from_secs_f64(1.0 / f64::from(load.rate_per_s));
    let per_conn_interval = slot * load.connections;
    let total = load.warmup + load.window;
    let per_conn = (total.as_secs_f64() / per_conn_interval.as_secs_f64()).ceil() as u64;
    // Connect everything first, so the schedule starts on warm sockets.
    let mut streams = Vec::new();
    for _ in 0..load.connections {
        streams.push(connect(target)?);
    }
    let t0 = Instant::now() + Duration::from_millis(20);
    let window_start = t0 + load.warmup;
    let window_end = window_start + load.window;
    let plan = ConnPlan {
        target,
        body_len,
        interval: per_conn_interval,
        count: per_conn,
        window_start,
        window_end,
        give_up_at: window_end + DRAIN_GRACE,
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(k, stream)| {
                let first = t0 + slot * k as u32;
                s.spawn(move || plan.drive(stream, first))
            })
            .collect();
        sleep_until(window_start);
        let before = probe();
        sleep_until(window_end);
        let after = probe();
        let mut all = Samples::default();
        for h in handles {
            match h.join() {
                Ok(r) => all.extend(r),
                Err(_) => bail!("a load-generator thread panicked"),
            }
        }
        Ok((all, before, after))
    })
}

/// One GET with `connection: close`: status and body length, within 5 s.
pub(crate) fn probe(target: SocketAddr) -> anyhow::Result<(u16, usize)> {
    let mut s = connect(target)?;
    let req = format!("GET /probe HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf)
}

#[derive(Clone, Copy)]
struct ConnPlan {
    target: SocketAddr,
    body_len: usize,
    interval: Duration,
    count: u64,
    window_start: Instant,
    window_end: Instant,
    give_up_at: Instant,
}

impl ConnPlan {
    fn drive(self, mut stream: TcpStream, first: Instant) -> Samples {
        let mut out = Samples::default();
        let cap = (self.count as usize).min(1 << 20);
        out.from_schedule_us.reserve(cap);
        out.from_send_us.reserve(cap);
        out.send_lag_us.reserve(cap);
        let req = format!("GET /1k HTTP/1.1\r\nhost: {}\r\n\r\n", self.target);
        let mut buf = Vec::with_capacity(4096);
        let mut reconnects = 0;
        for i in 0..self.count {
            let slot = first + self.interval * i as u32;
            if slot >= self.window_end {
                break;
            }
            sleep_until(slot);
            let sent = Instant::now();
            if sent > self.give_up_at {
                note_error(&mut out, "schedule fell behind past the drain grace".into());
                break;
            }
            let res = stream
                .write_all(req.as_bytes())
                .map_err(anyhow::Error::from)
                .and_then(|()| read_response(&mut stream, &mut buf));
            let done = Instant::now();
            let ok = matches!(res, Ok((200, n)) if n == self.body_len);
            if slot >= self.window_start {
                if ok {
                    out.from_schedule_us.push(us(done - slot));
                    out.from_send_us.push(us(done - sent));
                    out.send_lag_us.push(us(sent - slot));
                } else {
                    note_error(&mut out, format!("{res:?}"));
                }
            }
            if !ok || closed_by_peer(&buf) {
                reconnects += 1;
                match connect(self.target) {
                    Ok(s) if reconnects <= MAX_RECONNECTS => stream = s,
                    Ok(_) => break,
                    Err(e) => {
                        note_error(&mut out, format!("reconnect: {e:#}"));
                        break;
                    }
                }
            }
        }
        out
    }
}

fn note_error(out: &mut Samples, what: String) {
    out.errors += 1;
    if out.first_error.is_none() {
        out.first_error = Some(what);
    }
}

fn connect(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .with_context(|| format!("connect to {target}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// Read one response (content-length or chunked) into `buf`; returns status and body length.
/// `buf` keeps the head, so the caller can see `connection: close`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, usize)> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(buf.len() < MAX_RESPONSE_BYTES, "response head too large");
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut read_more = |s: &mut TcpStream, buf: &mut Vec<u8>| -> anyhow::Result<()> {
        anyhow::ensure!(buf.len() < MAX_RESPONSE_BYTES, "response too large");
        let n = s.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "connection closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    let body_len = match (length, chunked) {
        (Some(n), false) => {
            while buf.len() < head_end + n {
                read_more(s, buf)?;
            }
            n
        }
        (_, true) => loop {
            if let Some(n) = dechunked_len(&buf[head_end..]) {
                break n;
            }
            read_more(s, buf)?;
        },
        (None, false) => bail!("response has neither content-length nor chunked body"),
    };
    Ok((status, body_len))
}

/// Body length of a complete chunked body, or `None` while it is incomplete.
fn dechunked_len(mut b: &[u8]) -> Option<usize> {
    let mut total = 0;
    loop {
        let line_end = find(b, b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return find(b, b"\r\n").map(|_| total);
        }
        if b.len() < size + 2 {
            return None;
        }
        total += size;
        b = &b[size + 2..];
    }
}

fn closed_by_peer(buf: &[u8]) -> bool {
    let head_end = find(buf, b"\r\n\r\n").unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..head_end])
        .to_ascii_lowercase()
        .contains("connection: close")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_length_is_known_only_once_the_last_chunk_arrived() {
        assert_eq!(dechunked_len(b"4\r\nabcd\r\n"), None);
        assert_eq!(dechunked_len(b"4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"), Some(6));
    }

    #[test]
    fn quantile_is_nearest_rank_and_nan_when_empty() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
