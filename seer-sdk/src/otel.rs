//! A bridge from `opentelemetry_sdk`: [`SeerSpanProcessor`] feeds spans ended by an
//! OpenTelemetry tracer into a Seer recorder, so an application already instrumented with
//! OpenTelemetry goes through the same pipeline: server spans feed the window stats, and every
//! span is sampled and exported like Seer's own.
//!
//! ```
//! use opentelemetry::trace::{Tracer, TracerProvider};
//! let recorder = seer_sdk::Builder::new("svc").build_recorder();
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
//!     .with_span_processor(seer_sdk::SeerSpanProcessor::new(recorder.clone()))
//!     .build();
//! provider.tracer("app").in_span("work", |_cx| {});
//! # let _ = provider.shutdown();
//! ```

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind as OtelKind, Status};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use crate::clock::{self, Instant};
use crate::id::{SpanId, TraceId};
use crate::propagation::{FLAG_SAMPLED, SpanContext};
use crate::record::SpanKind;
use crate::recorder::{ExternalSpan, Recorder};

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SeerSpanProcessor {
    recorder: Recorder,
}

impl SeerSpanProcessor {
    /// A processor recording into `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Self { recorder }
    }
}

fn to_instant(t: SystemTime, now_sys: SystemTime, now: Instant) -> Instant {
    match now_sys.duration_since(t) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        Err(e) => now.checked_add(e.duration()).unwrap_or(now),
    }
}

impl SpanProcessor for SeerSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let now = clock::now();
        let now_sys = SystemTime::now();
        let kind = match span.span_kind {
            OtelKind::Server | OtelKind::Consumer => SpanKind::Server,
            OtelKind::Client | OtelKind::Producer => SpanKind::Client,
            OtelKind::Internal => SpanKind::Internal,
        };
        let status = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "http.response.status_code")
            .and_then(|kv| match &kv.value {
                opentelemetry::Value::I64(v) => u16::try_from(*v).ok(),
                _ => None,
            })
            .unwrap_or(0);
        // Server spans are endpoints (window stats); the rest are span names.
        let named = kind != SpanKind::Server;
        let name = if named {
            self.recorder.span_name(&span.name)
        } else {
            self.recorder.endpoint("", &span.name)
        };
        let sc = &span.span_context;
        self.recorder.record_span(&ExternalSpan {
            name,
            named,
            kind,
            span: SpanContext {
                trace_id: TraceId(u128::from_be_bytes(sc.trace_id().to_bytes())),
                span_id: SpanId(u64::from_be_bytes(sc.span_id().to_bytes())),
                flags: if sc.is_sampled() { FLAG_SAMPLED } else { 0 },
                is_remote: false,
            },
            parent_id: SpanId(u64::from_be_bytes(span.parent_span_id.to_bytes())),
            remote_parent: span.parent_span_is_remote,
            start: to_instant(span.start_time, now_sys, now),
            end: to_instant(span.end_time, now_sys, now),
            status,
            error: matches!(span.status, Status::Error { .. }),
        });
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
