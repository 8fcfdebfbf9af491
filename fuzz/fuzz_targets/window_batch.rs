//! Native window batches: decode, check, and merge into an aggregator without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use seer_collector::config::Config;
use seer_collector::window::{Aggregator, AggregatorConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = seer_proto::WindowBatch::decode(data) else {
        return;
    };
    if seer_collector::ingest::check_windows(&batch).is_err() {
        return;
    }
    let mut agg = Aggregator::new(AggregatorConfig::from_config(&Config::default()));
    let now = batch.tick_start_unix_ns;
    agg.on_windows(&batch, Some("n"), now);
    let _ = agg.advance(now.saturating_add(10_000_000_000));
});
