//! Config validation on what the API server receives: JSON bytes as an untyped value through
//! `parse_resource` (meshctl's lenient path) and as a `Resource` (the server's), then
//! `validate` and `validate_batch`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::config::{parse_resource, validate, validate_batch};
use mesh_proto::resource::Resource;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(res) = parse_resource(0, &value)
    {
        let _ = validate(0, &res);
    }
    if let Ok(res) = serde_json::from_slice::<Resource>(data) {
        let _ = validate_batch(&[res.clone(), res]);
    }
});
