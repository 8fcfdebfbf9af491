//! Seer's collector: OTLP and window ingest, node counters, aggregation, prediction, advice
//! and storage.
#![forbid(unsafe_code)]

pub mod config;
pub mod hw;
pub mod ingest;
pub mod internal_events;
pub mod predict;
pub mod window;
