//! Arbitrary DER as a peer's certificate into the NodeId extraction.
//! The body, its input format and the properties it checks are
//! `keynode_fuzz_cases::certificate`, which `cargo test` also runs on
//! `fuzz/regressions/certificate/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| keynode_fuzz_cases::certificate::run(input));
