//! The delivery-latency histogram, updated once per batch of frames.
//!
//! prometheus-client's histogram takes a mutex per observation; with every connection on every
//! core observing every frame, that mutex was one of the costliest steps of a fan-out. Here a
//! connection counts a batch's frames locally and adds them with one atomic add per bucket it
//! touched (usually one or two).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Upper bounds 0.1 ms × 2^i for i in 0..15 (0.1 ms to about 1.6 s), then +Inf.
const BOUNDS: usize = 15;
const FIRST_BOUND_MICROS: u64 = 100;

#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    buckets: [AtomicU64; BOUNDS + 1],
    sum_micros: AtomicU64,
}

/// One batch's observations, before they are added to the histogram.
#[derive(Debug, Default)]
pub struct Batch {
    buckets: [u64; BOUNDS + 1],
    sum_micros: u64,
}

impl Batch {
    pub fn observe_micros(&mut self, micros: u64) {
        self.buckets[bucket_of(micros)] += 1;
        self.sum_micros += micros;
    }
}

/// The first bucket whose bound is ≥ `micros`.
fn bucket_of(micros: u64) -> usize {
    // (micros - 1) / 100 < 2^i exactly when micros ≤ 100 × 2^i.
    let scaled = micros.saturating_sub(1) / FIRST_BOUND_MICROS;
    ((u64::BITS - scaled.leading_zeros()) as usize).min(BOUNDS)
}

impl LatencyHistogram {
    pub fn record(&self, batch: &Batch) {
        for (bucket, &count) in self.0.buckets.iter().zip(&batch.buckets) {
            if count > 0 {
                bucket.fetch_add(count, Ordering::Relaxed);
            }
        }
        if batch.sum_micros > 0 {
            self.0.sum_micros.fetch_add(batch.sum_micros, Ordering::Relaxed);
        }
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = if i < BOUNDS { (FIRST_BOUND_MICROS << i) as f64 / 1e6 } else { f64::INFINITY };
                (bound, count.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(100), 0);
        assert_eq!(bucket_of(101), 1);
        assert_eq!(bucket_of(200), 1);
        assert_eq!(bucket_of(201), 2);
        assert_eq!(bucket_of(400), 2);
        assert_eq!(bucket_of(100 << 14), 14);
        assert_eq!(bucket_of((100 << 14) + 1), BOUNDS, "past the last bound: +Inf");
        assert_eq!(bucket_of(u64::MAX), BOUNDS);
    }

    #[test]
    fn batches_add_up_and_render_as_a_cumulative_histogram() {
        let histogram = LatencyHistogram::default();
        let mut batch = Batch::default();
        for micros in [50, 150, 150, 10_000_000] {
            batch.observe_micros(micros);
        }
        histogram.record(&batch);
        histogram.record(&batch);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("latency_seconds", "test", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("latency_seconds_count 8\n"), "{text}");
        assert!(text.contains("latency_seconds_sum 20.0007\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{le=\"0.0001\"} 2\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{le=\"0.0002\"} 6\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{le=\"1.6384\"} 6\n"), "{text}");
        assert!(text.contains("latency_seconds_bucket{le=\"+Inf\"} 8\n"), "{text}");
    }
}
