// layer_overhead: what each middleware adds per request over a bare `service_fn`.
//
// Latest results, `cargo bench -p seer-benches --bench layer_overhead`, on a
//   2-vCPU AMD EPYC VM (KVM, TSC clocksource) shared with two other builds: load average 6-9 during
//   these runs, so absolute ns are 2-4x a quiet machine's; rustc 1.95, release + line tables:
//   bare 451 ns; SeerLayer +557 ns (+517 ns without the extension insert); TraceLayer +618 ns;
//   OTel-SDK layer +1196 ns: trace/seer 1.11x, otel/seer 2.15x. A later run (load 9-11): bare
//   755, Seer +799 (+675), TraceLayer +1041, OTel +1794: 1.30x, 2.24x. After moving window
//   stats to per-thread aggregates (load 10-11): bare 691, Seer +685 (+523 without the
//   extension), TraceLayer +752, OTel +1497: 1.10x, 2.18x. Targets (<= 50 ns, >= 4x, >= 8x)
//   Measured apart (before that change), begin_server + finish cost 57 ns when the drain
//   thread was idle and about 230 ns while it drained concurrently (each 96-byte record crossed
//   cores); the extension insert (two allocations) about 40-160 ns.
//
// Instructions per request (load-independent; valgrind callgrind, main thread, counted only
// inside `measure`, 20k requests of one stack, e.g. for SeerLayer:
//   LAYER_OVERHEAD_ONLY=1 LAYER_OVERHEAD_ITERS=20000 LAYER_OVERHEAD_ROUNDS=1 valgrind \
//     --tool=callgrind --separate-threads=yes --toggle-collect='layer_overhead::measure*' <bench>
// then the `-01` file's total / 20000; stacks 0..4 as in `main`). Bare includes building and
// dropping the request and response:
//   before this round: bare 2311; Seer 5165 (+2854); Seer without the extension 4442 (+2131);
//     TraceLayer 4280 (+1969); OTel 8295 (+5984)
//   after (duration converted once, cached window tick, one header pass for traceparent and
//     tracestate, const-initialised id RNG): bare 2311; Seer 4911 (+2600, -9%); Seer without
//     the extension 4186 (+1875, -12%); TraceLayer 4280 (+1969); OTel 8295 (+5984).
//   Of Seer's +2600: the context extension ~725 (http::Extensions allocates its map, table and a
//   Box per value, and frees them with the request), traceparent parsing ~360 (SWAR hex), the
//   header pass ~50 (1 header here; a real request's ~10 headers cost ~100-150, still below the
//   ~310 of two hashed gets), interning ~150, the response future ~700 (window stats ~250 of
//   it), the rest begin_server (ids, shared atomics, the advice check) and moves.
// Wall clock at the same time (load average 5-7, rustc 1.95), before -> after, two runs each:
//   bare 436/377 -> 483/328; Seer +507/+286 -> +362/+305 (+371/+211 -> +275/+247 without the
//   extension); TraceLayer +532/+356 -> +494/+365; OTel +1169/+828 -> +1085/+752. The run-to-run
//   spread here is larger than the change; wall-clock ns are ~10x what the instruction counts
//   suggest, so cache misses, the 4 shared atomic RMWs per request and the export worker sharing
//   2 cores with other builds dominate. Targets (<= 50 ns, >= 4x TraceLayer, >= 8x OTel) are
//   still not met: by instructions Seer is about TraceLayer's cost and 2.3x cheaper than OTel.
//   second round (unsampled requests build no record and touch only a per-thread window
//     aggregate indexed by endpoint id; service-wide in-flight RMWs only while a cap can apply;
//     word-at-a-time interning; one validity check for all traceparent words; advice expiry
//     compared as an instant; span finished in place; chunked window histograms):
//     bare 2311; Seer 4526 (+2215, -15% vs +2600); Seer without the extension 3780 (+1469,
//     -22% vs +1875); TraceLayer 4280 (+1969); OTel 8259 (+5948). By instructions
//     trace/seer 0.89x, otel/seer 2.69x (without the extension 1.34x, 4.05x). Of the +2215 the
//     context extension is ~745 (three allocations and frees inside http::Extensions, with the
//     system allocator): with it the targets (>= 4x, >= 8x) cannot be met by instruction count.
//     Left: traceparent ~270 (SWAR; SSE2 would halve it but its intrinsics need `unsafe`),
//     entering/leaving the context ~125 (64-byte swaps with a TLS slot), interning ~100,
//     finish + window stats ~200, moves. Counts vary by +-50 between runs (the worker thread).
//   Wall clock, same binary pair back to back (load average 11-14, absolute ns ~4x a quiet
//     machine's): before: Seer +1097/+950 (no extension +731/+711), trace/seer 1.49x/1.34x,
//     otel/seer 3.63x/3.17x; after: Seer +825/+776 (no extension +510/+706), trace/seer
//     1.83x/1.96x, otel/seer 3.50x/3.49x. Targets (<= 50 ns, >= 4x, >= 8x) still not met.
//   Quiet VM (2026-12-04, nothing else running, 201 rounds): bare 246 ns; Seer +175.5 ns
//     (+120.9 without the extension, so the insert alone is 54.6 ns); TraceLayer +278.9;
//     OTel +540: trace/seer 1.59x, otel/seer 3.08x. The extension's three allocations exceed
//     the 50 ns target on their own, which is why issue 3 is marked blocked.
//
// Four stacks, same request (GET /users/42 with a `traceparent` header), polled to completion
// with a no-op waker (the inner future is ready at once, so only the layers are measured):
// - bare `service_fn`
// - SeerLayer, everything on: traceparent extracted, a route classifier, the context extension,
//   windows (an export worker drains the rings on its own thread), head sampling at 0.1, and a
//   valid advice check on every request
// - tower-http `TraceLayer::new_for_http()` under a `tracing_subscriber::Registry`
// - an OpenTelemetry-SDK server-span layer (what opentelemetry-instrumentation-tower does:
//   extract the parent with the W3C propagator, start a span with 2 attributes, add the status,
//   end it) with an always-on sampler and a processor that drops every span
// Many short rounds (10k requests each) alternate the stacks, so that a preemption on this
// shared machine spoils few rounds; the figure per stack is the median over rounds of
// (stack ns/request - bare ns/request) measured in the same round.

#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Request, Response};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Tracer, TracerProvider as _};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanProcessor};
use seer_proto::AdviceReply;
use seer_sdk::{Advice, Builder, ExportBatch, Exporter};
use seer_tower::SeerLayer;
use seer_tower::classify::RouteFn;
use tower::{Layer, Service, service_fn};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
const ITERS: usize = 10_000;
const ROUNDS: usize = 201;

fn env_or(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn request() -> Request<String> {
    Request::get("/users/42")
        .header("traceparent", HeaderValue::from_static(TRACEPARENT))
        .body(String::new())
        .unwrap()
}

fn handler(_req: Request<String>) -> Ready<Result<Response<String>, Infallible>> {
    ready(Ok(Response::new(String::new())))
}

/// ns per request through `svc`. Never inlined, so that callgrind can count just this with
/// `--toggle-collect`.
#[inline(never)]
fn measure<S, B>(svc: &mut S) -> f64
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let start = Instant::now();
    let iters = env_or("LAYER_OVERHEAD_ITERS", ITERS);
    for _ in 0..iters {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let fut = pin!(svc.call(request()));
        match fut.poll(&mut cx) {
            Poll::Ready(r) => drop(std::hint::black_box(r.unwrap())),
            Poll::Pending => unreachable!(),
        }
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

// ---- the OpenTelemetry layer -------------------------------------------------------------

#[derive(Debug)]
struct DropAll;

impl SpanProcessor for DropAll {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &OtelContext) {}
    fn on_end(&self, span: SpanData) {
        drop(std::hint::black_box(span));
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[derive(Clone)]
struct OtelService<S> {
    inner: S,
    tracer: SdkTracer,
}

struct OtelFuture<F> {
    fut: F,
    span: Option<opentelemetry_sdk::trace::Span>,
}

impl<F, B, E> Future for OtelFuture<F>
where
    F: Future<Output = Result<Response<B>, E>> + Unpin,
{
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = match Pin::new(&mut self.fut).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(o) => o,
        };
        if let Some(mut span) = self.span.take() {
            if let Ok(resp) = &out {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(resp.status().as_u16()),
                ));
            }
            span.end();
        }
        Poll::Ready(out)
    }
}

impl<S, B, RB> Service<Request<B>> for OtelService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = OtelFuture<S::Future>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
        let span = self
            .tracer
            .span_builder("GET /users/{id}")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.route", "/users/{id}"),
            ])
            .start_with_context(&self.tracer, &parent);
        OtelFuture {
            fut: self.inner.call(req),
            span: Some(span),
        }
    }
}

// ---- Seer's worker, exporting nowhere ------------------------------------------------------

struct CountingExporter;

impl Exporter for CountingExporter {
    fn export(
        &mut self,
        batch: ExportBatch<'_>,
        counters: &seer_sdk::Counters,
    ) -> Option<AdviceReply> {
        counters.add_exported(batch.spans.len() as u64);
        None
    }
}

/// The route template of a request, as a router would give it.
fn users_route<'a>(
    _m: &'a http::Method,
    uri: &'a http::Uri,
    _e: &'a http::Extensions,
) -> Option<&'a str> {
    uri.path().starts_with("/users/").then_some("/users/{id}")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("layer_overhead: bench");
        return;
    }
    tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();

    let (recorder, worker) = Builder::new("bench")
        .with_sample_ratio(0.1)
        .build_with(CountingExporter);
    let export = if std::env::var_os("NO_WORKER").is_some() {
        drop(worker);
        None
    } else {
        Some(worker.spawn().unwrap())
    };
    let expires = (SystemTime::now() + Duration::from_secs(3600))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    recorder.set_advice(Advice::from(AdviceReply {
        admit_fraction: 1.0,
        expires_at_unix_ns: expires,
        ..Default::default()
    }));
    let route = RouteFn(users_route);

    let mut bare = service_fn(handler);
    let mut seer = SeerLayer::new(recorder)
        .with_classifier(route)
        .layer(service_fn(handler));
    let mut seer_no_ext = SeerLayer::new(recorder)
        .with_classifier(route)
        .with_context_extension(false)
        .layer(service_fn(handler));
    let mut trace = tower_http::trace::TraceLayer::new_for_http().layer(service_fn(handler));
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_span_processor(DropAll)
        .build();
    let mut otel = OtelService {
        inner: service_fn(handler),
        tracer: provider.tracer("bench"),
    };

    // Warm up (interning, allocator, caches).
    let warm = std::env::var_os("LAYER_OVERHEAD_ONLY").is_none();
    if warm {
        measure(&mut bare);
        measure(&mut seer);
        measure(&mut seer_no_ext);
        measure(&mut trace);
        measure(&mut otel);
    }

    let (mut b, mut s, mut sx, mut t, mut o) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut ds, mut dsx, mut dt, mut dot) = (vec![], vec![], vec![], vec![]);
    for round in 0..env_or("LAYER_OVERHEAD_ROUNDS", ROUNDS) {
        let mut r = [0.0f64; 5];
        // Rotate the order so no stack always runs first.
        // LAYER_OVERHEAD_ONLY=<index> runs one stack (for instruction counts under callgrind).
        let only: Option<usize> = std::env::var("LAYER_OVERHEAD_ONLY")
            .ok()
            .and_then(|v| v.parse().ok());
        for k in 0..5 {
            let i = (k + round) % 5;
            if only.is_some_and(|o| o != i) {
                continue;
            }
            r[i] = match i {
                0 => measure(&mut bare),
                1 => measure(&mut seer),
                2 => measure(&mut seer_no_ext),
                3 => measure(&mut trace),
                _ => measure(&mut otel),
            };
        }
        b.push(r[0]);
        s.push(r[1]);
        sx.push(r[2]);
        t.push(r[3]);
        o.push(r[4]);
        ds.push(r[1] - r[0]);
        dsx.push(r[2] - r[0]);
        dt.push(r[3] - r[0]);
        dot.push(r[4] - r[0]);
    }
    use seer_benches::median;
    let seer_added = median(&mut ds);
    let trace_added = median(&mut dt);
    let otel_added = median(&mut dot);
    if let Some(e) = export {
        e.shutdown(Duration::from_secs(1)).ok();
    }
    let c = recorder.counters();
    let figures = serde_json::json!({
        "layer_overhead": {
            "bare_ns": median(&mut b),
            "seer_ns": median(&mut s),
            "seer_no_extension_ns": median(&mut sx),
            "trace_layer_ns": median(&mut t),
            "otel_layer_ns": median(&mut o),
            "seer_added_ns": seer_added,
            "seer_no_extension_added_ns": median(&mut dsx),
            "trace_layer_added_ns": trace_added,
            "otel_layer_added_ns": otel_added,
            "trace_layer_over_seer": trace_added / seer_added.max(0.1),
            "otel_layer_over_seer": otel_added / seer_added.max(0.1),
            "seer_recorded": c.recorded,
            "seer_dropped_buffer_full": c.dropped_buffer_full,
            "rounds": ROUNDS,
            "requests_per_round": ITERS,
        }
    });
    seer_benches::report("layer_overhead", &figures).unwrap();
}
