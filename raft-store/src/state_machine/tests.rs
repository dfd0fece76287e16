//! Snapshot round trips and watch notifications of the state machine store. The openraft suite
//! (`tests/suite.rs`) covers the generic contract; these cover what the mesh relies on.

use std::collections::BTreeMap;

use mesh_proto::command::{Command, ResourceWrite};
use mesh_proto::resource::{Kind, ResourceKey};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Membership, RaftSnapshotBuilder};

use super::*;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn key(i: u64) -> ResourceKey {
    ResourceKey {
        kind: Kind::ServiceExport,
        namespace: "default".into(),
        name: format!("svc-{i}"),
    }
}

fn normal(index: u64) -> Entry<TypeConfig> {
    let write = ResourceWrite {
        key: key(index),
        labels: BTreeMap::new(),
        spec_json: "{}".into(),
        expect_version: None,
    };
    let cmd = Command::ApplyResources {
        resources: vec![write],
        now_unix_ms: 0,
    };
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn membership(index: u64) -> Entry<TypeConfig> {
    let nodes = BTreeMap::from([(
        1,
        ControlNode {
            name: "c1".into(),
            ..Default::default()
        },
    )]);
    let m = Membership::new(vec![[1u64].into()], nodes);
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(m),
    }
}

/// A state machine with a membership entry at 1 and resources svc-2..=svc-`last`.
async fn populated(dir: &std::path::Path, last: u64) -> StateMachineStore {
    let (_log, mut sm) = crate::open(dir).await.unwrap();
    let mut entries = vec![membership(1)];
    entries.extend((2..=last).map(normal));
    let responses = sm.apply(entries).await.unwrap();
    assert_eq!(responses.len() as u64, last);
    sm
}

#[tokio::test]
async fn apply_notifies_watchers_with_index_and_config_version() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = crate::open(dir.path()).await.unwrap();
    let mut rx = sm.handle().subscribe();
    sm.apply([membership(1), normal(2), normal(3)])
        .await
        .unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        *rx.borrow_and_update(),
        Applied {
            log_index: 3,
            config_version: 2
        }
    );
    assert!(sm.handle().read(|s| s.resource(&key(3)).is_some()));
}

#[tokio::test]
async fn snapshot_round_trip_moves_state_and_notifies_watchers() {
    let (dir_l, dir_f) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = populated(dir_l.path(), 6).await;
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(6)));
    assert!(
        snap.meta.snapshot_id.starts_with("1-6-"),
        "{}",
        snap.meta.snapshot_id
    );

    let (_log, mut follower) = crate::open(dir_f.path()).await.unwrap();
    let handle = follower.handle();
    let mut rx = handle.subscribe();
    let mut received = follower.begin_receiving_snapshot().await.unwrap();
    assert!(received.get_ref().is_empty());
    *received = *snap.snapshot.clone();
    follower
        .install_snapshot(&snap.meta, received)
        .await
        .unwrap();

    assert!(rx.has_changed().unwrap());
    assert_eq!(
        *rx.borrow_and_update(),
        Applied {
            log_index: 6,
            config_version: 5
        }
    );
    let want = leader.handle().read(|s| s.clone());
    assert_eq!(handle.read(|s| s.clone()), want);
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot.get_ref(), snap.snapshot.get_ref());
}

#[tokio::test]
async fn installed_snapshot_and_state_survive_reopen() {
    let (dir_l, dir_f) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = populated(dir_l.path(), 4).await;
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    {
        let (_log, mut follower) = crate::open(dir_f.path()).await.unwrap();
        follower
            .install_snapshot(&snap.meta, snap.snapshot.clone())
            .await
            .unwrap();
    }
    let (_log, mut follower) = crate::open(dir_f.path()).await.unwrap();
    assert_eq!(
        follower.get_current_snapshot().await.unwrap().unwrap().meta,
        snap.meta
    );
    assert_eq!(
        follower.applied_state().await.unwrap(),
        leader.applied_state().await.unwrap()
    );
    assert_eq!(
        follower.handle().applied(),
        Applied {
            log_index: 4,
            config_version: 3
        }
    );
    assert_eq!(
        follower.handle().read(|s| s.clone()),
        leader.handle().read(|s| s.clone())
    );
}

#[tokio::test]
async fn snapshot_whose_data_disagrees_with_its_meta_is_refused() {
    let (dir_l, dir_f) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = populated(dir_l.path(), 4).await;
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let (_log, mut follower) = crate::open(dir_f.path()).await.unwrap();
    let mut meta = snap.meta.clone();
    meta.last_log_id = Some(log_id(9));
    assert!(
        follower
            .install_snapshot(&meta, snap.snapshot.clone())
            .await
            .is_err()
    );
    let garbage = Box::new(Cursor::new(vec![0xff; 16]));
    assert!(
        follower
            .install_snapshot(&snap.meta, garbage)
            .await
            .is_err()
    );
    assert_eq!(follower.handle().applied(), Applied::default());
    assert!(follower.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test]
async fn late_build_of_an_older_state_does_not_replace_a_newer_snapshot() {
    let (dir_l, dir_f) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = populated(dir_l.path(), 3).await;
    let old = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    leader.apply([normal(4), normal(5)]).await.unwrap();
    let new = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let (_log, mut follower) = crate::open(dir_f.path()).await.unwrap();
    follower
        .install_snapshot(&new.meta, new.snapshot.clone())
        .await
        .unwrap();
    // A builder that captured the state at 3 finishes after the install of 5.
    let data = old.snapshot.get_ref().clone();
    follower
        .shared
        .store_snapshot(&old.meta, data, SnapshotWrite::Built)
        .await
        .unwrap();
    assert_eq!(
        follower.get_current_snapshot().await.unwrap().unwrap().meta,
        new.meta
    );
}
