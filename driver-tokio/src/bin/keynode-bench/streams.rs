//! The application-stream benchmarks (issue 14), each run on keynode and
//! on plain quinn: one stream's throughput, the aggregate throughput of
//! many streams open at once, and the round trip of a small request on a
//! new stream of an open connection.
//!
//! Each figure is keynode's run of a benchmark right before quinn's, in
//! one process, one tokio runtime; every pair stays connected throughout.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::BenchResult;
use crate::keynode_pair::KeynodePair;
use crate::pair::Pair;
use crate::quinn_pair::{Offload, QuinnPair};
use crate::stats::{Latency, mib_per_s};

/// What a writer hands its stream per write.
const WRITE_CHUNK: usize = 1 << 20;

/// Requests sent before the timed ones, so that neither side is measured
/// while it allocates its first streams.
const WARM_UP: usize = 100;

/// What to run.
pub(crate) struct Plan {
    /// Bytes over the one stream.
    pub(crate) one_stream_bytes: u64,
    /// Streams open at once.
    pub(crate) streams: usize,
    /// Bytes over each of them.
    pub(crate) stream_bytes: u64,
    /// Requests timed.
    pub(crate) requests: usize,
    /// Bytes of each request and of its answer.
    pub(crate) request_bytes: usize,
}

/// The figures, keynode's beside quinn's.
#[derive(Serialize)]
pub(crate) struct Report {
    /// One stream, one direction.
    one_stream: Throughput,
    /// Many streams at once, one direction.
    concurrent: Throughput,
    /// A small request and its echo, each on a new stream.
    requests: RoundTrips,
}

/// Throughput of `streams` streams of `bytes_per_stream` bytes each.
#[derive(Serialize)]
struct Throughput {
    streams: usize,
    bytes_per_stream: u64,
    keynode_mib_per_s: f64,
    quinn_mib_per_s: f64,
    /// quinn sending one datagram per system call, as keynode does.
    quinn_no_gso_mib_per_s: f64,
    /// keynode / quinn.
    ratio: f64,
}

/// Round trips of `requests` requests of `bytes` bytes, one at a time.
#[derive(Serialize)]
struct RoundTrips {
    requests: usize,
    bytes: usize,
    keynode: Latency,
    quinn: Latency,
    quinn_no_gso: Latency,
    /// keynode's p50 / quinn's.
    p50_ratio: f64,
}

/// Runs every benchmark of `plan` on keynode, quinn and quinn without GSO.
pub(crate) async fn run(plan: &Plan) -> BenchResult<Report> {
    let keynode = KeynodePair::start().await?;
    let quinn = QuinnPair::start(Offload::On).await?;
    let quinn_no_gso = QuinnPair::start(Offload::Off).await?;

    let one = [
        throughput(&keynode, 1, plan.one_stream_bytes).await?,
        throughput(&quinn, 1, plan.one_stream_bytes).await?,
        throughput(&quinn_no_gso, 1, plan.one_stream_bytes).await?,
    ];
    let many = [
        throughput(&keynode, plan.streams, plan.stream_bytes).await?,
        throughput(&quinn, plan.streams, plan.stream_bytes).await?,
        throughput(&quinn_no_gso, plan.streams, plan.stream_bytes).await?,
    ];
    let trips = [
        round_trips(&keynode, plan).await?,
        round_trips(&quinn, plan).await?,
        round_trips(&quinn_no_gso, plan).await?,
    ];

    keynode.close().await?;
    quinn.close().await?;
    quinn_no_gso.close().await?;

    let throughput = |streams, bytes_per_stream, [k, q, g]: [f64; 3]| Throughput {
        streams,
        bytes_per_stream,
        keynode_mib_per_s: k,
        quinn_mib_per_s: q,
        quinn_no_gso_mib_per_s: g,
        ratio: k / q,
    };
    let [k, q, g] = trips;
    Ok(Report {
        one_stream: throughput(1, plan.one_stream_bytes, one),
        concurrent: throughput(plan.streams, plan.stream_bytes, many),
        requests: RoundTrips {
            requests: plan.requests,
            bytes: plan.request_bytes,
            keynode: k,
            quinn: q,
            quinn_no_gso: g,
            p50_ratio: k.p50_us / q.p50_us,
        },
    })
}

/// One of the transports compared.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Transport {
    Keynode,
    Quinn,
    QuinnNoGso,
}

/// One transport's one-stream MiB/s alone: a run to profile.
pub(crate) async fn one_transport(transport: Transport, plan: &Plan) -> BenchResult<f64> {
    let bytes = plan.one_stream_bytes;
    match transport {
        Transport::Keynode => {
            let pair = KeynodePair::start().await?;
            let mib_per_s = throughput(&pair, 1, bytes).await?;
            pair.close().await?;
            Ok(mib_per_s)
        }
        Transport::Quinn | Transport::QuinnNoGso => {
            let offload = match transport {
                Transport::Quinn => Offload::On,
                _ => Offload::Off,
            };
            let pair = QuinnPair::start(offload).await?;
            let mib_per_s = throughput(&pair, 1, bytes).await?;
            pair.close().await?;
            Ok(mib_per_s)
        }
    }
}

/// MiB/s of `streams` streams to the sink at once, `bytes` each, timed
/// from the first write until every sink has counted all its bytes.
async fn throughput<P: Pair>(pair: &P, streams: usize, bytes: u64) -> BenchResult<f64> {
    let chunk = Bytes::from(vec![0xa5; WRITE_CHUNK]);
    let start = Instant::now();
    let senders: Vec<_> = (0..streams)
        .map(|_| tokio::spawn(pair.sink(bytes, chunk.clone())))
        .collect();
    for sender in senders {
        let counted = sender.await??;
        if counted != bytes {
            return Err(format!("the sink counted {counted} bytes of {bytes}").into());
        }
    }
    Ok(mib_per_s(bytes * streams as u64, start.elapsed()))
}

/// The round trips of `plan.requests` echoes, one after another, each on
/// a new stream.
async fn round_trips<P: Pair>(pair: &P, plan: &Plan) -> BenchResult<Latency> {
    let request = Bytes::from(vec![0x5a; plan.request_bytes]);
    let mut times: Vec<Duration> = Vec::with_capacity(plan.requests);
    for i in 0..WARM_UP + plan.requests {
        let start = Instant::now();
        let answer = pair.echo(request.clone()).await?;
        let elapsed = start.elapsed();
        if answer != request {
            return Err(format!("an echo of {} bytes for {}", answer.len(), request.len()).into());
        }
        if i >= WARM_UP {
            times.push(elapsed);
        }
    }
    Ok(Latency::of(times))
}
