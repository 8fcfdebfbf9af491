//! Settings: a TOML file, then `SEER_*` environment variables, then flags (lowest first).
//!
//! | setting | flag | env | default |
//! |---|---|---|---|
//! | config file | `--config` | `SEER_CONFIG` | none |
//! | listen address | `--listen` | `SEER_LISTEN` | `127.0.0.1:4318` |
//! | data directory | `--data-dir` | `SEER_DATA_DIR` | `./seer-data` |
//! | ingest bearer token | `--ingest-token` | `SEER_INGEST_TOKEN` | none (open) |
//! | admin bearer token | `--admin-token` | `SEER_ADMIN_TOKEN` | none (open) |
//! | tick length (ms) | `--tick-ms` | `SEER_TICK_MS` | 100 |
//! | watermark for late windows (ms) | `--watermark-ms` | `SEER_WATERMARK_MS` | 300 |
//! | close a tick once every active SDK process reported it | `--no-early-close` | `SEER_NO_EARLY_CLOSE` | on |
//! | request body limit, decompressed (bytes) | `--max-body-bytes` | `SEER_MAX_BODY_BYTES` | 67108864 |
//! | memory limit (MiB; 1/4 for queued ingest, 1/8 store cache) | `--memory-limit-mb` | `SEER_MEMORY_LIMIT_MB` | 512 |
//! | open connections (more get 503) | `--max-connections` | `SEER_MAX_CONNECTIONS` | 256 |
//! | deadline for an ingest request body (ms; then 408) | `--body-read-timeout-ms` | `SEER_BODY_READ_TIMEOUT_MS` | 30000 |
//! | span retention by age (s) | `--retention-max-age-secs` | `SEER_RETENTION_MAX_AGE_SECS` | 86400 |
//! | span retention by size (bytes) | `--retention-max-bytes` | `SEER_RETENTION_MAX_BYTES` | 1073741824 |
//! | webhook URLs (repeat / comma list) | `--webhook` | `SEER_WEBHOOKS` | none |
//! | node name | `--node` | `SEER_NODE` | the host name |
//! | node sampler on/off | `--no-sampler` | `SEER_NO_SAMPLER` | on |
//! | predictor (`model`, `model-only` or `reactive`) | `--predictor` | `SEER_PREDICTOR` | `model` when built with feature `model`, else `reactive` |
//! | libtorch threads of the model | `--model-threads` | `SEER_MODEL_THREADS` | 1 |
//! | upstream collector (agent) | `--upstream` | `SEER_UPSTREAM` | required for `agent` |
//! | QoS spec, advice tunables | TOML only (`[[qos]]`, `[advice]`) | | none / see `AdviceConfig` |
//!
//! Upstream and webhook URLs must be plain `http://` URLs with a host (the agent and the
//! webhook client do not speak TLS; put a TLS-terminating proxy next to them for `https`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::predict::advice::AdviceConfig;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// Setting name.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// One QoS target: an entry endpoint's latency percentile over a sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QosSpec {
    /// Entry service.
    pub service: String,
    /// Entry endpoint (e.g. `POST /compose`); absent means every endpoint of the service.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Percentile, 0..1 (default 0.99).
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Target latency, milliseconds.
    pub target_ms: f64,
    /// Sliding window, milliseconds (default 1000).
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
}

fn default_percentile() -> f64 {
    0.99
}
fn default_window_ms() -> u64 {
    1000
}

/// Retention of stored data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Data older than this is deleted, seconds.
    pub max_age_secs: u64,
    /// Sampled spans beyond this many bytes are deleted, oldest first.
    pub max_bytes: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age_secs: 86_400,
            max_bytes: 1 << 30,
        }
    }
}

/// Every setting of the collector (and the agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the ingest + API port.
    pub listen: SocketAddr,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Bearer token required on ingest endpoints, when set.
    pub ingest_token: Option<String>,
    /// Bearer token required on API endpoints, when set.
    pub admin_token: Option<String>,
    /// Tick length, milliseconds.
    pub tick_ms: u64,
    /// How long after a tick ends its windows are still accepted, milliseconds.
    pub watermark_ms: u64,
    /// Close a tick before its watermark once every SDK process active in the last second has
    /// posted its window for it (and no span-only service is active). Cuts the prediction delay
    /// from the watermark to the slowest exporter's post, typically a few milliseconds.
    pub early_close: bool,
    /// Largest accepted request body after decompression, bytes.
    pub max_body_bytes: usize,
    /// Memory budget for request bodies and queued spans, MiB. Requests beyond it get 503.
    pub memory_limit_mb: u64,
    /// Most services tracked at once (more are dropped and counted).
    pub max_services: usize,
    /// Most open client connections (more are answered 503 at once).
    pub max_connections: usize,
    /// How long an ingest request may take to send its body once its head arrived,
    /// milliseconds; a slower one is answered 408 and its connection closed. (Request heads
    /// have their own fixed deadline, [`crate::serve::HEADER_READ_TIMEOUT`].)
    pub body_read_timeout_ms: u64,
    /// Retention.
    pub retention: RetentionConfig,
    /// QoS targets.
    pub qos: Vec<QosSpec>,
    /// Violation gaps shorter than this many ticks merge into one episode.
    pub episode_gap_ticks: u32,
    /// Traces slower than this are attributed on their critical path when no QoS target
    /// applies, milliseconds.
    pub slow_trace_ms: f64,
    /// Advice policy tunables.
    pub advice: AdviceConfig,
    /// Webhook URLs for alert start/change/end.
    pub webhooks: Vec<String>,
    /// This node's name (default: the host name).
    pub node: Option<String>,
    /// Whether to sample node counters.
    pub sampler: bool,
    /// Upstream collector URL (agent mode).
    pub upstream: Option<String>,
    /// Token sent upstream (agent mode), default the ingest token.
    pub upstream_token: Option<String>,
    /// Which predictor answers.
    pub predictor: PredictorKind,
    /// libtorch intra-op threads of the model (1 keeps it from disturbing the services).
    pub model_threads: usize,
}

/// Which predictor the collector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PredictorKind {
    /// seer-model's CNN+LSTM (feature `model`), with the reactive rule answering until the model
    /// has earned its place and whenever its recent precision (or, once enough violations have
    /// matured, its recall) falls below the floor; while the
    /// model predicts, each service's risk is the higher of the two (the rule's hard-evidence
    /// terms catch a step fault a tick or two before the model's window shows it). Its
    /// checkpoint is kept at `<data_dir>/model.ckpt`.
    Model,
    /// As `model`, but while the model predicts it answers alone (for comparisons).
    ModelOnly,
    /// The reactive baseline alone: queue depth and latency against an EWMA baseline.
    Reactive,
}

impl Default for PredictorKind {
    fn default() -> Self {
        if cfg!(feature = "model") {
            Self::Model
        } else {
            Self::Reactive
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4318)),
            data_dir: PathBuf::from("./seer-data"),
            ingest_token: None,
            admin_token: None,
            tick_ms: 100,
            watermark_ms: 300,
            early_close: true,
            max_body_bytes: 64 << 20,
            memory_limit_mb: 512,
            max_services: 1024,
            max_connections: 256,
            body_read_timeout_ms: 30_000,
            retention: RetentionConfig::default(),
            qos: Vec::new(),
            episode_gap_ticks: 5,
            slow_trace_ms: 100.0,
            advice: AdviceConfig::default(),
            webhooks: Vec::new(),
            node: None,
            sampler: true,
            upstream: None,
            upstream_token: None,
            predictor: PredictorKind::default(),
            model_threads: 1,
        }
    }
}

/// Settings given on the command line or in `SEER_*` variables; `None` keeps the lower layer.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// TOML config file (lowest precedence; env and flags override it).
    #[arg(long, env = "SEER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the ingest + API port [default: 127.0.0.1:4318].
    #[arg(long, env = "SEER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the on-disk store [default: ./seer-data].
    #[arg(long, env = "SEER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bearer token required on ingest endpoints (/v1/traces, /v1/seer/*, /v1/labels).
    #[arg(
        long,
        env = "SEER_INGEST_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub ingest_token: Option<String>,
    /// Bearer token required on the JSON API and /metrics.
    #[arg(
        long,
        env = "SEER_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Tick length in milliseconds [default: 100].
    #[arg(long, env = "SEER_TICK_MS", value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// How long late windows are still accepted after their tick, ms [default: 300].
    #[arg(long, env = "SEER_WATERMARK_MS", value_name = "MS")]
    pub watermark_ms: Option<u64>,
    /// Always wait for the watermark before closing a tick, even when every SDK process has
    /// already reported it.
    #[arg(long, env = "SEER_NO_EARLY_CLOSE")]
    pub no_early_close: bool,
    /// Request body limit after decompression, bytes [default: 67108864].
    #[arg(long, env = "SEER_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Memory budget for bodies and queued spans, MiB; beyond it ingest answers 503 [default: 512].
    #[arg(long, env = "SEER_MEMORY_LIMIT_MB", value_name = "MIB")]
    pub memory_limit_mb: Option<u64>,
    /// Most open client connections; more are answered 503 at once [default: 256].
    #[arg(long, env = "SEER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Deadline for an ingest request body, ms; slower bodies get 408 [default: 30000].
    #[arg(long, env = "SEER_BODY_READ_TIMEOUT_MS", value_name = "MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Delete stored data older than this, seconds [default: 86400].
    #[arg(long, env = "SEER_RETENTION_MAX_AGE_SECS", value_name = "SECS")]
    pub retention_max_age_secs: Option<u64>,
    /// Keep at most this many bytes of sampled spans [default: 1073741824].
    #[arg(long, env = "SEER_RETENTION_MAX_BYTES", value_name = "BYTES")]
    pub retention_max_bytes: Option<u64>,
    /// Webhook URL for alerts (repeatable; env: comma-separated).
    #[arg(
        long = "webhook",
        env = "SEER_WEBHOOKS",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub webhooks: Vec<String>,
    /// This node's name [default: the host name].
    #[arg(long, env = "SEER_NODE", value_name = "NAME")]
    pub node: Option<String>,
    /// Do not sample node counters.
    #[arg(long, env = "SEER_NO_SAMPLER")]
    pub no_sampler: bool,
    /// Which predictor answers [default: model when built with it, else reactive].
    #[arg(long, env = "SEER_PREDICTOR", value_enum)]
    pub predictor: Option<PredictorKind>,
    /// libtorch intra-op threads of the model [default: 1].
    #[arg(long, env = "SEER_MODEL_THREADS", value_name = "N")]
    pub model_threads: Option<usize>,
}

impl Config {
    /// Reads a TOML config file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] (with an empty path).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(source),
        })
    }

    /// Builds the effective settings: defaults, then the TOML file named in `overrides`
    /// (if any), then the overrides themselves (clap has already layered env under flags).
    ///
    /// # Errors
    ///
    /// Any error reading the file, or [`ConfigError::Invalid`].
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut cfg = match &overrides.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        cfg.apply(overrides);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies overrides on top of these settings.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = &o.data_dir {
            self.data_dir.clone_from(v);
        }
        if o.ingest_token.is_some() {
            self.ingest_token.clone_from(&o.ingest_token);
        }
        if o.admin_token.is_some() {
            self.admin_token.clone_from(&o.admin_token);
        }
        if let Some(v) = o.tick_ms {
            self.tick_ms = v;
        }
        if let Some(v) = o.watermark_ms {
            self.watermark_ms = v;
        }
        if let Some(v) = o.max_body_bytes {
            self.max_body_bytes = v;
        }
        if let Some(v) = o.memory_limit_mb {
            self.memory_limit_mb = v;
        }
        if let Some(v) = o.max_connections {
            self.max_connections = v;
        }
        if let Some(v) = o.body_read_timeout_ms {
            self.body_read_timeout_ms = v;
        }
        if let Some(v) = o.retention_max_age_secs {
            self.retention.max_age_secs = v;
        }
        if let Some(v) = o.retention_max_bytes {
            self.retention.max_bytes = v;
        }
        if !o.webhooks.is_empty() {
            self.webhooks.clone_from(&o.webhooks);
        }
        if o.node.is_some() {
            self.node.clone_from(&o.node);
        }
        if o.no_early_close {
            self.early_close = false;
        }
        if o.no_sampler {
            self.sampler = false;
        }
        if let Some(v) = o.predictor {
            self.predictor = v;
        }
        if let Some(v) = o.model_threads {
            self.model_threads = v;
        }
    }

    /// Checks ranges.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name, reason: &str| {
            Err(ConfigError::Invalid {
                name,
                reason: reason.to_owned(),
            })
        };
        if !(1..=60_000).contains(&self.tick_ms) {
            return bad("tick_ms", "must be 1..=60000");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if self.memory_limit_mb < 16 {
            return bad("memory_limit_mb", "must be at least 16");
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1");
        }
        if !(1..=3_600_000).contains(&self.body_read_timeout_ms) {
            return bad("body_read_timeout_ms", "must be 1..=3600000");
        }
        if self.max_services == 0 {
            return bad("max_services", "must be at least 1");
        }
        if matches!(
            self.predictor,
            PredictorKind::Model | PredictorKind::ModelOnly
        ) && !cfg!(feature = "model")
        {
            return bad(
                "predictor",
                "`model` needs a collector built with the `model` feature; use `reactive`",
            );
        }
        if self.model_threads == 0 {
            return bad("model_threads", "must be at least 1");
        }
        for q in &self.qos {
            if !(0.0..=1.0).contains(&q.percentile) || q.target_ms <= 0.0 || q.window_ms == 0 {
                return bad(
                    "qos",
                    "percentile must be 0..=1, target_ms > 0 and window_ms > 0",
                );
            }
        }
        if let Some(url) = &self.upstream
            && let Err(why) = check_http_url(url)
        {
            return bad(
                "upstream",
                &format!("--upstream (SEER_UPSTREAM) {url:?}: {why}"),
            );
        }
        for url in &self.webhooks {
            if let Err(why) = check_http_url(url) {
                return bad(
                    "webhooks",
                    &format!("--webhook (SEER_WEBHOOKS) {url:?}: {why}"),
                );
            }
        }
        Ok(())
    }

    /// Tick length in nanoseconds.
    pub fn tick_ns(&self) -> u64 {
        self.tick_ms.saturating_mul(1_000_000)
    }

    /// The node name: the configured one, else the host name, else `"local"`.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "local".to_owned())
        })
    }

    /// Memory budget in bytes.
    pub fn memory_limit_bytes(&self) -> usize {
        usize::try_from(self.memory_limit_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// Checks that `url` is an `http://` URL with a host and no query (paths are appended to it).
fn check_http_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. http://central:4318"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported (this client speaks plain HTTP); use http://, or a \
                 TLS-terminating proxy"
                    .to_owned(),
            );
        }
        Some(other) => return Err(format!("scheme {other:?} is not supported; use http://")),
        None => return Err("missing scheme; expected e.g. http://central:4318".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("missing host; expected e.g. http://central:4318".to_owned());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_is_chosen_by_toml_and_overrides() {
        let c = Config::from_toml("predictor = \"reactive\"\nmodel_threads = 2\n").unwrap();
        assert_eq!(c.predictor, PredictorKind::Reactive);
        assert_eq!(c.model_threads, 2);
        let mut c = Config::default();
        c.apply(&Overrides {
            predictor: Some(PredictorKind::Reactive),
            ..Overrides::default()
        });
        assert_eq!(c.predictor, PredictorKind::Reactive);
        c.model_threads = 0;
        assert!(c.validate().is_err());
        assert!(Config::from_toml("predictor = \"oracle\"\n").is_err());
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4318");
        assert_eq!(c.data_dir, PathBuf::from("./seer-data"));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn toml_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seer.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:9999"
tick_ms = 50
data_dir = "from-file"
[[qos]]
service = "frontend"
endpoint = "POST /compose"
target_ms = 100.0
[advice]
threshold = 0.6
"#,
        )
        .unwrap();
        let o = Overrides {
            config: Some(path),
            data_dir: Some(PathBuf::from("from-flag")),
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.tick_ms, 50);
        assert_eq!(c.data_dir, PathBuf::from("from-flag"));
        assert_eq!(c.qos[0].percentile, 0.99);
        assert_eq!(c.qos[0].window_ms, 1000);
        assert_eq!(c.advice.threshold, 0.6);
    }

    #[test]
    fn upstream_and_webhook_urls_must_be_plain_http() {
        let with = |upstream: &str, webhook: &str| Config {
            upstream: Some(upstream.to_owned()),
            webhooks: vec![webhook.to_owned()],
            ..Config::default()
        };
        assert!(
            with("http://central:4318", "http://hooks:8080/alert")
                .validate()
                .is_ok()
        );
        assert!(
            with("http://10.0.0.1:4318/", "http://[::1]:9/x")
                .validate()
                .is_ok()
        );
        for (bad, says) in [
            ("https://central:4318", "https is not supported"),
            ("central:4318", "scheme"),
            ("ftp://central", "scheme \"ftp\""),
            ("http://", "not a URL"),
            ("http://central:4318/?x=1", "query"),
            ("not a url", "not a URL"),
        ] {
            let err = with(bad, "http://h/").validate().unwrap_err();
            let ConfigError::Invalid { name, reason } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(*name, "upstream", "{bad}");
            assert!(reason.contains("--upstream"), "{bad}: {reason}");
            assert!(reason.contains(says), "{bad}: {reason}");
        }
        let err = with("http://central:4318", "https://hooks/alert")
            .validate()
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { name: "webhooks", reason } if reason.contains("--webhook")),
            "{err:?}"
        );
        // From TOML too.
        let c = Config::from_toml("upstream = \"https://central:4318\"\n").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_errors() {
        assert!(matches!(
            Config::from_toml("lisen = \"x\""),
            Err(ConfigError::Parse { .. })
        ));
        let c = Config {
            tick_ms: 0,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                name: "tick_ms",
                ..
            })
        ));
    }
}
