//! Conformance: the store passes openraft 0.9's own storage test suite (STYLE: tests, layer 4).
//!
//! Each suite case gets a fresh store in a fresh temporary directory; the `TempDir` is the
//! suite's guard, so the directory outlives the store that uses it. The suite builds its own
//! tokio runtime per case, so this is a plain `#[test]`.

use mesh_raft_store::{LogStore, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (log, sm) = mesh_raft_store::open(dir.path())
            .await
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(SledStoreBuilder).unwrap();
}
