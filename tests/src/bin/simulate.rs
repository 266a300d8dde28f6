//! `simulate`: build a network of N keynode nodes on the simulator and
//! measure lookups. See `keynode_tests::report` for what is run.
//!
//! ```sh
//! cargo run --release -p keynode-tests --bin simulate -- --nodes 10000 --lookups 1000 --seed 1
//! ```
//!
//! On the datagram level (real QUIC), see `keynode_tests::nat_report`:
//!
//! ```sh
//! simulate --nat-matrix [--json]
//! simulate --nat-mix cone=0.4,symmetric=0.3,public=0.3 --nodes 1000 --lookups 1000 --seed 1 [--json]
//! ```

use clap::Parser;
use keynode_tests::alloc::CountingAlloc;
use keynode_tests::nat_report::{self, MixOptions, NatMix};
use keynode_tests::report::{self, Options};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Simulates a keynode network and reports how its lookups do.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Nodes in the network.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Lookups of random existing nodes.
    #[arg(long, default_value_t = 100)]
    lookups: usize,
    /// The seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The fraction of nodes that leave before the lookups (0..=1).
    #[arg(long, default_value_t = 0.0)]
    dead: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Ideal routing tables (k random members of every bucket's range) instead of joining.
    #[arg(long)]
    ideal: bool,
    /// Look up the k closest nodes to random keys instead of nodes.
    #[arg(long)]
    closest: bool,
    /// Print where the run is on standard error (every tenth of the build).
    #[arg(long)]
    progress: bool,
    /// NAT traversal over QUIC for every ordered pair of NAT models (none,
    /// full_cone, restricted, port_restricted, symmetric): how the finder
    /// reached the target and how long it took. Uses --seed only.
    #[arg(long, conflicts_with_all = ["nat_mix", "ideal", "closest", "dead"])]
    nat_matrix: bool,
    /// A population behind NATs, over QUIC: `key=fraction,...` with keys
    /// cone (= port_restricted), public (= none), full_cone, restricted,
    /// port_restricted, symmetric; the fractions add up to 1.
    #[arg(long, value_name = "MIX", conflicts_with_all = ["ideal", "closest", "dead"])]
    nat_mix: Option<NatMix>,
}

fn main() {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.dead) {
        eprintln!(
            "--dead must be a fraction between 0 and 1, got {}",
            args.dead
        );
        std::process::exit(2);
    }
    if args.nat_matrix {
        let pairs = nat_report::nat_matrix(args.seed);
        if args.json {
            println!("{}", nat_report::matrix_json(args.seed, &pairs));
        } else {
            print!("{}", nat_report::matrix_text(&pairs));
        }
        return;
    }
    if let Some(mix) = args.nat_mix {
        let report = nat_report::run_mix(&MixOptions {
            mix,
            nodes: args.nodes,
            lookups: args.lookups,
            seed: args.seed,
            progress: args.progress,
        });
        if args.json {
            println!("{}", report.json());
        } else {
            print!("{}", report.text());
        }
        return;
    }
    let options = Options {
        nodes: args.nodes,
        lookups: args.lookups,
        seed: args.seed,
        dead: args.dead,
        ideal: args.ideal,
        closest: args.closest,
        progress: args.progress,
    };
    let report = report::run(&options);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text(&options));
    }
}
