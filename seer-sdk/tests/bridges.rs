//! The `tracing` layer and the OpenTelemetry bridge feed the same pipeline as SeerLayer.
#![cfg(all(feature = "tracing", feature = "otel", feature = "testing"))]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, SpanKind as OtelKind, Status, Tracer, TracerProvider};
use seer_sdk::testing::InMemoryExporter;
use seer_sdk::{
    Builder, DEFAULT_PRIORITY, SeerSpanProcessor, SeerTracingLayer, SpanKind, clock, context,
};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn tracing_spans_in_a_request_become_its_children() {
    let exporter = InMemoryExporter::new();
    let (recorder, mut worker) = Builder::new("svc")
        .with_sample_ratio(1.0)
        .build_with(exporter.clone());
    let subscriber = tracing_subscriber::registry().with(SeerTracingLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        // Outside any request: ignored.
        tracing::info_span!("background").in_scope(|| {});

        let ep = recorder.endpoint("GET", "/work");
        let mut server = recorder
            .begin_server(ep, None, clock::now(), Duration::ZERO, DEFAULT_PRIORITY)
            .unwrap();
        {
            let _in_request = context::enter(server.context_slot());
            let outer = tracing::info_span!("load");
            let _e = outer.enter();
            // A client call made inside the `tracing` span is its child.
            let name = recorder.client_name("GET", "/db");
            recorder.begin_client(name, None).finish(200, false);
            tracing::info_span!("parse").in_scope(|| tracing::error!("bad row"));
        }
        server.finish(200, false);
    });
    worker.flush(Instant::now() + Duration::from_secs(1));
    let spans = exporter.spans();
    let find = |n: &str| spans.iter().find(|s| &*s.name == n).unwrap().clone();
    let server = find("GET /work");
    let load = find("load");
    let parse = find("parse");
    let db = find("GET /db");
    assert!(spans.iter().all(|s| &*s.name != "background"));
    assert_eq!(load.kind, SpanKind::Internal);
    assert_eq!(load.trace_id, server.trace_id);
    assert_eq!(load.parent_span_id, server.span_id);
    assert_eq!(parse.parent_span_id, load.span_id);
    assert!(parse.is_error(), "an ERROR event marks its span");
    assert_eq!(db.kind, SpanKind::Client);
    assert_eq!(db.parent_span_id, load.span_id);
    // Only the server span counts in the windows.
    let completions: u64 = exporter
        .windows()
        .iter()
        .flat_map(|b| &b.windows)
        .map(|w| w.completions)
        .sum();
    assert_eq!(completions, 1);
}

#[test]
fn opentelemetry_spans_feed_spans_and_windows() {
    let exporter = InMemoryExporter::new();
    let (recorder, mut worker) = Builder::new("otel-app")
        .with_sample_ratio(1.0)
        .build_with(exporter.clone());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(SeerSpanProcessor::new(recorder))
        .build();
    let tracer = provider.tracer("t");
    for i in 0..3 {
        let mut s = tracer
            .span_builder("GET /orders")
            .with_kind(OtelKind::Server)
            .start(&tracer);
        if i == 2 {
            s.set_status(Status::error("boom"));
        }
        s.end();
    }
    tracer.in_span("internal work", |_| {});
    provider.shutdown().unwrap();
    worker.flush(Instant::now() + Duration::from_secs(1));

    let spans = exporter.spans();
    assert_eq!(
        spans.iter().filter(|s| s.kind == SpanKind::Server).count(),
        3
    );
    assert_eq!(spans.iter().filter(|s| s.is_error()).count(), 1);
    assert!(
        spans
            .iter()
            .any(|s| &*s.name == "internal work" && s.kind == SpanKind::Internal)
    );
    let w: Vec<_> = exporter
        .windows()
        .iter()
        .flat_map(|b| b.windows.clone())
        .collect();
    let orders = w.iter().find(|w| w.endpoint == "GET /orders").unwrap();
    assert_eq!(orders.completions, 3);
    assert_eq!(orders.arrivals, 3);
    assert_eq!(orders.errors, 1);
}
