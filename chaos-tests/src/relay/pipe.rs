//! The byte pumps of one relayed connection: per direction, a reader thread feeding a bounded
//! queue and a writer that delivers each chunk once it is due and the link is not partitioned.
//!
//! It owns no policy: the fault switches and bounds come from the relay's `Shared`. An EOF is
//! passed on as a half-close; an error, `sever` or shutdown closes both sockets.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::Instant;

use super::{POLL, Shared};

enum Chunk {
    Data {
        read_at: Instant,
        bytes: Vec<u8>,
    },
    /// The source failed: close the connection.
    Reset,
}

enum End {
    /// The source closed cleanly: half-close the destination.
    Eof,
    /// Close both sockets.
    Reset,
}

/// Relays until both directions end.
pub(super) fn run(
    client: TcpStream,
    server: TcpStream,
    generation: u64,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    for stream in [&client, &server] {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        // Timeouts let blocked threads notice faults, sever and shutdown.
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(POLL))?;
    }
    let upstream = {
        let (src, dst) = (client.try_clone()?, server.try_clone()?);
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name("relay-up".to_owned())
            .spawn(move || direction(&src, &dst, generation, &shared))?
    };
    direction(&server, &client, generation, shared);
    let _ = upstream.join();
    Ok(())
}

fn direction(src: &TcpStream, dst: &TcpStream, generation: u64, shared: &Arc<Shared>) {
    let (tx, rx) = mpsc::sync_channel(shared.options.queue_chunks.max(1));
    let reader = src.try_clone().and_then(|src| {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name("relay-read".to_owned())
            .spawn(move || read_side(&src, &tx, generation, &shared))
    });
    let end = match reader {
        Ok(_) => write_side(dst, &rx, generation, shared),
        Err(_) => End::Reset,
    };
    match end {
        End::Eof => {
            let _ = dst.shutdown(Shutdown::Write);
        }
        End::Reset => {
            let _ = src.shutdown(Shutdown::Both);
            let _ = dst.shutdown(Shutdown::Both);
        }
    }
    // Dropping the queue unblocks a reader waiting for space in it.
    drop(rx);
    if let Ok(reader) = reader {
        let _ = reader.join();
    }
}

fn read_side(src: &TcpStream, tx: &SyncSender<Chunk>, generation: u64, shared: &Shared) {
    let mut buf = vec![0; shared.options.chunk_bytes.max(1)];
    while !shared.closing(generation) {
        if shared.faults().partitioned {
            shared.wait_change(POLL);
            continue;
        }
        match (&*src).read(&mut buf) {
            // EOF: dropping `tx` tells the writer.
            Ok(0) => return,
            Ok(n) => {
                let chunk = Chunk::Data {
                    read_at: Instant::now(),
                    bytes: buf[..n].to_vec(),
                };
                if tx.send(chunk).is_err() {
                    return;
                }
            }
            Err(err) if transient(&err) => {}
            Err(_) => {
                let _ = tx.send(Chunk::Reset);
                return;
            }
        }
    }
}

fn write_side(dst: &TcpStream, rx: &Receiver<Chunk>, generation: u64, shared: &Shared) -> End {
    loop {
        if shared.closing(generation) {
            return End::Reset;
        }
        let (read_at, bytes) = match rx.recv_timeout(POLL) {
            Ok(Chunk::Data { read_at, bytes }) => (read_at, bytes),
            Ok(Chunk::Reset) => return End::Reset,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) if shared.closing(generation) => return End::Reset,
            Err(RecvTimeoutError::Disconnected) => return End::Eof,
        };
        if !wait_until_due(read_at, generation, shared)
            || write_all(dst, &bytes, generation, shared).is_err()
        {
            return End::Reset;
        }
    }
}

/// Waits until the link is up and `read_at + delay` has passed; false if the connection must
/// close instead.
fn wait_until_due(read_at: Instant, generation: u64, shared: &Shared) -> bool {
    while !shared.closing(generation) {
        let faults = shared.faults();
        if faults.partitioned {
            shared.wait_change(POLL);
            continue;
        }
        let now = Instant::now();
        let due = read_at + faults.delay;
        if now >= due {
            return true;
        }
        shared.wait_change(due - now);
    }
    false
}

/// Writes all of `bytes`, pausing while partitioned.
fn write_all(dst: &TcpStream, bytes: &[u8], generation: u64, shared: &Shared) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        if shared.closing(generation) {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if shared.faults().partitioned {
            shared.wait_change(POLL);
            continue;
        }
        match (&*dst).write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(err) if transient(&err) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
