//! Figures from measurements: throughput and percentiles of round trips.

use std::time::Duration;

use serde::Serialize;

/// MiB per second for `bytes` moved in `elapsed`.
pub(crate) fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / elapsed.as_secs_f64()
}

/// The distribution of a run of round trips, in microseconds.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct Latency {
    /// Median.
    pub(crate) p50_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// Mean.
    pub(crate) mean_us: f64,
}

impl Latency {
    /// The distribution of `times` (nearest-rank percentiles); zeros if empty.
    pub(crate) fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        let us = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_nanos() as f64 / 1e3);
        let rank = |q: f64| {
            let n = times.len();
            times.get(((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1)
        };
        let total: Duration = times.iter().sum();
        Self {
            p50_us: us(rank(0.50)),
            p99_us: us(rank(0.99)),
            mean_us: total.as_nanos() as f64 / 1e3 / times.len().max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let times = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latency::of(times);
        assert_eq!((l.p50_us, l.p99_us, l.mean_us), (50.0, 99.0, 50.5));
        assert_eq!(Latency::of(Vec::new()).p50_us, 0.0);
    }
}
