//! SeerLayer against tower-test mocks: deterministic, no sockets.
#![allow(clippy::unwrap_used)] // test helpers

mod admission;
mod basics;
mod client;

use seer_sdk::testing::InMemoryExporter;
use seer_sdk::{Builder, ExportWorker, Recorder};

/// A recorder with an in-memory worker driven by hand.
pub fn pipeline(b: Builder) -> (Recorder, ExportWorker<InMemoryExporter>, InMemoryExporter) {
    let exporter = InMemoryExporter::new();
    let (recorder, worker) = b.build_with(exporter.clone());
    (recorder, worker, exporter)
}

/// Sums a field over every endpoint window exported so far.
pub fn total(exp: &InMemoryExporter, f: impl Fn(&seer_proto::EndpointWindow) -> u64) -> u64 {
    exp.windows()
        .iter()
        .flat_map(|b| b.windows.iter())
        .map(f)
        .sum()
}

/// Flushes the worker (cuts every open tick).
pub fn flush(worker: &mut ExportWorker<InMemoryExporter>) {
    worker.flush(std::time::Instant::now() + std::time::Duration::from_secs(1));
}
