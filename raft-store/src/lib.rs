//! openraft 0.9 storage (storage-v2) for the control plane's Raft group, on one sled database.
//!
//! This crate owns durability: the vote, the log, the committed log id, the applied state
//! machine and the latest snapshot, and when each of them reaches the disk. It does not own the
//! rules for changing the mesh state (`mesh_core::state::MeshState` does), the wire encoding
//! (`mesh_proto::codec` does), or the network, the `Raft` instance and linearizable reads
//! (`mesh-node` does).
//!
//! ```text
//!             openraft core task
//!          |                        |
//!   append/vote/commit        apply/snapshot
//!          v                        v
//!      LogStore               StateMachineStore ---> StateHandle (API reads, watch)
//!  trees raft_log, raft_meta      tree state_machine
//!          \________ one sled::Db ______/
//! ```
//!
//! Durability contract: a vote is fsynced before `save_vote` returns; appended entries are
//! fsynced before the `LogFlushed` callback fires; the applied state is fsynced before `apply`
//! and `install_snapshot` return. sled 0.34 is the backend for now (DESIGN §12 notes its
//! problems); every sled call lives in this crate behind the openraft traits, so swapping it
//! touches no other crate.

mod disk;
mod log_store;
mod state_machine;

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use mesh_proto::codec::CodecError;
use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use state_machine::{Applied, SnapshotBuilder, StateHandle, StateMachineStore};

/// Raft node metadata: what every member needs to reach a control node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlNode {
    pub name: String,
    pub raft_addr: String,
    pub api_addr: String,
}

impl fmt::Display for ControlNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (raft {}, api {})",
            self.name, self.raft_addr, self.api_addr
        )
    }
}

openraft::declare_raft_types!(
    /// The control plane's Raft types: mesh commands in, command responses out.
    pub TypeConfig:
        D = mesh_proto::command::Command,
        R = mesh_proto::command::CommandResponse,
        NodeId = u64,
        Node = ControlNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// Why the Raft store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the raft store at {}: {source}; check that the directory is writable and \
         that no other meshd process is using it",
        path.display()
    )]
    Open { path: PathBuf, source: sled::Error },
    #[error(
        "raft store i/o failed: {0}; check free space and the health of the disk holding the \
         data directory"
    )]
    Io(#[from] sled::Error),
    #[error(
        "raft store cannot {op} its {what}: {source}; the data directory is damaged or was \
         written by an incompatible meshd: move it aside and rejoin the cluster to resync from \
         the leader"
    )]
    Codec {
        op: &'static str,
        what: &'static str,
        source: CodecError,
    },
    #[error(
        "raft store format {found} is not supported (this meshd reads format {supported}); run \
         the meshd version that wrote this data directory"
    )]
    Format { found: u64, supported: u64 },
    #[error(
        "snapshot {snapshot_id} claims to cover {claimed} but its data covers {actual}; the \
         snapshot was not installed: the sender's store is inconsistent"
    )]
    SnapshotMismatch {
        snapshot_id: String,
        claimed: String,
        actual: String,
    },
    #[error(
        "raft store is missing its {what}; the data directory is damaged: move it aside and \
         rejoin the cluster to resync from the leader"
    )]
    Missing { what: &'static str },
    #[error("raft store background task failed: {0}; this is a bug, please report it")]
    Task(String),
}

/// Opens (creating if needed) the sled database under `dir`. Returns the log store and the state
/// machine store, sharing one `sled::Db`.
///
/// The state machine is loaded from its last persisted applied state; openraft then re-applies
/// any committed entries after it.
pub async fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    let dir = dir.to_owned();
    // sled's open replays its log from disk: blocking work that must not stall a runtime worker.
    tokio::task::spawn_blocking(move || {
        let disk = disk::Disk::open(&dir)?;
        let log = LogStore::load(&disk)?;
        let sm = StateMachineStore::load(&disk)?;
        Ok((log, sm))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}
