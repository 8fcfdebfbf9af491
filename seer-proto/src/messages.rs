//! The native protobuf messages. Field tags are part of the wire contract: never reuse one.

/// All window stats of one process for one tick, posted to [`crate::WINDOWS_PATH`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct WindowBatch {
    /// [`crate::WIRE_VERSION`] of the sender.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Service name (`SEER_SERVICE`).
    #[prost(string, tag = "2")]
    pub service: String,
    /// Node name (`SEER_NODE`); empty when unknown, the collector then uses the sender's address.
    #[prost(string, tag = "3")]
    pub node: String,
    /// Process id of the service, so the collector can read `/proc/<pid>/schedstat`.
    #[prost(uint32, tag = "4")]
    pub pid: u32,
    /// The process's cgroup path when known (e.g. `/seer/compose-post`), empty otherwise.
    #[prost(string, tag = "5")]
    pub cgroup: String,
    /// Start of the tick, unix nanoseconds, aligned to a multiple of `tick_ns`.
    #[prost(uint64, tag = "6")]
    pub tick_start_unix_ns: u64,
    /// Tick length in nanoseconds (default 100 ms).
    #[prost(uint64, tag = "7")]
    pub tick_ns: u64,
    /// One entry per endpoint that saw any activity in the tick.
    #[prost(message, repeated, tag = "8")]
    pub windows: Vec<EndpointWindow>,
    /// The SDK's own counters (cumulative since start).
    #[prost(message, optional, tag = "9")]
    pub sdk: Option<SdkCounters>,
    /// Mean number of requests parked in the service's `poll_ready` (backpressure from the inner
    /// service or a limiter in front of it), before their endpoint is known; service-wide.
    #[prost(double, tag = "10")]
    pub service_queue_depth_mean: f64,
    /// Maximum of the same service-wide queue.
    #[prost(uint64, tag = "11")]
    pub service_queue_depth_max: u64,
}

/// Stats of one (service, endpoint) over one tick, computed in-process from every request before
/// any sampling.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EndpointWindow {
    /// Interned endpoint name, e.g. `POST /compose`.
    #[prost(string, tag = "1")]
    pub endpoint: String,
    /// Requests that arrived (including shed ones).
    #[prost(uint64, tag = "2")]
    pub arrivals: u64,
    /// Requests that completed (any status, not shed, not cancelled).
    #[prost(uint64, tag = "3")]
    pub completions: u64,
    /// Completions with an error status (5xx, gRPC error, or inner service error).
    #[prost(uint64, tag = "4")]
    pub errors: u64,
    /// Requests shed by admission control.
    #[prost(uint64, tag = "5")]
    pub shed: u64,
    /// Response futures dropped before completion.
    #[prost(uint64, tag = "6")]
    pub cancelled: u64,
    /// Mean number of requests in flight (sampled at arrivals and tick edges).
    #[prost(double, tag = "7")]
    pub inflight_mean: f64,
    /// Maximum requests in flight.
    #[prost(uint64, tag = "8")]
    pub inflight_max: u64,
    /// Mean of local in-flight: requests not currently waiting on a downstream call.
    #[prost(double, tag = "9")]
    pub local_inflight_mean: f64,
    /// Maximum local in-flight.
    #[prost(uint64, tag = "10")]
    pub local_inflight_max: u64,
    /// Mean queue depth: requests waiting for `poll_ready` or admission.
    #[prost(double, tag = "11")]
    pub queue_depth_mean: f64,
    /// Maximum queue depth.
    #[prost(uint64, tag = "12")]
    pub queue_depth_max: u64,
    /// End-to-end latency [`crate::Histogram`] (encoded), nanoseconds.
    #[prost(bytes = "vec", tag = "13")]
    pub latency: Vec<u8>,
    /// Exclusive (self) latency: duration minus time blocked on downstream calls.
    #[prost(bytes = "vec", tag = "14")]
    pub self_latency: Vec<u8>,
    /// Queue wait: time before admission or before the service's own worker.
    #[prost(bytes = "vec", tag = "15")]
    pub queue_wait: Vec<u8>,
}

/// Cumulative counters of the SDK's export pipeline, sent with every batch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SdkCounters {
    /// Spans recorded by the hot path.
    #[prost(uint64, tag = "1")]
    pub recorded: u64,
    /// Spans exported successfully.
    #[prost(uint64, tag = "2")]
    pub exported: u64,
    /// Spans dropped because a per-thread buffer was full.
    #[prost(uint64, tag = "3")]
    pub dropped_buffer_full: u64,
    /// Spans dropped because the export queue was full (collector slow or down). SDKs before
    /// wire fields 7-9 also counted rejected and failed exports here.
    #[prost(uint64, tag = "4")]
    pub dropped_queue_full: u64,
    /// Spans not sampled (kept only in the window stats).
    #[prost(uint64, tag = "5")]
    pub unsampled: u64,
    /// Export requests that failed after retries.
    #[prost(uint64, tag = "6")]
    pub failed_exports: u64,
    /// Spans the collector refused outright (a 4xx other than 429).
    #[prost(uint64, tag = "7")]
    pub dropped_rejected: u64,
    /// Spans in export requests that failed after retries, or that shutdown could not flush.
    #[prost(uint64, tag = "8")]
    pub dropped_export_failed: u64,
    /// Requests whose window stats were dropped because no worker collected a thread's windows
    /// (the per-thread backlog is capped).
    #[prost(uint64, tag = "9")]
    pub dropped_window_backlog: u64,
}

/// The collector's advice for one service, the reply body of a window post.
///
/// Advice that has expired (`expires_at_unix_ns` in the past) or is missing fails open: the
/// service admits everything, or falls back to its local reactive limiter if one is configured.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdviceReply {
    /// [`crate::WIRE_VERSION`] of the collector.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The service this advice is for.
    #[prost(string, tag = "2")]
    pub service: String,
    /// Predicted probability (0..1) that this service causes a QoS violation within the horizon.
    #[prost(float, tag = "3")]
    pub risk: f32,
    /// Whether this service is named as the culprit of a predicted violation.
    #[prost(bool, tag = "4")]
    pub culprit: bool,
    /// Fraction of requests to admit (0..1); `1.0` admits everything.
    #[prost(float, tag = "5")]
    pub admit_fraction: f32,
    /// Optional cap on requests in flight; absent means no cap.
    #[prost(uint32, optional, tag = "6")]
    pub max_in_flight: Option<u32>,
    /// Human-readable reason for the advice.
    #[prost(string, tag = "7")]
    pub reason: String,
    /// Version of the model that produced the advice (0 for the reactive baseline).
    #[prost(uint64, tag = "8")]
    pub model_version: u64,
    /// When the advice stops holding, unix nanoseconds.
    #[prost(uint64, tag = "9")]
    pub expires_at_unix_ns: u64,
}
