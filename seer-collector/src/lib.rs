//! Seer's collector: OTLP and window ingest, node counters, aggregation, prediction, advice
//! and storage.
#![forbid(unsafe_code)]

pub mod hw;
pub mod predict;
