//! The ingest memory budget: every request body, decompressed body and queued batch holds a
//! [`Reservation`] against one byte budget; when it is spent, ingest answers 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::internal_events::{IngestMemory, Metrics};

/// A byte budget shared by all ingest requests.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        let b = Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            metrics,
        });
        b.report();
        b
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn report(&self) {
        IngestMemory {
            in_use: self.used() as u64,
            budget: self.limit as u64,
        }
        .emit(&self.metrics);
    }

    fn try_add(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|v| *v <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// An empty reservation that can grow.
    pub fn reserve_empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }
}

/// Bytes held against a [`Budget`]; released on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    /// Grows the reservation by `n` bytes; `false` (and no change) if the budget is spent.
    pub fn grow(&mut self, n: usize) -> bool {
        if self.budget.try_add(n) {
            self.bytes += n;
            if self.bytes > (1 << 20) || n > (64 << 10) {
                self.budget.report();
            }
            true
        } else {
            false
        }
    }

    /// Shrinks the reservation to `n` bytes (no-op when already smaller).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.bytes {
            self.budget.used.fetch_sub(self.bytes - n, Ordering::AcqRel);
            self.bytes = n;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.budget.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_released() {
        let b = Budget::new(100, Arc::new(Metrics::new()));
        let mut r1 = b.reserve_empty();
        assert!(r1.grow(60));
        let mut r2 = b.reserve_empty();
        assert!(!r2.grow(50));
        assert!(r2.grow(40));
        assert_eq!(b.used(), 100);
        r1.shrink_to(10);
        assert_eq!(b.used(), 50);
        drop(r1);
        drop(r2);
        assert_eq!(b.used(), 0);
    }
}
