//! meshctl's manifest reader on arbitrary YAML text: `parse_source` (YAML documents, field
//! locations, structural decode), then `validate` and the rendering of every located problem.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_node::manifest::{Source, parse_source};

fuzz_target!(|data: &[u8]| {
    let source = Source {
        name: "fuzz.yaml".to_owned(),
        text: String::from_utf8_lossy(data).into_owned(),
    };
    match parse_source(vec![source]) {
        Ok(manifests) => drop(manifests.validate().map_err(|e| e.to_string())),
        Err(e) => drop(e.to_string()),
    }
});
