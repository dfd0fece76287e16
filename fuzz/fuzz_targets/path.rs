//! Request canonicalisation on what a client sends. Input lines are: options byte, method,
//! request target, then `name:value` headers (values are raw bytes). Checks `request_facts`, and
//! that a canonical path is a fixed point of `canonicalize_path` (routing and policy must never
//! disagree because one side canonicalised twice).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::http::{PathOptions, canonicalize_path, request_facts};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let flags = lines.next().and_then(|l| l.first().copied()).unwrap_or(0);
    let opts = PathOptions {
        case_insensitive: flags & 1 == 1,
        max_len: if flags & 2 == 2 {
            16
        } else {
            mesh_core::http::DEFAULT_MAX_PATH_LEN
        },
    };
    let method = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let target = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let headers: Vec<(String, Vec<u8>)> = lines
        .map(|l| {
            let (name, value) = match l.iter().position(|&b| b == b':') {
                Some(i) if i > 0 => (&l[..i], &l[i + 1..]),
                _ => (l, &[][..]),
            };
            (String::from_utf8_lossy(name).into_owned(), value.to_vec())
        })
        .collect();
    let policy = ["host".to_owned(), "x-user".to_owned()];
    let _ = request_facts(&method, &target, &headers, &policy, opts);
    if let Ok(path) = canonicalize_path(&target, opts) {
        let again = canonicalize_path(path.as_str(), opts);
        assert_eq!(again.as_ref().map(|p| p.as_str()), Ok(path.as_str()));
    }
});
