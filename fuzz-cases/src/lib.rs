//! The bodies of keynode's fuzz targets, as plain functions of the input
//! bytes: `fuzz/fuzz_targets/<name>.rs` hands libFuzzer's input to
//! [`run`], and `tests/regressions.rs` replays every file under
//! `fuzz/regressions/<name>/` through the same function in a plain
//! `cargo test`, so a crash found once stays fixed.
//!
//! Each body must not panic on any input; where it checks a property
//! (a parsed value prints back to what parses to it, a framed line is
//! what the bytes held), a failed check is a panic too.
//!
//! `seeds` writes each target's seed corpus (`fuzz/corpus/<name>/`) from
//! real values: run `cargo test -p keynode-fuzz-cases -- --ignored write_seed_corpus`.

pub mod certificate;
pub mod control_requests;
pub mod mdns_packets;
pub mod seeds;
pub mod store_records;
pub mod text_parse;

/// The targets with a body here, by name.
pub const TARGETS: [&str; 5] = [
    "certificate",
    "control_requests",
    "mdns_packets",
    "store_records",
    "text_parse",
];

/// Runs target `name` on `input`; `false` if there is no such target.
pub fn run(name: &str, input: &[u8]) -> bool {
    match name {
        "certificate" => certificate::run(input),
        "control_requests" => control_requests::run(input),
        "mdns_packets" => mdns_packets::run(input),
        "store_records" => store_records::run(input),
        "text_parse" => text_parse::run(input),
        _ => return false,
    }
    true
}

/// Splits `n` bytes off the front of `bytes` (fewer at its end).
pub(crate) fn take<'a>(bytes: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = bytes.split_at(n.min(bytes.len()));
    *bytes = tail;
    head
}
