//! Arbitrary records in a real LMDB store, loaded and restored as an agent starts.
//! The body, its input format and the properties it checks are
//! `keynode_fuzz_cases::store_records`, which `cargo test` also runs on
//! `fuzz/regressions/store_records/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| keynode_fuzz_cases::store_records::run(input));
