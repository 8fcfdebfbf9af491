//! Ingest: OTLP/HTTP traces (protobuf and JSON, gzip) and the native window endpoint, on one
//! port.
//!
//! | outcome | status |
//! |---|---|
//! | all spans stored | 200, empty `ExportTraceServiceResponse` |
//! | some spans rejected (invalid ids) | 200 with `partial_success { rejected_spans, error_message }` |
//! | malformed body, every span rejected, corrupt gzip | 400 (`google.rpc.Status` body) |
//! | body not received within `body_read_timeout_ms` (the connection is closed) | 408 |
//! | body over the limit after decompression (`max_body_bytes`; window batches also at most [`MAX_WINDOW_BODY_BYTES`]) | 413 |
//! | unknown content type or encoding | 415 |
//! | memory budget spent or store queue full | 503 with `Retry-After: 1` |
//!
//! A 200 is sent only after the store committed the batch: every acknowledged span is on disk.
//!
//! Every body is read into memory reserved against the ingest [`budget`], and a batch keeps its
//! reservation while it waits in a queue (the store's, the aggregator's): a flood of requests
//! is answered 503 instead of growing the queues past the budget. Large bodies are decoded on
//! tokio's blocking threads, not on the async workers that serve every connection.

pub mod body;
pub mod budget;
pub mod error;
pub mod otlp;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crossbeam::channel::Sender;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost::Message as _;

use self::budget::Reservation;
use self::error::IngestError;
use self::otlp::DecodedBatch;
use crate::internal_events::{
    DropStage, Dropped, Metrics, RequestRejected, SpansAccepted, SpansReceived, SpansRejected,
    WindowsReceived,
};
use crate::pipeline::{AggMsg, AppState};
use crate::predict::advice::Advice;
use crate::store::writer::Ack;

/// A decoded batch on its way to the store and the aggregator, holding its memory reservation
/// until both are done with it.
#[derive(Debug)]
pub struct Pending {
    /// The batch.
    pub batch: DecodedBatch,
    /// When it was received, unix ns.
    pub received_unix_ns: u64,
    /// Memory held for it.
    pub reservation: Reservation,
}

/// Body format of an OTLP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

/// Reads `Content-Type`.
///
/// # Errors
///
/// [`IngestError::UnsupportedMediaType`].
pub fn format(headers: &HeaderMap) -> Result<Format, IngestError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedMediaType),
    }
}

/// `google.rpc.Status`, the OTLP error body.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    /// gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Message.
    #[prost(string, tag = "2")]
    pub message: String,
}

fn content_type(f: Format) -> HeaderValue {
    HeaderValue::from_static(match f {
        Format::Protobuf => seer_proto::PROTOBUF_CONTENT_TYPE,
        Format::Json => seer_proto::JSON_CONTENT_TYPE,
    })
}

/// The error response for `err` in the request's format.
pub fn error_response(state: &AppState, f: Format, err: &IngestError) -> Response {
    let status = err.status();
    RequestRejected {
        status: status.as_u16(),
    }
    .emit(&state.metrics);
    let rpc = RpcStatus {
        code: match status {
            StatusCode::SERVICE_UNAVAILABLE => 14,
            StatusCode::PAYLOAD_TOO_LARGE => 8,
            StatusCode::REQUEST_TIMEOUT => 4,
            _ => 3,
        },
        message: err.to_string(),
    };
    let body = match f {
        Format::Protobuf => rpc.encode_to_vec(),
        Format::Json => serde_json::to_vec(&rpc).unwrap_or_default(),
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type(f));
    if let Some(secs) = err.retry_after() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

pub(crate) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads and inflates a body under `limit` (decompressed bytes) and the budget, within
/// `body_read_timeout_ms`.
///
/// # Errors
///
/// As [`body::read_raw`] and [`body::gunzip`], and [`IngestError::UnsupportedEncoding`].
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Bytes, Reservation), IngestError> {
    let enc = body::encoding(headers)?;
    let mut res = state.budget.reserve_empty();
    let deadline = std::time::Duration::from_millis(state.cfg.body_read_timeout_ms);
    let raw = body::read_raw(headers, body, limit, deadline, &mut res).await?;
    let bytes = match enc {
        body::Encoding::Identity => raw,
        body::Encoding::Gzip => {
            if raw.len() > 256 << 10 {
                let (out, r) = tokio::task::spawn_blocking(move || {
                    let out = body::gunzip(&raw, limit, &mut res);
                    (out, res)
                })
                .await
                .map_err(|_| IngestError::Overloaded)?;
                res = r;
                out?
            } else {
                body::gunzip(&raw, limit, &mut res)?
            }
        }
    };
    Ok((bytes, res))
}

fn decode(f: Format, bytes: Bytes) -> Result<DecodedBatch, IngestError> {
    Ok(match f {
        Format::Protobuf => otlp::decode(bytes)?,
        Format::Json => otlp::decode_json(&bytes)?,
    })
}

/// Bodies over this many bytes are decoded on a blocking thread instead of an async worker.
const DECODE_INLINE_BYTES: usize = 1 << 20;

/// Decodes an OTLP body, off the async workers when it is large.
async fn decode_off_thread(f: Format, bytes: Bytes) -> Result<DecodedBatch, IngestError> {
    if bytes.len() > DECODE_INLINE_BYTES {
        tokio::task::spawn_blocking(move || decode(f, bytes))
            .await
            .map_err(|_| IngestError::Overloaded)?
    } else {
        decode(f, bytes)
    }
}

/// Accepts a decoded batch: store (awaiting the commit), then aggregation (best effort).
/// Returns (accepted, rejected) span counts.
///
/// # Errors
///
/// [`IngestError::AllRejected`], [`IngestError::Overloaded`] or [`IngestError::Unavailable`].
pub async fn accept(
    state: &AppState,
    batch: DecodedBatch,
    mut res: Reservation,
) -> Result<DecodedCounts, IngestError> {
    let counts = DecodedCounts {
        accepted: batch.spans.len() as u64,
        rejected: batch.rejected,
        reason: batch.reject_reason,
    };
    if batch.spans.is_empty() {
        if batch.rejected > 0 {
            return Err(IngestError::AllRejected {
                count: batch.rejected,
                reason: batch.reject_reason.unwrap_or("invalid span"),
            });
        }
        return Ok(counts);
    }
    // Account the decoded records too (the body is already reserved).
    if !res.grow(batch.spans.len() * std::mem::size_of::<otlp::SpanRec>()) {
        return Err(IngestError::Overloaded);
    }
    let pending = Arc::new(Pending {
        batch,
        received_unix_ns: now_unix_ns(),
        reservation: res,
    });
    if let Some(fwd) = &state.forward {
        // Agent mode: forward upstream; the upstream store acknowledges.
        return fwd.spans(&pending).await.map(|()| counts);
    }
    let ack = state
        .writer
        .as_ref()
        .and_then(|w| w.try_spans(Arc::clone(&pending)))
        .ok_or(IngestError::Overloaded)?;
    // The aggregator gets the batch only once the store committed it: a failed commit is
    // answered 503 and retried by the client, and must not be counted twice. The wait runs in
    // its own task so that a client hanging up does not leave a committed batch unaggregated.
    let task = tokio::spawn(commit_then_aggregate(
        ack,
        state.agg_tx.clone(),
        pending,
        Arc::clone(&state.metrics),
    ));
    task.await.map_err(|_| IngestError::Unavailable)??;
    SpansAccepted {
        count: counts.accepted,
    }
    .emit(&state.metrics);
    Ok(counts)
}

/// Waits for the store's acknowledgement of `pending`, then queues it for aggregation (best
/// effort: a full queue counts a drop).
///
/// # Errors
///
/// [`IngestError::Unavailable`] when the commit failed (or the writer went away); the batch is
/// then not aggregated.
async fn commit_then_aggregate(
    ack: Ack,
    agg_tx: Sender<AggMsg>,
    pending: Arc<Pending>,
    metrics: Arc<Metrics>,
) -> Result<(), IngestError> {
    if !matches!(ack.await, Ok(true)) {
        return Err(IngestError::Unavailable);
    }
    let count = pending.batch.spans.len() as u64;
    if agg_tx.try_send(AggMsg::Spans(pending)).is_err() {
        Dropped {
            stage: DropStage::Aggregate,
            count,
        }
        .emit(&metrics);
    }
    Ok(())
}

/// Span counts of an accepted request.
#[derive(Debug, Clone, Copy)]
pub struct DecodedCounts {
    /// Spans stored.
    pub accepted: u64,
    /// Spans rejected.
    pub rejected: u64,
    /// Why the first was rejected.
    pub reason: Option<&'static str>,
}

/// `POST /v1/traces`.
pub async fn traces(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let f = match format(&headers) {
        Ok(f) => f,
        Err(e) => return error_response(&state, Format::Json, &e),
    };
    let result = async {
        let (bytes, res) = read_body(&state, &headers, body, state.cfg.max_body_bytes).await?;
        let batch = decode_off_thread(f, bytes).await?;
        SpansReceived {
            count: batch.spans.len() as u64 + batch.rejected,
            json: f == Format::Json,
        }
        .emit(&state.metrics);
        accept(&state, batch, res).await
    }
    .await;
    match result {
        Ok(c) => {
            use opentelemetry_proto::tonic::collector::trace::v1::{
                ExportTracePartialSuccess, ExportTraceServiceResponse,
            };
            let resp = ExportTraceServiceResponse {
                partial_success: (c.rejected > 0).then(|| {
                    SpansRejected { count: c.rejected }.emit(&state.metrics);
                    ExportTracePartialSuccess {
                        rejected_spans: i64::try_from(c.rejected).unwrap_or(i64::MAX),
                        error_message: c.reason.unwrap_or_default().to_owned(),
                    }
                }),
            };
            let body = match f {
                Format::Protobuf => resp.encode_to_vec(),
                Format::Json => serde_json::to_vec(&resp).unwrap_or_default(),
            };
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, content_type(f));
            r
        }
        Err(e) => error_response(&state, f, &e),
    }
}

/// Checks a native window batch: version, service, histograms.
///
/// # Errors
///
/// [`IngestError::Invalid`].
pub fn check_windows(b: &seer_proto::WindowBatch) -> Result<(), IngestError> {
    if b.version != seer_proto::WIRE_VERSION {
        return Err(IngestError::Invalid(format!(
            "unknown window batch version {} (this collector reads {})",
            b.version,
            seer_proto::WIRE_VERSION
        )));
    }
    if b.service.is_empty() || b.service.len() > otlp::MAX_SERVICE_NAME {
        return Err(IngestError::Invalid(format!(
            "service must be 1..={} bytes",
            otlp::MAX_SERVICE_NAME
        )));
    }
    if b.windows.len() > 4096 {
        return Err(IngestError::Invalid(
            "more than 4096 endpoint windows".into(),
        ));
    }
    for w in &b.windows {
        // An empty histogram is valid (and decoding one would allocate for nothing).
        for h in [&w.latency, &w.self_latency, &w.queue_wait]
            .into_iter()
            .filter(|h| !h.is_empty())
        {
            seer_proto::Histogram::decode(h)
                .map_err(|_| IngestError::Invalid(format!("bad histogram for {}", w.endpoint)))?;
        }
    }
    Ok(())
}

fn advice_response(advice: &Advice) -> Response {
    let mut r = (StatusCode::OK, advice.to_reply().encode_to_vec()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(seer_proto::PROTOBUF_CONTENT_TYPE),
    );
    r
}

/// Most bytes of a window batch body (after decompression). A batch is one process's tick:
/// a few hundred KiB even with hundreds of endpoints and full histograms, so 4 MiB leaves
/// room while keeping one request's decoding (and the 4096 batches the aggregator queue can
/// hold) small; bigger bodies are answered 413 naming this limit. `max_body_bytes` applies
/// when it is smaller.
pub const MAX_WINDOW_BODY_BYTES: usize = 4 << 20;

/// A window batch with more non-empty histograms than this is checked on a blocking thread:
/// each decode allocates and zeroes the histogram's counts (up to tens of KiB for a wide range).
const CHECK_INLINE_HISTOGRAMS: usize = 64;

/// Decodes and checks a window batch ([`check_windows`]), off the async workers when the body
/// is over [`DECODE_INLINE_BYTES`] or holds many histograms.
async fn decode_windows(bytes: Bytes) -> Result<seer_proto::WindowBatch, IngestError> {
    fn decode(bytes: &[u8]) -> Result<seer_proto::WindowBatch, IngestError> {
        seer_proto::WindowBatch::decode(bytes)
            .map_err(|e| IngestError::Invalid(format!("malformed window batch: {e}")))
    }
    fn checked(b: seer_proto::WindowBatch) -> Result<seer_proto::WindowBatch, IngestError> {
        check_windows(&b).map(|()| b)
    }
    async fn blocking(
        f: impl FnOnce() -> Result<seer_proto::WindowBatch, IngestError> + Send + 'static,
    ) -> Result<seer_proto::WindowBatch, IngestError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| IngestError::Overloaded)?
    }
    if bytes.len() > DECODE_INLINE_BYTES {
        return blocking(move || checked(decode(&bytes)?)).await;
    }
    let batch = decode(&bytes)?;
    let histograms: usize = batch
        .windows
        .iter()
        .map(|w| {
            [&w.latency, &w.self_latency, &w.queue_wait]
                .into_iter()
                .filter(|h| !h.is_empty())
                .count()
        })
        .sum();
    if histograms > CHECK_INLINE_HISTOGRAMS {
        blocking(move || checked(batch)).await
    } else {
        checked(batch)
    }
}

/// `POST /v1/seer/windows`: merges the batch and replies with the service's advice.
///
/// The body is at most [`MAX_WINDOW_BODY_BYTES`]. The decoded batch keeps the body's memory
/// reservation (plus its window records) until the aggregator has merged it.
pub async fn windows(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let f = Format::Protobuf;
    let result = async {
        if format(&headers)? != Format::Protobuf {
            return Err(IngestError::UnsupportedMediaType);
        }
        let limit = state.cfg.max_body_bytes.min(MAX_WINDOW_BODY_BYTES);
        let (bytes, mut res) = read_body(&state, &headers, body, limit)
            .await
            .map_err(|e| e.over_limit("window batch", limit))?;
        let batch = decode_windows(bytes).await?;
        // The decoded batch holds copies of the body's strings and histograms (the body goes
        // now): its reservation carries over, grown by the window records.
        if !res.grow(batch.windows.len() * std::mem::size_of::<seer_proto::EndpointWindow>()) {
            return Err(IngestError::Overloaded);
        }
        WindowsReceived.emit(&state.metrics);
        let node = if batch.node.is_empty() {
            state.node_for_peer(peer)
        } else {
            batch.node.clone()
        };
        state.learn_target(&batch, &node);
        let service = batch.service.clone();
        if let Some(fwd) = &state.forward {
            return fwd.windows(batch, &node).await;
        }
        let msg = AggMsg::Windows {
            batch: Box::new(batch),
            node: Some(node),
            reservation: res,
        };
        if state.agg_tx.try_send(msg).is_err() {
            return Err(IngestError::Overloaded);
        }
        let advice = state.advice_for(&service);
        Ok(advice_response(&advice))
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) => error_response(&state, f, &e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ingest::budget::Budget;
    use crate::ingest::otlp::SpanRec;
    use crossbeam::channel::Receiver;

    /// Handler state with default settings, a `budget`-byte ingest budget, no store, and an
    /// aggregator queue nobody reads but the caller.
    pub(crate) fn app_state(budget: usize) -> (AppState, Receiver<AggMsg>) {
        let metrics = Arc::new(Metrics::new());
        let (agg_tx, agg_rx) = crossbeam::channel::bounded(16);
        let state = AppState {
            cfg: Arc::new(crate::config::Config::default()),
            budget: Budget::new(budget, Arc::clone(&metrics)),
            metrics,
            store: None,
            writer: None,
            agg_tx,
            shared: Arc::default(),
            targets: Arc::default(),
            forward: None,
            node: Arc::from("n"),
            shutdown: tokio::sync::watch::channel(false).1,
        };
        (state, agg_rx)
    }

    /// A POST of `body` to `path` with `content_type`.
    pub(crate) fn post(path: &str, content_type: &str, body: Vec<u8>) -> axum::extract::Request {
        http::Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap()
    }

    /// A window batch of `n` endpoints, each with a latency histogram.
    fn window_batch(n: usize) -> seer_proto::WindowBatch {
        let mut h = seer_proto::Histogram::new_latency();
        h.record_ns(1_000_000);
        seer_proto::WindowBatch {
            version: seer_proto::WIRE_VERSION,
            service: "s".into(),
            tick_start_unix_ns: 1_000_000_000,
            tick_ns: 100_000_000,
            windows: (0..n)
                .map(|i| seer_proto::EndpointWindow {
                    endpoint: format!("GET /{i:0>200}"),
                    arrivals: 1,
                    completions: 1,
                    latency: h.encode(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    async fn post_windows(state: &AppState, body: Vec<u8>) -> (StatusCode, RpcStatus) {
        let req = post(
            seer_proto::WINDOWS_PATH,
            seer_proto::PROTOBUF_CONTENT_TYPE,
            body,
        );
        let resp = windows(State(state.clone()), req).await;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, RpcStatus::decode(body).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_queued_window_batch_holds_its_reservation_until_merged() {
        let (state, agg_rx) = app_state(64 << 20);
        let body = window_batch(3).encode_to_vec();
        let (status, rpc) = post_windows(&state, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{}", rpc.message);
        // The handler returned, the batch waits in the queue: its memory is still reserved.
        assert_eq!(agg_rx.len(), 1);
        let held = state.budget.used();
        assert!(
            held >= body.len(),
            "{held} bytes reserved for a queued {}-byte batch",
            body.len()
        );
        // Merged (the message handled and dropped): released.
        match agg_rx.try_recv() {
            Ok(AggMsg::Windows { batch, node, .. }) => {
                assert_eq!(batch.windows.len(), 3);
                assert_eq!(node.as_deref(), Some("n"));
            }
            other => panic!("expected a window batch, got {other:?}"),
        }
        assert_eq!(state.budget.used(), 0);
        // A budget the queued batches have spent refuses the next one with 503.
        let (state, agg_rx) = app_state(held + held / 2);
        assert_eq!(post_windows(&state, body.clone()).await.0, StatusCode::OK);
        assert_eq!(
            post_windows(&state, body.clone()).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(agg_rx.try_recv());
        assert_eq!(post_windows(&state, body).await.0, StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn window_bodies_have_their_own_limit_and_large_ones_decode() {
        let (state, agg_rx) = app_state(64 << 20);
        assert!(state.cfg.max_body_bytes > MAX_WINDOW_BODY_BYTES);
        // Over the window limit (under the span limit): 413 naming the limit.
        let (status, rpc) = post_windows(&state, vec![0u8; MAX_WINDOW_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", rpc.message);
        assert_eq!(
            rpc.message,
            "window batch over the 4 MiB limit of this endpoint"
        );
        assert_eq!(state.budget.used(), 0);
        assert!(agg_rx.is_empty());
        // A batch over a MiB (decoded and checked on a blocking thread) is merged.
        let big = window_batch(4096).encode_to_vec();
        assert!(big.len() > DECODE_INLINE_BYTES && big.len() < MAX_WINDOW_BODY_BYTES);
        let (status, rpc) = post_windows(&state, big).await;
        assert_eq!(status, StatusCode::OK, "{}", rpc.message);
        assert!(
            matches!(agg_rx.try_recv(), Ok(AggMsg::Windows { batch, .. }) if batch.windows.len() == 4096)
        );
        // A bad histogram among many is still found.
        let mut bad = window_batch(100);
        bad.windows[99].self_latency = b"not a histogram".to_vec();
        let (status, rpc) = post_windows(&state, bad.encode_to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(rpc.message.contains("bad histogram"), "{}", rpc.message);
    }

    fn pending(metrics: &Arc<Metrics>) -> Arc<Pending> {
        let budget = Budget::new(1 << 20, Arc::clone(metrics));
        Arc::new(Pending {
            batch: DecodedBatch {
                services: vec!["s".into()],
                spans: vec![SpanRec {
                    trace_id: [1; 16],
                    span_id: [1; 8],
                    parent_id: [0; 8],
                    service: 0,
                    name: (0, 0),
                    raw: (0, 0),
                    kind: otlp::kind::SERVER,
                    error: false,
                    start_ns: 1,
                    end_ns: 2,
                }],
                ..DecodedBatch::default()
            },
            received_unix_ns: 1,
            reservation: budget.reserve_empty(),
        })
    }

    #[tokio::test]
    async fn a_failed_commit_is_not_aggregated() {
        let metrics = Arc::new(Metrics::new());
        let (agg_tx, agg_rx) = crossbeam::channel::bounded(4);
        // The store refuses the commit: 503 for the client, nothing for the aggregator (the
        // client's retry is the one that counts).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(commit_then_aggregate(
            rx,
            agg_tx.clone(),
            pending(&metrics),
            Arc::clone(&metrics),
        ));
        tokio::task::yield_now().await;
        assert!(agg_rx.is_empty(), "aggregated before the commit");
        tx.send(false).unwrap();
        assert!(matches!(task.await.unwrap(), Err(IngestError::Unavailable)));
        assert!(agg_rx.is_empty(), "a failed commit was aggregated");
        // The writer went away without an answer: the same.
        let (tx, rx) = tokio::sync::oneshot::channel::<bool>();
        drop(tx);
        let r = commit_then_aggregate(rx, agg_tx.clone(), pending(&metrics), Arc::clone(&metrics));
        assert!(matches!(r.await, Err(IngestError::Unavailable)));
        assert!(agg_rx.is_empty());
        // A commit: aggregated once.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(true).unwrap();
        commit_then_aggregate(rx, agg_tx, pending(&metrics), Arc::clone(&metrics))
            .await
            .unwrap();
        assert_eq!(agg_rx.len(), 1);
        assert!(matches!(agg_rx.try_recv(), Ok(AggMsg::Spans(_))));
    }
}
