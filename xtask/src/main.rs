//! `cargo xtask`: project automation.
//!
//! Run `cargo xtask` with no argument for the list of commands.

mod bench;
mod demo;
mod libtorch;
mod model_eval;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Seer's project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", arg_required_else_help = true, version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Provision CPU-only libtorch 2.13.0 for tch into third_party/libtorch (idempotent).
    ///
    /// A LIBTORCH set in the environment (e.g. a CUDA build for GPU training) is used as is.
    Setup,
    /// The test gate CI runs: setup, fmt, clippy, rustdoc, the dependency fence, every test and
    /// doctest.
    Test,
    /// Run the benchmarks and write target/seer-bench/summary.json.
    Bench {
        /// Only run benches whose name contains this string.
        #[arg(long)]
        only: Option<String>,
    },
    /// Check the dependency fence: seer-sdk and seer-tower never reach tch or torch-sys.
    DepsGuard,
    /// The live demo: collector, the social-network app, load and faults for about 2.5 minutes;
    /// ends with the summary and an HTML report.
    Demo {
        /// A scenario file instead of the bundled demo scenario.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Control mode (the scenario's by default, seer-both for the demo).
        #[arg(long)]
        mode: Option<String>,
    },
    /// Run one scenario in a mode (and in `off`, for avoided fractions) and print the JSON summary.
    Eval {
        /// Scenario file (TOML), from any path.
        scenario: PathBuf,
        /// off, seer-throttle, seer-actuate, seer-both, static-limit, aimd or gradient.
        #[arg(long)]
        mode: Option<String>,
        /// Seed (the scenario's by default).
        #[arg(long)]
        seed: Option<u64>,
        /// Output folder (default: target/seer-eval/SCENARIO-MODE-SEED-TIME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Reuse an earlier `off` run (the `run.json` in its `off` folder) of the
        /// same scenario and seed instead of running `off` again.
        #[arg(long)]
        off_run: Option<PathBuf>,
    },
    /// The model's offline quality check: a seeded simulation streamed through online training
    /// and prediction, scored against the reactive baseline; prints JSON.
    ModelEval {
        /// Seed of the simulation and the model.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Faults per class (default 40).
        #[arg(long)]
        faults: Option<usize>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => libtorch::setup().map(|_| ()),
        Cmd::Test => test::run(),
        Cmd::Bench { only } => bench::run(only.as_deref()),
        Cmd::DepsGuard => test::deps_guard(),
        Cmd::Demo { scenario, mode } => demo::demo(scenario, mode),
        Cmd::Eval {
            scenario,
            mode,
            seed,
            out,
            off_run,
        } => demo::eval(&scenario, mode, seed, out, off_run),
        Cmd::ModelEval { seed, faults } => model_eval::run(seed, faults),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

/// The workspace root (the parent of this crate's folder).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo that runs us.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

/// Runs a command, echoing it and its wall time; fails with `what` on a non-zero exit.
pub(crate) fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    let started = Instant::now();
    eprintln!("\n==> {what}");
    eprintln!("    $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{what} failed ({status}) after {secs:.1}s");
    }
    eprintln!("    ok in {secs:.1}s");
    Ok(())
}

pub(crate) fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
