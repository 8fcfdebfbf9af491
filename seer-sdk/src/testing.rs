//! Test doubles: an exporter that keeps everything in memory.

use std::sync::{Arc, Mutex};

use seer_proto::{AdviceReply, WindowBatch};

use crate::counters::Counters;
use crate::span::FinishedSpan;
use crate::worker::{ExportBatch, Exporter};

#[derive(Debug, Default)]
struct Store {
    spans: Vec<FinishedSpan>,
    windows: Vec<WindowBatch>,
    advice: Option<AdviceReply>,
}

/// Keeps exported spans and window batches in memory; clones share the store. Optionally
/// replies to every window batch with fixed advice.
#[derive(Clone, Debug, Default)]
pub struct InMemoryExporter {
    store: Arc<Mutex<Store>>,
}

impl InMemoryExporter {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        match self.store.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Replies to window batches with `advice` from now on.
    pub fn reply_with(&self, advice: AdviceReply) {
        self.lock().advice = Some(advice);
    }

    /// Spans exported so far.
    pub fn spans(&self) -> Vec<FinishedSpan> {
        self.lock().spans.clone()
    }

    /// Window batches exported so far.
    pub fn windows(&self) -> Vec<WindowBatch> {
        self.lock().windows.clone()
    }

    /// Forgets everything exported so far.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.spans.clear();
        s.windows.clear();
    }
}

impl Exporter for InMemoryExporter {
    fn export(&mut self, batch: ExportBatch<'_>, counters: &Counters) -> Option<AdviceReply> {
        let mut s = self.lock();
        counters.add_exported(batch.spans.len() as u64);
        counters.add_windows(batch.windows.len() as u64, 0);
        let any_windows = !batch.windows.is_empty();
        s.spans.extend(batch.spans);
        s.windows.extend(batch.windows);
        if any_windows { s.advice.clone() } else { None }
    }
}
