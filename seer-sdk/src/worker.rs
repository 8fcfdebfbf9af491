//! The export worker: drains the per-thread buffers, cuts windows on the tick, chooses the spans
//! to export and hands both to an [`Exporter`]. It runs on a dedicated OS thread and assumes no
//! async runtime.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use seer_proto::{AdviceReply, WIRE_VERSION, WindowBatch};

use crate::advice::Advice;
use crate::clock::{self, Anchor};
use crate::counters::{Counters, DropReason};
use crate::id::{SpanId, TraceId};
use crate::limit::Limiter;
use crate::record::{SpanKind, SpanRecord, flags};
use crate::recorder::Recorder;
use crate::span::{FinishedSpan, Resource};
use crate::sync::{AtomicBool, Ordering};
use crate::window::{CutTick, GaugeReading, WindowCutter};

/// Where finished spans and window batches go.
///
/// The worker thread is the only caller, so calls never overlap. Calls may block (for network
/// I/O) but should bound that by their own timeout: while an exporter blocks, records wait in the
/// bounded per-thread buffers, and overflow is dropped and counted.
pub trait Exporter: Send + 'static {
    /// Exports one tick's window batches (possibly empty) and the spans chosen since the last
    /// call. Counts exported and dropped spans in `counters`. Returns advice from the collector
    /// when its reply carried some.
    fn export(&mut self, batch: ExportBatch<'_>, counters: &Counters) -> Option<AdviceReply>;

    /// Called on every worker step with nothing new to send: retry what is pending.
    fn poll(&mut self, _counters: &Counters) -> Option<AdviceReply> {
        None
    }

    /// Called once at shutdown: deliver what is pending until `deadline`, then count the rest
    /// as dropped.
    fn flush(
        &mut self,
        _deadline: std::time::Instant,
        _counters: &Counters,
    ) -> Option<AdviceReply> {
        None
    }
}

/// What one export call carries.
#[derive(Debug)]
#[non_exhaustive]
pub struct ExportBatch<'a> {
    /// The sender.
    pub resource: &'a Resource,
    /// Window batches, one per cut tick, oldest first.
    pub windows: Vec<WindowBatch>,
    /// Spans chosen for export.
    pub spans: Vec<FinishedSpan>,
}

/// Settings of the worker (see [`crate::Builder`]).
#[derive(Clone, Debug)]
pub(crate) struct WorkerConfig {
    pub(crate) tick: Duration,
    pub(crate) drain_interval: Duration,
    pub(crate) max_queue_spans: usize,
    pub(crate) max_batch_spans: usize,
    pub(crate) slow: Option<Duration>,
    pub(crate) qos: Vec<(String, Duration)>,
    pub(crate) shutdown_timeout: Duration,
}

/// Where batches go: straight into the exporter (driven by hand), or to the I/O thread.
#[derive(Debug)]
enum Output<E> {
    Inline(E),
    Thread(SyncSender<IoMsg>),
}

/// A message to the I/O thread.
#[derive(Debug)]
enum IoMsg {
    Batch {
        windows: Vec<WindowBatch>,
        spans: Vec<FinishedSpan>,
        mix: Box<[u64; 256]>,
    },
    Flush {
        deadline: std::time::Instant,
    },
}

/// Batches waiting for the I/O thread, at most; more are dropped (and counted) so that a slow
/// collector never stalls draining.
const IO_QUEUE: usize = 8;

/// The export worker. Run it with [`ExportWorker::spawn`] (a draining thread plus an I/O thread,
/// so that a slow collector never delays draining), or drive it yourself with
/// [`ExportWorker::step`] and [`ExportWorker::flush`] (the exporter is then called inline).
#[derive(Debug)]
pub struct ExportWorker<E> {
    recorder: Recorder,
    out: Output<E>,
    cutter: WindowCutter,
    spans: Vec<FinishedSpan>,
    cfg: WorkerConfig,
    resource: Arc<Resource>,
    limiter: Option<Limiter>,
    prio_mix: Box<[u64; 256]>,
    slow_ns: HashMap<u32, u64>,
    default_slow_ns: u64,
    /// Counts accumulated during one drain, published once per drain.
    pending_unsampled: u64,
    pending_queue_full: u64,
}

/// Handle on a spawned worker thread. Dropping it shuts the worker down (flushing with the
/// configured timeout).
#[derive(Debug)]
pub struct ExportHandle {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<()>,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct Stop {
    flag: AtomicBool,
    deadline: Mutex<Option<std::time::Instant>>,
}

/// Why shutdown did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The worker did not finish flushing in time; it keeps running detached until its flush
    /// deadline passes.
    #[error("export worker did not finish within {0:?}")]
    Timeout(Duration),
    /// The worker thread panicked.
    #[error("export worker panicked")]
    Panicked,
}

impl<E: Exporter> ExportWorker<E> {
    pub(crate) fn new(
        recorder: Recorder,
        exporter: E,
        cfg: WorkerConfig,
        resource: Resource,
    ) -> Self {
        let tick_ns = u64::try_from(cfg.tick.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let grace_ns = u64::try_from(cfg.drain_interval.as_nanos())
            .unwrap_or(0)
            .saturating_mul(2);
        let limiter = recorder.inner.cfg.limiter.map(Limiter::new);
        let default_slow_ns = cfg
            .slow
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            cutter: WindowCutter::new(tick_ns, grace_ns, recorder.endpoint_count()),
            spans: Vec::new(),
            out: Output::Inline(exporter),
            limiter,
            prio_mix: Box::new([0; 256]),
            slow_ns: HashMap::new(),
            default_slow_ns,
            pending_unsampled: 0,
            pending_queue_full: 0,
            recorder,
            cfg,
            resource: Arc::new(resource),
        }
    }

    /// The recorder this worker drains.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn slow_threshold(&mut self, endpoint: u32) -> u64 {
        if self.cfg.qos.is_empty() {
            return self.default_slow_ns;
        }
        if let Some(&v) = self.slow_ns.get(&endpoint) {
            return v;
        }
        let name = self.recorder.inner.endpoints.name(endpoint);
        let v = self
            .cfg
            .qos
            .iter()
            .find(|(n, _)| **n == *name)
            .map_or(self.default_slow_ns, |(_, d)| {
                u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
            });
        self.slow_ns.insert(endpoint, v);
        v
    }

    fn on_record(&mut self, rec: &SpanRecord, anchor: &Anchor) {
        let end_unix = rec.end.as_unix_nanos(anchor);
        let windowed = rec.has(flags::WINDOWED);
        if !windowed {
            self.cutter.add(rec, end_unix);
        }
        let dur = clock::nanos_between(rec.start, rec.end);
        let mut slow = false;
        if rec.kind == SpanKind::Server {
            if !windowed {
                self.prio_mix[usize::from(rec.priority)] += 1;
            }
            let t = self.slow_threshold(rec.name);
            slow = t > 0 && dur > t && !rec.has(flags::CANCELLED);
        }
        let keep = slow || rec.flags & (flags::SAMPLED | flags::ERROR | flags::SHED) != 0;
        if !keep {
            self.pending_unsampled += 1;
            return;
        }
        if self.spans.len() >= self.cfg.max_queue_spans {
            self.pending_queue_full += 1;
            return;
        }
        let name = if rec.has(flags::NAMED) {
            self.recorder.inner.names.name(rec.name)
        } else {
            self.recorder.inner.endpoints.name(rec.name)
        };
        self.spans.push(FinishedSpan {
            trace_id: TraceId(rec.trace_id),
            span_id: SpanId(rec.span_id),
            parent_span_id: SpanId(rec.parent_id),
            name,
            kind: rec.kind,
            start_unix_ns: end_unix.saturating_sub(dur),
            end_unix_ns: end_unix,
            status: rec.status,
            flags: rec.flags,
            queue_wait_ns: rec.queue_wait_ns,
            self_ns: dur.saturating_sub(rec.blocked_ns),
            inflight: rec.inflight,
            local_inflight: rec.local_inflight,
            priority: rec.priority,
            slow,
        });
    }

    /// Reads the rings and the thread aggregates. A step (`all == false`) reads a few passes of
    /// at most a ring's capacity each, so that sustained load cannot keep the worker from
    /// cutting ticks; a flush (`all == true`) reads everything in every ring once (bounded: each
    /// ring holds at most its capacity).
    fn drain(&mut self, anchor: &Anchor, all: bool) -> usize {
        let recorder = self.recorder;
        let mut total = 0;
        let (max, passes) = if all {
            (usize::MAX, 1)
        } else {
            (recorder.inner.rings.capacity(), 4)
        };
        for _ in 0..passes {
            let n = recorder
                .inner
                .rings
                .drain(max, |r| self.on_record(r, anchor));
            total += n;
            if n == 0 {
                break;
            }
        }
        // Window stats the recording threads accumulated themselves.
        let mut skipped = 0;
        recorder.inner.windows.collect(|ticks, sk, prio| {
            for t in ticks {
                self.cutter.merge(t);
            }
            skipped += sk;
            for (m, p) in self.prio_mix.iter_mut().zip(prio.iter()) {
                *m += p;
            }
        });
        self.pending_unsampled += skipped;
        let counters = &recorder.inner.counters;
        counters.add_recorded(total as u64 + skipped);
        counters.add_unsampled(std::mem::take(&mut self.pending_unsampled));
        counters.add_dropped(
            DropReason::QueueFull,
            std::mem::take(&mut self.pending_queue_full),
        );
        total
    }

    fn sample_gauges(&mut self, now_unix: u64) {
        let r = &self.recorder;
        let n = r.inner.endpoints.capacity();
        let readings = (0..n).filter_map(|i| {
            let id = u32::try_from(i).ok()?;
            let g = r.gauges(id);
            let inflight = g
                .arrivals
                .load(Ordering::Relaxed)
                .saturating_sub(g.departures.load(Ordering::Relaxed));
            let blocked = g.blocked.load(Ordering::Relaxed).max(0) as u64;
            let queued = g.queued.load(Ordering::Relaxed).max(0) as u64;
            Some((
                id,
                GaugeReading {
                    inflight,
                    local: inflight.saturating_sub(blocked),
                    queued,
                },
            ))
        });
        let svc_queue = r.queue_depth().max(0) as u64;
        let svc_inflight = r.in_flight().max(0) as u64;
        self.cutter
            .sample(now_unix, readings, svc_queue, svc_inflight);
    }

    fn arrivals(&self) -> Vec<u64> {
        (0..self.recorder.inner.endpoints.capacity())
            .map(|i| {
                self.recorder
                    .gauges(u32::try_from(i).unwrap_or(u32::MAX))
                    .arrivals
                    .load(Ordering::Relaxed)
            })
            .collect()
    }

    fn window_batch(&mut self, cut: CutTick) -> WindowBatch {
        let tick_ns = self.cutter.tick_ns();
        if let Some(l) = &mut self.limiter {
            let limit = l.update(&cut.sample, self.default_slow_ns);
            self.recorder
                .inner
                .limit
                .store(limit.max(1), Ordering::Relaxed);
        }
        let windows = cut
            .windows
            .into_iter()
            .map(|(id, mut w)| {
                w.endpoint = self.recorder.inner.endpoints.name(id).to_string();
                w
            })
            .collect();
        WindowBatch {
            version: WIRE_VERSION,
            service: self.resource.service.clone(),
            node: self.resource.node.clone(),
            pid: self.resource.pid,
            cgroup: self.resource.cgroup.clone(),
            tick_start_unix_ns: cut.tick.saturating_mul(tick_ns),
            tick_ns,
            windows,
            sdk: Some(self.recorder.inner.counters.to_proto()),
            service_queue_depth_mean: cut.svc_queue.mean(),
            service_queue_depth_max: cut.svc_queue.max(),
        }
    }

    /// Hands a batch to the exporter (inline) or to the I/O thread (never blocking unless
    /// `block`: a full queue drops the batch, counted).
    fn send(&mut self, windows: Vec<WindowBatch>, spans: Vec<FinishedSpan>, block: bool) {
        let counters = &self.recorder.inner.counters;
        match &mut self.out {
            Output::Inline(exporter) => {
                let batch = ExportBatch {
                    resource: &self.resource,
                    windows,
                    spans,
                };
                let advice = exporter.export(batch, counters);
                apply_advice(self.recorder, advice, &self.prio_mix);
            }
            Output::Thread(tx) => {
                let msg = IoMsg::Batch {
                    windows,
                    spans,
                    mix: self.prio_mix.clone(),
                };
                let failed = if block {
                    tx.send(msg).err().map(|e| e.0)
                } else {
                    match tx.try_send(msg) {
                        Ok(()) => None,
                        Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => Some(m),
                    }
                };
                if let Some(IoMsg::Batch { windows, spans, .. }) = failed {
                    counters.add_dropped(DropReason::QueueFull, spans.len() as u64);
                    counters.add_windows(0, windows.len() as u64);
                }
            }
        }
    }

    fn cut_and_export(&mut self, now_unix: u64, force: bool) -> bool {
        let arrivals = self.arrivals();
        let cuts = self.cutter.cut(now_unix, force, &arrivals);
        let windows: Vec<WindowBatch> = cuts.into_iter().map(|c| self.window_batch(c)).collect();
        if !windows.is_empty() {
            // Decay the priority mix once per tick so it follows the recent traffic.
            self.recorder.inner.advice.retarget(&self.prio_mix);
            for v in self.prio_mix.iter_mut() {
                *v /= 2;
            }
        }
        if windows.is_empty() && self.spans.len() < self.cfg.max_batch_spans {
            return false;
        }
        let spans = std::mem::take(&mut self.spans);
        self.send(windows, spans, force);
        true
    }

    /// One round: drain the buffers, sample the gauges, cut the ticks that are due and export.
    /// Returns the number of records drained.
    pub fn step(&mut self) -> usize {
        let anchor = Anchor::new();
        let n = self.drain(&anchor, false);
        let now_unix = clock::now().as_unix_nanos(&anchor);
        self.sample_gauges(now_unix);
        if !self.cut_and_export(now_unix, false)
            && let Output::Inline(exporter) = &mut self.out
        {
            let advice = exporter.poll(&self.recorder.inner.counters);
            apply_advice(self.recorder, advice, &self.prio_mix);
        }
        self.log_drops_once();
        n
    }

    /// Drains everything, cuts every open tick (including the current, partial one) and exports,
    /// then lets the exporter deliver until `deadline`.
    pub fn flush(&mut self, deadline: std::time::Instant) {
        let anchor = Anchor::new();
        self.drain(&anchor, true);
        let now_unix = clock::now().as_unix_nanos(&anchor);
        self.cut_and_export(now_unix, true);
        if !self.spans.is_empty() {
            let spans = std::mem::take(&mut self.spans);
            self.send(Vec::new(), spans, true);
        }
        match &mut self.out {
            Output::Inline(exporter) => {
                let advice = exporter.flush(deadline, &self.recorder.inner.counters);
                apply_advice(self.recorder, advice, &self.prio_mix);
            }
            Output::Thread(tx) => {
                let _ = tx.send(IoMsg::Flush { deadline });
            }
        }
    }

    fn log_drops_once(&self) {
        let c = self.recorder.counters();
        if (c.dropped() > 0 || c.dropped_window_backlog > 0) && self.recorder.first_drop() {
            crate::internal_log::warn(&format!(
                "seer: dropping spans (buffer full {}, queue full {}, rejected {}, export failed {}; \
                 window stats of {} requests); further drops are counted (see Recorder::counters), \
                 not logged",
                c.dropped_buffer_full,
                c.dropped_queue_full,
                c.dropped_rejected,
                c.dropped_export_failed,
                c.dropped_window_backlog
            ));
        }
    }

    /// Runs the worker on the current thread until `stop` is set, then flushes.
    fn run(mut self, stop: &Stop) {
        let _ = self.recorder.inner.worker.set(std::thread::current());
        loop {
            self.recorder.clear_wake();
            self.step();
            if stop.flag.load(Ordering::Acquire) {
                break;
            }
            std::thread::park_timeout(self.cfg.drain_interval);
        }
        let deadline = match stop.deadline.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
        .unwrap_or_else(|| std::time::Instant::now() + self.cfg.shutdown_timeout);
        self.flush(deadline);
    }

    /// Spawns the worker on two dedicated OS threads: `seer-export` drains, cuts windows and
    /// picks spans; `seer-export-io` runs the exporter (encoding and network I/O), so a slow or
    /// unreachable collector never delays draining.
    ///
    /// # Errors
    ///
    /// The OS error if a thread cannot be spawned.
    pub fn spawn(mut self) -> std::io::Result<ExportHandle> {
        let stop = Arc::new(Stop::default());
        let (tx, rx): (SyncSender<()>, Receiver<()>) = sync_channel(1);
        let timeout = self.cfg.shutdown_timeout;
        let (io_tx, io_rx) = sync_channel::<IoMsg>(IO_QUEUE);
        let Output::Inline(exporter) = std::mem::replace(&mut self.out, Output::Thread(io_tx))
        else {
            return Err(std::io::Error::other("export worker already spawned"));
        };
        let recorder = self.recorder;
        let resource = Arc::clone(&self.resource);
        let poll_every = self.cfg.drain_interval;
        let io = std::thread::Builder::new()
            .name("seer-export-io".into())
            .spawn(move || io_loop(exporter, &io_rx, recorder, &resource, poll_every))?;
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("seer-export".into())
            .spawn(move || {
                self.run(&s);
                // Dropping the worker closes the I/O queue; the I/O thread ends after its flush.
                let _ = io.join();
                let _ = tx.send(());
            })?;
        Ok(ExportHandle {
            stop,
            thread: Some(thread),
            done: rx,
            timeout,
        })
    }
}

fn apply_advice(recorder: Recorder, advice: Option<AdviceReply>, mix: &[u64; 256]) {
    if let Some(a) = advice {
        recorder.inner.counters.add_advice();
        recorder.store_advice(Advice::from(a), mix);
    }
}

/// The I/O thread: runs the exporter on the batches it is sent, and retries between them.
fn io_loop<E: Exporter>(
    mut exporter: E,
    rx: &Receiver<IoMsg>,
    recorder: Recorder,
    resource: &Resource,
    poll_every: Duration,
) {
    let counters = &recorder.inner.counters;
    let mut mix: Box<[u64; 256]> = Box::new([0; 256]);
    loop {
        match rx.recv_timeout(poll_every) {
            Ok(IoMsg::Batch {
                windows,
                spans,
                mix: m,
            }) => {
                mix = m;
                let batch = ExportBatch {
                    resource,
                    windows,
                    spans,
                };
                let advice = exporter.export(batch, counters);
                apply_advice(recorder, advice, &mix);
            }
            Ok(IoMsg::Flush { deadline }) => {
                let advice = exporter.flush(deadline, counters);
                apply_advice(recorder, advice, &mix);
            }
            Err(RecvTimeoutError::Timeout) => {
                let advice = exporter.poll(counters);
                apply_advice(recorder, advice, &mix);
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl ExportHandle {
    /// Stops the worker: it drains, cuts the last (partial) tick, exports, and keeps delivering
    /// until `timeout` has passed. Blocks the caller at most `timeout` (plus a little).
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Timeout`] if the worker was still flushing after `timeout`;
    /// [`ShutdownError::Panicked`] if it panicked.
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), ShutdownError> {
        self.stop_inner(timeout)
    }

    fn stop_inner(&mut self, timeout: Duration) -> Result<(), ShutdownError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match self.stop.deadline.lock() {
            Ok(mut g) => *g = Some(std::time::Instant::now() + timeout),
            Err(p) => *p.into_inner() = Some(std::time::Instant::now() + timeout),
        }
        self.stop.flag.store(true, Ordering::Release);
        thread.thread().unpark();
        // Allow a little beyond the flush deadline for the final bookkeeping.
        match self.done.recv_timeout(timeout + Duration::from_millis(200)) {
            Ok(()) => thread.join().map_err(|_| ShutdownError::Panicked),
            Err(RecvTimeoutError::Timeout) => Err(ShutdownError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => {
                thread.join().map_err(|_| ShutdownError::Panicked)
            }
        }
    }
}

impl Drop for ExportHandle {
    fn drop(&mut self) {
        let t = self.timeout;
        let _ = self.stop_inner(t);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Counts the spans it is handed.
    #[derive(Debug, Default)]
    struct CountSpans(Arc<AtomicU64>);

    impl Exporter for CountSpans {
        fn export(&mut self, batch: ExportBatch<'_>, counters: &Counters) -> Option<AdviceReply> {
            let n = batch.spans.len() as u64;
            counters.add_exported(n);
            self.0.fetch_add(n, Ordering::Relaxed);
            None
        }
    }

    #[test]
    fn flush_reads_every_ring_to_the_end() {
        const THREADS: u64 = 8;
        const RING: u64 = 16;
        let seen = Arc::new(AtomicU64::new(0));
        let (recorder, mut worker) = crate::Builder::new("svc")
            .with_sample_ratio(1.0)
            .with_ring_capacity(RING as usize)
            .build_with(CountSpans(Arc::clone(&seen)));
        let name = recorder.client_name("GET", "/down");
        // More records than a step reads (4 passes of one ring's capacity), in full rings.
        for _ in 0..THREADS {
            std::thread::spawn(move || {
                for _ in 0..RING {
                    recorder.begin_client(name, None).finish(200, false);
                }
            })
            .join()
            .unwrap();
        }
        assert_eq!(recorder.inner.rings.pending() as u64, THREADS * RING);
        worker.flush(std::time::Instant::now() + Duration::from_secs(5));
        assert_eq!(recorder.inner.rings.pending(), 0);
        let c = recorder.counters();
        assert_eq!(c.recorded, THREADS * RING, "{c:?}");
        assert_eq!(c.dropped(), 0, "{c:?}");
        assert_eq!(seen.load(Ordering::Relaxed), THREADS * RING);
    }
}
