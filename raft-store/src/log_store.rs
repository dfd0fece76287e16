//! The Raft log and vote: openraft's `RaftLogStorage` and `RaftLogReader` on the `raft_log` and
//! `raft_meta` trees. It does not apply entries; `StateMachineStore` does.
//!
//! Every write that openraft relies on for safety is fsynced before openraft learns of it:
//!
//! ```text
//! save_vote:  insert vote  -> fsync -> return
//! append:     one Batch of entries (atomic) -> fsync -> LogFlushed(Ok) -> return
//! truncate:   one Batch removing [index, ..) (atomic, so no hole) -> fsync
//! purge:      insert last_purged -> fsync -> Batch removing (.., index] -> fsync
//! ```
//!
//! A purge's two writes are in different trees, so no sled batch covers both. The fsync between
//! them means the removals can never outlive a lost `last_purged` (which would look like a hole
//! at the start of the log); a crash between them leaves stale entries at or below
//! `last_purged`, which `load` removes.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};

use crate::disk::{self, Disk, index_key, to_storage};
use crate::{StoreError, TypeConfig};

/// The Raft log store. Cloning is cheap and every clone sees the same log, so a clone serves as
/// openraft's `LogReader` for replication tasks.
#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
}

impl LogStore {
    /// Blocking: wraps the opened database and finishes any purge a crash interrupted.
    pub(crate) fn load(disk: &Disk) -> Result<Self, StoreError> {
        let store = LogStore { disk: disk.clone() };
        if let Some(purged) = store.last_purged()? {
            store.remove_up_to(purged.index)?;
            disk.db.flush()?;
        }
        Ok(store)
    }

    fn last_purged(&self) -> Result<Option<LogId<u64>>, StoreError> {
        disk::read(&self.disk.meta, disk::KEY_LAST_PURGED, "last purged log id")
    }

    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, StoreError> {
        let Some((_, bytes)) = self.disk.log.last()? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> = disk::decode(&bytes, "log entry")?;
        Ok(Some(entry.log_id))
    }

    /// Removes the entries at `index` and below, in one atomic batch.
    fn remove_up_to(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in self.disk.log.range(..=index_key(index)) {
            batch.remove(kv?.0);
        }
        self.disk.log.apply_batch(batch)?;
        Ok(())
    }

    fn read_range(
        &self,
        range: impl RangeBounds<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let start = range.start_bound().map(|i| index_key(*i));
        let end = range.end_bound().map(|i| index_key(*i));
        // openraft may ask for an empty range (`3..3`); answer it without asking sled.
        if is_empty((range.start_bound(), range.end_bound())) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for kv in self.disk.log.range((start, end)) {
            out.push(disk::decode(&kv?.1, "log entry")?);
        }
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.last_entry_id()? {
            Some(last) => Some(last),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    /// Writes one `raft_meta` value and fsyncs.
    async fn put<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        what: &'static str,
    ) -> Result<(), StoreError> {
        self.disk.meta.insert(key, disk::encode(value, what)?)?;
        self.disk.flush().await
    }

    /// Removes the entries at `index` and above in one atomic batch, so a crash leaves no hole.
    async fn remove_from(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in self.disk.log.range(index_key(index)..) {
            batch.remove(kv?.0);
        }
        self.disk.log.apply_batch(batch)?;
        self.disk.flush().await
    }

    /// Makes `log_id` durable as purged first, then removes the entries: see the module doc for
    /// why that order is crash-safe.
    async fn purge_up_to(&self, log_id: LogId<u64>) -> Result<(), StoreError> {
        self.put(disk::KEY_LAST_PURGED, &log_id, "last purged log id")
            .await?;
        self.remove_up_to(log_id.index)?;
        self.disk.flush().await
    }

    async fn write_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let key = index_key(entry.log_id.index);
            batch.insert(&key[..], disk::encode(&entry, "log entry")?);
        }
        self.disk.log.apply_batch(batch)?;
        self.disk.flush().await
    }
}

/// Whether `(start, end)` holds no index at all.
fn is_empty((start, end): (Bound<&u64>, Bound<&u64>)) -> bool {
    let first = match start {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => match s.checked_add(1) {
            Some(s) => s,
            None => return true,
        },
        Bound::Unbounded => 0,
    };
    match end {
        Bound::Included(e) => first > *e,
        Bound::Excluded(e) => first >= *e,
        Bound::Unbounded => false,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.read_range(range)
            .map_err(|e| to_storage(StorageIOError::read_logs, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        self.log_state()
            .map_err(|e| to_storage(StorageIOError::read_logs, e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.put(disk::KEY_VOTE, vote, "vote")
            .await
            .map_err(|e| to_storage(StorageIOError::write_vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        disk::read(&self.disk.meta, disk::KEY_VOTE, "vote")
            .map_err(|e| to_storage(StorageIOError::read_vote, e))
    }

    /// Persists the committed log id so that a restarted node re-applies up to it. It is not
    /// fsynced here: the next fsync (the `apply` that follows every commit advance, the next
    /// append, or sled's periodic flush) covers it, and losing it only means that a restarted
    /// node re-applies less before it hears from the leader; the state machine's own applied
    /// state is fsynced by `apply`.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = disk::encode(&committed, "committed log id")
            .map_err(|e| to_storage(StorageIOError::write, e))?;
        self.disk
            .meta
            .insert(disk::KEY_COMMITTED, bytes)
            .map_err(|e| to_storage(StorageIOError::write, e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let committed: Option<Option<LogId<u64>>> =
            disk::read(&self.disk.meta, disk::KEY_COMMITTED, "committed log id")
                .map_err(|e| to_storage(StorageIOError::read, e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.write_entries(entries).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = disk::to_storage_ref(StorageIOError::write_logs, &e);
                callback.log_io_completed(Err(std::io::Error::other(e)));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncating the raft log");
        self.remove_from(log_id.index)
            .await
            .map_err(|e| to_storage(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "purging the raft log");
        self.purge_up_to(log_id)
            .await
            .map_err(|e| to_storage(StorageIOError::write_logs, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorageExt;

    use super::*;

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[tokio::test]
    async fn purge_interrupted_after_its_marker_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _sm) = crate::open(dir.path()).await.unwrap();
            log.blocking_append((1..=5).map(|i| Entry::new_blank(log_id(i))))
                .await
                .unwrap();
            // The state a crash between purge's two writes leaves behind.
            log.put(disk::KEY_LAST_PURGED, &log_id(3), "last purged log id")
                .await
                .unwrap();
        }
        let (mut log, _sm) = crate::open(dir.path()).await.unwrap();
        let ids: Vec<u64> = log
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(ids, [4, 5]);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(3)));
        assert_eq!(state.last_log_id, Some(log_id(5)));
    }

    #[tokio::test]
    async fn damaged_entry_is_a_storage_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _sm) = crate::open(dir.path()).await.unwrap();
        log.disk.log.insert(index_key(1), &[0xff; 9][..]).unwrap();
        assert!(log.try_get_log_entries(0..10).await.is_err());
        assert!(log.get_log_state().await.is_err());
        log.disk
            .meta
            .insert(disk::KEY_VOTE, &[0xff; 3][..])
            .unwrap();
        assert!(log.read_vote().await.is_err());
    }

    #[tokio::test]
    async fn unknown_format_is_refused_with_the_version_found() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _sm) = crate::open(dir.path()).await.unwrap();
            let bytes = disk::encode(&99u64, "format marker").unwrap();
            log.disk.meta.insert(disk::KEY_FORMAT, bytes).unwrap();
            log.disk.db.flush().unwrap();
        }
        let err = crate::open(dir.path()).await.err().unwrap();
        assert!(
            matches!(
                err,
                StoreError::Format {
                    found: 99,
                    supported: disk::FORMAT
                }
            ),
            "{err}"
        );
    }
}
