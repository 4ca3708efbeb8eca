//! Latency samples of one load window and the percentiles reported from them.
//!
//! Every operation's latency is kept (in microseconds, 4 bytes each): a 10 s window at
//! 100k ops/s is 4 MB, small enough that exact percentiles beat a histogram's buckets.

use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Latencies {
    micros: Vec<u32>,
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.micros
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    pub fn summary(mut self) -> Summary {
        self.micros.sort_unstable();
        let pick = |q: f64| -> f64 {
            if self.micros.is_empty() {
                return 0.0;
            }
            // Nearest-rank percentile: the smallest sample with at least q of all at or below.
            let rank = ((q * self.micros.len() as f64).ceil() as usize).max(1);
            self.micros[rank.min(self.micros.len()) - 1] as f64 / 1000.0
        };
        Summary {
            count: self.micros.len() as u64,
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: self
                .micros
                .last()
                .map(|m| *m as f64 / 1000.0)
                .unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(micros: impl IntoIterator<Item = u64>) -> Summary {
        let mut l = Latencies::default();
        for m in micros {
            l.record(Duration::from_micros(m));
        }
        l.summary()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = of((1..=100).rev().map(|i| i * 1000));
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p90_ms, 90.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let s = of([1500]);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (1.5, 1.5, 1.5));
    }

    #[test]
    fn empty_window_reports_zeros() {
        let s = of([]);
        assert_eq!(s.count, 0);
        assert_eq!(s.max_ms, 0.0);
    }

    #[test]
    fn merge_keeps_all_samples() {
        let mut a = Latencies::default();
        a.record(Duration::from_millis(1));
        let mut b = Latencies::default();
        b.record(Duration::from_millis(3));
        a.merge(b);
        let s = a.summary();
        assert_eq!((s.count, s.max_ms), (2, 3.0));
    }
}
