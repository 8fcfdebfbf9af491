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
