use std::sync::atomic::{AtomicU64, Ordering};

/// What the runtime did with the messages it received, for tests, benchmarks and logs.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub claimed: AtomicU64,
    pub succeeded: AtomicU64,
    pub retried: AtomicU64,
    /// Waits (rate limits, open circuits, disabled providers): re-sent with a delay.
    pub held: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub failed: AtomicU64,
    pub duplicate: AtomicU64,
    pub stale: AtomicU64,
    pub paused: AtomicU64,
    pub not_runnable: AtomicU64,
    pub superseded: AtomicU64,
    pub poison: AtomicU64,
    pub handoff_failed: AtomicU64,
    pub handoff_resent: AtomicU64,
    /// Messages of dead-lettered attempts sent back by a redrive and accepted.
    pub redriven: AtomicU64,
    /// Messages that came back after their attempt's lease ran out (a worker died).
    pub reconciled: AtomicU64,
    /// Visibility changes SQS refused (the queue's own timeout brings those messages back:
    /// a backoff or a hold then lasts that long).
    pub visibility_failed: AtomicU64,
}

impl Stats {
    pub fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
