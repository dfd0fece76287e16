//! The on-disk layout: which sled tree and key hold what, how values are encoded, and how a write
//! is made durable. It does not decide when to write; the log and state machine stores do.
//!
//! ```text
//! tree raft_log       index (u64 big-endian, so keys sort by index) -> Entry
//! tree raft_meta      "format" -> u64, "vote" -> Vote, "committed" -> Option<LogId>,
//!                     "last_purged" -> LogId
//! tree state_machine  "applied" -> (Option<LogId>, StoredMembership, StateData),
//!                     "snapshot_meta" -> SnapshotMeta,
//!                     "snapshot_data" -> snapshot bytes (an "applied" value)
//! ```
//!
//! Every value is in `mesh_proto::codec`, whose decode is bounded, so a damaged file yields an
//! error, never a panic or an unbounded allocation.

use std::path::Path;
use std::time::{Duration, Instant};

use mesh_proto::codec;
use openraft::{AnyError, StorageError, StorageIOError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// How long `open` keeps retrying sled's directory lock. sled 0.34 releases it from background
/// threads a moment after the last handle drops (spacejam/sled#1234), so an in-process reopen
/// can race it; another live process holding it still fails, just this much later.
const LOCK_RETRY_FOR: Duration = Duration::from_secs(2);
const LOCK_RETRY_MAX_PAUSE: Duration = Duration::from_millis(100);

/// Bump when the layout above, or the encoding of what it stores, changes incompatibly.
/// 2: `StateData` gained `agents` (agent status reports), so format-1 applied states and
/// snapshots no longer decode.
/// 3: `StateData` gained `federation_tokens` and `peerings`; 4: `enrollments`.
pub(crate) const FORMAT: u64 = 4;

pub(crate) const KEY_FORMAT: &[u8] = b"format";
pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub(crate) const KEY_APPLIED: &[u8] = b"applied";
pub(crate) const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
pub(crate) const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// The database and its three trees. Cloning is cheap: sled handles are reference counted.
#[derive(Clone)]
pub(crate) struct Disk {
    pub(crate) db: sled::Db,
    pub(crate) log: sled::Tree,
    pub(crate) meta: sled::Tree,
    pub(crate) sm: sled::Tree,
}

impl Disk {
    /// Blocking: opens the database, creating it, or checks the format of an existing one.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_db(dir).map_err(|source| StoreError::Open {
            path: dir.to_owned(),
            source,
        })?;
        let disk = Disk {
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            sm: db.open_tree("state_machine")?,
            db,
        };
        match read::<u64>(&disk.meta, KEY_FORMAT, "format marker")? {
            Some(FORMAT) => {}
            Some(found) => {
                return Err(StoreError::Format {
                    found,
                    supported: FORMAT,
                });
            }
            None => {
                disk.meta
                    .insert(KEY_FORMAT, encode(&FORMAT, "format marker")?)?;
                disk.db.flush()?;
            }
        }
        Ok(disk)
    }

    /// Writes every dirty buffer and fsyncs. sled's own `flush_async` can hang forever when
    /// several flushes race (spacejam/sled#1241, #1308), so the blocking `flush` runs on tokio's
    /// blocking pool instead. sled flushes the whole database, so this covers all three trees.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(())
    }
}

/// Blocking: `sled::Config::open`, retrying only while the directory lock is busy.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + LOCK_RETRY_FOR;
    let mut pause = Duration::from_millis(5);
    loop {
        match sled::Config::new().path(dir).open() {
            Err(e) if is_lock_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(LOCK_RETRY_MAX_PAUSE);
            }
            result => return result,
        }
    }
}

/// sled 0.34.7 reports a busy lock only as an `Other` I/O error with this message.
fn is_lock_busy(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// The key of the log entry at `index`: big-endian, so sled's byte order is index order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, StoreError> {
    codec::encode(value).map_err(|source| StoreError::Codec {
        op: "encode",
        what,
        source,
    })
}

pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    codec::decode(bytes).map_err(|source| StoreError::Codec {
        op: "decode",
        what,
        source,
    })
}

/// Reads and decodes one value, `None` if the key is absent.
pub(crate) fn read<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|bytes| decode(&bytes, what)).transpose()
}

/// Converts a store error into openraft's, tagged with what openraft was doing
/// (`StorageIOError::read_logs`, `write_vote`, ...). openraft shuts the node down on any of them.
pub(crate) fn to_storage(
    kind: impl FnOnce(AnyError) -> StorageIOError<u64>,
    e: impl Into<StoreError>,
) -> StorageError<u64> {
    to_storage_ref(kind, &e.into())
}

/// [`to_storage`] for a caller that still needs the error afterwards.
pub(crate) fn to_storage_ref(
    kind: impl FnOnce(AnyError) -> StorageIOError<u64>,
    e: &StoreError,
) -> StorageError<u64> {
    StorageError::IO {
        source: kind(AnyError::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_in_use_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let _held = crate::open(dir.path()).await.unwrap();
        let err = crate::open(dir.path()).await.err().unwrap();
        assert!(
            matches!(&err, StoreError::Open { source, .. } if is_lock_busy(source)),
            "{err}"
        );
        assert!(err.to_string().contains("no other meshd process"), "{err}");
    }

    #[test]
    fn index_keys_sort_in_index_order() {
        let keys: Vec<[u8; 8]> = [0, 1, 255, 256, u64::MAX].map(index_key).into();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
