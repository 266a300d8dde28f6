//! A control-socket client's bytes, framed into lines and parsed as requests.
//! The body, its input format and the properties it checks are
//! `keynode_fuzz_cases::control_requests`, which `cargo test` also runs on
//! `fuzz/regressions/control_requests/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| keynode_fuzz_cases::control_requests::run(input));
