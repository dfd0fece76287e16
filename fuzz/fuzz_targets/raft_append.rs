//! The Raft RPC bodies a control node decodes from a peer, in the binary codec:
//! `AppendEntriesRequest` (entries carry `Command`s and memberships), `VoteRequest` and
//! `InstallSnapshotRequest`, plus the summaries openraft logs of what decoded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::codec;
use mesh_raft_store::TypeConfig;
use openraft::MessageSummary as _;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = codec::decode::<AppendEntriesRequest<TypeConfig>>(data) {
        drop(r.summary());
    }
    if let Ok(r) = codec::decode::<VoteRequest<u64>>(data) {
        drop(r.to_string());
    }
    if let Ok(r) = codec::decode::<InstallSnapshotRequest<TypeConfig>>(data) {
        drop(r.to_string());
    }
});
