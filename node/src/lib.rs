//! The meshd daemon and the meshctl CLI: every piece of I/O in meshfed's control plane.
//!
//! This crate turns sockets, files, signals and clocks into calls on `mesh-core` decisions and
//! `openraft`, and back. It holds no policy of its own: validation, identity rules and the state
//! machine live in `mesh-core`; storage in `mesh-raft-store`.

pub mod agent;
pub mod api;
mod backoff;
pub mod client;
pub mod clock;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod demo_app;
pub mod gateway;
pub mod gossip;
pub mod manifest;
pub mod paths;
pub mod proposer;
pub mod raft_net;
pub mod signals;
pub mod token;

/// Install the one rustls crypto provider (ring) for the process. Every config in meshfed names
/// its provider explicitly too; this guards any library default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Run a binary's async main on a fresh runtime and turn its result into an exit code:
/// the `Ok` code, or 1 with `error: <chain>` on stderr.
pub fn block_on_main<F>(multi_thread: bool, main: F) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<u8>>,
{
    let built = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Log to stderr, plain or JSON, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}
