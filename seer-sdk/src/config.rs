//! Configuration: the [`Builder`] and the `SEER_*` environment variables.

use std::time::Duration;

use crate::limit::{LimiterConfig, LimiterKind, LimiterMode};
use crate::recorder::{Recorder, RecorderConfig};
use crate::span::Resource;
use crate::worker::{ExportWorker, Exporter, WorkerConfig};

/// Environment variable names.
pub mod env {
    /// Collector base URL.
    pub const ENDPOINT: &str = "SEER_ENDPOINT";
    /// Service name.
    pub const SERVICE: &str = "SEER_SERVICE";
    /// Node name.
    pub const NODE: &str = "SEER_NODE";
    /// Head-sampling ratio.
    pub const SAMPLE_RATIO: &str = "SEER_SAMPLE_RATIO";
    /// Tick, milliseconds.
    pub const TICK_MS: &str = "SEER_TICK_MS";
    /// Bearer token for the collector.
    pub const TOKEN: &str = "SEER_TOKEN";
    /// QoS threshold, milliseconds: slower requests are always exported.
    pub const SLOW_MS: &str = "SEER_SLOW_MS";
    /// Static cap on requests in flight.
    pub const MAX_IN_FLIGHT: &str = "SEER_MAX_IN_FLIGHT";
    /// Cardinality cap on endpoints.
    pub const MAX_ENDPOINTS: &str = "SEER_MAX_ENDPOINTS";
    /// Records per per-thread buffer.
    pub const RING_CAPACITY: &str = "SEER_RING_CAPACITY";
    /// Spans waiting for export, at most.
    pub const MAX_QUEUE_SPANS: &str = "SEER_MAX_QUEUE_SPANS";
    /// Bytes of encoded payloads waiting for (re)delivery, at most.
    pub const MAX_OUTBOX_BYTES: &str = "SEER_MAX_OUTBOX_BYTES";
    /// Timeout of one export request, milliseconds.
    pub const EXPORT_TIMEOUT_MS: &str = "SEER_EXPORT_TIMEOUT_MS";
    /// Local reactive limiter: `off`, `aimd` or `gradient`.
    pub const LIMITER: &str = "SEER_LIMITER";
    /// When the limiter applies: `fallback` or `always`.
    pub const LIMITER_MODE: &str = "SEER_LIMITER_MODE";
}

/// Default collector URL.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4318";

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable held a value that does not parse.
    #[error("invalid value {value:?} for {var}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

/// Builds a [`Recorder`] and its [`ExportWorker`].
///
/// Setters are `with_x`; [`Builder::with_env`] overrides settings from `SEER_*` variables (see
/// the crate docs for the table).
#[derive(Clone, Debug)]
pub struct Builder {
    pub(crate) service: String,
    pub(crate) node: String,
    pub(crate) endpoint: String,
    pub(crate) token: Option<String>,
    sample_ratio: f64,
    tick: Duration,
    drain_interval: Option<Duration>,
    slow: Option<Duration>,
    qos: Vec<(String, Duration)>,
    max_endpoints: usize,
    max_names: usize,
    ring_capacity: usize,
    max_queue_spans: usize,
    max_batch_spans: usize,
    pub(crate) max_outbox_bytes: usize,
    pub(crate) export_timeout: Duration,
    pub(crate) max_attempts: u32,
    shutdown_timeout: Duration,
    max_in_flight: Option<u32>,
    limiter: Option<LimiterConfig>,
    retry_after: Duration,
}

impl Builder {
    /// Defaults for `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            node: String::new(),
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            token: None,
            sample_ratio: 0.1,
            tick: Duration::from_millis(100),
            drain_interval: None,
            slow: None,
            qos: Vec::new(),
            max_endpoints: 128,
            max_names: 256,
            ring_capacity: 8192,
            max_queue_spans: 65_536,
            max_batch_spans: 4096,
            max_outbox_bytes: 16 << 20,
            export_timeout: Duration::from_secs(2),
            max_attempts: 5,
            shutdown_timeout: Duration::from_secs(5),
            max_in_flight: None,
            limiter: None,
            retry_after: Duration::from_secs(1),
        }
    }

    /// Defaults, then the `SEER_*` environment. The service name falls back to the executable's
    /// name, the node to the host name.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidEnv`] for a variable that does not parse.
    pub fn from_env() -> Result<Self, ConfigError> {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "unknown_service".to_owned());
        let mut b = Self::new(exe);
        b.node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        b.with_env()
    }

    /// Overrides settings from the `SEER_*` environment variables that are set.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidEnv`] for a variable that does not parse.
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_env_from(|k| std::env::var(k).ok())
    }

    /// Like [`Builder::with_env`], reading variables through `get` (for tests and embedding).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidEnv`] for a variable that does not parse.
    pub fn with_env_from(
        mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        fn parse<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::InvalidEnv {
                var,
                value: v.to_owned(),
            })
        }
        if let Some(v) = get(env::ENDPOINT) {
            self.endpoint = v;
        }
        if let Some(v) = get(env::SERVICE) {
            self.service = v;
        }
        if let Some(v) = get(env::NODE) {
            self.node = v;
        }
        if let Some(v) = get(env::TOKEN) {
            self.token = Some(v).filter(|t| !t.is_empty());
        }
        if let Some(v) = get(env::SAMPLE_RATIO) {
            let r: f64 = parse(env::SAMPLE_RATIO, &v)?;
            if !(0.0..=1.0).contains(&r) {
                return Err(ConfigError::InvalidEnv {
                    var: env::SAMPLE_RATIO,
                    value: v,
                });
            }
            self.sample_ratio = r;
        }
        if let Some(v) = get(env::TICK_MS) {
            let ms: u64 = parse(env::TICK_MS, &v)?;
            if ms == 0 {
                return Err(ConfigError::InvalidEnv {
                    var: env::TICK_MS,
                    value: v,
                });
            }
            self.tick = Duration::from_millis(ms);
        }
        if let Some(v) = get(env::SLOW_MS) {
            self.slow = Some(Duration::from_millis(parse(env::SLOW_MS, &v)?));
        }
        if let Some(v) = get(env::MAX_IN_FLIGHT) {
            self.max_in_flight = Some(parse(env::MAX_IN_FLIGHT, &v)?).filter(|&n: &u32| n > 0);
        }
        if let Some(v) = get(env::MAX_ENDPOINTS) {
            self.max_endpoints = parse(env::MAX_ENDPOINTS, &v)?;
        }
        if let Some(v) = get(env::RING_CAPACITY) {
            self.ring_capacity = parse(env::RING_CAPACITY, &v)?;
        }
        if let Some(v) = get(env::MAX_QUEUE_SPANS) {
            self.max_queue_spans = parse(env::MAX_QUEUE_SPANS, &v)?;
        }
        if let Some(v) = get(env::MAX_OUTBOX_BYTES) {
            self.max_outbox_bytes = parse(env::MAX_OUTBOX_BYTES, &v)?;
        }
        if let Some(v) = get(env::EXPORT_TIMEOUT_MS) {
            self.export_timeout = Duration::from_millis(parse(env::EXPORT_TIMEOUT_MS, &v)?);
        }
        let mode = match get(env::LIMITER_MODE).as_deref().map(str::trim) {
            None | Some("fallback") => LimiterMode::Fallback,
            Some("always") => LimiterMode::Always,
            Some(other) => {
                return Err(ConfigError::InvalidEnv {
                    var: env::LIMITER_MODE,
                    value: other.to_owned(),
                });
            }
        };
        match get(env::LIMITER).as_deref().map(str::trim) {
            None => {}
            Some("off") | Some("") => self.limiter = None,
            Some("aimd") => {
                self.limiter = Some(LimiterConfig::new(LimiterKind::aimd()).with_mode(mode));
            }
            Some("gradient") => {
                self.limiter = Some(LimiterConfig::new(LimiterKind::gradient()).with_mode(mode));
            }
            Some(other) => {
                return Err(ConfigError::InvalidEnv {
                    var: env::LIMITER,
                    value: other.to_owned(),
                });
            }
        }
        Ok(self)
    }

    /// Service name.
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Node name, so the collector can join this service to its node's counters.
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// Collector base URL (default `http://127.0.0.1:4318`).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = url.into();
        self
    }

    /// Bearer token sent as `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Head-sampling ratio for root spans (0..=1, default 0.1). Children follow their parent.
    pub fn with_sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    /// Window tick (default 100 ms).
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(1));
        self
    }

    /// How often the worker drains the buffers (default a quarter tick, at most 25 ms).
    pub fn with_drain_interval(mut self, every: Duration) -> Self {
        self.drain_interval = Some(every.max(Duration::from_micros(100)));
        self
    }

    /// QoS threshold for every endpoint: slower requests are always exported.
    pub fn with_slow_threshold(mut self, slow: Duration) -> Self {
        self.slow = Some(slow);
        self
    }

    /// QoS threshold for one endpoint (`"POST /compose"`), overriding the default one.
    pub fn with_endpoint_qos(mut self, endpoint: impl Into<String>, slow: Duration) -> Self {
        self.qos.push((endpoint.into(), slow));
        self
    }

    /// Cardinality cap on endpoints (default 128); further names map to `other`.
    pub fn with_max_endpoints(mut self, n: usize) -> Self {
        self.max_endpoints = n.max(1);
        self
    }

    /// Records per per-thread buffer (default 8192).
    pub fn with_ring_capacity(mut self, n: usize) -> Self {
        self.ring_capacity = n;
        self
    }

    /// Spans waiting for export, at most (default 65536); more are dropped and counted.
    pub fn with_max_queue_spans(mut self, n: usize) -> Self {
        self.max_queue_spans = n;
        self
    }

    /// Spans per export request, at most (default 4096).
    pub fn with_max_batch_spans(mut self, n: usize) -> Self {
        self.max_batch_spans = n.max(1);
        self
    }

    /// Bytes of encoded payloads held for (re)delivery, at most (default 16 MiB).
    pub fn with_max_outbox_bytes(mut self, n: usize) -> Self {
        self.max_outbox_bytes = n;
        self
    }

    /// Timeout of one export request (default 2 s).
    pub fn with_export_timeout(mut self, t: Duration) -> Self {
        self.export_timeout = t;
        self
    }

    /// Attempts per payload before it is dropped (default 5).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Flush timeout used when the export handle is dropped (default 5 s).
    pub fn with_shutdown_timeout(mut self, t: Duration) -> Self {
        self.shutdown_timeout = t;
        self
    }

    /// Static cap on requests in flight; more are shed.
    pub fn with_max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = Some(n).filter(|&n| n > 0);
        self
    }

    /// A local reactive limiter.
    pub fn with_limiter(mut self, limiter: LimiterConfig) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// `Retry-After` suggested to shed requests (default 1 s).
    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    /// The head-sampling ratio.
    pub fn sample_ratio(&self) -> f64 {
        self.sample_ratio
    }

    /// The collector URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The tick.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    fn recorder_config(&self) -> RecorderConfig {
        RecorderConfig {
            service: self.service.as_str().into(),
            sample_ratio: self.sample_ratio,
            max_endpoints: self.max_endpoints,
            max_names: self.max_names,
            ring_capacity: self.ring_capacity,
            max_in_flight: self.max_in_flight,
            limiter: self.limiter,
            retry_after: self.retry_after,
            tick_ns: u64::try_from(self.tick.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            slow: self.slow,
            qos: self.qos.clone(),
        }
    }

    fn worker_config(&self) -> WorkerConfig {
        let drain = self
            .drain_interval
            .unwrap_or_else(|| (self.tick / 4).min(Duration::from_millis(25)));
        WorkerConfig {
            tick: self.tick,
            drain_interval: drain,
            max_queue_spans: self.max_queue_spans,
            max_batch_spans: self.max_batch_spans,
            slow: self.slow,
            qos: self.qos.clone(),
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    /// A recorder with no worker: records fill its buffers and are then dropped and counted.
    /// For tests and for services that attach a worker later is not supported; use
    /// [`Builder::build_with`].
    pub fn build_recorder(&self) -> Recorder {
        Recorder::new(self.recorder_config())
    }

    /// The recorder and a worker exporting through `exporter`.
    pub fn build_with<E: Exporter>(self, exporter: E) -> (Recorder, ExportWorker<E>) {
        let recorder = self.build_recorder();
        let resource = Resource::detect(&self.service, &self.node);
        let worker = ExportWorker::new(recorder, exporter, self.worker_config(), resource);
        (recorder, worker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_overrides_and_rejects_bad_values() {
        let vars: HashMap<&str, &str> = [
            (env::SERVICE, "compose"),
            (env::SAMPLE_RATIO, "0.5"),
            (env::TICK_MS, "50"),
            (env::TOKEN, "s3cret"),
            (env::LIMITER, "gradient"),
            (env::LIMITER_MODE, "always"),
        ]
        .into_iter()
        .collect();
        let b = Builder::new("x")
            .with_env_from(|k| vars.get(k).map(|v| (*v).to_owned()))
            .unwrap();
        assert_eq!(b.service(), "compose");
        assert_eq!(b.sample_ratio(), 0.5);
        assert_eq!(b.tick(), Duration::from_millis(50));
        assert_eq!(b.token.as_deref(), Some("s3cret"));
        assert_eq!(b.limiter.unwrap().mode, LimiterMode::Always);
        assert_eq!(b.endpoint(), DEFAULT_ENDPOINT);

        let bad = Builder::new("x").with_env_from(|k| (k == env::SAMPLE_RATIO).then(|| "2".into()));
        assert!(
            matches!(bad, Err(ConfigError::InvalidEnv { var, .. }) if var == env::SAMPLE_RATIO)
        );
    }
}
