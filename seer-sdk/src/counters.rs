//! The pipeline's own counters, readable through [`crate::Recorder::counters`].

use crate::sync::{AtomicU64, Ordering};

/// Why spans (or, for [`DropReason::WindowBacklog`], requests' window stats) were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// A per-thread buffer was full: the exporter fell behind the hot path.
    BufferFull,
    /// The export queue was full: the collector is slow or down.
    QueueFull,
    /// The collector rejected the batch as bad data (4xx other than 429).
    Rejected,
    /// Export failed after all retries, or could not be flushed before shutdown.
    ExportFailed,
    /// A recording thread held the most uncollected ticks of window stats it keeps (no export
    /// worker collecting them: none spawned, or after shutdown): its oldest tick's stats were
    /// dropped. Counts requests, whose spans (if kept for export) are unaffected.
    WindowBacklog,
}

/// Cumulative counters, shared by the hot path, the worker and the exporter.
#[derive(Debug, Default)]
pub struct Counters {
    recorded: AtomicU64,
    exported: AtomicU64,
    unsampled: AtomicU64,
    dropped_buffer_full: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_export_failed: AtomicU64,
    dropped_window_backlog: AtomicU64,
    failed_requests: AtomicU64,
    retries: AtomicU64,
    windows_sent: AtomicU64,
    windows_dropped: AtomicU64,
    advice_received: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CountersSnapshot {
    /// Spans (records) the hot path produced and the exporter thread read, plus those dropped
    /// because a buffer was full.
    pub recorded: u64,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans not kept by sampling (still counted in the window stats).
    pub unsampled: u64,
    /// Spans dropped because a per-thread buffer was full.
    pub dropped_buffer_full: u64,
    /// Spans dropped because the export queue was full.
    pub dropped_queue_full: u64,
    /// Spans the collector rejected as bad data.
    pub dropped_rejected: u64,
    /// Spans dropped after export retries ran out or shutdown timed out.
    pub dropped_export_failed: u64,
    /// Requests whose window stats were dropped because a thread's uncollected ticks were at
    /// their cap (no export worker running). Not spans: not part of [`CountersSnapshot::dropped`].
    pub dropped_window_backlog: u64,
    /// Export requests (spans or windows) that failed for good.
    pub failed_requests: u64,
    /// Export attempts retried.
    pub retries: u64,
    /// Window batches the collector accepted.
    pub windows_sent: u64,
    /// Window batches dropped (queue full, rejected, or retries exhausted).
    pub windows_dropped: u64,
    /// Advice replies received.
    pub advice_received: u64,
}

impl CountersSnapshot {
    /// Spans dropped for any reason (window stats dropped, `dropped_window_backlog`, are counted
    /// apart: they are requests, not spans).
    pub fn dropped(&self) -> u64 {
        self.dropped_buffer_full
            + self.dropped_queue_full
            + self.dropped_rejected
            + self.dropped_export_failed
    }
}

impl Counters {
    /// Adds `n` spans dropped for `reason`.
    pub fn add_dropped(&self, reason: DropReason, n: u64) {
        let c = match reason {
            DropReason::BufferFull => &self.dropped_buffer_full,
            DropReason::QueueFull => &self.dropped_queue_full,
            DropReason::Rejected => &self.dropped_rejected,
            DropReason::ExportFailed => &self.dropped_export_failed,
            DropReason::WindowBacklog => &self.dropped_window_backlog,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` spans accepted by the collector.
    pub fn add_exported(&self, n: u64) {
        self.exported.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one export request that failed for good.
    pub fn add_failed_request(&self) {
        self.failed_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one retried attempt.
    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts window batches sent (accepted) or dropped.
    pub fn add_windows(&self, sent: u64, dropped: u64) {
        self.windows_sent.fetch_add(sent, Ordering::Relaxed);
        self.windows_dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    pub(crate) fn add_recorded(&self, n: u64) {
        self.recorded.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_unsampled(&self, n: u64) {
        self.unsampled.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_advice(&self) {
        self.advice_received.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> CountersSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let dropped_buffer_full = l(&self.dropped_buffer_full);
        CountersSnapshot {
            recorded: l(&self.recorded) + dropped_buffer_full,
            exported: l(&self.exported),
            unsampled: l(&self.unsampled),
            dropped_buffer_full,
            dropped_queue_full: l(&self.dropped_queue_full),
            dropped_rejected: l(&self.dropped_rejected),
            dropped_export_failed: l(&self.dropped_export_failed),
            dropped_window_backlog: l(&self.dropped_window_backlog),
            failed_requests: l(&self.failed_requests),
            retries: l(&self.retries),
            windows_sent: l(&self.windows_sent),
            windows_dropped: l(&self.windows_dropped),
            advice_received: l(&self.advice_received),
        }
    }

    pub(crate) fn to_proto(&self) -> seer_proto::SdkCounters {
        let s = self.snapshot();
        seer_proto::SdkCounters {
            recorded: s.recorded,
            exported: s.exported,
            dropped_buffer_full: s.dropped_buffer_full,
            dropped_queue_full: s.dropped_queue_full,
            unsampled: s.unsampled,
            failed_exports: s.failed_requests,
            dropped_rejected: s.dropped_rejected,
            dropped_export_failed: s.dropped_export_failed,
            dropped_window_backlog: s.dropped_window_backlog,
        }
    }
}
