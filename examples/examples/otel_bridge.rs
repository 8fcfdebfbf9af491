//! An application already instrumented with OpenTelemetry feeds Seer: `SeerSpanProcessor`
//! turns every span the OTel SDK ends into a Seer record. Server spans feed the window stats;
//! every span is sampled and exported through Seer's pipeline (OTLP to the collector).
//!
//! ```text
//! cargo run -p seer-examples --example otel_bridge
//! ```

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use seer_sdk::testing::InMemoryExporter;
use seer_sdk::{Builder, SeerSpanProcessor};

fn main() -> anyhow::Result<()> {
    // In-memory here to print what Seer got; use `Builder::install()` to send to a collector.
    let seen = InMemoryExporter::new();
    let (recorder, mut worker) = Builder::new("legacy-otel-app")
        .with_sample_ratio(1.0)
        .with_env()?
        .build_with(seen.clone());

    let provider = SdkTracerProvider::builder()
        .with_span_processor(SeerSpanProcessor::new(recorder))
        .build();
    let tracer = provider.tracer("legacy-app");

    for i in 0..5 {
        let mut server = tracer
            .span_builder("GET /orders")
            .with_kind(SpanKind::Server)
            .start(&tracer);
        let status: i64 = if i == 4 { 500 } else { 200 };
        server.set_attribute(KeyValue::new("http.response.status_code", status));
        let cx = opentelemetry::Context::current_with_span(server);
        {
            let mut child = tracer.start_with_context("query orders", &cx);
            std::thread::sleep(Duration::from_millis(2));
            child.end();
        }
        if status == 500 {
            cx.span().set_status(Status::error("db timeout"));
        }
        cx.span().end();
    }
    provider.shutdown()?;
    worker.flush(std::time::Instant::now() + Duration::from_secs(1));

    for s in seen.spans() {
        println!(
            "{:?} {:14} trace {} parent {} error={} {} us",
            s.kind,
            s.name,
            s.trace_id,
            s.parent_span_id,
            s.is_error(),
            s.duration_ns() / 1000
        );
    }
    for b in seen.windows() {
        for w in &b.windows {
            println!(
                "window {}: arrivals {} completions {} errors {}",
                w.endpoint, w.arrivals, w.completions, w.errors
            );
        }
    }
    Ok(())
}
