//! The current request context: which server span the running code belongs to.
//!
//! While a server response future is polled, SeerLayer moves its [`Context`] into a
//! thread-local slot and moves it back afterwards (no clone, no allocation). Code running inside
//! the handler, such as the client layer, the `tracing` layer or [`enter_queue`], finds it there.
//! A task spawned from a handler does not run inside that poll; carry the context into it with
//! [`current`] and [`Context::wrap`]:
//!
//! ```
//! # let recorder = seer_sdk::Builder::new("svc").build_recorder();
//! # async fn downstream() {}
//! // inside a handler:
//! if let Some(cx) = seer_sdk::context::current() {
//!     let task = cx.wrap(async { downstream().await });
//!     // tokio::spawn(task);
//! #   drop(task);
//! }
//! ```

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::clock::{self, Instant};
use crate::propagation::SpanContext;
use crate::recorder::Recorder;
use crate::sync::{AtomicU64, Ordering};

thread_local! {
    static CURRENT: Cell<Option<Context>> = const { Cell::new(None) };
}

/// The context of one server request: its span identity, endpoint and recorder, plus shared
/// bookkeeping of the time it spends blocked on downstream calls or queued for its own worker.
#[derive(Clone, Debug)]
pub struct Context {
    pub(crate) span: SpanContext,
    pub(crate) endpoint: u32,
    pub(crate) recorder: Recorder,
    pub(crate) state: Option<Arc<RequestState>>,
}

const FINISHED: u64 = 1 << 63;

/// Per-request shared state, allocated on the first downstream call or context capture.
#[derive(Debug)]
pub(crate) struct RequestState {
    /// Outstanding downstream calls (low bits) and the FINISHED bit.
    word: AtomicU64,
    /// When the current blocked stretch began, ns since the recorder's epoch.
    since_ns: AtomicU64,
    pub(crate) blocked_ns: AtomicU64,
    pub(crate) queue_ns: AtomicU64,
}

impl RequestState {
    fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            since_ns: AtomicU64::new(0),
            blocked_ns: AtomicU64::new(0),
            queue_ns: AtomicU64::new(0),
        }
    }
}

impl Context {
    /// The span identity of the request.
    pub fn span_context(&self) -> SpanContext {
        self.span
    }

    /// The recorder the request belongs to.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub(crate) fn new(span: SpanContext, endpoint: u32, recorder: Recorder) -> Self {
        Self {
            span,
            endpoint,
            recorder,
            state: None,
        }
    }

    pub(crate) fn state(&mut self) -> Arc<RequestState> {
        Arc::clone(
            self.state
                .get_or_insert_with(|| Arc::new(RequestState::new())),
        )
    }

    /// Wraps `fut` so that it runs inside this context on every poll: client calls and
    /// `tracing` spans made by it become children of this request, and its downstream waits
    /// count against it.
    pub fn wrap<F: Future>(self, fut: F) -> WithContext<F> {
        WithContext {
            fut,
            cx: Some(self),
        }
    }

    /// Runs `f` inside this context.
    pub fn in_scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let mut slot = Some(self.clone());
        let r = {
            let _g = enter(&mut slot);
            f()
        };
        if let Some(cx) = slot {
            self.state = cx.state;
        }
        r
    }

    /// Marks the start of a downstream wait; returns the endpoint whose blocked gauge moved.
    pub(crate) fn begin_wait(
        state: &RequestState,
        recorder: &Recorder,
        endpoint: u32,
        now: Instant,
    ) {
        // The wait that opens a blocked stretch (count 0 -> 1) stores `since_ns` *before* the
        // count becomes visible: the store is sequenced before the release CAS, and whoever
        // later sees a non-zero count does so through an acquire RMW on `word` (in `end_wait`,
        // `finish_state`), reading from that CAS or from a later RMW of its release sequence,
        // so it reads this `since_ns`, never an unset or a previous stretch's value. (Publishing
        // the count first would let a concurrent `finish_state` read a stale `since_ns` and
        // count the request blocked for most of the process's uptime.) Concurrent waits that
        // both see 0 both store; the loser's CAS fails and it joins the winner's stretch, with
        // `since_ns` the start of one of the two waits (both are this request's).
        let since = recorder.epoch_ns(now);
        let mut cur = state.word.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                state.since_ns.store(since, Ordering::Relaxed);
            }
            match state.word.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if cur == 0 {
            recorder
                .gauges(endpoint)
                .blocked
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks the end of a downstream wait.
    pub(crate) fn end_wait(state: &RequestState, recorder: &Recorder, endpoint: u32, now: Instant) {
        let prev = state.word.fetch_sub(1, Ordering::AcqRel);
        if prev == 1 {
            let since = state.since_ns.load(Ordering::Relaxed);
            let d = recorder.epoch_ns(now).saturating_sub(since);
            state.blocked_ns.fetch_add(d, Ordering::Relaxed);
            recorder
                .gauges(endpoint)
                .blocked
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Marks the request finished; closes an open blocked stretch. Later waits do not count.
    pub(crate) fn finish_state(
        state: &RequestState,
        recorder: &Recorder,
        endpoint: u32,
        now: Instant,
    ) {
        let prev = state.word.fetch_or(FINISHED, Ordering::AcqRel);
        if prev & FINISHED == 0 && prev & !FINISHED > 0 {
            let since = state.since_ns.load(Ordering::Relaxed);
            let d = recorder.epoch_ns(now).saturating_sub(since);
            state.blocked_ns.fetch_add(d, Ordering::Relaxed);
            recorder
                .gauges(endpoint)
                .blocked
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Moves the context in `slot` into the thread-local slot until the guard drops, then moves it
/// back (with any state allocated meanwhile). Guards nest: while entered, `slot` holds the
/// previous context (the two are swapped in, and swapped back).
#[inline]
pub fn enter(slot: &mut Option<Context>) -> EnterGuard<'_> {
    let slot = Cell::from_mut(slot);
    CURRENT.with(|c| c.swap(slot));
    EnterGuard { slot }
}

/// Restores the previous context when dropped; see [`enter`].
pub struct EnterGuard<'a> {
    slot: &'a Cell<Option<Context>>,
}

impl std::fmt::Debug for EnterGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnterGuard").finish_non_exhaustive()
    }
}

impl Drop for EnterGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        CURRENT.with(|c| c.swap(self.slot));
    }
}

/// Calls `f` with the current context, if any.
pub fn with_current<R>(f: impl FnOnce(Option<&mut Context>) -> R) -> R {
    CURRENT.with(|c| {
        let mut cur = c.take();
        let r = f(cur.as_mut());
        c.set(cur);
        r
    })
}

/// A handle on the current request's context, for carrying into spawned tasks. Allocates the
/// request's shared state so that the task's downstream waits count against the request.
pub fn current() -> Option<Context> {
    with_current(|cx| {
        cx.map(|cx| {
            let _ = cx.state();
            cx.clone()
        })
    })
}

/// The span identity of the current request, if any.
pub fn current_span() -> Option<SpanContext> {
    with_current(|cx| cx.map(|cx| cx.span))
}

/// Marks the current request as queued (waiting for the service's own worker, pool or lock)
/// until the guard drops. The wait shows in the endpoint's queue-depth gauge and the request's
/// queue wait. Outside a request it does nothing.
pub fn enter_queue() -> QueueGuard {
    with_current(|cx| match cx {
        Some(cx) => {
            let state = cx.state();
            let recorder = cx.recorder;
            recorder
                .gauges(cx.endpoint)
                .queued
                .fetch_add(1, Ordering::Relaxed);
            QueueGuard {
                inner: Some((recorder, cx.endpoint, state, clock::now())),
            }
        }
        None => QueueGuard { inner: None },
    })
}

/// See [`enter_queue`].
#[derive(Debug)]
pub struct QueueGuard {
    inner: Option<(Recorder, u32, Arc<RequestState>, Instant)>,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        if let Some((recorder, endpoint, state, start)) = self.inner.take() {
            let d = clock::nanos_between(start, clock::now());
            state.queue_ns.fetch_add(d, Ordering::Relaxed);
            recorder
                .gauges(endpoint)
                .queued
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future that runs inside a [`Context`]; see [`Context::wrap`].
    #[derive(Debug)]
    pub struct WithContext<F> {
        #[pin]
        fut: F,
        cx: Option<Context>,
    }
}

impl<F: Future> Future for WithContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _g = enter(this.cx);
        this.fut.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use super::*;

    const MS: u64 = 1_000_000;

    /// Instants far after the recorder's epoch, so that a `since_ns` read unset (0) would show
    /// as a blocked time of many seconds.
    fn later(base: Instant, ms: u64) -> Instant {
        base.checked_add(Duration::from_millis(10_000 + ms))
            .unwrap_or(base)
    }

    #[test]
    fn a_wait_counts_from_its_start_to_its_end_or_the_finish() {
        let recorder = crate::Builder::new("svc").build_recorder();
        let ep = recorder.endpoint("GET", "/").get();
        let base = clock::now();
        let st = RequestState::new();
        Context::begin_wait(&st, &recorder, ep, later(base, 0));
        Context::begin_wait(&st, &recorder, ep, later(base, 1));
        Context::end_wait(&st, &recorder, ep, later(base, 2));
        assert_eq!(recorder.gauges(ep).blocked.load(Ordering::Relaxed), 1);
        Context::finish_state(&st, &recorder, ep, later(base, 5));
        let blocked = st.blocked_ns.load(Ordering::Relaxed);
        assert!(blocked.abs_diff(5 * MS) < MS / 100, "{blocked}");
        assert_eq!(recorder.gauges(ep).blocked.load(Ordering::Relaxed), 0);
        // Waits after the finish do not count.
        Context::begin_wait(&st, &recorder, ep, later(base, 6));
        Context::end_wait(&st, &recorder, ep, later(base, 9));
        assert_eq!(st.blocked_ns.load(Ordering::Relaxed), blocked);
        assert_eq!(recorder.gauges(ep).blocked.load(Ordering::Relaxed), 0);
    }

    /// A finish racing the wait that opens a stretch sees either no wait (0) or the wait with its
    /// start (1 ms), never an unset start.
    #[test]
    fn finish_racing_the_first_wait_never_reads_an_unset_start() {
        let recorder = crate::Builder::new("svc").build_recorder();
        let ep = recorder.endpoint("GET", "/").get();
        let base = clock::now();
        let (start, end) = (later(base, 0), later(base, 1));
        let barrier = Barrier::new(2);
        for _ in 0..2_000 {
            let st = RequestState::new();
            std::thread::scope(|s| {
                s.spawn(|| {
                    barrier.wait();
                    Context::begin_wait(&st, &recorder, ep, start);
                });
                barrier.wait();
                Context::finish_state(&st, &recorder, ep, end);
            });
            let blocked = st.blocked_ns.load(Ordering::Relaxed);
            assert!(blocked == 0 || blocked.abs_diff(MS) < MS / 100, "{blocked}");
            assert_eq!(recorder.gauges(ep).blocked.load(Ordering::Relaxed), 0);
        }
    }
}
