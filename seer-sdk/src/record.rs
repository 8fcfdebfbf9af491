//! The fixed-size record the hot path pushes for every request.

use crate::clock::Instant;

/// What kind of span a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanKind {
    /// A request served by this process (feeds the window stats).
    Server = 1,
    /// A call this process made to a downstream service.
    Client = 2,
    /// A span inside a handler (from `tracing` or OpenTelemetry).
    Internal = 3,
}

/// Flag bits of a [`SpanRecord`].
pub mod flags {
    /// Head sampling kept this span.
    pub const SAMPLED: u8 = 1 << 0;
    /// The request ended with an error (5xx, gRPC error or inner service error).
    pub const ERROR: u8 = 1 << 1;
    /// Admission control shed the request.
    pub const SHED: u8 = 1 << 2;
    /// The response future was dropped before completion.
    pub const CANCELLED: u8 = 1 << 3;
    /// The parent context came from another process.
    pub const REMOTE_PARENT: u8 = 1 << 4;
    /// The span name is in the internal-name table rather than the endpoint table.
    pub const NAMED: u8 = 1 << 5;
    /// Already counted in the window stats by the recording thread.
    pub const WINDOWED: u8 = 1 << 6;
}

/// One finished span as the hot path records it: plain data, `Copy`, no pointers.
///
/// Times are raw clock instants; the exporter converts them to unix nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: u128,
    /// Span id.
    pub span_id: u64,
    /// Parent span id (0 for a root).
    pub parent_id: u64,
    /// Arrival (server) or call (client) time.
    pub start: Instant,
    /// Completion time.
    pub end: Instant,
    /// Time spent queued before admission or before the handler's own worker, ns.
    pub queue_wait_ns: u64,
    /// Time blocked on downstream calls, ns.
    pub blocked_ns: u64,
    /// Interned endpoint (or internal name, with [`flags::NAMED`]) id.
    pub name: u32,
    /// In-flight requests of this endpoint at arrival, this one included.
    pub inflight: u32,
    /// Local in-flight at arrival: in-flight minus requests waiting on downstream calls.
    pub local_inflight: u32,
    /// HTTP status (or 0 if none).
    pub status: u16,
    /// Span kind.
    pub kind: SpanKind,
    /// [`flags`] bits.
    pub flags: u8,
    /// Admission priority (higher is more important).
    pub priority: u8,
}

impl SpanRecord {
    /// Whether `flag` is set.
    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// A finished, healthy, zero-length server span for tests.
    #[cfg(test)]
    pub(crate) fn for_test(span_id: u64, kind: SpanKind, flags: u8) -> Self {
        let now = crate::clock::now();
        SpanRecord {
            trace_id: 1,
            span_id,
            parent_id: 0,
            start: now,
            end: now,
            queue_wait_ns: 0,
            blocked_ns: 0,
            name: 0,
            inflight: 1,
            local_inflight: 1,
            status: 200,
            kind,
            flags,
            priority: 0,
        }
    }
}
