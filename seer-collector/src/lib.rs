//! Seer's collector: OTLP and window ingest, node counters, aggregation, prediction, advice
//! and storage, in one binary whose every part lives in this library.
//!
//! # Quick start
//!
//! Run a collector on a free port with a custom [`predict::Predictor`], post a window batch and
//! read the advice from the reply:
//!
//! ```no_run
//! use seer_collector::{Collector, config::Config, predict::ReactivePredictor};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     data_dir: std::env::temp_dir().join("seer-demo"),
//!     ..Config::default()
//! };
//! let running = Collector::new(cfg)
//!     .with_predictor(Box::new(ReactivePredictor::new()))
//!     .start()
//!     .await?;
//! println!("listening on {}", running.local_addr());
//! running.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`ingest`]: OTLP/HTTP (protobuf, JSON, gzip) and native window endpoints, body limits,
//!   the memory budget.
//! - [`hw`]: the node sampler (perf counters behind [`hw::CounterSource`], PSI, /proc, cgroups).
//! - [`window`]: per-tick alignment, span-derived windows, QoS, service graph, critical path.
//! - [`predict`]: the [`predict::Predictor`] seam, the reactive baseline, advice, diagnosis,
//!   alerts and the prediction thread.
//! - [`store`]: the redb store and its group-commit writer thread.
//! - [`serve`]: the HTTP router, JSON API and auth.
//! - [`pipeline`]: the threads wired together; [`agent`]: forwarding to a central collector.
//! - [`replay`]: a recorded run's stored windows replayed through a predictor and scored
//!   offline (`seer-collector replay`).
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
mod error;
pub mod hw;
pub mod ingest;
pub mod internal_events;
pub mod pipeline;
pub mod predict;
pub mod replay;
pub mod serve;
pub mod store;
pub mod webhook;
pub mod window;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::StartError;

use config::Config;
use hw::{CounterSource, ProbeReport, Sampler};
use internal_events::{CountersProbed, Metrics, NodeSampled};
use pipeline::{AggMsg, AppState, BoardSink, Shared};
use predict::Predictor;
use predict::thread::{PredictConfig, PredictionEngine};
use store::Store;
use store::writer::{RetentionPolicy, StoreHandle};

/// The predictor used when none is given, per [`Config::predictor`]: seer-model's CNN+LSTM
/// (feature `model`, checkpoint in `<data_dir>/model.ckpt`, with the reactive rule answering
/// until the model has earned its place), or the reactive baseline. If the model cannot start,
/// the error is logged and the reactive baseline answers. Anyone can pass their own predictor
/// with [`Collector::with_predictor`].
pub fn default_predictor(cfg: &Config) -> Box<dyn Predictor> {
    match cfg.predictor {
        #[cfg(feature = "model")]
        config::PredictorKind::Model | config::PredictorKind::ModelOnly => {
            // The model's online precision and recall judge the alarms that are served: at the
            // advice threshold (clamped as the advice clamps it).
            let model = seer_model::ModelConfig::default()
                .with_threshold(cfg.advice.threshold.clamp(0.01, 0.99))
                .with_threads(cfg.model_threads)
                .with_checkpoint(cfg.data_dir.join("model.ckpt"));
            match predict::ModelPredictor::new(model) {
                Ok(p) => Box::new(p.with_ensemble(cfg.predictor == config::PredictorKind::Model)),
                Err(err) => {
                    tracing::error!(
                        error = %err,
                        "the model could not start; the reactive baseline answers"
                    );
                    Box::new(predict::ReactivePredictor::new())
                }
            }
        }
        _ => Box::new(predict::ReactivePredictor::new()),
    }
}

/// Builds and starts a collector (or an agent).
pub struct Collector {
    cfg: Config,
    predictor: Option<Box<dyn Predictor>>,
    counters: Option<Box<dyn CounterSource>>,
    agent: bool,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("cfg", &self.cfg)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector with these settings, the default predictor and perf counters.
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            predictor: None,
            counters: None,
            agent: false,
        }
    }

    /// Uses `predictor` instead of [`default_predictor`].
    pub fn with_predictor(mut self, predictor: Box<dyn Predictor>) -> Self {
        self.predictor = Some(predictor);
        self
    }

    /// Uses `source` for hardware counters instead of perf.
    pub fn with_counter_source(mut self, source: Box<dyn CounterSource>) -> Self {
        self.counters = Some(source);
        self
    }

    /// Runs as an agent forwarding to `cfg.upstream` (no store, no prediction).
    pub fn agent(mut self) -> Self {
        self.agent = true;
        self
    }

    /// Opens the store, starts every thread and the HTTP server.
    ///
    /// # Errors
    ///
    /// [`StartError`] when the settings are invalid, the store cannot be opened, or the
    /// address cannot be bound.
    pub async fn start(self) -> Result<RunningCollector, StartError> {
        let Self {
            cfg,
            predictor,
            counters,
            agent,
        } = self;
        cfg.validate()?;
        // Bind before anything else starts: a port in use is the commonest start-up error, and
        // it must not leave a store open and threads running behind it.
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let cfg = Arc::new(cfg);
        let metrics = Arc::new(Metrics::new());
        let memory = cfg.memory_limit_bytes();
        // Of the memory limit: 1/4 for ingest bodies and queues, 1/8 for the store's cache; the
        // rest covers connection buffers (max_connections x 64 KiB), the writer's batch (and its
        // copy in the store transaction), the aggregator and the allocator's slack.
        let budget = ingest::budget::Budget::new(memory / 4, Arc::clone(&metrics));
        let shared = Arc::new(Shared::default());
        let node: Arc<str> = Arc::from(cfg.node_name());
        let mut threads = Vec::new();

        let (store, writer, forward) = if agent {
            let up = cfg.upstream.clone().ok_or(StartError::NoUpstream)?;
            let token = cfg
                .upstream_token
                .clone()
                .or_else(|| cfg.ingest_token.clone());
            (
                None,
                None,
                Some(Arc::new(agent::Forwarder::new(
                    &up,
                    token,
                    node.to_string(),
                ))),
            )
        } else {
            let store = Arc::new(Store::open(&cfg.data_dir, memory / 8)?);
            let (writer, join) = store::writer::spawn(
                Arc::clone(&store),
                1024,
                RetentionPolicy {
                    max_age_ns: cfg.retention.max_age_secs.saturating_mul(1_000_000_000),
                    max_bytes: cfg.retention.max_bytes,
                    tick_ns: cfg.tick_ns(),
                    every: Duration::from_secs(5),
                },
                Arc::clone(&metrics),
            )?;
            threads.push(join);
            (Some(store), Some(writer), None)
        };

        let (agg_tx, agg_rx) = crossbeam::channel::bounded::<AggMsg>(4096);
        let targets: hw::TargetMap = Arc::new(Mutex::new(Default::default()));
        if !agent {
            let predictor = match predictor {
                Some(p) => p,
                // Building the model waits for its thread (network, checkpoint load): not on an
                // async worker.
                None => {
                    let c = Arc::clone(&cfg);
                    tokio::task::spawn_blocking(move || default_predictor(&c))
                        .await
                        .map_err(|e| StartError::Io(std::io::Error::other(e)))?
                }
            };
            if let Ok(mut p) = shared.predictor.write() {
                *p = predictor.name().to_owned();
            }
            let (frames_tx, frames_rx) = std::sync::mpsc::sync_channel(pipeline::FRAME_QUEUE);
            let webhooks = if cfg.webhooks.is_empty() {
                None
            } else {
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                tokio::spawn(webhook::run(cfg.webhooks.clone(), rx, Arc::clone(&metrics)));
                Some(tx)
            };
            let engine = PredictionEngine::new(
                predictor,
                PredictConfig {
                    advice: cfg.advice.clone(),
                    entries: cfg.qos.iter().map(|q| q.service.clone()).collect(),
                    alert_end_ticks: 5,
                },
            );
            let sink = BoardSink {
                shared: Arc::clone(&shared),
                writer: writer.clone(),
                webhooks,
                metrics: Arc::clone(&metrics),
            };
            threads.push(predict::thread::spawn(engine, frames_rx, Box::new(sink))?);
            let (c, w, s, m) = (
                Arc::clone(&cfg),
                writer.clone(),
                Arc::clone(&shared),
                Arc::clone(&metrics),
            );
            threads.push(
                std::thread::Builder::new()
                    .name("seer-aggregate".into())
                    .spawn(move || {
                        pipeline::run_aggregator(&c, &agg_rx, &frames_tx, w.as_ref(), &s, &m)
                    })?,
            );
        }

        // Node sampler.
        let stop = Arc::new(AtomicBool::new(false));
        let mut report = ProbeReport::default();
        if cfg.sampler {
            let source = counters.unwrap_or_else(|| Box::new(hw::perf::PerfSource::new()));
            let mut sampler = Sampler::new(node.to_string(), source);
            report = sampler.report().clone();
            let list: Vec<(String, bool)> =
                report.counters.iter().map(|c| (c.0.clone(), c.1)).collect();
            CountersProbed { counters: &list }.emit(&metrics);
            if let Ok(mut c) = shared.counters.write() {
                *c = list;
            }
            let (stop2, targets2, metrics2, agg2) = (
                Arc::clone(&stop),
                Arc::clone(&targets),
                Arc::clone(&metrics),
                agg_tx.clone(),
            );
            let tick = Duration::from_nanos(cfg.tick_ns());
            let fwd = forward.clone();
            let (node_tx, mut node_rx) = tokio::sync::mpsc::channel::<hw::NodeSample>(64);
            if let Some(fwd) = fwd {
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move {
                    while let Some(s) = node_rx.recv().await {
                        // The forwarder logs the failure (at warn at most once per 10 s); the
                        // sample is lost, and counted.
                        if fwd.node(&s).await.is_err() {
                            internal_events::Dropped {
                                stage: internal_events::DropStage::ForwardFailed,
                                count: 1,
                            }
                            .emit(&metrics);
                        }
                    }
                });
            }
            threads.push(
                std::thread::Builder::new()
                    .name("seer-sampler".into())
                    .spawn(move || {
                        let mut next = std::time::Instant::now();
                        while !stop2.load(Ordering::Acquire) {
                            next += tick;
                            let t = targets2.lock().map(|t| t.clone()).unwrap_or_default();
                            let s = sampler.sample(ingest::now_unix_ns(), &t);
                            NodeSampled.emit(&metrics2);
                            let ok = if agent {
                                node_tx.try_send(s).is_ok()
                            } else {
                                agg2.try_send(AggMsg::Node {
                                    sample: s,
                                    reservation: None,
                                })
                                .is_ok()
                            };
                            if !ok {
                                internal_events::Dropped {
                                    stage: internal_events::DropStage::Forward,
                                    count: 1,
                                }
                                .emit(&metrics2);
                            }
                            let now = std::time::Instant::now();
                            if next > now {
                                std::thread::park_timeout(next - now);
                            } else {
                                next = now;
                            }
                        }
                    })?,
            );
        }

        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let state = AppState {
            cfg: Arc::clone(&cfg),
            metrics: Arc::clone(&metrics),
            budget,
            store: store.clone(),
            writer,
            agg_tx,
            shared: Arc::clone(&shared),
            targets,
            forward,
            node,
            shutdown: shutdown_rx.clone(),
        };
        let addr = listener.local_addr()?;
        let app = serve::router(state.clone());
        let server = tokio::spawn(serve::serve(
            listener,
            app,
            cfg.max_connections,
            Arc::clone(&metrics),
            shutdown_rx,
        ));
        // From here on a thread that ends (a panic) makes /readyz answer 503.
        for t in threads {
            shared.threads.watch(t);
        }
        pipeline::set_ready(&shared, true);
        Ok(RunningCollector {
            addr,
            state: Some(state),
            store,
            metrics,
            report,
            shutdown_tx,
            server: Some(server),
            stop,
        })
    }
}

/// A started collector.
#[derive(Debug)]
pub struct RunningCollector {
    addr: SocketAddr,
    state: Option<AppState>,
    store: Option<Arc<Store>>,
    metrics: Arc<Metrics>,
    report: ProbeReport,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    stop: Arc<AtomicBool>,
}

impl RunningCollector {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Self-telemetry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What the counter probe found.
    pub fn probe_report(&self) -> &ProbeReport {
        &self.report
    }

    /// The store (none for an agent).
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// The store writer (none for an agent).
    pub fn writer(&self) -> Option<&StoreHandle> {
        self.state.as_ref().and_then(|s| s.writer.as_ref())
    }

    /// Stops accepting requests, drains the queues, commits what was accepted and joins every
    /// thread.
    ///
    /// # Errors
    ///
    /// [`StartError::Io`] if the server failed.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        let _ = self.shutdown_tx.send(true);
        let server = self.server.take();
        if let Some(s) = server {
            match s.await {
                Ok(r) => r?,
                Err(e) => return Err(StartError::Io(std::io::Error::other(e))),
            }
        }
        self.stop.store(true, Ordering::Release);
        let threads = self
            .state
            .take()
            .map(|s| s.shared.threads.take())
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            for t in threads {
                t.thread().unpark();
                let _ = t.join();
            }
        })
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))?;
        Ok(())
    }

    /// Waits until ctrl-c or SIGTERM, then shuts down.
    ///
    /// # Errors
    ///
    /// As [`RunningCollector::shutdown`].
    pub async fn run_until_signal(self) -> Result<(), StartError> {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Starts a collector (or agent), prints its addresses and counters, and runs until a signal.
///
/// # Errors
///
/// As [`Collector::start`].
pub async fn run(cfg: Config, agent: bool) -> Result<(), StartError> {
    let data_dir = cfg.data_dir.clone();
    let upstream = cfg.upstream.clone();
    let mut c = Collector::new(cfg);
    if agent {
        c = c.agent();
    }
    let running = c.start().await?;
    let addr = running.local_addr();
    let mut banner = if agent {
        format!(
            "seer-collector agent listening on http://{addr} (ingest {}, {}, {} and {}), forwarding to {}",
            seer_proto::TRACES_PATH,
            seer_proto::WINDOWS_PATH,
            serve::api::NODES_PATH,
            serve::api::LABELS_PATH,
            upstream.unwrap_or_default()
        )
    } else {
        format!(
            "seer-collector listening on http://{addr}\n  ingest: POST {} (OTLP/HTTP protobuf+JSON, gzip), POST {}, POST /v1/labels\n  api:    GET /v1/advice/{{service}} /v1/predictions /v1/services /v1/graph /v1/windows /v1/traces/{{id}} /v1/alerts /metrics /healthz /readyz\n  data:   {}",
            seer_proto::TRACES_PATH,
            seer_proto::WINDOWS_PATH,
            data_dir.display()
        )
    };
    let r = running.probe_report();
    let fmt = |ok: bool| -> String {
        r.counters
            .iter()
            .filter(|c| c.1 == ok)
            .map(|c| match (&c.2, ok) {
                (Some(reason), false) => format!("{} ({reason})", c.0),
                _ => c.0.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    banner.push_str(&format!(
        "\n  counters supported:   {}\n  counters unsupported: {}\n",
        fmt(true),
        fmt(false)
    ));
    // A stdout nobody reads any more (a supervisor or script that took the address line and
    // closed the pipe) is no reason to stop serving: write errors are ignored, where println!
    // would panic.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    running.run_until_signal().await
}
