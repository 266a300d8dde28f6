//! Benchmarks of real agents on loopback. Prints one JSON object.
//!
//! Handshakes (the default): QUIC handshakes per second, an agent's
//! start-to-ready time and resident memory.
//! `cargo run --release -p keynode-tokio --bin keynode-bench -- --clients 100`
//!
//! Application streams (`--throughput`): one stream's throughput, many
//! streams' aggregate throughput and a small request's round trip, each
//! between two keynode agents and between two plain quinn endpoints (the
//! baseline: the same quinn-proto, TLS provider and transport limits).
//! `cargo run --release -p keynode-tokio --bin keynode-bench -- --throughput`
//!
//! The store (`--set-nodes N`): forced `set_node` calls persisted per
//! second, one at a time and `--in-flight K` at once, and a restart.
//! `cargo run --release -p keynode-tokio --bin keynode-bench -- --set-nodes 5000 --in-flight 64`

mod handshakes;
mod keynode_pair;
mod pair;
mod quinn_pair;
mod set_nodes;
mod stats;
mod streams;

use clap::Parser;

/// A benchmark's failure: anything that stops a run is reported as it is.
pub(crate) type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Parser)]
#[command(about = "keynode agent benchmarks on loopback")]
struct Args {
    /// Client agents, each making one QUIC handshake with a server agent.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Measure application streams (keynode against plain quinn) instead
    /// of handshakes.
    #[arg(long)]
    throughput: bool,
    /// Throughput: MiB sent over the one stream.
    #[arg(long, default_value_t = 1024)]
    one_stream_mib: u64,
    /// Throughput: streams open at once.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Throughput: MiB sent over each of the concurrent streams.
    #[arg(long, default_value_t = 10)]
    stream_mib: u64,
    /// Throughput: small requests timed one after another.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Throughput: bytes of each request (and of its echo).
    #[arg(long, default_value_t = 32)]
    request_bytes: usize,
    /// Measure the store instead: this many forced `set_node` calls, one
    /// at a time, then as many again `--in-flight` at once.
    #[arg(long, conflicts_with = "throughput")]
    set_nodes: Option<usize>,
    /// The store: calls in flight at once.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// The store: the bucket size k (at most 1024); larger keeps more
    /// contacts for the restart figure.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Throughput, for profiling: one transport's one stream alone.
    #[arg(long, requires = "throughput", value_enum)]
    only: Option<streams::Transport>,
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let args = Args::parse();
    let json = if let Some(calls) = args.set_nodes {
        serde_json::to_string(&set_nodes::run(calls, args.in_flight, args.k).await?)?
    } else if args.throughput {
        let plan = streams::Plan {
            one_stream_bytes: args.one_stream_mib << 20,
            streams: args.streams,
            stream_bytes: args.stream_mib << 20,
            requests: args.requests,
            request_bytes: args.request_bytes,
        };
        if let Some(transport) = args.only {
            serde_json::to_string(&streams::one_transport(transport, &plan).await?)?
        } else {
            serde_json::to_string(&streams::run(&plan).await?)?
        }
    } else {
        serde_json::to_string(&handshakes::run(args.clients).await?)?
    };
    println!("{json}");
    Ok(())
}
