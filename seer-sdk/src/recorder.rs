//! The recorder: the hot-path half of the SDK.

use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use crossbeam::utils::CachePadded;

use crate::advice::{Advice, AdviceCell, ShedReason};
use crate::buffer::{Pushed, Rings, WindowRegistry};
use crate::clock::{self, Anchor, Instant};
use crate::context::{self, Context};
use crate::counters::{Counters, CountersSnapshot, DropReason};
use crate::id::{SpanId, TraceId, next_u64};
use crate::intern::Interner;
use crate::limit::{LimiterConfig, LimiterMode};
use crate::propagation::{FLAG_SAMPLED, SpanContext};
use crate::record::{SpanKind, SpanRecord, flags};
use crate::sync::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use crate::window::ServerSample;

/// An interned endpoint (or span name) id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointId(pub(crate) u32);

impl EndpointId {
    /// The raw id.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Live gauges of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct EndpointGauges {
    pub(crate) arrivals: AtomicU64,
    pub(crate) departures: AtomicU64,
    /// Requests currently waiting on at least one downstream call.
    pub(crate) blocked: AtomicI64,
    /// Requests currently queued for the handler's own worker ([`context::enter_queue`]).
    pub(crate) queued: AtomicI64,
}

/// Live gauges of the whole service.
#[derive(Debug, Default)]
pub(crate) struct ServiceGauges {
    /// Requests in flight, counted only while an in-flight cap can apply (see
    /// `Inner::count_inflight`); the service's in-flight gauge is otherwise the sum of the
    /// endpoints'.
    pub(crate) inflight: AtomicI64,
    /// Requests parked in the inner service's `poll_ready`.
    pub(crate) queued: AtomicI64,
}

/// Immutable settings of a recorder (see [`crate::Builder`]).
#[derive(Clone, Debug)]
pub(crate) struct RecorderConfig {
    pub(crate) service: Arc<str>,
    pub(crate) sample_ratio: f64,
    pub(crate) max_endpoints: usize,
    pub(crate) max_names: usize,
    pub(crate) ring_capacity: usize,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) limiter: Option<LimiterConfig>,
    pub(crate) retry_after: Duration,
    pub(crate) tick_ns: u64,
    pub(crate) slow: Option<Duration>,
    pub(crate) qos: Vec<(String, Duration)>,
}

/// Marks a slow threshold not looked up yet.
const UNRESOLVED: u64 = u64::MAX;

pub(crate) struct Inner {
    id: u64,
    pub(crate) cfg: RecorderConfig,
    sample_threshold: u64,
    pub(crate) endpoints: Interner,
    gauges: Box<[CachePadded<EndpointGauges>]>,
    pub(crate) names: Interner,
    pub(crate) svc: CachePadded<ServiceGauges>,
    pub(crate) counters: Counters,
    pub(crate) rings: Rings,
    pub(crate) windows: WindowRegistry,
    /// Per-endpoint QoS threshold in ns (0: none), resolved on first use.
    slow_ns: Box<[AtomicU64]>,
    pub(crate) advice: AdviceCell,
    /// Current local limiter limit; 0 when no limiter runs.
    pub(crate) limit: AtomicU32,
    limiter_always: bool,
    /// Whether requests count in the service-wide in-flight counter `svc.inflight`: only when an
    /// in-flight cap can apply (a configured cap, a limiter, or advice that carried a cap; set
    /// once and never cleared). Otherwise a request touches only its endpoint's gauges, and the
    /// service's in-flight is the sum of the endpoints'.
    pub(crate) count_inflight: AtomicBool,
    /// `cfg.tick_ns`, at least 1.
    tick_ns: u64,
    pub(crate) worker: OnceLock<Thread>,
    wake_pending: AtomicBool,
    drop_logged: AtomicBool,
    pub(crate) anchor: Anchor,
    epoch: Instant,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("id", &self.id)
            .field("service", &self.cfg.service)
            .finish_non_exhaustive()
    }
}

/// The in-process recorder. `Copy`: every copy records into the same buffers and gauges.
/// Build one per service at start-up with [`crate::Builder`].
///
/// A recorder lives for the rest of the process, like a global `tracing` dispatcher: its state
/// is allocated once and never freed, so the hot path holds a plain `&'static` reference and
/// pays no reference counting per request. Building recorders in a loop leaks them.
#[derive(Clone, Copy, Debug)]
pub struct Recorder {
    pub(crate) inner: &'static Inner,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A finished span from other instrumentation, for [`Recorder::record_span`].
#[derive(Clone, Copy, Debug)]
pub struct ExternalSpan {
    /// Name id: from [`Recorder::span_name`] (`named = true`) or [`Recorder::endpoint`].
    pub name: EndpointId,
    /// Whether `name` is in the span-name table (else the endpoint table).
    pub named: bool,
    /// Kind.
    pub kind: SpanKind,
    /// Identity.
    pub span: SpanContext,
    /// Parent span id ([`SpanId::INVALID`] for a root).
    pub parent_id: SpanId,
    /// Whether the parent came from another process.
    pub remote_parent: bool,
    /// Start.
    pub start: Instant,
    /// End.
    pub end: Instant,
    /// HTTP status, or 0.
    pub status: u16,
    /// Whether it failed.
    pub error: bool,
}

/// A request refused by admission control, already recorded as shed.
#[derive(Clone, Copy, Debug)]
pub struct Shed {
    /// Why.
    pub reason: ShedReason,
    /// Suggested `Retry-After`.
    pub retry_after: Duration,
    /// The span identity the shed request was recorded under.
    pub span: SpanContext,
}

/// The timing and bookkeeping of one admitted server request. Finish it with
/// [`ServerSpan::finish`]; dropping it unfinished records the request as cancelled and releases
/// its gauges.
#[derive(Debug)]
pub struct ServerSpan {
    /// The request context (its span identity, endpoint and recorder); `None` once finished.
    cx: Option<Context>,
    parent_id: u64,
    start: Instant,
    queue_wait_ns: u64,
    inflight: u32,
    local_inflight: u32,
    priority: u8,
    remote_parent: bool,
    /// Whether the request counts in the service-wide in-flight counter.
    svc_counted: bool,
}

/// One outgoing call, recorded as a client span; it marks the calling request as blocked on a
/// downstream call until finished or dropped.
#[derive(Debug)]
pub struct ClientSpan {
    recorder: Recorder,
    span: SpanContext,
    parent_id: u64,
    name: u32,
    start: Instant,
    wait: Option<(Arc<context::RequestState>, Recorder, u32)>,
    done: bool,
}

impl Recorder {
    pub(crate) fn new(cfg: RecorderConfig) -> Self {
        let endpoints = Interner::new(cfg.max_endpoints);
        let gauges = (0..endpoints.capacity())
            .map(|_| CachePadded::new(EndpointGauges::default()))
            .collect();
        let ratio = cfg.sample_ratio.clamp(0.0, 1.0);
        let sample_threshold = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio * 18_446_744_073_709_551_616.0) as u64
        };
        let limit = cfg.limiter.map_or(0, |l| l.initial.clamp(l.min, l.max));
        let limiter_always = cfg.limiter.is_some_and(|l| l.mode == LimiterMode::Always);
        Self {
            inner: Box::leak(Box::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                sample_threshold,
                names: Interner::new(cfg.max_names),
                endpoints,
                gauges,
                svc: CachePadded::new(ServiceGauges::default()),
                counters: Counters::default(),
                rings: Rings::new(cfg.ring_capacity),
                windows: WindowRegistry::default(),
                slow_ns: (0..=cfg.max_endpoints.max(1))
                    .map(|_| AtomicU64::new(UNRESOLVED))
                    .collect(),
                advice: AdviceCell::default(),
                limit: AtomicU32::new(limit),
                limiter_always,
                count_inflight: AtomicBool::new(
                    cfg.max_in_flight.is_some() || cfg.limiter.is_some(),
                ),
                tick_ns: cfg.tick_ns.max(1),
                worker: OnceLock::new(),
                wake_pending: AtomicBool::new(false),
                drop_logged: AtomicBool::new(false),
                anchor: Anchor::new(),
                epoch: clock::now(),
                cfg,
            })),
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.cfg.service
    }

    /// Interns an endpoint `"{method} {route}"`. Allocates only the first time a name is seen;
    /// beyond the cardinality cap every new name maps to the `other` endpoint.
    #[inline]
    pub fn endpoint(&self, method: &str, route: &str) -> EndpointId {
        EndpointId(self.inner.endpoints.intern(method, route))
    }

    /// The name of an endpoint.
    pub fn endpoint_name(&self, id: EndpointId) -> Arc<str> {
        self.inner.endpoints.name(id.0)
    }

    /// Interns an internal span name (for `tracing`/OpenTelemetry spans), capped like endpoints.
    pub fn span_name(&self, name: &str) -> EndpointId {
        EndpointId(self.inner.names.intern("", name))
    }

    /// Interns a client span name `"{method} {target}"` in the span-name table (client calls do
    /// not use up endpoint cardinality).
    pub fn client_name(&self, method: &str, target: &str) -> EndpointId {
        EndpointId(self.inner.names.intern(method, target))
    }

    /// The name of an internal or client span name id.
    pub fn span_name_str(&self, id: EndpointId) -> Arc<str> {
        self.inner.names.name(id.0)
    }

    /// The pipeline counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.counters.snapshot()
    }

    /// The counters, for exporters.
    pub fn counters_ref(&self) -> &Counters {
        &self.inner.counters
    }

    /// The latest advice received, valid or not.
    pub fn advice(&self) -> Option<Advice> {
        self.inner.advice.get()
    }

    /// Stores advice as if the collector had sent it (tests, or advice from another source).
    pub fn set_advice(&self, advice: Advice) {
        self.store_advice(advice, &[0; 256]);
    }

    /// Stores advice for the priority mix `mix`. Advice with an in-flight cap turns on the
    /// service-wide in-flight counter first (for good).
    pub(crate) fn store_advice(&self, advice: Advice, mix: &[u64; 256]) {
        if advice.max_in_flight.is_some_and(|m| m > 0) {
            self.inner.count_inflight.store(true, Ordering::Relaxed);
        }
        // A fresh anchor (off the hot path: this runs on the exporter's I/O thread): the
        // collector's expiry is wall-clock time, and the wall clock may have been stepped
        // since the recorder started, which would make advice expire early or outlive its TTL.
        self.inner.advice.store(advice, mix, &Anchor::new());
    }

    /// Requests currently in flight in the whole service (the sum over its endpoints).
    pub fn in_flight(&self) -> i64 {
        let n: u64 = self
            .inner
            .gauges
            .iter()
            .map(|g| {
                g.arrivals
                    .load(Ordering::Relaxed)
                    .saturating_sub(g.departures.load(Ordering::Relaxed))
            })
            .sum();
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    /// Requests currently parked in the inner service's `poll_ready` (the layer's queue).
    pub fn queue_depth(&self) -> i64 {
        self.inner.svc.queued.load(Ordering::Relaxed)
    }

    /// The current local limiter limit, if a limiter runs.
    pub fn limit(&self) -> Option<u32> {
        match self.inner.limit.load(Ordering::Relaxed) {
            0 => None,
            l => Some(l),
        }
    }

    #[inline]
    pub(crate) fn gauges(&self, endpoint: u32) -> &EndpointGauges {
        let g = &self.inner.gauges;
        &g[(endpoint as usize).min(g.len() - 1)]
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.gauges.len()
    }

    pub(crate) fn epoch_ns(&self, now: Instant) -> u64 {
        clock::nanos_between(self.inner.epoch, now)
    }

    /// Marks one request as parked in `poll_ready` (service-wide queue depth).
    #[inline]
    pub fn queue_enter(&self) {
        self.inner.svc.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Undoes [`Recorder::queue_enter`].
    #[inline]
    pub fn queue_exit(&self) {
        self.inner.svc.queued.fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    fn push(&self, rec: SpanRecord) {
        match self.inner.rings.push(self.inner.id, rec) {
            Pushed::Ok => {}
            Pushed::HalfFull => self.wake(),
            Pushed::Dropped => {
                self.inner.counters.add_dropped(DropReason::BufferFull, 1);
            }
        }
    }

    /// The QoS threshold of `endpoint` in ns (0: none).
    #[inline]
    fn slow_threshold(&self, endpoint: u32) -> u64 {
        let slots = &self.inner.slow_ns;
        let slot = &slots[(endpoint as usize).min(slots.len() - 1)];
        match slot.load(Ordering::Relaxed) {
            UNRESOLVED => self.resolve_slow(endpoint, slot),
            v => v,
        }
    }

    #[cold]
    fn resolve_slow(&self, endpoint: u32, slot: &AtomicU64) -> u64 {
        let cfg = &self.inner.cfg;
        let to_ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(UNRESOLVED - 1);
        let name = self.inner.endpoints.name(endpoint);
        let v = cfg
            .qos
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, d)| to_ns(*d))
            .or(cfg.slow.map(to_ns))
            .unwrap_or(0);
        slot.store(v, Ordering::Relaxed);
        v
    }

    /// Counts a server request in this thread's window stats and builds and pushes its record
    /// to the ring only if it is kept for export (sampled, error, shed or slow), so most
    /// requests cost no record and no cross-thread traffic.
    #[inline]
    fn emit_server(
        &self,
        name: u32,
        priority: u8,
        end: Instant,
        s: &ServerSample,
        record: impl FnOnce() -> SpanRecord,
    ) {
        let inner = self.inner;
        let slow = self.slow_threshold(name);
        let keep = s.flags & (flags::SAMPLED | flags::ERROR | flags::SHED) != 0
            || (slow > 0 && s.dur_ns > slow && s.flags & flags::CANCELLED == 0);
        let windowed = inner.windows.with(inner.id, |w| {
            let tick = w.tick_at(end, &inner.anchor, inner.tick_ns);
            w.add(tick, name, priority, s, &inner.counters);
            w.skipped += u64::from(!keep);
        });
        if !windowed {
            self.push(record()); // the worker counts it
        } else if keep {
            let mut rec = record();
            rec.flags |= flags::WINDOWED;
            self.push(rec);
        }
    }

    /// [`Recorder::emit_server`] for a complete record.
    fn emit_server_record(&self, rec: SpanRecord) {
        let s = ServerSample::of(&rec, clock::nanos_between(rec.start, rec.end));
        self.emit_server(rec.name, rec.priority, rec.end, &s, || rec);
    }

    #[cold]
    fn wake(&self) {
        if !self.inner.wake_pending.swap(true, Ordering::Relaxed)
            && let Some(t) = self.inner.worker.get()
        {
            t.unpark();
        }
    }

    pub(crate) fn clear_wake(&self) {
        self.inner.wake_pending.store(false, Ordering::Relaxed);
    }

    /// Returns true the first time it is called after drops began (to log a drop once).
    pub(crate) fn first_drop(&self) -> bool {
        !self.inner.drop_logged.swap(true, Ordering::Relaxed)
    }

    #[inline]
    fn sampled(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        match parent {
            Some(p) => p.is_sampled(),
            None => {
                (trace_id.0 as u64) < self.inner.sample_threshold
                    || self.inner.sample_threshold == u64::MAX
            }
        }
    }

    /// Starts a server span: counts the arrival, decides admission and assigns ids.
    ///
    /// `start` is the arrival time, `queue_wait` the time the request already waited (for
    /// `poll_ready`), `priority` its admission priority (higher is kept longer). A shed request
    /// is recorded (as shed) before this returns.
    ///
    /// # Errors
    ///
    /// [`Shed`] when admission control refuses the request.
    #[inline]
    pub fn begin_server(
        &self,
        endpoint: EndpointId,
        parent: Option<SpanContext>,
        start: Instant,
        queue_wait: Duration,
        priority: u8,
    ) -> Result<ServerSpan, Shed> {
        let inner = self.inner;
        let g = self.gauges(endpoint.0);
        let arrivals = g.arrivals.fetch_add(1, Ordering::Relaxed) + 1;
        let inflight = arrivals.saturating_sub(g.departures.load(Ordering::Relaxed));
        let blocked = g.blocked.load(Ordering::Relaxed).max(0) as u64;
        let svc_counted = inner.count_inflight.load(Ordering::Relaxed);
        let svc_inflight = if svc_counted {
            inner.svc.inflight.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };

        let trace_id = parent.map_or_else(TraceId::random, |p| p.trace_id);
        let span = SpanContext {
            trace_id,
            span_id: SpanId::random(),
            flags: if self.sampled(parent.as_ref(), trace_id) {
                FLAG_SAMPLED
            } else {
                0
            },
            is_remote: false,
        };
        let queue_wait_ns = u64::try_from(queue_wait.as_nanos()).unwrap_or(u64::MAX);
        let inflight = u32::try_from(inflight).unwrap_or(u32::MAX);
        let local = u32::try_from(u64::from(inflight).saturating_sub(blocked)).unwrap_or(0);

        if let Some(reason) = self.admit(start, svc_inflight, priority) {
            let mut f = flags::SHED;
            if span.is_sampled() {
                f |= flags::SAMPLED;
            }
            if parent.is_some() {
                f |= flags::REMOTE_PARENT;
            }
            self.emit_server_record(SpanRecord {
                trace_id: trace_id.0,
                span_id: span.span_id.0,
                parent_id: parent.map_or(0, |p| p.span_id.0),
                start,
                end: start,
                queue_wait_ns,
                blocked_ns: 0,
                name: endpoint.0,
                inflight,
                local_inflight: local,
                status: 503,
                kind: SpanKind::Server,
                flags: f,
                priority,
            });
            g.departures.fetch_add(1, Ordering::Relaxed);
            if svc_counted {
                inner.svc.inflight.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(Shed {
                reason,
                retry_after: inner.cfg.retry_after,
                span,
            });
        }
        Ok(ServerSpan {
            cx: Some(Context::new(span, endpoint.0, *self)),
            parent_id: parent.map_or(0, |p| p.span_id.0),
            start,
            queue_wait_ns,
            inflight,
            local_inflight: local,
            priority,
            remote_parent: parent.is_some(),
            svc_counted,
        })
    }

    /// The admission decision: `None` admits.
    #[inline]
    fn admit(&self, now: Instant, svc_inflight: i64, priority: u8) -> Option<ShedReason> {
        let inner = self.inner;
        let mut cap = inner.cfg.max_in_flight.unwrap_or(0);
        let mut cap_reason = ShedReason::MaxInFlight;
        let mut advice_valid = false;
        if !inner.limiter_always {
            let view = inner.advice.view(now);
            if view.valid {
                advice_valid = true;
                let p = u32::from(priority);
                if p < view.shed_below
                    || (p == view.shed_below
                        && view.shed_at_prob > 0
                        && (next_u64() as u32) < view.shed_at_prob)
                    || view.shed_below > 255
                {
                    return Some(ShedReason::Advice);
                }
                if view.max_in_flight > 0 && (cap == 0 || view.max_in_flight < cap) {
                    cap = view.max_in_flight;
                }
            }
        }
        if !advice_valid {
            let limit = inner.limit.load(Ordering::Relaxed);
            if limit > 0 && (cap == 0 || limit < cap) {
                cap = limit;
                cap_reason = ShedReason::Limiter;
            }
        }
        if cap > 0 && svc_inflight > i64::from(cap) {
            return Some(cap_reason);
        }
        None
    }

    /// Starts a client span for an outgoing call named `name` (interned with
    /// [`Recorder::client_name`]), as a child of `parent` when given, else of the current request
    /// ([`context::current_span`]), else as a new root. Marks the calling request blocked.
    pub fn begin_client(&self, name: EndpointId, parent: Option<&mut Context>) -> ClientSpan {
        let start = clock::now();
        let setup = |cx: Option<&mut Context>| match cx {
            Some(cx) => {
                let same = std::ptr::eq(cx.recorder.inner, self.inner);
                let wait = same.then(|| {
                    let st = cx.state();
                    Context::begin_wait(&st, &cx.recorder, cx.endpoint, start);
                    (st, cx.recorder, cx.endpoint)
                });
                (Some(cx.span), wait)
            }
            None => (None, None),
        };
        let (parent_span, wait) = match parent {
            Some(p) => setup(Some(p)),
            None => context::with_current(setup),
        };
        let trace_id = parent_span.map_or_else(TraceId::random, |p| p.trace_id);
        let sampled = self.sampled(parent_span.as_ref(), trace_id);
        ClientSpan {
            recorder: *self,
            span: SpanContext {
                trace_id,
                span_id: SpanId::random(),
                flags: if sampled { FLAG_SAMPLED } else { 0 },
                is_remote: false,
            },
            parent_id: parent_span.map_or(0, |p| p.span_id.0),
            name: name.0,
            start,
            wait,
            done: false,
        }
    }

    /// Records a span produced by other instrumentation (`tracing`, OpenTelemetry) that has
    /// already ended. Server spans named in the endpoint table also feed the window stats.
    pub fn record_span(&self, s: &ExternalSpan) {
        let mut f = 0;
        if s.named {
            f |= flags::NAMED;
        }
        if s.span.is_sampled() {
            f |= flags::SAMPLED;
        }
        if s.error {
            f |= flags::ERROR;
        }
        if s.remote_parent {
            f |= flags::REMOTE_PARENT;
        }
        let (mut inflight, mut local) = (0, 0);
        if s.kind == SpanKind::Server && !s.named {
            let g = self.gauges(s.name.0);
            let a = g.arrivals.fetch_add(1, Ordering::Relaxed) + 1;
            let d = g.departures.fetch_add(1, Ordering::Relaxed);
            inflight = u32::try_from(a.saturating_sub(d)).unwrap_or(u32::MAX);
            local = inflight;
        }
        let rec = SpanRecord {
            trace_id: s.span.trace_id.0,
            span_id: s.span.span_id.0,
            parent_id: s.parent_id.0,
            start: s.start,
            end: s.end,
            queue_wait_ns: 0,
            blocked_ns: 0,
            name: s.name.0,
            inflight,
            local_inflight: local,
            status: s.status,
            kind: s.kind,
            flags: f,
            priority: crate::advice::DEFAULT_PRIORITY,
        };
        if s.kind == SpanKind::Server && !s.named {
            self.emit_server_record(rec);
        } else {
            self.push(rec);
        }
    }

    /// A child span context of the current request (or a new root), for instrumentation that
    /// records its own spans.
    pub fn child_context(&self, parent: Option<SpanContext>) -> SpanContext {
        let trace_id = parent.map_or_else(TraceId::random, |p| p.trace_id);
        SpanContext {
            trace_id,
            span_id: SpanId::random(),
            flags: if self.sampled(parent.as_ref(), trace_id) {
                FLAG_SAMPLED
            } else {
                0
            },
            is_remote: false,
        }
    }
}

impl ServerSpan {
    /// The span identity of this request (to propagate downstream). Invalid (all zero) only if
    /// the context was taken out of [`ServerSpan::context_slot`] and not put back.
    pub fn span_context(&self) -> SpanContext {
        self.cx
            .as_ref()
            .map_or_else(SpanContext::default, |c| c.span)
    }

    /// The request context slot, to [`context::enter`] while polling the handler.
    pub fn context_slot(&mut self) -> &mut Option<Context> {
        &mut self.cx
    }

    /// A clone of the request context (allocating its shared state), e.g. to put in request
    /// extensions for handlers that spawn tasks.
    pub fn context(&mut self) -> Option<Context> {
        self.cx.as_mut().map(|c| {
            let _ = c.state();
            c.clone()
        })
    }

    /// Records the completed request. `status` is the HTTP status (0 if none); `error` marks
    /// a failed request (5xx, gRPC error, or an inner service error).
    #[inline]
    pub fn finish(mut self, status: u16, error: bool) {
        self.end(status, if error { flags::ERROR } else { 0 });
    }

    /// [`ServerSpan::finish`] in place, for a span stored inside a future (no move out of it).
    /// Later calls, and dropping the span, do nothing.
    #[inline]
    pub fn finish_in_place(&mut self, status: u16, error: bool) {
        self.end(status, if error { flags::ERROR } else { 0 });
    }

    #[inline]
    fn end(&mut self, status: u16, extra: u8) {
        let Some(cx) = self.cx.take() else {
            return;
        };
        let end = clock::now();
        let recorder = cx.recorder;
        let (mut blocked_ns, mut queue_ns) = (0, 0);
        if let Some(st) = &cx.state {
            Context::finish_state(st, &recorder, cx.endpoint, end);
            blocked_ns = st.blocked_ns.load(Ordering::Relaxed);
            queue_ns = st.queue_ns.load(Ordering::Relaxed);
        }
        let mut f = extra;
        if cx.span.is_sampled() {
            f |= flags::SAMPLED;
        }
        if self.remote_parent {
            f |= flags::REMOTE_PARENT;
        }
        let sample = ServerSample {
            flags: f,
            dur_ns: clock::nanos_between(self.start, end),
            blocked_ns,
            queue_wait_ns: self.queue_wait_ns + queue_ns,
            inflight: self.inflight,
            local_inflight: self.local_inflight,
        };
        let span = cx.span;
        recorder.emit_server(cx.endpoint, self.priority, end, &sample, || SpanRecord {
            trace_id: span.trace_id.0,
            span_id: span.span_id.0,
            parent_id: self.parent_id,
            start: self.start,
            end,
            queue_wait_ns: sample.queue_wait_ns,
            blocked_ns,
            name: cx.endpoint,
            inflight: self.inflight,
            local_inflight: self.local_inflight,
            status,
            kind: SpanKind::Server,
            flags: f,
            priority: self.priority,
        });
        recorder
            .gauges(cx.endpoint)
            .departures
            .fetch_add(1, Ordering::Relaxed);
        if self.svc_counted {
            recorder.inner.svc.inflight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        // Unfinished: the response future was dropped. Record as cancelled (status 0).
        self.end(0, flags::CANCELLED);
    }
}

impl ClientSpan {
    /// The span identity to inject into the outgoing request.
    pub fn span_context(&self) -> SpanContext {
        self.span
    }

    /// Records the completed call.
    pub fn finish(mut self, status: u16, error: bool) {
        self.end(status, if error { flags::ERROR } else { 0 });
    }

    fn end(&mut self, status: u16, extra: u8) {
        if self.done {
            return;
        }
        self.done = true;
        let end = clock::now();
        if let Some((st, rec, ep)) = self.wait.take() {
            Context::end_wait(&st, &rec, ep, end);
        }
        let mut f = extra | flags::NAMED;
        if self.span.is_sampled() {
            f |= flags::SAMPLED;
        }
        self.recorder.push(SpanRecord {
            trace_id: self.span.trace_id.0,
            span_id: self.span.span_id.0,
            parent_id: self.parent_id,
            start: self.start,
            end,
            queue_wait_ns: 0,
            blocked_ns: 0,
            name: self.name,
            inflight: 0,
            local_inflight: 0,
            status,
            kind: SpanKind::Client,
            flags: f,
            priority: 0,
        });
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        self.end(0, flags::CANCELLED);
    }
}
