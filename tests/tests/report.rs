//! The `simulate` report: the same command twice gives the same trace hash,
//! the JSON has the keys the issue lists, and each mode measures something
//! sensible on a small network.

use std::process::Command;

use keynode_tests::report::{Options, run};

fn simulate(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(args)
        .output()
        .expect("simulate runs");
    assert!(out.status.success(), "simulate {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The keys and raw values of a flat JSON object of numbers and strings.
fn fields(json: &str) -> Vec<(String, String)> {
    let body = json.trim().trim_start_matches('{').trim_end_matches('}');
    body.split(',')
        .map(|field| {
            let (key, value) = field.split_once(':').expect("key: value");
            (
                key.trim_matches('"').to_owned(),
                value.trim_matches('"').to_owned(),
            )
        })
        .collect()
}

fn field(json: &str, key: &str) -> String {
    fields(json)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
}

#[test]
fn the_same_command_twice_prints_the_same_trace_hash() {
    let args = ["--nodes", "120", "--lookups", "30", "--seed", "7", "--json"];
    let first = simulate(&args);
    let second = simulate(&args);
    let keys: Vec<String> = fields(&first).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "nodes",
            "lookups",
            "success_rate",
            "hops_mean",
            "hops_p99",
            "hops_max",
            "requests_mean",
            "bytes_per_node",
            "wall_s",
            "trace_hash"
        ]
    );
    assert_eq!(field(&first, "trace_hash"), field(&second, "trace_hash"));
    assert_eq!(field(&first, "hops_mean"), field(&second, "hops_mean"));
    let other = simulate(&["--nodes", "120", "--lookups", "30", "--seed", "8", "--json"]);
    assert_ne!(field(&first, "trace_hash"), field(&other, "trace_hash"));
    // The text form names the same figures.
    let text = simulate(&["--nodes", "120", "--lookups", "30", "--seed", "7"]);
    assert!(
        text.contains(&format!(
            "trace hash        {}",
            field(&first, "trace_hash")
        )),
        "{text}"
    );
}

fn options(nodes: usize) -> Options {
    Options {
        nodes,
        lookups: 40,
        seed: 3,
        dead: 0.0,
        ideal: false,
        closest: false,
        progress: false,
    }
}

#[test]
fn a_joined_network_finds_every_target_in_few_hops() {
    let report = run(&options(150));
    assert_eq!(report.success_rate, 1.0);
    assert_eq!(report.joins_failed, 0);
    assert!(
        report.hops_mean <= 2.0 && report.hops_max <= 4,
        "{report:?}"
    );
    assert!(report.requests_mean >= 1.0);
    assert!(report.bytes_per_node > 0 || keynode_tests::alloc::live_bytes() == 0);
}

#[test]
fn ideal_tables_dead_nodes_and_closest_lookups() {
    let ideal = run(&Options {
        ideal: true,
        ..options(150)
    });
    assert_eq!(ideal.success_rate, 1.0, "{ideal:?}");

    let dead = run(&Options {
        dead: 0.3,
        ..options(150)
    });
    assert!(dead.success_rate >= 0.9, "{dead:?}");

    let closest = run(&Options {
        closest: true,
        ..options(150)
    });
    assert!(closest.success_rate > 0.5, "{closest:?}");
    assert!(closest.requests_mean > 1.0);
}
