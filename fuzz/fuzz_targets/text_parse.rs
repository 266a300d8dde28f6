//! NodeId, NodeAddress, Hostname and SeedNodes text.
//! The body, its input format and the properties it checks are
//! `keynode_fuzz_cases::text_parse`, which `cargo test` also runs on
//! `fuzz/regressions/text_parse/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| keynode_fuzz_cases::text_parse::run(input));
