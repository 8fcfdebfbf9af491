//! The response future of [`crate::Seer`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use seer_sdk::{ServerSpan, context};

pin_project! {
    /// Response future of [`crate::Seer`].
    ///
    /// While polled, the request's context is current (client calls and `tracing` spans in the
    /// handler become its children). On completion the request is recorded with its status: a
    /// 5xx, a non-zero `grpc-status` header or an inner error counts as an error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes records the request as cancelled (with the time
    /// it ran so far) and releases its in-flight gauges; nothing else happens.
    #[derive(Debug)]
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, B> {
        Running {
            #[pin]
            fut: F,
            span: ServerSpan,
        },
        Shed {
            resp: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn running(fut: F, span: ServerSpan) -> Self {
        Self {
            kind: Kind::Running { fut, span },
        }
    }

    pub(crate) fn shed(resp: Response<B>) -> Self {
        Self {
            kind: Kind::Shed { resp: Some(resp) },
        }
    }
}

/// Whether a response is an error for the window stats: 5xx, or a gRPC trailers-only error.
#[inline]
pub(crate) fn is_error<B>(resp: &Response<B>) -> bool {
    resp.status().is_server_error()
        || (!resp.headers().is_empty()
            && resp
                .headers()
                .get(&crate::headers::GRPC_STATUS)
                .is_some_and(|v| v.as_bytes() != b"0"))
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running { fut, span } => {
                let out = {
                    // After completion the slot is empty and this enters nothing.
                    let _g = context::enter(span.context_slot());
                    fut.poll(cx)
                };
                let out = match out {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(out) => out,
                };
                // In place: the span stays in the future, finished (a no-op if polled again).
                match &out {
                    Ok(resp) => span.finish_in_place(resp.status().as_u16(), is_error(resp)),
                    Err(_) => span.finish_in_place(0, true),
                }
                Poll::Ready(out)
            }
            KindProj::Shed { resp } => match resp.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending, // polled after completion
            },
        }
    }
}
