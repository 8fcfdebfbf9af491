//! gzip bodies: inflation stops at the limit and never panics.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use seer_collector::ingest::body::gunzip;
use seer_collector::ingest::budget::Budget;
use seer_collector::internal_events::Metrics;

fuzz_target!(|data: &[u8]| {
    let budget = Budget::new(1 << 20, Arc::new(Metrics::new()));
    let mut res = budget.reserve_empty();
    if let Ok(out) = gunzip(data, 64 << 10, &mut res) {
        assert!(out.len() <= 64 << 10);
    }
});
