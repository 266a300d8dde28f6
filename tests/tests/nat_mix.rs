//! A population behind a mix of NATs on the datagram level (real QUIC),
//! as `simulate --nat-mix` runs it, at a small scale: every lookup reaches
//! its target, some through a relay, and the same seed gives the same run.

use keynode_tests::nat_report::{MixOptions, MixReport, NatMix, run_mix};

fn mix(seed: u64) -> MixReport {
    let report = run_mix(&MixOptions {
        mix: "cone=0.4,symmetric=0.3,public=0.3"
            .parse::<NatMix>()
            .expect("a mix"),
        nodes: 60,
        lookups: 30,
        seed,
        progress: false,
    });
    eprintln!("{}", report.text());
    report
}

#[test]
fn every_lookup_in_a_nat_mix_reaches_its_target_some_through_a_relay() {
    let report = mix(3);
    assert_eq!(report.joins_failed, 0);
    assert_eq!(report.lookups, 30);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.success_rate, 1.0);
    assert!(report.lookups_by_mode.relay > 0, "{report:?}");
    assert!(report.connections_up.relay > 0, "{report:?}");
    // The relays forwarded what those connections carried.
    assert!(report.relay.pairs_opened > 0 && report.relay.frames_forwarded > 0);
    assert!(report.relays_used > 0);
}
