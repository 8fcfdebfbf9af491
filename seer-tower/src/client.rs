//! The client side: [`SeerClientLayer`] injects W3C trace context into outgoing requests,
//! records client spans, and marks the calling request as blocked on a downstream call while
//! the call runs (which keeps its local in-flight and self latency apart from its callees').

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use seer_sdk::context::Context;
use seer_sdk::{ClientSpan, Recorder};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::is_error;

/// The `tracestate` value to send with an outgoing request, put in its extensions by the caller
/// (for example copied from the incoming request's `TraceState`). Seer does not interpret it.
#[derive(Clone, Debug)]
pub struct TraceState(pub HeaderValue);

/// Layer for HTTP clients (hyper-util's client, tonic channels, anything that is a
/// `Service<http::Request<B>>`).
///
/// The parent of each client span is, in order: a [`Context`] in the request's extensions
/// (from [`seer_sdk::context::current`], for spawned tasks), else the request being served on
/// this thread, else none (a new trace).
#[derive(Clone, Debug)]
pub struct SeerClientLayer {
    recorder: Recorder,
}

impl SeerClientLayer {
    /// A client layer recording into `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Self { recorder }
    }
}

impl<S> Layer<S> for SeerClientLayer {
    type Service = SeerClient<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SeerClient {
            inner,
            recorder: self.recorder,
        }
    }
}

/// The service built by [`SeerClientLayer`]. Its error type is the inner service's.
#[derive(Clone, Debug)]
pub struct SeerClient<S> {
    inner: S,
    recorder: Recorder,
}

impl<S> SeerClient<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SeerClient<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let name = self
            .recorder
            .client_name(req.method().as_str(), req.uri().path());
        let span = self
            .recorder
            .begin_client(name, req.extensions_mut().get_mut::<Context>());
        let tp = span.span_context().to_traceparent();
        if let Ok(v) = HeaderValue::from_bytes(&tp) {
            req.headers_mut()
                .insert(crate::headers::TRACEPARENT.clone(), v);
        }
        if let Some(ts) = req.extensions().get::<TraceState>().cloned() {
            req.headers_mut()
                .insert(crate::headers::TRACESTATE.clone(), ts.0);
        }
        ClientFuture {
            fut: self.inner.call(req),
            span: Some(span),
        }
    }
}

pin_project! {
    /// Response future of [`SeerClient`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it records the client span as cancelled and ends the caller's blocked stretch.
    #[derive(Debug)]
    pub struct ClientFuture<F> {
        #[pin]
        fut: F,
        span: Option<ClientSpan>,
    }
}

impl<F, B, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.fut.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(out) => out,
        };
        if let Some(span) = this.span.take() {
            match &out {
                Ok(resp) => span.finish(resp.status().as_u16(), is_error(resp)),
                Err(_) => span.finish(0, true),
            }
        }
        Poll::Ready(out)
    }
}
