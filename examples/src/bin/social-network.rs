//! The social-network demo: the services, the hogs, and the evaluation harness in one binary.
//!
//! ```text
//! social-network eval SCENARIO [--mode M] [--seed N] [--out DIR] [--collector-bin PATH]
//! social-network demo [--scenario FILE] [--out DIR] [--collector-bin PATH]
//! social-network service --config FILE       (started by the harness, one per service)
//! social-network hog --kind cpu|mem ...      (started by the fault injector)
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use seer_examples::cpu::{Envelope, run_cpu_hog, run_mem_hog};
use seer_examples::eval::{self, EvalOptions};
use seer_examples::scenario::{Mode, Scenario};
use seer_examples::service::{self, ServiceConfig};

#[derive(Debug, Parser)]
#[command(
    name = "social-network",
    version,
    about = "Seer's social-network demo and evaluation harness"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a scenario (and its `off` reference) and print the JSON summary on stdout.
    Eval {
        /// Scenario file (TOML), from any path.
        scenario: PathBuf,
        /// Control mode: off, seer-throttle, seer-actuate, seer-both, static-limit, aimd, gradient.
        #[arg(long)]
        mode: Option<Mode>,
        /// Seed (the scenario's by default).
        #[arg(long)]
        seed: Option<u64>,
        /// Output folder (default: seer-runs/SCENARIO-MODE-SEED).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The seer-collector binary (no predictions without it).
        #[arg(long, env = "SEER_COLLECTOR_BIN")]
        collector_bin: Option<PathBuf>,
        /// Skip the `off` reference run (avoided fractions become null).
        #[arg(long)]
        no_compare: bool,
        /// Show the live view on stderr.
        #[arg(long)]
        live: bool,
        /// Do not use cgroups even where available.
        #[arg(long)]
        no_cgroups: bool,
        /// Reuse the `run.json` of an earlier `off` run of the same scenario and seed as the
        /// reference instead of running `off` again.
        #[arg(long)]
        off_run: Option<PathBuf>,
    },
    /// Recompute the summary and report of finished runs from their `run.json` files.
    Summarize {
        /// The controlled run's `run.json`.
        run: PathBuf,
        /// The `off` run's `run.json` (for avoided fractions).
        #[arg(long)]
        off: Option<PathBuf>,
        /// Episode merge gap, ticks.
        #[arg(long, default_value_t = 10)]
        merge_gap: usize,
        /// Where to write `report.html` (default: next to the run).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Print a scenario's fault schedule (after generation) as JSON, without running anything.
    Plan {
        /// Scenario file (TOML).
        scenario: PathBuf,
    },
    /// One live run of the demo scenario with the terminal view, then the summary and report.
    Demo {
        /// Scenario file (default: the bundled demo scenario).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Control mode (the scenario's by default).
        #[arg(long)]
        mode: Option<Mode>,
        /// Output folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The seer-collector binary.
        #[arg(long, env = "SEER_COLLECTOR_BIN")]
        collector_bin: Option<PathBuf>,
    },
    /// Run one service (started by the harness).
    Service {
        /// The service's JSON configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a CPU or memory hog along an envelope (started by the fault injector).
    Hog {
        /// `cpu` or `mem`.
        #[arg(long)]
        kind: String,
        /// Peak: cores (cpu) or MiB (mem).
        #[arg(long)]
        peak: f64,
        /// Ramp to peak, seconds.
        #[arg(long, default_value_t = 0.0)]
        ramp_s: f64,
        /// Hold at peak, seconds.
        #[arg(long)]
        hold_s: f64,
    },
}

/// The bundled demo scenario, used when `demo` gets no `--scenario`.
const DEMO_SCENARIO: &str = include_str!("../../scenarios/demo.toml");

fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integer arguments and has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")
}

fn default_out(name: &str, mode: Mode, seed: u64) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("seer-runs").join(format!("{name}-{mode}-{seed}-{stamp}"))
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("social-network: error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Service { config } => {
            die_with_parent();
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("read {}", config.display()))?;
            let cfg: ServiceConfig = serde_json::from_str(&text)?;
            runtime(2)?.block_on(service::run(cfg))
        }
        Cmd::Hog {
            kind,
            peak,
            ramp_s,
            hold_s,
        } => {
            die_with_parent();
            let env = Envelope {
                peak,
                ramp_s,
                hold_s,
            };
            let stop = Arc::new(AtomicBool::new(false));
            match kind.as_str() {
                "cpu" => run_cpu_hog(env, &stop),
                "mem" => run_mem_hog(env, &stop, &AtomicU64::new(0)),
                other => anyhow::bail!("unknown hog kind {other}"),
            }
            Ok(())
        }
        Cmd::Eval {
            scenario,
            mode,
            seed,
            out,
            collector_bin,
            no_compare,
            live,
            no_cgroups,
            off_run,
        } => {
            let sc = Scenario::load(&scenario)?;
            let m = mode.unwrap_or(sc.mode);
            let s = seed.unwrap_or(sc.seed);
            let out = out.unwrap_or_else(|| default_out(&sc.name, m, s));
            let opts = EvalOptions {
                scenario: sc,
                mode: Some(m),
                seed: Some(s),
                out_dir: out,
                collector_bin,
                compare_off: !no_compare,
                live,
                cgroups: !no_cgroups,
                exe: std::env::current_exe()?,
                off_run,
            };
            let res = runtime(2)?.block_on(eval::run(opts))?;
            eprintln!("eval: report in {}", res.dir.join("report.html").display());
            println!("{}", serde_json::to_string_pretty(&res.summary)?);
            Ok(())
        }
        Cmd::Summarize {
            run,
            off,
            merge_gap,
            report,
        } => {
            let read = |p: &PathBuf| -> Result<seer_examples::harness::RunRecord> {
                let bytes = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a run record", p.display()))
            };
            let r = read(&run)?;
            let o = off.as_ref().map(read).transpose()?;
            let (summary, faults) = seer_examples::metrics::summarize(&r, o.as_ref(), merge_gap);
            let html = seer_examples::report::html(&r, o.as_ref(), &summary, &faults);
            let dest = report.unwrap_or_else(|| {
                run.parent()
                    .map_or_else(|| PathBuf::from("report.html"), |d| d.join("report.html"))
            });
            std::fs::write(&dest, html)?;
            eprintln!("report written to {}", dest.display());
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Cmd::Plan { scenario } => {
            let sc = Scenario::load(&scenario)?;
            let topo =
                seer_examples::topology::Topology::social_network().with_overrides(&sc.topology)?;
            let schedule = sc.schedule(&topo.names());
            let gradual = schedule
                .iter()
                .filter(|f| f.class == seer_examples::faults::FaultClass::Gradual)
                .count();
            eprintln!(
                "{}: {} faults ({gradual} gradual, {} step), last ends at {:.0} s of {:.0} s; \
                 load-spike culprit: {}",
                sc.name,
                schedule.len(),
                schedule.len() - gradual,
                schedule.last().map_or(0.0, |f| f.end_s()),
                sc.duration_s,
                topo.bottleneck(&sc.load, sc.load.profile.base_rate())
            );
            println!("{}", serde_json::to_string_pretty(&schedule)?);
            Ok(())
        }
        Cmd::Demo {
            scenario,
            mode,
            out,
            collector_bin,
        } => {
            let sc = match scenario {
                Some(p) => Scenario::load(&p)?,
                None => {
                    let mut s: Scenario = toml::from_str(DEMO_SCENARIO)?;
                    s.name = "demo".into();
                    s
                }
            };
            let m = mode.unwrap_or(sc.mode);
            let out = out.unwrap_or_else(|| default_out(&sc.name, m, sc.seed));
            let opts = EvalOptions {
                mode: Some(m),
                seed: Some(sc.seed),
                scenario: sc,
                out_dir: out,
                collector_bin,
                compare_off: false,
                live: true,
                cgroups: true,
                exe: std::env::current_exe()?,
                off_run: None,
            };
            let res = runtime(2)?.block_on(eval::run(opts))?;
            eprintln!("\n==> summary");
            println!("{}", serde_json::to_string_pretty(&res.summary)?);
            for f in &res.faults {
                eprintln!(
                    "  fault {} {} {} on {}: first named {}, culprit after {} ticks, violation {:.1} s",
                    f.id,
                    f.class.as_str(),
                    f.kind,
                    f.service,
                    f.first_named.as_deref().unwrap_or("-"),
                    f.time_to_culprit_ticks
                        .map_or("-".into(), |t| t.to_string()),
                    f.recovery_s
                );
            }
            eprintln!(
                "\nreport written to {}",
                res.dir.join("report.html").display()
            );
            Ok(())
        }
    }
}
