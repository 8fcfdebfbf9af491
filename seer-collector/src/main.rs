//! The `seer-collector` binary: parse settings, start logging, hand over to the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use seer_collector::config::{Config, Overrides};

/// Seer's collector: ingests OTLP spans and Seer window stats, samples node counters,
/// predicts QoS violations and their culprit, and serves advice, predictions and traces.
///
/// Settings come from a TOML file (--config), then SEER_* environment variables, then flags
/// (each overrides the one before).
#[derive(Debug, Parser)]
#[command(name = "seer-collector", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Settings only the TOML file sets (shown by `serve --help`).
const TOML_ONLY: &str = "\
Settings only in the TOML file (--config):
  [[qos]]                  one table per QoS target of an entry endpoint:
    service = \"frontend\"   entry service
    endpoint = \"POST /compose\"  entry endpoint (omit for every endpoint)
    percentile = 0.99      percentile over the sliding window
    target_ms = 100.0      target latency
    window_ms = 1000       sliding window
  episode_gap_ticks = 5    violation gaps shorter than this merge into one episode
  slow_trace_ms = 100.0    traces slower than this get critical-path attribution (no QoS target)
  max_services = 1024      services tracked at once (more are dropped and counted)
  [advice]                 threshold = 0.5, min_admit = 0.5, min_entry_admit = 0.7, ttl_ticks = 3
  [retention]              max_age_secs, max_bytes (also flags)
  upstream_token           bearer token sent upstream in agent mode
Logging: SEER_LOG (e.g. info, seer_collector=debug).";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: ingest, aggregation, prediction, store and API on one port.
    #[command(after_long_help = TOML_ONLY)]
    Serve {
        #[command(flatten)]
        settings: Overrides,
    },
    /// Run a node agent: sample this node and forward local windows and spans upstream.
    Agent {
        /// The central collector, e.g. http://central:4318.
        #[arg(long, env = "SEER_UPSTREAM", value_name = "URL")]
        upstream: String,
        /// Bearer token for the upstream's ingest endpoints [default: --ingest-token].
        #[arg(
            long,
            env = "SEER_UPSTREAM_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        upstream_token: Option<String>,
        #[command(flatten)]
        settings: Overrides,
    },
    /// Replay a recorded run offline: rebuild each tick's frame from the stored windows and
    /// node samples, run a predictor over them and print a JSON score (per fault: first tick
    /// the injected service was named, lead before the first violation, resource; culprit and
    /// resource accuracy, time to culprit, false alarms), next to the same score of the
    /// predictions the live collector stored.
    Replay {
        /// The collector's data directory of the run (read from a temporary copy).
        #[arg(long, value_name = "DIR")]
        data_dir: std::path::PathBuf,
        /// Which predictor to replay.
        #[arg(long, value_enum, default_value = "reactive")]
        predictor: seer_collector::config::PredictorKind,
        /// The run record (`run.json`) with the faults and client-side ticks [default: the
        /// labels stored by the collector, without violation ticks].
        #[arg(long, value_name = "FILE")]
        labels: Option<std::path::PathBuf>,
        /// The collector's TOML config of the run (tick, watermark, advice threshold).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Print every fault's figures and every false alarm, not only the summary.
        #[arg(long)]
        per_fault: bool,
        /// Reactive-rule tunables to try, as TOML (e.g. 'cpu_ratio = 4.0; smoothing = 0.6',
        /// `;` separates lines); the rest keep their defaults. Only with --predictor reactive.
        #[arg(long, value_name = "TOML")]
        reactive: Option<String>,
        /// Also write the replayed predictions here, one JSON record per line.
        #[arg(long, value_name = "FILE")]
        records: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (cfg, agent) = match cli.command {
        Command::Replay {
            data_dir,
            predictor,
            labels,
            config,
            per_fault,
            reactive,
            records,
        } => {
            return replay(
                &data_dir,
                predictor,
                labels.as_deref(),
                config.as_deref(),
                per_fault,
                reactive.as_deref(),
                records.as_deref(),
            );
        }
        Command::Serve { settings } => {
            (Config::load(&settings).context("loading settings")?, false)
        }
        Command::Agent {
            upstream,
            upstream_token,
            settings,
        } => {
            let mut cfg = Config::load(&settings).context("loading settings")?;
            cfg.upstream = Some(upstream);
            if upstream_token.is_some() {
                cfg.upstream_token = upstream_token;
            }
            (cfg, true)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("seer-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(seer_collector::run(cfg, agent))
        .context("seer-collector failed")?;
    Ok(())
}

/// `seer-collector replay`: see [`seer_collector::replay`].
fn replay(
    data_dir: &std::path::Path,
    predictor: seer_collector::config::PredictorKind,
    labels: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    per_fault: bool,
    reactive: Option<&str>,
    records_out: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use seer_collector::replay::{self, Recorded, ReplayConfig, Truth};
    let mut cfg = match config {
        Some(p) => Config::from_file(p).context("loading the run's config")?,
        None => Config::default(),
    };
    cfg.predictor = predictor;
    cfg.data_dir = std::env::temp_dir().join(format!("seer-replay-model-{}", std::process::id()));
    let rc = ReplayConfig::from_config(&cfg);
    let recorded = Recorded::read_dir(data_dir).context("reading the recorded run")?;
    let truth = match labels {
        Some(p) => Truth::from_run_json(p, rc.tick_ns)?,
        None => Truth::from_labels(&recorded.labels),
    };
    let frames = recorded.frames(&rc);
    let started = std::time::Instant::now();
    let chosen: Box<dyn seer_collector::predict::Predictor> = match reactive {
        Some(t) => {
            anyhow::ensure!(
                predictor == seer_collector::config::PredictorKind::Reactive,
                "--reactive needs --predictor reactive"
            );
            let c: seer_collector::predict::ReactiveConfig =
                toml::from_str(&t.replace(';', "\n")).context("parsing --reactive")?;
            Box::new(seer_collector::predict::ReactivePredictor::with_config(c))
        }
        None => seer_collector::default_predictor(&cfg),
    };
    let records = replay::run(&frames, chosen, &rc);
    let elapsed_s = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    if let Some(path) = records_out {
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let threshold = rc.advice.threshold;
    let live: Vec<_> = recorded.predictions.values().cloned().collect();
    let mut replayed = replay::score(&records, &truth, rc.tick_ns, threshold);
    let mut recorded_score = replay::score(&live, &truth, rc.tick_ns, threshold);
    if !per_fault {
        replayed.per_fault.clear();
        recorded_score.per_fault.clear();
        replayed.false_alarm_list.clear();
        recorded_score.false_alarm_list.clear();
    }
    let out = serde_json::json!({
        "predictor": records.first().map(|r| r.predictor.clone()),
        "reactive": reactive,
        "frames": frames.len(),
        "replay_s": elapsed_s,
        "replayed": replayed,
        "recorded": recorded_score,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
