//! The collector's own telemetry: typed events, each with an `emit` that updates [`Metrics`],
//! rendered as Prometheus text on `/metrics`.
//!
//! Components never touch counters directly; they emit an event (`SpansAccepted { .. }.emit(&m)`),
//! so every metric has one definition and one name.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Metric names.
pub mod names {
    /// Spans decoded from ingest requests.
    pub const SPANS_RECEIVED: &str = "seer_spans_received_total";
    /// Spans acknowledged with 200 and committed to the store.
    pub const SPANS_ACCEPTED: &str = "seer_spans_accepted_total";
    /// Spans rejected inside an accepted request (reported in `partial_success`).
    pub const SPANS_REJECTED: &str = "seer_spans_rejected_total";
    /// Requests refused, by HTTP status.
    pub const REQUESTS_REJECTED: &str = "seer_requests_rejected_total";
    /// Items dropped inside the pipeline, by stage.
    pub const DROPPED: &str = "seer_dropped_total";
    /// Window batches received.
    pub const WINDOWS_RECEIVED: &str = "seer_windows_received_total";
    /// Bytes of request bodies and queued spans held now.
    pub const INGEST_BYTES: &str = "seer_ingest_bytes_in_use";
    /// Memory budget for ingest.
    pub const INGEST_BUDGET: &str = "seer_ingest_budget_bytes";
    /// Queue fill, 0..1, by queue.
    pub const QUEUE_FILL: &str = "seer_queue_fill_ratio";
    /// Prediction latency.
    pub const PREDICTION_LATENCY: &str = "seer_prediction_latency_seconds";
    /// Predictions made.
    pub const PREDICTIONS: &str = "seer_predictions_total";
    /// Model version in use.
    pub const MODEL_VERSION: &str = "seer_model_version";
    /// Training steps of the predictor.
    pub const TRAIN_STEPS: &str = "seer_train_steps_total";
    /// Alerts by phase.
    pub const ALERTS: &str = "seer_alerts_total";
    /// Webhook deliveries by result.
    pub const WEBHOOKS: &str = "seer_webhook_deliveries_total";
    /// Store commits.
    pub const STORE_COMMITS: &str = "seer_store_commits_total";
    /// Store commit time.
    pub const STORE_COMMIT_SECONDS: &str = "seer_store_commit_seconds";
    /// Store errors.
    pub const STORE_ERRORS: &str = "seer_store_errors_total";
    /// Spans deleted by retention.
    pub const RETENTION_DELETED: &str = "seer_retention_deleted_total";
    /// Node samples taken.
    pub const NODE_SAMPLES: &str = "seer_node_samples_total";
    /// Whether a node counter is supported (1) or not (0).
    pub const COUNTER_SUPPORTED: &str = "seer_counter_supported";
    /// Services tracked.
    pub const SERVICES: &str = "seer_services";
    /// Ticks closed by the aggregator.
    pub const TICKS: &str = "seer_ticks_total";
    /// QoS violation ticks.
    pub const VIOLATION_TICKS: &str = "seer_violation_ticks_total";
    /// Prediction long polls waiting now (each holds a connection).
    pub const PREDICTION_POLLS: &str = "seer_prediction_polls_waiting";
    /// Spans seen by the services' SDKs, by service and outcome (as the SDKs report them).
    pub const SDK_SPANS: &str = "seer_sdk_spans_total";
    /// Items dropped inside the services' SDKs, by service and reason.
    pub const SDK_DROPPED: &str = "seer_sdk_dropped_total";
    /// Export requests the services' SDKs gave up on after retries, by service.
    pub const SDK_FAILED_EXPORTS: &str = "seer_sdk_failed_exports_total";
}

/// Where a dropped item was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropStage {
    /// The aggregator queue was full (the span was stored but not aggregated).
    Aggregate,
    /// A window arrived after its tick's watermark.
    LateWindow,
    /// A window or span was too far in the future.
    FutureWindow,
    /// The service limit was reached.
    ServiceLimit,
    /// The prediction queue was full (a tick was skipped).
    Predict,
    /// A background store write (windows, predictions, alerts) found its queue full.
    StoreBackground,
    /// A trace was too large to assemble.
    TraceAssembly,
    /// A webhook delivery queue was full.
    Webhook,
    /// Agent forwarding queue was full.
    Forward,
    /// Agent mode: a node sample the upstream collector refused or could not be reached for
    /// (the failure is logged at warn, at most once per 10 s).
    ForwardFailed,
    /// Background records (windows, predictions, alerts, labels, episodes, node samples) in a
    /// store commit that failed. Span batches are not counted: their senders got 503 and retry.
    StoreWrite,
}

impl DropStage {
    const ALL: [DropStage; 11] = [
        Self::Aggregate,
        Self::LateWindow,
        Self::FutureWindow,
        Self::ServiceLimit,
        Self::Predict,
        Self::StoreBackground,
        Self::TraceAssembly,
        Self::Webhook,
        Self::Forward,
        Self::ForwardFailed,
        Self::StoreWrite,
    ];
    fn label(self) -> &'static str {
        match self {
            Self::Aggregate => "aggregate_queue_full",
            Self::LateWindow => "late_window",
            Self::FutureWindow => "future_window",
            Self::ServiceLimit => "service_limit",
            Self::Predict => "predict_queue_full",
            Self::StoreBackground => "store_queue_full",
            Self::TraceAssembly => "trace_assembly",
            Self::Webhook => "webhook_queue_full",
            Self::Forward => "forward_queue_full",
            Self::ForwardFailed => "forward_failed",
            Self::StoreWrite => "store_write_failed",
        }
    }
}

const STATUSES: [u16; 8] = [400, 401, 404, 408, 413, 415, 429, 503];
const FORMATS: [&str; 2] = ["protobuf", "json"];
const PHASES: [&str; 3] = ["start", "change", "end"];
const WEBHOOK_RESULTS: [&str; 3] = ["ok", "retry", "failed"];
const QUEUES: [&str; 3] = ["store", "aggregate", "predict"];

/// A prediction long poll counted as waiting; see [`Metrics::poll_waiting`].
#[derive(Debug)]
pub struct PollWaiting<'a>(&'a Metrics);

impl Drop for PollWaiting<'_> {
    fn drop(&mut self) {
        self.0.polls_waiting.fetch_sub(1, Relaxed);
    }
}

/// Every counter and gauge of the collector. Cheap to share (`Arc<Metrics>`); all updates are
/// relaxed atomics.
#[derive(Debug, Default)]
pub struct Metrics {
    spans_received: [AtomicU64; 2],
    spans_accepted: AtomicU64,
    spans_rejected: AtomicU64,
    requests_rejected: [AtomicU64; 8],
    dropped: [AtomicU64; 11],
    windows_received: AtomicU64,
    ingest_bytes: AtomicU64,
    ingest_budget: AtomicU64,
    queue_fill_milli: [AtomicU64; 3],
    prediction_latency_us_sum: AtomicU64,
    predictions: AtomicU64,
    model_version: AtomicU64,
    train_steps: AtomicU64,
    alerts: [AtomicU64; 3],
    webhooks: [AtomicU64; 3],
    store_commits: AtomicU64,
    store_commit_us_sum: AtomicU64,
    store_errors: AtomicU64,
    retention_deleted: AtomicU64,
    node_samples: AtomicU64,
    services: AtomicU64,
    ticks: AtomicU64,
    violation_ticks: AtomicU64,
    polls_waiting: AtomicU64,
    counters: std::sync::Mutex<Vec<(String, bool)>>,
    sdk: std::sync::Mutex<Vec<(String, seer_proto::SdkCounters)>>,
}

impl Metrics {
    /// Fresh, zeroed metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spans acknowledged and stored so far.
    pub fn spans_accepted(&self) -> u64 {
        self.spans_accepted.load(Relaxed)
    }

    /// Items dropped at `stage` so far.
    pub fn dropped(&self, stage: DropStage) -> u64 {
        DropStage::ALL
            .iter()
            .position(|s| *s == stage)
            .map_or(0, |i| self.dropped[i].load(Relaxed))
    }

    /// Requests rejected with `status` so far.
    pub fn requests_rejected(&self, status: u16) -> u64 {
        STATUSES
            .iter()
            .position(|s| *s == status)
            .map_or(0, |i| self.requests_rejected[i].load(Relaxed))
    }

    /// Predictions made so far.
    pub fn predictions(&self) -> u64 {
        self.predictions.load(Relaxed)
    }

    /// Ticks closed so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Relaxed)
    }

    /// Prediction long polls waiting now.
    pub fn prediction_polls_waiting(&self) -> u64 {
        self.polls_waiting.load(Relaxed)
    }

    /// Counts a prediction long poll as waiting until the guard drops (also when its request
    /// is cancelled mid-wait).
    pub fn poll_waiting(&self) -> PollWaiting<'_> {
        self.polls_waiting.fetch_add(1, Relaxed);
        PollWaiting(self)
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut w = |line: String| {
            out.push_str(&line);
            out.push('\n');
        };
        let head = |name: &str, kind: &str, help: &str| {
            format!("# HELP {name} {help}\n# TYPE {name} {kind}")
        };
        w(head(
            names::SPANS_RECEIVED,
            "counter",
            "Spans decoded from ingest requests.",
        ));
        for (i, f) in FORMATS.iter().enumerate() {
            w(format!(
                "{}{{format=\"{f}\"}} {}",
                names::SPANS_RECEIVED,
                self.spans_received[i].load(Relaxed)
            ));
        }
        w(head(
            names::SPANS_ACCEPTED,
            "counter",
            "Spans acknowledged with 200 after the store committed them.",
        ));
        w(format!(
            "{} {}",
            names::SPANS_ACCEPTED,
            self.spans_accepted.load(Relaxed)
        ));
        w(head(
            names::SPANS_REJECTED,
            "counter",
            "Spans rejected inside accepted requests (partial_success).",
        ));
        w(format!(
            "{} {}",
            names::SPANS_REJECTED,
            self.spans_rejected.load(Relaxed)
        ));
        w(head(
            names::REQUESTS_REJECTED,
            "counter",
            "Ingest and API requests refused, by status.",
        ));
        for (i, s) in STATUSES.iter().enumerate() {
            w(format!(
                "{}{{status=\"{s}\"}} {}",
                names::REQUESTS_REJECTED,
                self.requests_rejected[i].load(Relaxed)
            ));
        }
        w(head(
            names::DROPPED,
            "counter",
            "Items dropped inside the pipeline, by stage.",
        ));
        for (i, s) in DropStage::ALL.iter().enumerate() {
            w(format!(
                "{}{{stage=\"{}\"}} {}",
                names::DROPPED,
                s.label(),
                self.dropped[i].load(Relaxed)
            ));
        }
        w(head(
            names::WINDOWS_RECEIVED,
            "counter",
            "Native window batches received.",
        ));
        w(format!(
            "{} {}",
            names::WINDOWS_RECEIVED,
            self.windows_received.load(Relaxed)
        ));
        w(head(
            names::INGEST_BYTES,
            "gauge",
            "Bytes of bodies and queued spans held now.",
        ));
        w(format!(
            "{} {}",
            names::INGEST_BYTES,
            self.ingest_bytes.load(Relaxed)
        ));
        w(head(
            names::INGEST_BUDGET,
            "gauge",
            "Memory budget for ingest, bytes.",
        ));
        w(format!(
            "{} {}",
            names::INGEST_BUDGET,
            self.ingest_budget.load(Relaxed)
        ));
        w(head(names::QUEUE_FILL, "gauge", "Queue fill ratio, 0..1."));
        for (i, q) in QUEUES.iter().enumerate() {
            w(format!(
                "{}{{queue=\"{q}\"}} {:.3}",
                names::QUEUE_FILL,
                self.queue_fill_milli[i].load(Relaxed) as f64 / 1000.0
            ));
        }
        w(head(
            names::PREDICTION_LATENCY,
            "summary",
            "Time the predictor takes per tick.",
        ));
        w(format!(
            "{}_sum {:.6}",
            names::PREDICTION_LATENCY,
            self.prediction_latency_us_sum.load(Relaxed) as f64 / 1e6
        ));
        w(format!(
            "{}_count {}",
            names::PREDICTION_LATENCY,
            self.predictions.load(Relaxed)
        ));
        w(head(names::PREDICTIONS, "counter", "Ticks predicted."));
        w(format!(
            "{} {}",
            names::PREDICTIONS,
            self.predictions.load(Relaxed)
        ));
        w(head(
            names::MODEL_VERSION,
            "gauge",
            "Version of the model answering (0 = reactive).",
        ));
        w(format!(
            "{} {}",
            names::MODEL_VERSION,
            self.model_version.load(Relaxed)
        ));
        w(head(
            names::TRAIN_STEPS,
            "counter",
            "Training steps taken by the predictor.",
        ));
        w(format!(
            "{} {}",
            names::TRAIN_STEPS,
            self.train_steps.load(Relaxed)
        ));
        w(head(names::ALERTS, "counter", "Alert events by phase."));
        for (i, p) in PHASES.iter().enumerate() {
            w(format!(
                "{}{{phase=\"{p}\"}} {}",
                names::ALERTS,
                self.alerts[i].load(Relaxed)
            ));
        }
        w(head(
            names::WEBHOOKS,
            "counter",
            "Webhook delivery attempts by result.",
        ));
        for (i, r) in WEBHOOK_RESULTS.iter().enumerate() {
            w(format!(
                "{}{{result=\"{r}\"}} {}",
                names::WEBHOOKS,
                self.webhooks[i].load(Relaxed)
            ));
        }
        w(head(
            names::STORE_COMMITS,
            "counter",
            "Store write transactions committed.",
        ));
        w(format!(
            "{} {}",
            names::STORE_COMMITS,
            self.store_commits.load(Relaxed)
        ));
        w(head(
            names::STORE_COMMIT_SECONDS,
            "summary",
            "Store commit time.",
        ));
        w(format!(
            "{}_sum {:.6}",
            names::STORE_COMMIT_SECONDS,
            self.store_commit_us_sum.load(Relaxed) as f64 / 1e6
        ));
        w(format!(
            "{}_count {}",
            names::STORE_COMMIT_SECONDS,
            self.store_commits.load(Relaxed)
        ));
        w(head(
            names::STORE_ERRORS,
            "counter",
            "Store operations that failed.",
        ));
        w(format!(
            "{} {}",
            names::STORE_ERRORS,
            self.store_errors.load(Relaxed)
        ));
        w(head(
            names::RETENTION_DELETED,
            "counter",
            "Span blobs deleted by retention.",
        ));
        w(format!(
            "{} {}",
            names::RETENTION_DELETED,
            self.retention_deleted.load(Relaxed)
        ));
        w(head(names::NODE_SAMPLES, "counter", "Node samples taken."));
        w(format!(
            "{} {}",
            names::NODE_SAMPLES,
            self.node_samples.load(Relaxed)
        ));
        w(head(names::SERVICES, "gauge", "Services tracked."));
        w(format!(
            "{} {}",
            names::SERVICES,
            self.services.load(Relaxed)
        ));
        w(head(
            names::TICKS,
            "counter",
            "Ticks closed by the aggregator.",
        ));
        w(format!("{} {}", names::TICKS, self.ticks.load(Relaxed)));
        w(head(
            names::VIOLATION_TICKS,
            "counter",
            "Ticks where a QoS target was exceeded.",
        ));
        w(format!(
            "{} {}",
            names::VIOLATION_TICKS,
            self.violation_ticks.load(Relaxed)
        ));
        w(head(
            names::PREDICTION_POLLS,
            "gauge",
            "Prediction long polls waiting now; each holds one of the connections.",
        ));
        w(format!(
            "{} {}",
            names::PREDICTION_POLLS,
            self.polls_waiting.load(Relaxed)
        ));
        w(head(
            names::COUNTER_SUPPORTED,
            "gauge",
            "Node counters probed at start: 1 supported, 0 unsupported.",
        ));
        if let Ok(counters) = self.counters.lock() {
            for (name, ok) in counters.iter() {
                w(format!(
                    "{}{{counter=\"{name}\"}} {}",
                    names::COUNTER_SUPPORTED,
                    u8::from(*ok)
                ));
            }
        }
        if let Ok(sdk) = self.sdk.lock() {
            render_sdk(&sdk, &mut w);
        }
        out
    }

    /// The SDK counters a service's processes last reported (summed over its processes).
    pub fn sdk_counters(&self, service: &str) -> Option<seer_proto::SdkCounters> {
        self.sdk
            .lock()
            .ok()?
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, c)| c.clone())
    }
}

/// Renders the services' own pipeline counters, one series per service and outcome or reason.
fn render_sdk(sdk: &[(String, seer_proto::SdkCounters)], w: &mut impl FnMut(String)) {
    let head = |name: &str, help: &str| format!("# HELP {name} {help}\n# TYPE {name} counter");
    w(head(
        names::SDK_SPANS,
        "Spans the services' SDKs recorded, exported, or kept only in window stats (unsampled).",
    ));
    for (service, c) in sdk {
        let service = escape_label(service);
        for (outcome, v) in [
            ("recorded", c.recorded),
            ("exported", c.exported),
            ("unsampled", c.unsampled),
        ] {
            w(format!(
                "{}{{service=\"{service}\",outcome=\"{outcome}\"}} {v}",
                names::SDK_SPANS
            ));
        }
    }
    w(head(
        names::SDK_DROPPED,
        "Spans (window_backlog: requests' window stats) the services' SDKs dropped, by reason.",
    ));
    for (service, c) in sdk {
        let service = escape_label(service);
        for (reason, v) in [
            ("buffer_full", c.dropped_buffer_full),
            ("queue_full", c.dropped_queue_full),
            ("rejected", c.dropped_rejected),
            ("export_failed", c.dropped_export_failed),
            ("window_backlog", c.dropped_window_backlog),
        ] {
            w(format!(
                "{}{{service=\"{service}\",reason=\"{reason}\"}} {v}",
                names::SDK_DROPPED
            ));
        }
    }
    w(head(
        names::SDK_FAILED_EXPORTS,
        "Export requests the services' SDKs gave up on after retries.",
    ));
    for (service, c) in sdk {
        w(format!(
            "{}{{service=\"{}\"}} {}",
            names::SDK_FAILED_EXPORTS,
            escape_label(service),
            c.failed_exports
        ));
    }
}

/// Escapes a Prometheus label value (backslash, double quote, line feed).
fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 8);
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The services' SDKs reported their pipeline counters (the aggregator's view after a tick).
#[derive(Debug)]
pub struct SdkCountersReported {
    /// Per service, the sum over its processes of each one's newest report.
    pub services: Vec<(String, seer_proto::SdkCounters)>,
}
impl SdkCountersReported {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        if let Ok(mut s) = m.sdk.lock() {
            *s = self.services;
        }
    }
}

/// Spans decoded from one ingest request.
#[derive(Debug, Clone, Copy)]
pub struct SpansReceived {
    /// Count.
    pub count: u64,
    /// Whether the body was JSON.
    pub json: bool,
}
impl SpansReceived {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.spans_received[usize::from(self.json)].fetch_add(self.count, Relaxed);
    }
}

/// Spans committed to the store and acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct SpansAccepted {
    /// Count.
    pub count: u64,
}
impl SpansAccepted {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.spans_accepted.fetch_add(self.count, Relaxed);
    }
}

/// Spans rejected in a partially accepted request.
#[derive(Debug, Clone, Copy)]
pub struct SpansRejected {
    /// Count.
    pub count: u64,
}
impl SpansRejected {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.spans_rejected.fetch_add(self.count, Relaxed);
    }
}

/// A request refused with an error status.
#[derive(Debug, Clone, Copy)]
pub struct RequestRejected {
    /// HTTP status.
    pub status: u16,
}
impl RequestRejected {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        if let Some(i) = STATUSES.iter().position(|s| *s == self.status) {
            m.requests_rejected[i].fetch_add(1, Relaxed);
        }
        tracing::debug!(status = self.status, "request rejected");
    }
}

/// Items dropped inside the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Dropped {
    /// Where.
    pub stage: DropStage,
    /// How many.
    pub count: u64,
}
impl Dropped {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        if let Some(i) = DropStage::ALL.iter().position(|s| *s == self.stage) {
            m.dropped[i].fetch_add(self.count, Relaxed);
        }
    }
}

/// A native window batch received.
#[derive(Debug, Clone, Copy)]
pub struct WindowsReceived;
impl WindowsReceived {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.windows_received.fetch_add(1, Relaxed);
    }
}

/// The ingest memory account changed.
#[derive(Debug, Clone, Copy)]
pub struct IngestMemory {
    /// Bytes held now.
    pub in_use: u64,
    /// Budget.
    pub budget: u64,
}
impl IngestMemory {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.ingest_bytes.store(self.in_use, Relaxed);
        m.ingest_budget.store(self.budget, Relaxed);
    }
}

/// A bounded queue's fill level.
#[derive(Debug, Clone, Copy)]
pub struct QueueFill {
    /// 0 store, 1 aggregate, 2 predict.
    pub queue: usize,
    /// Items queued.
    pub len: usize,
    /// Capacity.
    pub capacity: usize,
}
impl QueueFill {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        if let Some(slot) = m.queue_fill_milli.get(self.queue) {
            slot.store(
                (self.len.saturating_mul(1000) / self.capacity.max(1)) as u64,
                Relaxed,
            );
        }
    }
}

/// The predictor ran one tick.
#[derive(Debug, Clone, Copy)]
pub struct PredictionMade {
    /// Time taken, microseconds.
    pub latency_us: u64,
    /// Model version.
    pub model_version: u64,
    /// Train steps so far.
    pub train_steps: u64,
}
impl PredictionMade {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.predictions.fetch_add(1, Relaxed);
        m.prediction_latency_us_sum
            .fetch_add(self.latency_us, Relaxed);
        m.model_version.store(self.model_version, Relaxed);
        m.train_steps.store(self.train_steps, Relaxed);
    }
}

/// An alert event (0 start, 1 change, 2 end).
#[derive(Debug, Clone, Copy)]
pub struct AlertEmitted {
    /// Phase index.
    pub phase: usize,
}
impl AlertEmitted {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        if let Some(slot) = m.alerts.get(self.phase) {
            slot.fetch_add(1, Relaxed);
        }
    }
}

/// A webhook delivery attempt (0 ok, 1 retry, 2 failed for good).
#[derive(Debug, Clone, Copy)]
pub struct WebhookAttempt {
    /// Result index.
    pub result: usize,
}
impl WebhookAttempt {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        if let Some(slot) = m.webhooks.get(self.result) {
            slot.fetch_add(1, Relaxed);
        }
    }
}

/// A store transaction committed.
#[derive(Debug, Clone, Copy)]
pub struct StoreCommitted {
    /// Commit time, microseconds.
    pub micros: u64,
}
impl StoreCommitted {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.store_commits.fetch_add(1, Relaxed);
        m.store_commit_us_sum.fetch_add(self.micros, Relaxed);
    }
}

/// A store operation failed.
#[derive(Debug)]
pub struct StoreFailed<'a> {
    /// The error.
    pub error: &'a dyn std::error::Error,
}
impl StoreFailed<'_> {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.store_errors.fetch_add(1, Relaxed);
        tracing::warn!(error = %self.error, "store operation failed");
    }
}

/// Retention deleted span blobs.
#[derive(Debug, Clone, Copy)]
pub struct RetentionDeleted {
    /// Blobs deleted.
    pub blobs: u64,
}
impl RetentionDeleted {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.retention_deleted.fetch_add(self.blobs, Relaxed);
    }
}

/// A node sample was taken.
#[derive(Debug, Clone, Copy)]
pub struct NodeSampled;
impl NodeSampled {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.node_samples.fetch_add(1, Relaxed);
    }
}

/// Counters probed at start.
#[derive(Debug)]
pub struct CountersProbed<'a> {
    /// (name, supported).
    pub counters: &'a [(String, bool)],
}
impl CountersProbed<'_> {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        if let Ok(mut c) = m.counters.lock() {
            c.clone_from(&self.counters.to_vec());
        }
    }
}

/// The aggregator closed a tick.
#[derive(Debug, Clone, Copy)]
pub struct TickClosed {
    /// Services in the tick.
    pub services: usize,
    /// Whether the tick violated QoS.
    pub violation: bool,
}
impl TickClosed {
    /// Records the event.
    pub fn emit(self, m: &Metrics) {
        m.ticks.fetch_add(1, Relaxed);
        m.services.store(self.services as u64, Relaxed);
        if self.violation {
            m.violation_ticks.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let m = Metrics::new();
        SpansReceived {
            count: 3,
            json: true,
        }
        .emit(&m);
        RequestRejected { status: 413 }.emit(&m);
        Dropped {
            stage: DropStage::LateWindow,
            count: 2,
        }
        .emit(&m);
        CountersProbed {
            counters: &[("cycles".into(), false)],
        }
        .emit(&m);
        SdkCountersReported {
            services: vec![(
                "cart \"eu\"\\1".into(),
                seer_proto::SdkCounters {
                    recorded: 10,
                    dropped_window_backlog: 4,
                    ..Default::default()
                },
            )],
        }
        .emit(&m);
        // The ingest budget has its own gauges; the store queue's fill stays the store's.
        QueueFill {
            queue: 0,
            len: 1,
            capacity: 4,
        }
        .emit(&m);
        IngestMemory {
            in_use: 3,
            budget: 4,
        }
        .emit(&m);
        let text = m.render();
        assert!(
            text.contains("seer_queue_fill_ratio{queue=\"store\"} 0.25"),
            "{text}"
        );
        assert!(text.contains("seer_ingest_bytes_in_use 3"));
        assert!(text.contains(
            "seer_sdk_spans_total{service=\"cart \\\"eu\\\"\\\\1\",outcome=\"recorded\"} 10"
        ));
        assert!(text.contains(
            "seer_sdk_dropped_total{service=\"cart \\\"eu\\\"\\\\1\",reason=\"window_backlog\"} 4"
        ));
        assert_eq!(
            m.sdk_counters("cart \"eu\"\\1").map(|c| c.recorded),
            Some(10)
        );
        assert!(text.contains("seer_spans_received_total{format=\"json\"} 3"));
        assert!(text.contains("seer_requests_rejected_total{status=\"413\"} 1"));
        assert!(text.contains("seer_dropped_total{stage=\"late_window\"} 2"));
        assert!(text.contains("seer_counter_supported{counter=\"cycles\"} 0"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.rsplitn(2, ' ');
            let v = parts.next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "bad sample line {line}");
        }
        assert_eq!(m.dropped(DropStage::LateWindow), 2);
    }
}
