//! Per-thread lock-free record buffers and per-thread window accumulators.
//!
//! Every thread that records gets, per recorder, its own [`rtrb`] single-producer
//! single-consumer ring for the spans kept for export, and its own window accumulator. The
//! consumer ends are registered with the recorder (a mutex taken once per thread, at
//! registration, and by the exporter when it collects), so the hot path is a thread-local
//! lookup, an uncontended try-lock of its own accumulator (if the exporter happens to be
//! collecting it at that instant, the record goes through the ring instead: nothing ever waits)
//! and, for kept spans, one wait-free push. A full ring drops the span and the caller counts
//! it. Buffers of exited threads are collected one last time and then removed.
//!
//! This module uses no `unsafe`: the ring is `rtrb`'s.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rtrb::{Consumer, Producer, RingBuffer};

use crate::record::SpanRecord;
use crate::sync::{AtomicUsize, Ordering};
use crate::window::{ThreadWindows, TickAgg};

/// How many pushes pass between two checks of a ring's fill level.
const CHECK_EVERY: u32 = 64;

/// What happened to a pushed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Stored.
    Ok,
    /// Stored, and the ring is more than half full: wake the exporter.
    HalfFull,
    /// The ring was full (or the thread is exiting): the record was dropped.
    Dropped,
}

/// The consumer side: all rings of one recorder.
#[derive(Debug)]
pub(crate) struct Rings {
    consumers: Mutex<Vec<Consumer<SpanRecord>>>,
    /// The ring the next drain starts at, rotated so that a drain cut short by its limit does
    /// not always favour the first rings (touched only under the `consumers` lock).
    next: AtomicUsize,
    capacity: usize,
}

struct LocalRing {
    owner: u64,
    producer: Producer<SpanRecord>,
    since_check: u32,
}

/// A thread's window accumulators, by recorder id.
type LocalWindows = Vec<(u64, Arc<Mutex<ThreadWindows>>)>;

thread_local! {
    static LOCAL: RefCell<Vec<LocalRing>> = const { RefCell::new(Vec::new()) };
    static LOCAL_WINDOWS: RefCell<LocalWindows> = const { RefCell::new(Vec::new()) };
}

/// Per-thread window accumulators of one recorder. The recording thread locks its own
/// accumulator (uncontended except when the worker collects, once per step), so window stats
/// cost no cross-thread traffic per request.
#[derive(Debug, Default)]
pub(crate) struct WindowRegistry {
    threads: Mutex<Vec<Arc<Mutex<ThreadWindows>>>>,
}

/// What one collection found in the thread accumulators.
pub(crate) type Collected = VecDeque<TickAgg>;

impl WindowRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Mutex<ThreadWindows>>>> {
        match self.threads.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Runs `f` on the calling thread's accumulator for recorder `owner`; false if the thread is
    /// exiting (the caller then records through the ring).
    #[inline]
    pub(crate) fn with(&self, owner: u64, f: impl FnOnce(&mut ThreadWindows)) -> bool {
        LOCAL_WINDOWS
            .try_with(|local| {
                let Ok(mut local) = local.try_borrow_mut() else {
                    return false;
                };
                // Most threads record for one recorder: check the first entry before searching.
                let idx = match local.first() {
                    Some((o, _)) if *o == owner => 0,
                    _ => self.find_or_register(&mut local, owner),
                };
                let Some((_, windows)) = local.get(idx) else {
                    return false;
                };
                // Never wait: if the worker is collecting this very moment, the caller records
                // through the ring instead.
                match windows.try_lock() {
                    Ok(mut g) => {
                        f(&mut g);
                        true
                    }
                    Err(std::sync::TryLockError::Poisoned(p)) => {
                        f(&mut p.into_inner());
                        true
                    }
                    Err(std::sync::TryLockError::WouldBlock) => false,
                }
            })
            .unwrap_or(false)
    }

    #[cold]
    fn find_or_register(&self, local: &mut LocalWindows, owner: u64) -> usize {
        if let Some(i) = local.iter().position(|(o, _)| *o == owner) {
            return i;
        }
        let w = Arc::new(Mutex::new(ThreadWindows::default()));
        self.lock().push(Arc::clone(&w));
        local.push((owner, w));
        local.len() - 1
    }

    /// Takes everything the threads accumulated; `f` gets each thread's ticks, its skipped
    /// count and its priority counts, and the emptied ticks go back to the thread for reuse.
    /// Accumulators of exited threads are dropped after their last collection.
    pub(crate) fn collect(&self, mut f: impl FnMut(&Collected, u64, &[u64; 256])) {
        let mut threads = self.lock();
        // A thread that is gone can add nothing more: drop its accumulator after this last
        // collection. (Checking after collecting would lose what it added in between.)
        let gone: Vec<bool> = threads.iter().map(|t| Arc::strong_count(t) == 1).collect();
        for t in threads.iter() {
            let (ticks, skipped, prio) = {
                let mut g = match t.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let prio = std::mem::replace(&mut g.priorities, Box::new([0; 256]));
                (g.take(), std::mem::take(&mut g.skipped), prio)
            };
            f(&ticks, skipped, &prio);
            match t.lock() {
                Ok(mut g) => g.recycle(ticks),
                Err(p) => p.into_inner().recycle(ticks),
            }
        }
        let mut i = 0;
        threads.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
    }
}

impl Rings {
    /// Rings holding `capacity` records each.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            consumers: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            capacity: capacity.max(16),
        }
    }

    /// Pushes `rec` into the calling thread's ring for recorder `owner`.
    #[inline]
    pub(crate) fn push(&self, owner: u64, rec: SpanRecord) -> Pushed {
        LOCAL
            .try_with(|local| {
                let Ok(mut local) = local.try_borrow_mut() else {
                    return Pushed::Dropped;
                };
                let ring = match local.iter_mut().position(|r| r.owner == owner) {
                    Some(i) => &mut local[i],
                    None => self.register(&mut local, owner),
                };
                if ring.producer.push(rec).is_err() {
                    return Pushed::Dropped;
                }
                ring.since_check += 1;
                if ring.since_check >= CHECK_EVERY {
                    ring.since_check = 0;
                    if ring.producer.slots() < self.capacity / 2 {
                        return Pushed::HalfFull;
                    }
                }
                Pushed::Ok
            })
            .unwrap_or(Pushed::Dropped)
    }

    #[cold]
    fn register<'a>(&self, local: &'a mut Vec<LocalRing>, owner: u64) -> &'a mut LocalRing {
        // Forget rings whose recorder is gone.
        local.retain(|r| !r.producer.is_abandoned());
        let (producer, consumer) = RingBuffer::new(self.capacity);
        self.lock().push(consumer);
        local.push(LocalRing {
            owner,
            producer,
            since_check: 0,
        });
        let last = local.len() - 1;
        &mut local[last]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Consumer<SpanRecord>>> {
        match self.consumers.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Drains every ring into `f`, at most `max` records in total; returns how many were read.
    /// Each call starts one ring further than the last. Rings of exited threads are removed
    /// once empty. Called by the exporter thread only.
    pub(crate) fn drain(&self, max: usize, mut f: impl FnMut(&SpanRecord)) -> usize {
        let mut consumers = self.lock();
        let mut n = 0;
        let len = consumers.len();
        let start = match len {
            0 => 0,
            _ => self.next.load(Ordering::Relaxed) % len,
        };
        self.next.store(start + 1, Ordering::Relaxed);
        let (first, second) = consumers.split_at_mut(start);
        for c in second.iter_mut().chain(first.iter_mut()) {
            if n >= max {
                break;
            }
            let take = c.slots().min(max - n);
            if take == 0 {
                continue;
            }
            if let Ok(chunk) = c.read_chunk(take) {
                let (a, b) = chunk.as_slices();
                a.iter().chain(b.iter()).for_each(&mut f);
                chunk.commit_all();
                n += take;
            }
        }
        consumers.retain(|c| !(c.is_abandoned() && c.is_empty()));
        n
    }

    #[cfg(test)]
    /// Records waiting in all rings (approximate while producers run).
    pub(crate) fn pending(&self) -> usize {
        self.lock().iter().map(Consumer::slots).sum()
    }

    #[cfg(test)]
    /// Number of registered rings.
    pub(crate) fn ring_count(&self) -> usize {
        self.lock().len()
    }

    /// Capacity of each ring.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SpanKind;
    use std::sync::Arc;

    fn rec(id: u64) -> SpanRecord {
        SpanRecord::for_test(id, SpanKind::Server, 0)
    }

    #[test]
    fn full_ring_drops_and_drain_frees_it() {
        let rings = Rings::new(16);
        let pushed = (0..20)
            .filter(|&i| rings.push(7, rec(i)) != Pushed::Dropped)
            .count();
        assert_eq!(pushed, 16);
        let mut seen = Vec::new();
        assert_eq!(rings.drain(usize::MAX, |r| seen.push(r.span_id)), 16);
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
        assert_ne!(rings.push(7, rec(99)), Pushed::Dropped);
    }

    #[test]
    fn limited_drains_rotate_across_rings() {
        let rings = Arc::new(Rings::new(16));
        // Two threads, two rings, each with 10 records tagged by thread.
        for t in 0..2u64 {
            let rings = Arc::clone(&rings);
            std::thread::spawn(move || {
                for i in 0..10 {
                    assert_eq!(rings.push(1, rec((t << 32) | i)), Pushed::Ok);
                }
            })
            .join()
            .unwrap();
        }
        // Drains limited to 4 records each: successive drains start at successive rings, so
        // neither ring is starved.
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let mut seen = Vec::new();
            assert_eq!(rings.drain(4, |r| seen.push(r.span_id >> 32)), 4);
            assert!(seen.iter().all(|&t| t == seen[0]), "{seen:?}");
            firsts.push(seen[0]);
        }
        assert_eq!(firsts, vec![0, 1, 0, 1]);
        // An unlimited drain reads everything left.
        assert_eq!(rings.drain(usize::MAX, |_| {}), 4);
        assert_eq!(rings.pending(), 0);
    }

    /// Stress: several producer threads, one concurrent consumer; every record that was not
    /// reported dropped arrives exactly once, in per-thread order.
    #[test]
    fn stress_no_loss_no_duplicates() {
        const THREADS: u64 = 4;
        const PER: u64 = 200_000;
        let rings = Arc::new(Rings::new(1024));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let producers: Vec<_> = (0..THREADS)
            .map(|t| {
                let rings = Arc::clone(&rings);
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for i in 0..PER {
                        let id = (t << 32) | i;
                        if rings.push(1, rec(id)) != Pushed::Dropped {
                            accepted.push(id);
                        }
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    accepted
                })
            })
            .collect();
        let mut got: Vec<u64> = Vec::new();
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst) == THREADS as usize;
            rings.drain(usize::MAX, |r| got.push(r.span_id));
            if finished && rings.pending() == 0 {
                break;
            }
        }
        let mut accepted: Vec<u64> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        // Per-thread order is preserved.
        for t in 0..THREADS {
            let mine: Vec<_> = got.iter().copied().filter(|id| id >> 32 == t).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
        got.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(got, accepted);
        // Exited threads' rings are removed once drained.
        rings.drain(usize::MAX, |_| {});
        assert_eq!(rings.ring_count(), 0);
    }
}
