//! A `tracing_subscriber::Layer` that turns `tracing` spans opened inside a request into child
//! spans of that request, in the same trace and through the same export.
//!
//! Spans opened outside any request (no current [`crate::context::Context`] and no Seer parent)
//! are ignored. While such a span is entered, client calls made inside it become its children.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! let subscriber = tracing_subscriber::registry().with(seer_sdk::SeerTracingLayer::new());
//! # drop(subscriber);
//! ```

use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::clock::{self, Instant};
use crate::context;
use crate::id::SpanId;
use crate::propagation::SpanContext;
use crate::record::SpanKind;
use crate::recorder::{EndpointId, ExternalSpan, Recorder};

/// See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct SeerTracingLayer {
    _priv: (),
}

impl SeerTracingLayer {
    /// A layer that records into the recorder of the request each span belongs to.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What the layer keeps in a `tracing` span's extensions.
#[derive(Debug)]
struct SeerSpan {
    recorder: Recorder,
    span: SpanContext,
    parent: SpanId,
    name: EndpointId,
    start: Instant,
    error: bool,
    /// The context's span before this span was entered (to restore on exit).
    prev: Option<SpanContext>,
}

impl<S> Layer<S> for SeerTracingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        // Parent: the enclosing Seer-tracked `tracing` span, else the current request.
        let from_parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<SeerSpan>()
                .map(|s| (s.recorder, s.span))
        });
        let parent = from_parent
            .or_else(|| context::with_current(|cx| cx.map(|cx| (*cx.recorder(), cx.span))));
        let Some((recorder, parent)) = parent else {
            return;
        };
        let name = recorder.span_name(attrs.metadata().name());
        let me = recorder.child_context(Some(parent));
        span.extensions_mut().insert(SeerSpan {
            recorder,
            span: me,
            parent: parent.span_id,
            name,
            start: clock::now(),
            error: false,
            prev: None,
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        if *event.metadata().level() == Level::ERROR
            && let Some(span) = ctx.event_span(event)
            && let Some(s) = span.extensions_mut().get_mut::<SeerSpan>()
        {
            s.error = true;
        }
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(s) = ext.get_mut::<SeerSpan>() else {
            return;
        };
        let me = s.span;
        s.prev = context::with_current(|cx| cx.map(|cx| std::mem::replace(&mut cx.span, me)));
    }

    fn on_exit(&self, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(s) = ext.get_mut::<SeerSpan>() else {
            return;
        };
        if let Some(prev) = s.prev.take() {
            context::with_current(|cx| {
                if let Some(cx) = cx {
                    cx.span = prev;
                }
            });
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(s) = span.extensions_mut().remove::<SeerSpan>() else {
            return;
        };
        s.recorder.record_span(&ExternalSpan {
            name: s.name,
            named: true,
            kind: SpanKind::Internal,
            span: s.span,
            parent_id: s.parent,
            remote_parent: false,
            start: s.start,
            end: clock::now(),
            status: 0,
            error: s.error,
        });
    }
}
