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
        let prev = state.word.fetch_add(1, Ordering::AcqRel);
        if prev == 0 {
            state
                .since_ns
                .store(recorder.epoch_ns(now), Ordering::Relaxed);
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
