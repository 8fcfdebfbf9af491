//! JSON API handlers under `/v1/`, `/metrics` and the health checks.
//!
//! Times in query strings are unix nanoseconds, or relative to now as `-30s`, `-500ms`,
//! `-5m`. Every list is bounded by `limit` (default 1000, at most 100000).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::hw::NodeSample;
use crate::ingest::budget::Reservation;
use crate::ingest::error::IngestError;
use crate::ingest::now_unix_ns;
use crate::internal_events::RequestRejected;
use crate::pipeline::{AggMsg, AppState, Shared};
use crate::predict::thread::PredictionRecord;
use crate::store::writer::Record;
use crate::store::{Store, StoreError};
use crate::window::Label;

/// Path the agent posts node samples to (JSON [`NodeSample`]).
pub const NODES_PATH: &str = "/v1/seer/nodes";

/// Path of the ground-truth labels (`POST` one or many, `GET` the stored ones).
pub const LABELS_PATH: &str = "/v1/labels";

/// An API error: a status and a message, rendered as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Parses a time: unix ns, or `-<n>(ms|s|m|h)` relative to now.
pub fn parse_time(s: &str, now: u64) -> Option<u64> {
    if let Some(rel) = s.strip_prefix('-') {
        let (num, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit())?);
        let n: u64 = num.parse().ok()?;
        let ns = match unit {
            "ms" => n.checked_mul(1_000_000)?,
            "s" => n.checked_mul(1_000_000_000)?,
            "m" => n.checked_mul(60_000_000_000)?,
            "h" => n.checked_mul(3_600_000_000_000)?,
            _ => return None,
        };
        return Some(now.saturating_sub(ns));
    }
    s.parse().ok()
}

/// Common range parameters.
#[derive(Debug, Deserialize, Default)]
pub struct Range {
    /// Service filter.
    pub service: Option<String>,
    /// Node filter.
    pub node: Option<String>,
    /// Start (inclusive).
    pub from: Option<String>,
    /// End (exclusive).
    pub to: Option<String>,
    /// Most items.
    pub limit: Option<usize>,
    /// Only open alerts.
    pub open: Option<bool>,
    /// Predictions only: answer once a tick later than this one has been predicted.
    pub after: Option<u64>,
    /// Predictions only, with `after`: the longest wait, ms (default 1000, at most 10 000).
    pub wait_ms: Option<u64>,
}

impl Range {
    /// The `service` parameter, which this endpoint requires.
    fn required_service(&self) -> Result<String, ApiError> {
        self.service
            .clone()
            .ok_or_else(|| bad("`service` is required"))
    }

    fn bounds(&self, default_span_ns: u64) -> Result<(u64, u64, usize), ApiError> {
        let now = now_unix_ns();
        let to = match &self.to {
            Some(t) => parse_time(t, now).ok_or_else(|| bad("bad `to`"))?,
            None => now.saturating_add(60_000_000_000),
        };
        let from = match &self.from {
            Some(t) => parse_time(t, now).ok_or_else(|| bad("bad `from`"))?,
            None => now.saturating_sub(default_span_ns),
        };
        Ok((from, to, self.limit.unwrap_or(1000).clamp(1, 100_000)))
    }
}

/// The ticks `[first, end)` that overlap the time range `[from, to)`: the tick holding `from`
/// and every tick that began before `to`.
fn tick_range(from: u64, to: u64, tick_ns: u64) -> (u64, u64) {
    let tick_ns = tick_ns.max(1);
    (from / tick_ns, to.div_ceil(tick_ns))
}

fn store(state: &AppState) -> Result<std::sync::Arc<Store>, ApiError> {
    state
        .store
        .clone()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "this agent keeps no store".into()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "task failed".into()))?
}

/// `GET /v1/advice/{service}`.
pub async fn advice(State(state): State<AppState>, Path(service): Path<String>) -> Response {
    Json(state.advice_for(&service)).into_response()
}

/// Longest wait `GET /v1/predictions?after=` accepts, ms.
pub const MAX_PREDICTION_WAIT_MS: u64 = 10_000;

/// `GET /v1/predictions`: the latest predictions, or a range with `from`/`to`.
///
/// With `after=TICK` it is a long poll: it answers as soon as a tick later than `TICK` has been
/// predicted, or after `wait_ms` with whatever is latest. Besides `latest`, the answer then
/// carries `since`: every prediction after `TICK` still held (the last
/// [`RECENT_PREDICTIONS`](crate::pipeline::RECENT_PREDICTIONS)), oldest first, empty when the
/// wait ran out. A client that follows the predictions this way sees each one once, as soon as
/// it is made, instead of sampling on its own clock (which reads some predictions twice and
/// misses others) or reading only the latest (which misses one when two ticks close together).
/// A waiting poll holds one of the `max_connections` connections (no thread, no task beyond
/// its connection's) and ends early when the collector shuts down. `after` and `wait_ms` do not
/// go with `from`/`to`.
pub async fn predictions(
    State(state): State<AppState>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let predictor = state
        .shared
        .predictor
        .read()
        .map(|p| p.clone())
        .unwrap_or_default();
    let ranged = q.from.is_some() || q.to.is_some();
    if ranged && (q.after.is_some() || q.wait_ms.is_some()) {
        return Err(bad("`after` and `wait_ms` do not go with `from` or `to`"));
    }
    if !ranged {
        if let Some(after) = q.after {
            let wait = Duration::from_millis(q.wait_ms.unwrap_or(1000).min(MAX_PREDICTION_WAIT_MS));
            {
                let _waiting = state.metrics.poll_waiting();
                wait_for_prediction(&state.shared, state.shutdown.clone(), after, wait).await;
            }
            // One read, so `latest` is the last of `since` whenever `since` has any.
            let (since, latest): (Vec<PredictionRecord>, _) = state
                .shared
                .recent
                .read()
                .map(|r| {
                    let since = r.iter().filter(|p| p.tick > after).cloned().collect();
                    (since, r.back().cloned())
                })
                .unwrap_or_default();
            return Ok(
                Json(json!({ "predictor": predictor, "latest": latest, "since": since }))
                    .into_response(),
            );
        }
        if q.wait_ms.is_some() {
            return Err(bad("`wait_ms` needs `after`"));
        }
        let latest = state.shared.latest_prediction();
        return Ok(Json(json!({ "predictor": predictor, "latest": latest })).into_response());
    }
    let (from, to, limit) = q.bounds(60_000_000_000)?;
    let st = store(&state)?;
    let (first, end) = tick_range(from, to, state.cfg.tick_ns());
    let recs = blocking(move || Ok(st.predictions(first, end, limit)?)).await?;
    Ok(Json(json!({ "predictor": predictor, "predictions": recs })).into_response())
}

/// Waits until the latest prediction is for a tick after `after`, at most `wait`, and no longer
/// than until the collector begins to shut down (so a waiting poll never holds up the drain of
/// open connections).
async fn wait_for_prediction(
    shared: &Shared,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    after: u64,
    wait: Duration,
) {
    let newer = || shared.latest_tick().is_some_and(|t| t > after);
    let deadline = tokio::time::Instant::now() + wait;
    let stopping = async move {
        let _ = shutdown.wait_for(|v| *v).await;
    };
    tokio::pin!(stopping);
    loop {
        // Registered before the check, so a prediction published in between still wakes us.
        let notified = shared.latest_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if newer() {
            return;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => return,
            () = &mut stopping => return,
        }
    }
}

/// `GET /v1/services`.
pub async fn services(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snap = state
        .shared
        .snapshot
        .read()
        .map(|s| s.services.clone())
        .unwrap_or_default();
    let stored = match state.store.clone() {
        Some(st) => blocking(move || Ok(st.service_names()?)).await?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "services": snap, "stored": stored })).into_response())
}

/// `GET /v1/graph`.
pub async fn graph(State(state): State<AppState>) -> Response {
    let edges = state
        .shared
        .snapshot
        .read()
        .map(|s| s.edges.clone())
        .unwrap_or_default();
    Json(json!({ "edges": edges })).into_response()
}

/// `GET /v1/windows?service=..&from=..&to=..`.
pub async fn windows(
    State(state): State<AppState>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let service = q.required_service()?;
    let (from, to, limit) = q.bounds(60_000_000_000)?;
    let st = store(&state)?;
    let (first, end) = tick_range(from, to, state.cfg.tick_ns());
    let w = blocking(move || Ok(st.windows(&service, first, end, limit)?)).await?;
    Ok(Json(json!({ "windows": w })).into_response())
}

/// Parses a 32-hex trace id.
pub fn parse_trace_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (out != [0; 16]).then_some(out)
}

/// `GET /v1/traces/{trace_id}`: the trace as OTLP/JSON (`resourceSpans` per service).
pub async fn trace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;
    let tid =
        parse_trace_id(&id).ok_or_else(|| bad("trace id must be 32 hex digits, not all zero"))?;
    let st = store(&state)?;
    let spans = blocking(move || Ok(st.trace(tid)?)).await?;
    if spans.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, "trace not found".into()));
    }
    let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for s in spans {
        if let Ok(span) = Span::decode(s.raw.as_slice()) {
            by_service.entry(s.service).or_default().push(span);
        }
    }
    let req = ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(service)),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Ok(Json(req).into_response())
}

/// `GET /v1/traces?service=..&from=..&to=..`: trace ids of a service.
pub async fn trace_list(
    State(state): State<AppState>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let service = q.required_service()?;
    let (from, to, limit) = q.bounds(3_600_000_000_000)?;
    let st = store(&state)?;
    let ids = blocking(move || Ok(st.traces_of(&service, from, to, limit)?)).await?;
    let hex: Vec<String> = ids
        .iter()
        .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    Ok(Json(json!({ "trace_ids": hex })).into_response())
}

/// `GET /v1/alerts?open=true&limit=..`: alerts (newest first) and QoS episodes.
pub async fn alerts(
    State(state): State<AppState>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let st = store(&state)?;
    let open = q.open.unwrap_or(false);
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let (alerts, episodes) =
        blocking(move || Ok((st.alerts(open, limit)?, st.episodes(limit)?))).await?;
    let current = state
        .shared
        .snapshot
        .read()
        .ok()
        .and_then(|s| s.episode.clone());
    Ok(
        Json(json!({ "alerts": alerts, "episodes": episodes, "open_episode": current }))
            .into_response(),
    )
}

/// Most bytes of a `POST /v1/labels` body.
pub const MAX_LABELS_BODY_BYTES: usize = 1 << 20;

/// Most bytes of a `POST /v1/seer/nodes` body: a sample listing thousands of services is
/// about 1.5 MiB of JSON.
pub const MAX_NODE_BODY_BYTES: usize = 2 << 20;

/// Most bytes of a label's service, resource or class.
pub const MAX_LABEL_FIELD: usize = crate::ingest::otlp::MAX_SERVICE_NAME;

/// An ingest error as a JSON API error (with `Retry-After` when it is retryable), counted in
/// `seer_requests_rejected_total`.
fn refusal(state: &AppState, e: &IngestError) -> Response {
    let status = e.status();
    RequestRejected {
        status: status.as_u16(),
    }
    .emit(&state.metrics);
    let mut r = ApiError(status, e.to_string()).into_response();
    if let Some(secs) = e.retry_after() {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// A 400 counted in `seer_requests_rejected_total`.
fn rejected(state: &AppState, msg: impl Into<String>) -> Response {
    RequestRejected { status: 400 }.emit(&state.metrics);
    bad(msg).into_response()
}

/// Reads a posted body as the ingest endpoints do: within `body_read_timeout_ms` (else 408 and
/// the connection closed), reserved against the ingest memory budget (else 503), at most
/// `limit` bytes after decompression (else 413 naming `what` and the limit).
///
/// # Errors
///
/// The refusal, ready to send.
async fn read_posted(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &'static str,
) -> Result<(Bytes, Reservation), Response> {
    let limit = limit.min(state.cfg.max_body_bytes);
    crate::ingest::read_body(state, headers, body, limit)
        .await
        .map_err(|e| refusal(state, &e.over_limit(what, limit)))
}

/// `POST /v1/labels`: one fault record or an array of them (JSON, see [`Label`]), at most
/// [`MAX_LABELS_BODY_BYTES`]. The body is read as ingest bodies are (a read deadline, the
/// ingest budget, gzip). An agent forwards the checked labels to its upstream collector and answers with its
/// acknowledgement (or its refusal, mapped as for spans).
pub async fn post_labels(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Label),
        Many(Vec<Label>),
    }
    let (body, _res) =
        match read_posted(&state, &headers, body, MAX_LABELS_BODY_BYTES, "labels body").await {
            Ok(b) => b,
            Err(r) => return r,
        };
    let labels = match serde_json::from_slice::<OneOrMany>(&body) {
        Ok(OneOrMany::One(l)) => vec![l],
        Ok(OneOrMany::Many(v)) => v,
        Err(e) => {
            return rejected(
                &state,
                format!(
                    "expected {{service, resource, class, start, end}} or an array of them: {e}"
                ),
            );
        }
    };
    let long = |f: &Option<String>| f.as_ref().is_some_and(|f| f.len() > MAX_LABEL_FIELD);
    for l in &labels {
        if l.service.is_empty()
            || l.service.len() > MAX_LABEL_FIELD
            || long(&l.resource)
            || long(&l.class)
            || l.end.is_some_and(|e| e < l.start)
        {
            return rejected(
                &state,
                format!(
                    "a label needs a service, end >= start, and service, resource and class of \
                     at most {MAX_LABEL_FIELD} bytes"
                ),
            );
        }
    }
    let n = labels.len();
    if let Some(fwd) = &state.forward {
        return match fwd.labels(body).await {
            Ok(()) => (StatusCode::OK, Json(json!({ "accepted": n }))).into_response(),
            Err(e) => refusal(&state, &e),
        };
    }
    for l in labels {
        if let Some(w) = &state.writer {
            w.record(Record::Label(l.clone()));
        }
        if state.agg_tx.try_send(AggMsg::Label(l)).is_err() {
            return ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "aggregator queue full".into(),
            )
            .into_response();
        }
    }
    (StatusCode::OK, Json(json!({ "accepted": n }))).into_response()
}

/// `GET /v1/labels`.
pub async fn labels(
    State(state): State<AppState>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let st = store(&state)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let l = blocking(move || Ok(st.labels(limit)?)).await?;
    Ok(Json(json!({ "labels": l })).into_response())
}

/// `POST /v1/seer/nodes`: a node sample from an agent (JSON [`NodeSample`]), at most
/// [`MAX_NODE_BODY_BYTES`]. The body is read as ingest bodies are (a read deadline, the
/// ingest budget, gzip), and its reservation stays with the sample until the aggregator merged it. An agent forwards the
/// checked sample to its upstream collector and answers once that acknowledged it.
pub async fn post_node(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (body, reservation) =
        match read_posted(&state, &headers, body, MAX_NODE_BODY_BYTES, "node sample").await {
            Ok(b) => b,
            Err(r) => return r,
        };
    let sample: NodeSample = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return rejected(&state, format!("bad node sample: {e}")),
    };
    if sample.node.is_empty() || sample.features.len() > 256 || sample.services.len() > 4096 {
        return rejected(&state, "node sample needs a node name and bounded lists");
    }
    if let Some(fwd) = &state.forward {
        return match fwd.node(&sample).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => refusal(&state, &e),
        };
    }
    let msg = AggMsg::Node {
        sample,
        reservation: Some(reservation),
    };
    if state.agg_tx.try_send(msg).is_err() {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "aggregator queue full".into(),
        )
        .into_response();
    }
    StatusCode::OK.into_response()
}

/// `GET /v1/nodes?node=..&from=..&to=..`.
pub async fn nodes(
    State(state): State<AppState>,
    Query(q): Query<Range>,
) -> Result<Response, ApiError> {
    let node = q.node.clone().unwrap_or_else(|| state.node.to_string());
    let (from, to, limit) = q.bounds(60_000_000_000)?;
    let st = store(&state)?;
    let n = blocking(move || Ok(st.node_samples(&node, from, to, limit)?)).await?;
    Ok(Json(json!({ "feature_names": crate::hw::NODE_FEATURES, "samples": n })).into_response())
}

/// `GET /v1/status`: node, predictor, counters found, store totals.
pub async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = match state.store.clone() {
        Some(st) => Some(blocking(move || Ok(st.stats()?)).await?),
        None => None,
    };
    let counters = state
        .shared
        .counters
        .read()
        .map(|c| c.clone())
        .unwrap_or_default();
    let snap = state
        .shared
        .snapshot
        .read()
        .map(|s| (s.tick, s.qos_ms.clone()))
        .unwrap_or_default();
    Ok(Json(json!({
        "node": &*state.node,
        "predictor": state.shared.predictor.read().map(|p| p.clone()).unwrap_or_default(),
        "tick_ms": state.cfg.tick_ms,
        "tick": snap.0,
        "qos_ms": snap.1,
        "counters": counters.iter().map(|(n, ok)| json!({"counter": n, "supported": ok})).collect::<Vec<_>>(),
        "store": stats,
        "ingest_bytes_in_use": state.budget.used(),
        "ingest_budget_bytes": state.budget.limit(),
    }))
    .into_response())
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once the store is open and the threads run, else 503: while starting,
/// once a thread has died (a panic; the answer names the thread, and only a restart brings it
/// back), and while the store is failing with an I/O error and being reopened.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let ended = state.shared.threads.ended();
    if !state
        .shared
        .ready
        .load(std::sync::atomic::Ordering::Acquire)
    {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    } else if !ended.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "thread {} died (see the log for its panic); restart the collector\n",
                ended.join(", ")
            ),
        )
            .into_response()
    } else if state.store.as_ref().is_some_and(|s| !s.is_healthy()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store failing (I/O error), reopening\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// Anything else: 404 JSON.
pub async fn not_found(State(state): State<AppState>) -> Response {
    RequestRejected { status: 404 }.emit(&state.metrics);
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::body::tests::Stall;
    use crate::ingest::tests::app_state;

    fn length(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, n.into());
        h
    }

    async fn text(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8_lossy(&b).into_owned()
    }

    fn sample_json() -> Vec<u8> {
        serde_json::to_vec(&NodeSample {
            node: "n2".into(),
            unix_ns: 1,
            features: vec![Some(1.0); 8],
            services: Vec::new(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn posted_nodes_and_labels_have_a_read_deadline() {
        let (mut state, agg_rx) = app_state(64 << 20);
        state.cfg = std::sync::Arc::new(crate::config::Config {
            body_read_timeout_ms: 50,
            ..crate::config::Config::default()
        });
        // A guard far beyond the deadline: only a read without one reaches it.
        let guard = Duration::from_secs(30);
        let stalled = || Body::new(Stall(Some(Bytes::from_static(b"{\"node\""))));
        let r = tokio::time::timeout(
            guard,
            post_node(State(state.clone()), length(1000), stalled()),
        )
        .await
        .expect("a stalled node sample was waited for without a deadline");
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(text(r).await.contains("not received within 50 ms"));
        let r = tokio::time::timeout(
            guard,
            post_labels(State(state.clone()), length(1000), stalled()),
        )
        .await
        .expect("a stalled labels body was waited for without a deadline");
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(state.budget.used(), 0);
        assert!(agg_rx.is_empty());
        assert_eq!(state.metrics.requests_rejected(408), 2);
    }

    #[tokio::test]
    async fn posted_nodes_and_labels_are_budgeted_and_limited() {
        let body = sample_json();
        // A budget smaller than the body: 503 + Retry-After, nothing queued.
        let (state, agg_rx) = app_state(body.len() / 2);
        let r = post_node(
            State(state.clone()),
            length(body.len()),
            body.clone().into(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let labels = br#"{"service":"c","start":1}"#.to_vec();
        let (state, _) = app_state(labels.len() / 2);
        let r = post_labels(State(state), length(labels.len()), labels.into()).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(agg_rx.is_empty());
        // Within the budget: the queued sample holds its reservation until merged.
        let (state, agg_rx) = app_state(64 << 20);
        let r = post_node(
            State(state.clone()),
            length(body.len()),
            body.clone().into(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{}", text(r).await);
        assert!(state.budget.used() >= body.len());
        match agg_rx.try_recv() {
            Ok(AggMsg::Node {
                sample,
                reservation: Some(_),
            }) => assert_eq!(sample.node, "n2"),
            other => panic!("expected a posted node sample, got {other:?}"),
        }
        assert_eq!(state.budget.used(), 0);
        // Over the limits: 413 naming them.
        let r = post_node(
            State(state.clone()),
            length(MAX_NODE_BODY_BYTES + 1),
            vec![b' '; MAX_NODE_BODY_BYTES + 1].into(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text(r).await.contains("node sample over the 2 MiB limit"));
        let r = post_labels(
            State(state.clone()),
            length(MAX_LABELS_BODY_BYTES + 1),
            vec![b' '; MAX_LABELS_BODY_BYTES + 1].into(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(text(r).await.contains("labels body over the 1 MiB limit"));
        // A label field past its bound is refused.
        let long = format!(
            r#"{{"service":"{}","start":1}}"#,
            "s".repeat(MAX_LABEL_FIELD + 1)
        );
        let r = post_labels(State(state.clone()), length(long.len()), long.into()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(state.budget.used(), 0);
        assert!(agg_rx.is_empty());
    }

    #[test]
    fn times_and_ids() {
        assert_eq!(parse_time("123", 1000), Some(123));
        assert_eq!(parse_time("-1s", 5_000_000_000), Some(4_000_000_000));
        assert_eq!(parse_time("-5ms", 10_000_000), Some(5_000_000));
        assert_eq!(parse_time("-5d", 10), None);
        assert_eq!(parse_time("x", 10), None);
        assert!(parse_trace_id("0123456789abcdef0123456789abcdef").is_some());
        assert!(parse_trace_id("00000000000000000000000000000000").is_none());
        assert!(parse_trace_id("0123").is_none());
        assert!(parse_trace_id("zz23456789abcdef0123456789abcdef").is_none());
    }

    #[test]
    fn a_range_takes_every_tick_it_overlaps() {
        // 100 ns ticks: [250, 420) overlaps ticks 2, 3 and 4 (4 began at 400, before 420).
        assert_eq!(tick_range(250, 420, 100), (2, 5));
        // A tick that begins exactly at `to` is out.
        assert_eq!(tick_range(200, 400, 100), (2, 4));
        assert_eq!(tick_range(0, 0, 0), (0, 0));
    }

    #[tokio::test]
    async fn a_waiting_poll_ends_with_a_new_prediction_or_at_shutdown() {
        let shared = std::sync::Arc::new(Shared::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let hour = Duration::from_secs(3600);
        // A guard far beyond anything these waits should take; only a wait that ignores its
        // wake-up would reach it.
        let guard = Duration::from_secs(60);
        let record = crate::pipeline::tests::record;
        shared.publish_prediction(record(3));
        // Already newer: no wait.
        let done = tokio::time::timeout(
            guard,
            wait_for_prediction(&shared, stop_rx.clone(), 2, hour),
        );
        assert!(done.await.is_ok());
        // A new prediction wakes it.
        let waiter = {
            let (shared, rx) = (std::sync::Arc::clone(&shared), stop_rx.clone());
            tokio::spawn(async move { wait_for_prediction(&shared, rx, 3, hour).await })
        };
        tokio::task::yield_now().await;
        shared.publish_prediction(record(4));
        assert!(tokio::time::timeout(guard, waiter).await.is_ok());
        // Shutdown ends a wait with nothing new.
        let waiter = {
            let (shared, rx) = (std::sync::Arc::clone(&shared), stop_rx.clone());
            tokio::spawn(async move { wait_for_prediction(&shared, rx, 4, hour).await })
        };
        tokio::task::yield_now().await;
        let _ = stop_tx.send(true);
        assert!(tokio::time::timeout(guard, waiter).await.is_ok());
        // And one that begins after shutdown does not wait at all.
        let done = tokio::time::timeout(guard, wait_for_prediction(&shared, stop_rx, 4, hour));
        assert!(done.await.is_ok());
    }
}
