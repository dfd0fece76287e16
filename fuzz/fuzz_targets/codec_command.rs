//! The binary codec on what a peer sends: a body as a Raft `Command`, a `CommandResponse` and a
//! snapshot's `StateData`, and a whole frame (header through `frame_len`, then the body).
//! Property: every input decodes or is refused; nothing panics or allocates unboundedly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::codec;
use mesh_proto::command::{Command, CommandResponse, StateData};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Command>(data);
    let _ = codec::decode::<CommandResponse>(data);
    let _ = codec::decode::<StateData>(data);
    if let Some((header, body)) = data.split_first_chunk::<4>()
        && let Ok(len) = codec::frame_len(*header, codec::MAX_FRAME_BYTES)
        && let Some(body) = body.get(..len)
    {
        let _ = codec::decode::<Command>(body);
    }
});
