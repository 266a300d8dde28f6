//! Datagrams straight into the mDNS responder and querier.
//! The body, its input format and the properties it checks are
//! `keynode_fuzz_cases::mdns_packets`, which `cargo test` also runs on
//! `fuzz/regressions/mdns_packets/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| keynode_fuzz_cases::mdns_packets::run(input));
