//! The applied state machine and its snapshots: openraft's `RaftStateMachine` and
//! `RaftSnapshotBuilder` on the `state_machine` tree, plus [`StateHandle`], the API's read side.
//! It does not decide what a command does (`MeshState::apply` does) or order reads against the
//! leader (`mesh-node` does, with ReadIndex).
//!
//! ```text
//! apply(entries) --> MeshState::apply each, in memory (write lock)
//!                --> encode (last_applied, membership, StateData) once (read lock)
//!                --> insert "applied", fsync --> watch: Applied { log_index, config_version }
//! ```
//!
//! Persisting the whole state once per `apply` call costs O(state) per batch of entries. That is
//! fine for config-sized state (a few MB); a bigger state would want per-key writes, which this
//! narrow surface leaves room for. Readers may see an entry's effect a moment before it is
//! fsynced here; that is safe because the entry is already committed in the Raft log, and a
//! restart re-applies it.

#[cfg(test)]
mod tests;

use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use mesh_core::state::MeshState;
use mesh_proto::command::{CommandResponse, StateData};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use crate::disk::{self, Disk, to_storage};
use crate::{ControlNode, StoreError, TypeConfig};

/// The last applied log index and the config store version it produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub log_index: u64,
    pub config_version: u64,
}

/// The Raft state machine store. openraft owns it; the API reads through [`StateHandle`].
pub struct StateMachineStore {
    shared: Shared,
}

/// Read access to the applied state for the API, from any task.
#[derive(Clone)]
pub struct StateHandle {
    state: Arc<RwLock<AppliedState>>,
    watch: Arc<watch::Sender<Applied>>,
}

/// Builds snapshots concurrently with `apply`: a cheap clone of the store's shared parts.
#[derive(Clone)]
pub struct SnapshotBuilder {
    shared: Shared,
}

#[derive(Clone)]
struct Shared {
    disk: Disk,
    state: Arc<RwLock<AppliedState>>,
    watch: Arc<watch::Sender<Applied>>,
    /// Serialises "replace the stored snapshot unless it is newer" between a builder and
    /// `install_snapshot`, so an old build finishing late cannot overwrite a newer snapshot.
    snapshot_lock: Arc<Mutex<()>>,
}

/// What the "applied" key and every snapshot hold.
#[derive(Default)]
struct AppliedState {
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, ControlNode>,
    mesh: MeshState,
}

/// Who is storing a snapshot, which decides whether it may replace the stored one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SnapshotWrite {
    /// A local build: kept only if no newer snapshot was stored meanwhile.
    Built,
    /// From the leader: replaces the stored snapshot and becomes the applied state.
    Installed,
}

/// [`AppliedState`] as encoded on disk and in snapshots.
type AppliedRecord = (
    Option<LogId<u64>>,
    StoredMembership<u64, ControlNode>,
    StateData,
);

impl StateMachineStore {
    /// Blocking: loads the last persisted applied state.
    pub(crate) fn load(disk: &Disk) -> Result<Self, StoreError> {
        let state = match disk::read::<AppliedRecord>(&disk.sm, disk::KEY_APPLIED, "applied state")?
        {
            Some(record) => AppliedState::from_record(record),
            None => AppliedState::default(),
        };
        let (watch, _) = watch::channel(state.applied());
        let shared = Shared {
            disk: disk.clone(),
            state: Arc::new(RwLock::new(state)),
            watch: Arc::new(watch),
            snapshot_lock: Arc::new(Mutex::new(())),
        };
        Ok(StateMachineStore { shared })
    }

    pub fn handle(&self) -> StateHandle {
        StateHandle {
            state: self.shared.state.clone(),
            watch: self.shared.watch.clone(),
        }
    }
}

impl StateHandle {
    /// Runs `f` on the applied state under a read lock. Keep `f` short: `apply` waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&MeshState) -> R) -> R {
        f(&read_lock(&self.state).mesh)
    }

    /// Changes whenever a log entry is applied or a snapshot installed: (last applied log index,
    /// config version).
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.watch.subscribe()
    }

    /// The current (last applied log index, config version).
    pub fn applied(&self) -> Applied {
        *self.watch.borrow()
    }
}

impl AppliedState {
    fn from_record((last_applied, last_membership, data): AppliedRecord) -> Self {
        AppliedState {
            last_applied,
            last_membership,
            mesh: MeshState::from_data(data),
        }
    }

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        disk::encode(
            &(&self.last_applied, &self.last_membership, self.mesh.data()),
            "applied state",
        )
    }

    fn applied(&self) -> Applied {
        Applied {
            log_index: self.last_applied.map_or(0, |l| l.index),
            config_version: self.mesh.version(),
        }
    }
}

/// A poisoned lock means a panic inside `MeshState::apply` or a reader's closure. The state the
/// lock guards is still the best answer readers have, and the panic has already taken the Raft
/// core down, so recover the guard rather than spread the panic to every API task.
fn read_lock<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn apply_in_memory(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Vec<CommandResponse> {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let mut responses = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Normal(cmd) => st.mesh.apply(&cmd),
                EntryPayload::Membership(m) => {
                    st.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResponse::None
                }
            };
            responses.push(response);
        }
        responses
    }

    /// Writes the in-memory state to the "applied" key and fsyncs.
    async fn persist_applied(&self) -> Result<(), StoreError> {
        let bytes = read_lock(&self.state).encode()?;
        self.disk.sm.insert(disk::KEY_APPLIED, bytes)?;
        self.disk.flush().await
    }

    fn notify(&self) {
        let applied = read_lock(&self.state).applied();
        self.watch.send_replace(applied);
    }

    /// Stores `data` as the current snapshot, as `write` allows. An installed snapshot's bytes
    /// also become the applied state, in the same atomic batch.
    async fn store_snapshot(
        &self,
        meta: &SnapshotMeta<u64, ControlNode>,
        data: Vec<u8>,
        write: SnapshotWrite,
    ) -> Result<(), StoreError> {
        let data = sled::IVec::from(data);
        {
            let _guard = self
                .snapshot_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let stored: Option<SnapshotMeta<u64, ControlNode>> =
                disk::read(&self.disk.sm, disk::KEY_SNAPSHOT_META, "snapshot metadata")?;
            if write == SnapshotWrite::Built
                && stored.is_some_and(|s| s.last_log_id > meta.last_log_id)
            {
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            batch.insert(
                disk::KEY_SNAPSHOT_META,
                disk::encode(meta, "snapshot metadata")?,
            );
            batch.insert(disk::KEY_SNAPSHOT_DATA, data.clone());
            if write == SnapshotWrite::Installed {
                batch.insert(disk::KEY_APPLIED, data);
            }
            self.disk.sm.apply_batch(batch)?;
        }
        self.disk.flush().await
    }

    async fn build(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        let (data, last_log_id, last_membership) = {
            let st = read_lock(&self.state);
            (st.encode()?, st.last_applied, st.last_membership.clone())
        };
        // sled's id generator is monotonic across restarts, so ids never repeat.
        let counter = self.disk.db.generate_id()?;
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{counter}", l.leader_id.term, l.index),
            None => format!("none-{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        self.store_snapshot(&meta, data.clone(), SnapshotWrite::Built)
            .await?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built a raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    async fn install(
        &self,
        meta: &SnapshotMeta<u64, ControlNode>,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let record: AppliedRecord = disk::decode(&data, "received snapshot")?;
        if record.0 != meta.last_log_id || record.1 != meta.last_membership {
            return Err(StoreError::SnapshotMismatch {
                snapshot_id: meta.snapshot_id.clone(),
                claimed: format!("{:?} {}", meta.last_log_id, meta.last_membership),
                actual: format!("{:?} {}", record.0, record.1),
            });
        }
        // Disk first: if the write fails, memory still matches the disk.
        self.store_snapshot(meta, data, SnapshotWrite::Installed)
            .await?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) =
            AppliedState::from_record(record);
        self.notify();
        tracing::info!(snapshot = %meta, "installed a raft snapshot");
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let Some(meta) = disk::read(&self.disk.sm, disk::KEY_SNAPSHOT_META, "snapshot metadata")?
        else {
            return Ok(None);
        };
        let data = self
            .disk
            .sm
            .get(disk::KEY_SNAPSHOT_DATA)?
            .ok_or(StoreError::Missing {
                what: "snapshot data",
            })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        self.shared
            .build()
            .await
            .map_err(|e| to_storage(|a| StorageIOError::write_snapshot(None, a), e))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, ControlNode>), StorageError<u64>> {
        let st = read_lock(&self.shared.state);
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let responses = self.shared.apply_in_memory(entries);
        if responses.is_empty() {
            return Ok(responses);
        }
        self.shared
            .persist_applied()
            .await
            .map_err(|e| to_storage(StorageIOError::write_state_machine, e))?;
        self.shared.notify();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, ControlNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let signature = meta.signature();
        self.shared
            .install(meta, snapshot.into_inner())
            .await
            .map_err(|e| to_storage(|a| StorageIOError::write_snapshot(Some(signature), a), e))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        self.shared
            .current_snapshot()
            .map_err(|e| to_storage(|a| StorageIOError::read_snapshot(None, a), e))
    }
}
