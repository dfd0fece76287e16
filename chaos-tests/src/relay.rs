//! A userspace TCP relay for network faults between real processes (reliability §6: netem is
//! missing on this machine kind, so delay and partitions are done in userspace, as etcd's
//! robustness proxies do).
//!
//! A [`Relay`] listens on one address and forwards every accepted connection to a target
//! address. Its [`RelayControl`] (cheap to clone, shareable across threads) injects faults:
//!
//! ```text
//!   client ──► listen ──► [reader] ─► bounded queue ─► [writer] ──► target
//!           ◄──────────── [writer] ◄─ bounded queue ◄─ [reader] ◄──
//!
//!   partition(true)  new connections are accepted and closed at once; existing ones stall
//!                    (nothing is read or written, so TCP backpressure builds up)
//!   delay(d)         each chunk is delivered d after it was read, in order
//!   sever()          every existing connection is closed (FIN, not RST: std has no SO_LINGER)
//! ```
//!
//! It uses plain std threads (four per connection) with bounded queues and a connection cap. It
//! does not do UDP/QUIC, loss, reordering or bandwidth limits; those belong to a datagram relay.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context as _;

mod pipe;

/// One listening relay; dropping it closes the listener and every relayed connection.
#[derive(Debug)]
pub struct Relay {
    local: SocketAddr,
    target: SocketAddr,
    control: RelayControl,
    accept: Option<JoinHandle<()>>,
}

/// The fault switches of one relay.
#[derive(Debug, Clone)]
pub struct RelayControl {
    shared: Arc<Shared>,
}

/// Bounds of one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// Connections relayed at once; further ones are accepted and closed.
    pub max_connections: usize,
    /// Largest read, and so largest queued chunk.
    pub chunk_bytes: usize,
    /// Chunks queued per direction per connection.
    pub queue_chunks: usize,
    /// Deadline for connecting to the target.
    pub connect_timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    faults: Mutex<Faults>,
    changed: Condvar,
    shutdown: AtomicBool,
    /// Bumped by `sever`; connections from an older generation close.
    generation: AtomicU64,
    active: AtomicUsize,
    options: RelayOptions,
}

#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    partitioned: bool,
    delay: Duration,
}

/// How often blocked threads look at the fault switches and the shutdown flag.
const POLL: Duration = Duration::from_millis(20);

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            max_connections: 256,
            chunk_bytes: 16 * 1024,
            queue_chunks: 64,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl Relay {
    /// Relays `listen` (port 0 picks a free port) to `target` with default options.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Relay> {
        Relay::start_with(listen, target, RelayOptions::default())
    }

    pub fn start_with(
        listen: SocketAddr,
        target: SocketAddr,
        options: RelayOptions,
    ) -> anyhow::Result<Relay> {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("relay: bind {listen}"))?;
        let local = listener
            .local_addr()
            .context("relay: read the bound address")?;
        // Non-blocking so the accept loop can notice shutdown.
        listener
            .set_nonblocking(true)
            .context("relay: make the listener non-blocking")?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            options,
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("relay-{local}"))
                .spawn(move || accept_loop(&listener, target, &shared))
                .context("relay: spawn the accept thread")?
        };
        Ok(Relay {
            local,
            target,
            control: RelayControl { shared },
            accept: Some(accept),
        })
    }

    /// The address clients should connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn control(&self) -> RelayControl {
        self.control.clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.control.shared.shutdown.store(true, Ordering::SeqCst);
        self.control.shared.changed.notify_all();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl RelayControl {
    /// Partitions (`true`) or heals (`false`) the link; see the module docs.
    pub fn partition(&self, on: bool) {
        self.shared.update(|f| f.partitioned = on);
    }

    /// Delays every chunk not yet delivered by `delay` from when it was read.
    pub fn delay(&self, delay: Duration) {
        self.shared.update(|f| f.delay = delay);
    }

    /// Closes every connection relayed so far; new ones are unaffected.
    pub fn sever(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        self.shared.changed.notify_all();
    }

    pub fn is_partitioned(&self) -> bool {
        self.shared.faults().partitioned
    }

    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn faults(&self) -> Faults {
        *self.lock()
    }

    fn update(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Sleeps until a switch changes or `timeout` passes.
    fn wait_change(&self, timeout: Duration) {
        let guard = self.lock();
        let _ = self.changed.wait_timeout(guard, timeout.min(POLL));
    }

    /// Whether a connection of `generation` must close now.
    fn closing(&self, generation: u64) -> bool {
        self.shutdown.load(Ordering::SeqCst) || self.generation.load(Ordering::SeqCst) != generation
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        // Faults is two plain fields, always consistent, so a poisoned lock is still usable.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shared.shutdown.load(Ordering::SeqCst) {
        connections.retain(|c| !c.is_finished());
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                // WouldBlock, or a transient error such as EMFILE: poll again shortly.
                shared.wait_change(POLL);
                continue;
            }
        };
        let full = shared.active.load(Ordering::SeqCst) >= shared.options.max_connections;
        if shared.faults().partitioned || full {
            drop(client);
            continue;
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("relay-conn".to_owned())
            .spawn(move || {
                relay_connection(client, target, &conn_shared);
                conn_shared.active.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => connections.push(handle),
            // The closure (and the client socket) was dropped; undo the count.
            Err(_) => {
                shared.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

fn relay_connection(client: TcpStream, target: SocketAddr, shared: &Arc<Shared>) {
    let generation = shared.generation.load(Ordering::SeqCst);
    let Ok(server) = TcpStream::connect_timeout(&target, shared.options.connect_timeout) else {
        // Target down: the client sees its connection closed.
        return;
    };
    let _ = pipe::run(client, server, generation, shared);
}

#[cfg(test)]
mod tests;
