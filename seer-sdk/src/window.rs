//! Window stats: per (service, endpoint, tick) aggregates.
//!
//! Each recording thread counts its own server requests into its own [`ThreadWindows`] (see
//! `buffer::WindowRegistry`), keyed by the tick of the request's end time, so the hot path
//! shares no memory with other threads. Only requests kept for export (sampled, error, shed,
//! slow) also travel through the rings. The exporter thread collects the thread aggregates and
//! any records not yet counted, and merges them into its open ticks: every request lands in
//! exactly one tick, its own or, if that tick has already been cut (counted late), the oldest
//! tick still open. A tick is cut once the clock is past its end plus a grace period. Arrivals
//! come from cumulative counters, differenced at each cut.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use seer_proto::{EndpointWindow, Histogram};

use crate::clock::{Anchor, Instant};
use crate::counters::{Counters, DropReason};
use crate::limit::TickSample;
use crate::record::{SpanKind, SpanRecord, flags};

/// Hashes an endpoint id (a small dense integer) with one multiply: the per-record lookup
/// on the worker must be cheap.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// A running mean and maximum of gauge samples (integer sums: no float conversion per sample).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GaugeStat {
    sum: u64,
    n: u64,
    max: u64,
}

impl GaugeStat {
    #[inline]
    pub(crate) fn add(&mut self, v: u64) {
        self.sum = self.sum.saturating_add(v);
        self.n += 1;
        self.max = self.max.max(v);
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    fn merge(&mut self, o: &GaugeStat) {
        self.sum = self.sum.saturating_add(o.sum);
        self.n += o.n;
        self.max = self.max.max(o.max);
    }
}

/// Counts in the bucket layout of the wire [`Histogram`] (HDR, 2 significant digits: 256
/// sub-buckets per power of two), so that recording a value on the worker costs a few
/// instructions and the HDR histogram, built once per tick, is exactly what recording each
/// value into it would have given.
///
/// Buckets are kept in chunks of [`CHUNK`], allocated (zeroed) on first use, so a histogram
/// holds only the ranges it saw: an outlier costs one small chunk, not zeroing every bucket
/// below it, and clearing touches only the chunks in use.
#[derive(Debug, Default)]
pub(crate) struct FastHist {
    chunks: Vec<Option<Box<[u64; CHUNK]>>>,
}

/// Buckets per chunk of a [`FastHist`] (one power of two's worth).
const CHUNK: usize = 128;

impl FastHist {
    /// The bucket of `v`.
    #[inline]
    pub(crate) fn index(v: u64) -> usize {
        let v = v.max(1);
        if v < 256 {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - 7; // v >> shift is in 128..=255
        (shift as usize) * 128 + (v >> shift) as usize
    }

    fn lowest_value(i: usize) -> u64 {
        if i < 256 {
            return i as u64;
        }
        let shift = i / 128 - 1;
        ((i - shift * 128) as u64) << shift
    }

    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        self.record_at(Self::index(v));
    }

    /// Counts one value in bucket `i` (from [`FastHist::index`]).
    #[inline]
    pub(crate) fn record_at(&mut self, i: usize) {
        match self.chunks.get_mut(i / CHUNK) {
            Some(Some(c)) => c[i % CHUNK] += 1,
            _ => self.add_slow(i, 1),
        }
    }

    #[cold]
    fn add_slow(&mut self, i: usize, n: u64) {
        *self.bucket_mut(i) += n;
    }

    /// Bucket `i`, its chunk allocated if needed.
    fn bucket_mut(&mut self, i: usize) -> &mut u64 {
        let c = i / CHUNK;
        if self.chunks.len() <= c {
            self.chunks.resize_with(c + 1, || None);
        }
        &mut self.chunks[c].get_or_insert_with(|| Box::new([0; CHUNK]))[i % CHUNK]
    }

    /// Non-zero buckets: (index, count).
    fn buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().flat_map(move |b| {
                b.iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(move |(j, n)| (c * CHUNK + j, *n))
            })
        })
    }

    fn merge(&mut self, o: &FastHist) {
        for (i, n) in o.buckets() {
            *self.bucket_mut(i) += n;
        }
    }

    /// Zeroes every count, keeping the chunks for reuse.
    fn clear(&mut self) {
        for c in self.chunks.iter_mut().flatten() {
            c.fill(0);
        }
    }

    pub(crate) fn to_histogram(&self) -> Histogram {
        let mut h = Histogram::new_latency();
        for (i, c) in self.buckets() {
            h.record_ns_n(Self::lowest_value(i), c);
        }
        h
    }
}

/// The window stats of one endpoint over one tick (or part of one).
#[derive(Debug, Default)]
pub(crate) struct EpAgg {
    completions: u64,
    errors: u64,
    shed: u64,
    cancelled: u64,
    inflight: GaugeStat,
    local: GaugeStat,
    queue: GaugeStat,
    latency: FastHist,
    self_latency: FastHist,
    queue_wait: FastHist,
}

/// What the window stats need of one server request: its outcome, timings in ns and the gauges
/// read at its arrival.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerSample {
    /// [`flags`] bits (only SHED, CANCELLED and ERROR matter here).
    pub(crate) flags: u8,
    pub(crate) dur_ns: u64,
    pub(crate) blocked_ns: u64,
    pub(crate) queue_wait_ns: u64,
    pub(crate) inflight: u32,
    pub(crate) local_inflight: u32,
}

impl ServerSample {
    /// The sample of a server record.
    pub(crate) fn of(rec: &SpanRecord, dur_ns: u64) -> Self {
        Self {
            flags: rec.flags,
            dur_ns,
            blocked_ns: rec.blocked_ns,
            queue_wait_ns: rec.queue_wait_ns,
            inflight: rec.inflight,
            local_inflight: rec.local_inflight,
        }
    }
}

impl EpAgg {
    /// Adds one server record.
    #[inline]
    pub(crate) fn add(&mut self, rec: &SpanRecord) {
        self.add_sample(&ServerSample::of(
            rec,
            crate::clock::nanos_between(rec.start, rec.end),
        ));
    }

    /// Adds one server request.
    #[inline]
    pub(crate) fn add_sample(&mut self, s: &ServerSample) {
        self.inflight.add(u64::from(s.inflight));
        self.local.add(u64::from(s.local_inflight));
        if s.flags & (flags::SHED | flags::CANCELLED) != 0 {
            if s.flags & flags::SHED != 0 {
                self.shed += 1;
            } else {
                self.cancelled += 1;
            }
            return;
        }
        self.completions += 1;
        self.errors += u64::from(s.flags & flags::ERROR != 0);
        // Most requests block on nothing: their self latency is their latency, one bucket
        // index for both.
        let i = FastHist::index(s.dur_ns);
        self.latency.record_at(i);
        if s.blocked_ns == 0 {
            self.self_latency.record_at(i);
        } else {
            self.self_latency
                .record(s.dur_ns.saturating_sub(s.blocked_ns));
        }
        self.queue_wait.record(s.queue_wait_ns);
    }

    /// Whether nothing was added.
    fn is_empty(&self) -> bool {
        self.completions == 0
            && self.shed == 0
            && self.cancelled == 0
            && self.inflight.n == 0
            && self.queue.n == 0
    }

    fn clear(&mut self) {
        let (mut a, mut b, mut c) = (
            std::mem::take(&mut self.latency),
            std::mem::take(&mut self.self_latency),
            std::mem::take(&mut self.queue_wait),
        );
        for h in [&mut a, &mut b, &mut c] {
            h.clear();
        }
        *self = EpAgg::default();
        self.latency = a;
        self.self_latency = b;
        self.queue_wait = c;
    }

    fn merge(&mut self, o: &EpAgg) {
        self.completions += o.completions;
        self.errors += o.errors;
        self.shed += o.shed;
        self.cancelled += o.cancelled;
        self.inflight.merge(&o.inflight);
        self.local.merge(&o.local);
        self.queue.merge(&o.queue);
        self.latency.merge(&o.latency);
        self.self_latency.merge(&o.self_latency);
        self.queue_wait.merge(&o.queue_wait);
    }
}

/// The window stats one thread accumulated for one tick: per endpoint, indexed by endpoint id
/// (ids are small and dense), so the hot path indexes instead of hashing.
#[derive(Debug, Default)]
pub(crate) struct TickAgg {
    pub(crate) tick: u64,
    pub(crate) eps: Vec<EpAgg>,
}

impl TickAgg {
    /// The endpoints with stats, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &EpAgg)> {
        self.eps
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.is_empty())
            .map(|(i, a)| (u32::try_from(i).unwrap_or(u32::MAX), a))
    }

    /// Empties every endpoint's stats, keeping the allocations.
    fn clear(&mut self) {
        for a in &mut self.eps {
            if !a.is_empty() {
                a.clear();
            }
        }
    }
}

/// Most ticks one thread keeps uncollected. Past it (no worker collecting: none spawned, or
/// after shutdown) the oldest tick is dropped and its requests counted as
/// [`DropReason::WindowBacklog`], so memory stays bounded.
pub(crate) const MAX_THREAD_TICKS: usize = 64;

/// Window stats one recording thread accumulated since the worker last collected them, by tick.
/// Kept per thread so that the hot path touches no memory shared with other threads.
#[derive(Debug)]
pub(crate) struct ThreadWindows {
    /// Oldest first; a thread's requests end in order, so they land in the last one. At most
    /// [`MAX_THREAD_TICKS`].
    ticks: VecDeque<TickAgg>,
    /// An empty deque (with the capacity of an earlier one) swapped in for `ticks` at each
    /// collection, so that the hot path does not allocate a new one.
    spare_ticks: VecDeque<TickAgg>,
    /// Emptied ticks handed back by the worker, reused so that the hot path does not allocate
    /// in the steady state.
    spare: Vec<TickAgg>,
    /// Server records counted here and not pushed to the ring (not kept for export).
    pub(crate) skipped: u64,
    /// Admission priorities of the server records counted here.
    pub(crate) priorities: Box<[u64; 256]>,
    /// The last tick computed by [`ThreadWindows::tick_of`] and its span `[start, end)` in unix
    /// ns, so that most requests skip the 64-bit division.
    last_tick: (u64, u64, u64),
    /// The same tick as clock instants `[start, end)`, so that most requests skip the
    /// conversion to unix time too.
    last_instants: Option<(u64, Instant, Instant)>,
}

impl Default for ThreadWindows {
    fn default() -> Self {
        Self {
            ticks: VecDeque::with_capacity(4),
            spare_ticks: VecDeque::with_capacity(4),
            spare: Vec::new(),
            skipped: 0,
            priorities: Box::new([0; 256]),
            last_tick: (0, 0, 0),
            last_instants: None,
        }
    }
}

impl ThreadWindows {
    /// `unix_ns / tick_ns` (with `tick_ns >= 1`), cached for the current tick.
    #[inline]
    pub(crate) fn tick_of(&mut self, unix_ns: u64, tick_ns: u64) -> u64 {
        let (tick, start, end) = self.last_tick;
        if unix_ns >= start && unix_ns < end {
            return tick;
        }
        let tick = unix_ns / tick_ns;
        let start = tick.saturating_mul(tick_ns);
        self.last_tick = (tick, start, start.saturating_add(tick_ns));
        tick
    }

    /// The tick of the clock instant `at` (unix time by `anchor`, ticks of `tick_ns >= 1`), cached
    /// as an instant range so that most requests compare two instants and convert nothing.
    #[inline]
    pub(crate) fn tick_at(&mut self, at: Instant, anchor: &Anchor, tick_ns: u64) -> u64 {
        if let Some((tick, start, end)) = self.last_instants
            && at >= start
            && at < end
        {
            return tick;
        }
        self.tick_at_slow(at, anchor, tick_ns)
    }

    #[cold]
    fn tick_at_slow(&mut self, at: Instant, anchor: &Anchor, tick_ns: u64) -> u64 {
        let unix = at.as_unix_nanos(anchor);
        let tick = self.tick_of(unix, tick_ns);
        let (_, start_unix, end_unix) = self.last_tick;
        // The tick's bounds as instants, from `at` (conversions round: keep a 1 ns margin inside
        // the tick so that a cached answer never disagrees with the division).
        let into = Duration::from_nanos(unix - start_unix);
        let left = Duration::from_nanos(end_unix - unix);
        self.last_instants = match (
            at.checked_sub(into.saturating_sub(Duration::from_nanos(1))),
            at.checked_add(left.saturating_sub(Duration::from_nanos(1))),
        ) {
            (Some(s), Some(e)) if s <= at && at < e => Some((tick, s, e)),
            _ => None,
        };
        tick
    }

    /// Adds one server request that ended in `tick`; `counters` counts a tick dropped to make
    /// room (see [`MAX_THREAD_TICKS`]).
    #[inline]
    pub(crate) fn add(
        &mut self,
        tick: u64,
        endpoint: u32,
        priority: u8,
        s: &ServerSample,
        counters: &Counters,
    ) {
        self.priorities[usize::from(priority)] += 1;
        if let Some(t) = self.ticks.back_mut()
            && t.tick == tick
            && let Some(agg) = t.eps.get_mut(endpoint as usize)
        {
            agg.add_sample(s);
            return;
        }
        self.slot(tick, endpoint, counters).add_sample(s);
    }

    /// The aggregate of `endpoint` in `tick`, made on first use.
    #[cold]
    fn slot(&mut self, tick: u64, endpoint: u32, counters: &Counters) -> &mut EpAgg {
        let Self { ticks, spare, .. } = self;
        let idx = match ticks.iter().rposition(|t| t.tick == tick) {
            Some(i) => i,
            None => {
                if ticks.len() >= MAX_THREAD_TICKS
                    && let Some(mut old) = ticks.pop_front()
                {
                    let lost: u64 = old
                        .eps
                        .iter()
                        .map(|a| a.completions + a.shed + a.cancelled)
                        .sum();
                    counters.add_dropped(DropReason::WindowBacklog, lost);
                    if spare.len() < SPARE_TICKS {
                        old.clear();
                        spare.push(old);
                    }
                }
                let mut t = spare.pop().unwrap_or_default();
                t.tick = tick;
                // Keep ticks ordered (a record from other instrumentation may end earlier).
                let at = ticks.partition_point(|o| o.tick < tick);
                ticks.insert(at, t);
                at
            }
        };
        let eps = &mut ticks[idx].eps;
        let i = endpoint as usize;
        if eps.len() <= i {
            eps.resize_with(i + 1, EpAgg::default);
        }
        &mut eps[i]
    }

    /// Everything accumulated so far. The spare deque takes its place (allocated here, off the
    /// hot path, only the first time).
    pub(crate) fn take(&mut self) -> VecDeque<TickAgg> {
        let next = std::mem::take(&mut self.spare_ticks);
        std::mem::replace(&mut self.ticks, next)
    }

    /// Takes back collected ticks, emptied, for reuse (a bounded number), and their deque as
    /// the next spare.
    pub(crate) fn recycle(&mut self, mut collected: VecDeque<TickAgg>) {
        for mut t in collected.drain(..) {
            if self.spare.len() >= SPARE_TICKS {
                break;
            }
            t.clear();
            self.spare.push(t);
        }
        self.spare_ticks = collected;
    }
}

/// Emptied ticks a thread keeps for reuse.
const SPARE_TICKS: usize = 4;

#[derive(Debug)]
struct OpenTick {
    tick: u64,
    eps: IdMap<EpAgg>,
    svc_queue: GaugeStat,
    svc_inflight: GaugeStat,
}

impl OpenTick {
    fn new(tick: u64) -> Self {
        Self {
            tick,
            eps: IdMap::default(),
            svc_queue: GaugeStat::default(),
            svc_inflight: GaugeStat::default(),
        }
    }
}

/// A cut tick, ready to send.
#[derive(Debug)]
pub(crate) struct CutTick {
    pub(crate) tick: u64,
    /// (endpoint id, window without its name filled in)
    pub(crate) windows: Vec<(u32, EndpointWindow)>,
    pub(crate) svc_queue: GaugeStat,
    pub(crate) sample: TickSample,
}

/// One reading of the live gauges of an endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GaugeReading {
    pub(crate) inflight: u64,
    pub(crate) local: u64,
    pub(crate) queued: u64,
}

/// The window cutter, owned by the exporter thread.
#[derive(Debug)]
pub(crate) struct WindowCutter {
    tick_ns: u64,
    grace_ns: u64,
    open: VecDeque<OpenTick>,
    last_arrivals: Vec<u64>,
    /// Highest tick already cut; ticks at or below it are never opened again.
    cut_upto: Option<u64>,
}

impl WindowCutter {
    pub(crate) fn new(tick_ns: u64, grace_ns: u64, endpoints: usize) -> Self {
        Self {
            tick_ns: tick_ns.max(1),
            grace_ns,
            open: VecDeque::new(),
            last_arrivals: vec![0; endpoints],
            cut_upto: None,
        }
    }

    pub(crate) fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    fn slot(&mut self, tick: u64) -> &mut OpenTick {
        let tick = match self.cut_upto {
            Some(c) if tick <= c => c + 1,
            _ => tick,
        };
        let idx = match self.open.iter().position(|t| t.tick >= tick) {
            Some(i) if self.open[i].tick == tick => i,
            Some(i) => {
                self.open.insert(i, OpenTick::new(tick));
                i
            }
            None => {
                self.open.push_back(OpenTick::new(tick));
                self.open.len() - 1
            }
        };
        &mut self.open[idx]
    }

    /// Adds one server record that ended at `end_unix_ns`; other kinds are ignored.
    pub(crate) fn add(&mut self, rec: &SpanRecord, end_unix_ns: u64) {
        if rec.kind != SpanKind::Server {
            return;
        }
        let tick = end_unix_ns / self.tick_ns;
        self.slot(tick).eps.entry(rec.name).or_default().add(rec);
    }

    /// Merges what one thread accumulated for a tick (an already cut tick rolls forward).
    pub(crate) fn merge(&mut self, agg: &TickAgg) {
        let t = self.slot(agg.tick);
        for (id, a) in agg.iter() {
            t.eps.entry(id).or_default().merge(a);
        }
    }

    /// Adds a reading of the live gauges at `now_unix_ns`.
    pub(crate) fn sample(
        &mut self,
        now_unix_ns: u64,
        endpoints: impl Iterator<Item = (u32, GaugeReading)>,
        svc_queue: u64,
        svc_inflight: u64,
    ) {
        let t = self.slot(now_unix_ns / self.tick_ns);
        t.svc_queue.add(svc_queue);
        t.svc_inflight.add(svc_inflight);
        for (id, r) in endpoints {
            if r.inflight == 0 && r.queued == 0 && !t.eps.contains_key(&id) {
                continue;
            }
            let ep = t.eps.entry(id).or_default();
            ep.inflight.add(r.inflight);
            ep.local.add(r.local);
            ep.queue.add(r.queued);
        }
    }

    /// Cuts every tick that ended more than the grace period before `now_unix_ns` (all open
    /// ticks when `force`). `arrivals` are the cumulative per-endpoint arrival counters; their
    /// growth since the previous cut is credited to the last tick cut now.
    pub(crate) fn cut(&mut self, now_unix_ns: u64, force: bool, arrivals: &[u64]) -> Vec<CutTick> {
        let mut out = Vec::new();
        while let Some(front) = self.open.front() {
            let end = front.tick.saturating_add(1).saturating_mul(self.tick_ns);
            if !force && end.saturating_add(self.grace_ns) > now_unix_ns {
                break;
            }
            let Some(t) = self.open.pop_front() else {
                break;
            };
            self.cut_upto = Some(t.tick);
            out.push(t);
        }
        if out.is_empty() {
            return Vec::new();
        }
        // Arrivals since the last cut, credited to the last tick cut now.
        if self.last_arrivals.len() < arrivals.len() {
            self.last_arrivals.resize(arrivals.len(), 0);
        }
        let mut delta: HashMap<u32, u64> = HashMap::new();
        for (id, &now) in arrivals.iter().enumerate() {
            let d = now.saturating_sub(self.last_arrivals[id]);
            self.last_arrivals[id] = now;
            if d > 0 {
                delta.insert(u32::try_from(id).unwrap_or(u32::MAX), d);
            }
        }
        let last = out.len() - 1;
        out.into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                if i == last {
                    for &id in delta.keys() {
                        t.eps.entry(id).or_default();
                    }
                    Self::finish_tick(t, &delta)
                } else {
                    Self::finish_tick(t, &HashMap::new())
                }
            })
            .collect()
    }

    fn finish_tick(t: OpenTick, arrivals: &HashMap<u32, u64>) -> CutTick {
        let mut sample = TickSample::default();
        let mut lat_weighted = 0.0;
        let mut windows: Vec<(u32, EndpointWindow)> = t
            .eps
            .into_iter()
            .map(|(id, ep)| {
                sample.completions += ep.completions;
                sample.errors += ep.errors;
                let latency = ep.latency.to_histogram();
                lat_weighted += latency.mean_ns() * ep.completions as f64;
                sample.p99_latency_ns = sample.p99_latency_ns.max(latency.quantile_ns(0.99));
                let w = EndpointWindow {
                    endpoint: String::new(),
                    arrivals: arrivals.get(&id).copied().unwrap_or(0),
                    completions: ep.completions,
                    errors: ep.errors,
                    shed: ep.shed,
                    cancelled: ep.cancelled,
                    inflight_mean: ep.inflight.mean(),
                    inflight_max: ep.inflight.max(),
                    local_inflight_mean: ep.local.mean(),
                    local_inflight_max: ep.local.max(),
                    queue_depth_mean: ep.queue.mean(),
                    queue_depth_max: ep.queue.max(),
                    latency: latency.encode(),
                    self_latency: ep.self_latency.to_histogram().encode(),
                    queue_wait: ep.queue_wait.to_histogram().encode(),
                };
                (id, w)
            })
            .collect();
        windows.sort_by_key(|(id, _)| *id);
        if sample.completions > 0 {
            sample.mean_latency_ns = lat_weighted / sample.completions as f64;
        }
        sample.inflight_max = t.svc_inflight.max();
        CutTick {
            tick: t.tick,
            windows,
            svc_queue: t.svc_queue,
            sample,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TICK: u64 = 100;

    fn rec(kind: SpanKind, f: u8) -> SpanRecord {
        SpanRecord::for_test(1, kind, f)
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A record ending at `now - lag`, drained at `now`.
        Add { lag: u64, ep: u32, flag: u8 },
        /// Time passes, then the cutter runs.
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..350, 0u32..3, prop_oneof![Just(0u8), Just(flags::ERROR), Just(flags::SHED), Just(flags::CANCELLED)])
                .prop_map(|(lag, ep, flag)| Op::Add { lag, ep, flag }),
            1 => (0u64..250).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Every record is counted exactly once, in its own tick or (drained late) in a later
        /// one, never in an earlier one; no tick is emitted twice; arrivals add up.
        #[test]
        fn no_record_lost_or_double_counted(ops in proptest::collection::vec(op(), 1..300), grace in 0u64..60) {
            let mut w = WindowCutter::new(TICK, grace, 3);
            let mut now = 1_000u64;
            let mut arrivals = vec![0u64; 3];
            let mut expect = [0u64; 4]; // completions, errors, shed, cancelled
            let mut cuts: Vec<CutTick> = Vec::new();
            let mut min_tick_of_add: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Add { lag, ep, flag } => {
                        let end = now.saturating_sub(lag);
                        let mut r = rec(SpanKind::Server, flag);
                        r.name = ep;
                        arrivals[ep as usize] += 1;
                        w.add(&r, end);
                        min_tick_of_add.push(end / TICK);
                        match flag {
                            flags::SHED => expect[2] += 1,
                            flags::CANCELLED => expect[3] += 1,
                            f => { expect[0] += 1; if f == flags::ERROR { expect[1] += 1; } }
                        }
                        // Client spans never count.
                        w.add(&rec(SpanKind::Client, 0), end);
                    }
                    Op::Advance(d) => {
                        now += d;
                        cuts.extend(w.cut(now, false, &arrivals));
                    }
                }
            }
            cuts.extend(w.cut(now, true, &arrivals));
            let ticks: Vec<u64> = cuts.iter().map(|c| c.tick).collect();
            prop_assert!(ticks.windows(2).all(|p| p[0] < p[1]), "ticks not strictly increasing: {:?}", ticks);
            let sum = |f: fn(&EndpointWindow) -> u64| cuts.iter().flat_map(|c| c.windows.iter()).map(|(_, w)| f(w)).sum::<u64>();
            prop_assert_eq!(sum(|w| w.completions), expect[0]);
            prop_assert_eq!(sum(|w| w.errors), expect[1]);
            prop_assert_eq!(sum(|w| w.shed), expect[2]);
            prop_assert_eq!(sum(|w| w.cancelled), expect[3]);
            prop_assert_eq!(sum(|w| w.arrivals), arrivals.iter().sum::<u64>());
            // Latency histograms hold exactly the completions.
            let hist: u64 = cuts.iter().flat_map(|c| c.windows.iter())
                .map(|(_, w)| Histogram::decode(&w.latency).unwrap().count()).sum();
            prop_assert_eq!(hist, expect[0]);
            // Nothing lands in a tick earlier than its own.
            if let (Some(first), Some(min_add)) = (ticks.first(), min_tick_of_add.iter().min()) {
                prop_assert!(first >= min_add || *first == *min_add);
            }
        }
    }

    proptest! {
        /// The fast buckets give exactly the HDR histogram of recording each value.
        #[test]
        fn fast_hist_matches_hdr(values in proptest::collection::vec(
            prop_oneof![0u64..300, 0u64..100_000, 0u64..10_000_000_000, any::<u64>()], 1..200)) {
            let mut fast = FastHist::default();
            let mut hdr = Histogram::new_latency();
            for &v in &values {
                fast.record(v);
                hdr.record_ns(v);
            }
            let got = fast.to_histogram();
            prop_assert_eq!(got.count(), hdr.count());
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(got.quantile_ns(q), hdr.quantile_ns(q));
            }
            prop_assert_eq!(got.max_ns(), hdr.max_ns());
        }
    }

    #[test]
    fn cut_waits_for_grace_and_late_records_roll_forward() {
        let mut w = WindowCutter::new(TICK, 20, 1);
        let r = rec(SpanKind::Server, 0);
        w.add(&r, 150); // tick 1
        assert!(w.cut(210, false, &[1]).is_empty(), "within grace");
        let c = w.cut(220, false, &[1]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].tick, 1);
        assert_eq!(c[0].windows[0].1.completions, 1);
        assert_eq!(c[0].windows[0].1.arrivals, 1);
        // A late record for tick 1 goes to tick 2, not lost, not re-opening tick 1.
        w.add(&r, 190);
        let c = w.cut(1_000, false, &[1]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].tick, 2);
        assert_eq!(c[0].windows[0].1.completions, 1);
        assert_eq!(c[0].windows[0].1.arrivals, 0);
    }

    fn sample(f: u8) -> ServerSample {
        ServerSample {
            flags: f,
            dur_ns: 1_000,
            blocked_ns: 0,
            queue_wait_ns: 0,
            inflight: 1,
            local_inflight: 1,
        }
    }

    #[test]
    fn uncollected_ticks_are_capped_and_the_oldest_dropped_and_counted() {
        let counters = Counters::default();
        let mut w = ThreadWindows::default();
        let extra = 10;
        for tick in 0..(MAX_THREAD_TICKS + extra) as u64 {
            w.add(tick, 0, 0, &sample(0), &counters);
            w.add(tick, 1, 0, &sample(flags::SHED), &counters);
        }
        assert_eq!(w.ticks.len(), MAX_THREAD_TICKS);
        let c = counters.snapshot();
        assert_eq!(c.dropped_window_backlog, 2 * extra as u64);
        assert_eq!(c.dropped(), 0, "window stats are not spans");
        let kept = w.take();
        let ticks: Vec<u64> = kept.iter().map(|t| t.tick).collect();
        let want: Vec<u64> = (extra as u64..(MAX_THREAD_TICKS + extra) as u64).collect();
        assert_eq!(ticks, want, "the newest ticks are kept, in order");
        assert!(kept.iter().all(|t| t.iter().count() == 2));
        // A record that ends before every kept tick still gets a slot (the oldest is dropped).
        let mut w = ThreadWindows::default();
        for tick in 10..(10 + MAX_THREAD_TICKS) as u64 {
            w.add(tick, 0, 0, &sample(0), &counters);
        }
        w.add(3, 0, 0, &sample(0), &counters);
        assert_eq!(w.ticks.len(), MAX_THREAD_TICKS);
        assert_eq!(w.ticks.front().map(|t| t.tick), Some(3));
        assert_eq!(
            counters.snapshot().dropped_window_backlog,
            2 * extra as u64 + 1
        );
    }

    #[test]
    fn collection_swaps_in_a_recycled_deque() {
        let counters = Counters::default();
        let mut w = ThreadWindows::default();
        for tick in 0..8 {
            w.add(tick, 0, 0, &sample(0), &counters);
        }
        let collected = w.take();
        assert_eq!(collected.len(), 8);
        assert!(w.ticks.is_empty());
        assert!(
            w.ticks.capacity() > 0,
            "the hot path gets a deque with room"
        );
        let cap = collected.capacity();
        w.recycle(collected);
        // The collected deque, emptied, is the next one swapped in.
        assert_eq!(w.spare_ticks.capacity(), cap);
        assert!(w.spare_ticks.is_empty());
        let _ = w.take();
        assert_eq!(w.ticks.capacity(), cap);
        // Emptied ticks are kept for reuse, a bounded number, with no stats left in them.
        assert_eq!(w.spare.len(), SPARE_TICKS);
        assert!(w.spare.iter().all(|t| t.iter().count() == 0));
    }

    #[test]
    fn cached_tick_matches_division() {
        let mut w = ThreadWindows::default();
        for (v, step) in [
            (0u64, 7u64),
            (5, 7),
            (6, 7),
            (7, 7),
            (13, 7),
            (14, 7),
            (3, 7),
            (100, 1),
        ] {
            assert_eq!(w.tick_of(v, step), v / step, "{v} / {step}");
        }
        let mut x = 1_700_000_000_000_000_000u64;
        for _ in 0..1000 {
            x = x.wrapping_add(x % 9_999_991);
            assert_eq!(w.tick_of(x, 1_000_000_000), x / 1_000_000_000);
        }
    }
}
