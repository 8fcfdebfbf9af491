//! [`Seer`]: the server-side service.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use seer_sdk::Recorder;
use seer_sdk::clock::{self, Instant};
use seer_sdk::propagation::parse_traceparent;
use tower_service::Service;

use crate::callbacks::{OnShed, Priority};
use crate::classify::Classify;
use crate::client::TraceState;
use crate::future::ResponseFuture;
use crate::headers;
use crate::layer::SeerLayer;

/// Marks this service clone as parked in `poll_ready`; releases the queue gauge when dropped.
#[derive(Debug)]
struct QueueMark {
    recorder: Recorder,
    since: Option<Instant>,
}

impl QueueMark {
    fn enter(&mut self) {
        if self.since.is_none() {
            self.since = Some(clock::now());
            self.recorder.queue_enter();
        }
    }

    fn exit(&mut self) -> Duration {
        match self.since.take() {
            Some(t) => {
                self.recorder.queue_exit();
                clock::now().saturating_duration_since(t)
            }
            None => Duration::ZERO,
        }
    }
}

impl Drop for QueueMark {
    fn drop(&mut self) {
        if self.since.take().is_some() {
            self.recorder.queue_exit();
        }
    }
}

/// The service built by [`SeerLayer`]. Its error type is the inner service's, unchanged.
#[derive(Debug)]
pub struct Seer<S, C, P, Sh> {
    inner: S,
    layer: SeerLayer<C, P, Sh>,
    queue: QueueMark,
    ready_wait: Duration,
}

impl<S: Clone, C: Clone, P: Clone, Sh: Clone> Clone for Seer<S, C, P, Sh> {
    fn clone(&self) -> Self {
        // A clone has not waited for anything yet.
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
            queue: QueueMark {
                recorder: self.layer.recorder,
                since: None,
            },
            ready_wait: Duration::ZERO,
        }
    }
}

impl<S, C, P, Sh> Seer<S, C, P, Sh> {
    pub(crate) fn new(inner: S, layer: SeerLayer<C, P, Sh>) -> Self {
        Self {
            inner,
            queue: QueueMark {
                recorder: layer.recorder,
                since: None,
            },
            layer,
            ready_wait: Duration::ZERO,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, P, Sh, ReqBody, ResBody> Service<Request<ReqBody>> for Seer<S, C, P, Sh>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Classify,
    P: Priority<ReqBody>,
    Sh: OnShed<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    /// Forwards to the inner service. While it returns `Pending`, this request counts in the
    /// service's queue depth; the time it waited becomes the request's queue wait.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => {
                self.queue.enter();
                Poll::Pending
            }
            Poll::Ready(r) => {
                self.ready_wait += self.queue.exit();
                Poll::Ready(r)
            }
        }
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let start = clock::now();
        let l = &self.layer;
        let endpoint = l.classify.classify(&req, &l.recorder);
        let (traceparent, tracestate) = headers::trace_headers(req.headers());
        let parent = traceparent.and_then(|v| parse_traceparent(v.as_bytes()));
        // tracestate only means something next to a valid traceparent. All its fields are
        // combined (allocating only when there are several, or it is over the limits).
        let tracestate = match (parent, tracestate) {
            (Some(_), Some(_)) => headers::tracestate(req.headers()),
            _ => None,
        };
        let priority = l.priority.priority(&req);
        let wait = std::mem::take(&mut self.ready_wait);
        match l
            .recorder
            .begin_server(endpoint, parent, start, wait, priority)
        {
            Ok(span) => {
                if l.extension {
                    req.extensions_mut().insert(span.span_context());
                }
                if let Some(ts) = tracestate {
                    req.extensions_mut().insert(TraceState(ts));
                }
                // The handler's own work runs when its future is polled, inside the context.
                ResponseFuture::running(self.inner.call(req), span)
            }
            Err(shed) => ResponseFuture::shed(l.on_shed.on_shed(&shed)),
        }
    }
}
