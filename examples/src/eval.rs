//! `eval`: run a scenario in a mode and in `off` (same seed and schedule), then summarise and
//! write the report. `demo` is one run with the live view.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::harness::{self, RunOptions, RunRecord};
use crate::metrics::{self, FaultEval, Summary};
use crate::report;
use crate::scenario::{Mode, Scenario};

/// What an evaluation produced.
#[derive(Debug)]
pub struct EvalOutput {
    /// The summary (what `cargo xtask eval` prints).
    pub summary: Summary,
    /// Per-fault details.
    pub faults: Vec<FaultEval>,
    /// The controlled run.
    pub run: RunRecord,
    /// The `off` run, when one was made.
    pub off: Option<RunRecord>,
    /// The folder holding `summary.json`, `report.html` and the runs.
    pub dir: PathBuf,
}

/// Settings of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// The mode (the scenario's when `None`).
    pub mode: Option<Mode>,
    /// The seed (the scenario's when `None`).
    pub seed: Option<u64>,
    /// Output folder.
    pub out_dir: PathBuf,
    /// The collector binary.
    pub collector_bin: Option<PathBuf>,
    /// Also run `off` to compute avoided fractions (always skipped when the mode is `off`).
    pub compare_off: bool,
    /// Live view on stderr.
    pub live: bool,
    /// Use cgroups when available.
    pub cgroups: bool,
    /// The `social-network` binary.
    pub exe: PathBuf,
    /// An earlier `off` run's `run.json` to use as the reference instead of running `off`.
    pub off_run: Option<PathBuf>,
}

/// Runs the evaluation and writes `summary.json`, `faults.json` and `report.html` to
/// `out_dir`.
///
/// # Errors
/// Only when the harness itself fails (the app cannot start, files cannot be written).
pub async fn run(o: EvalOptions) -> Result<EvalOutput> {
    let mode = o.mode.unwrap_or(o.scenario.mode);
    let seed = o.seed.unwrap_or(o.scenario.seed);
    fs::create_dir_all(&o.out_dir)?;
    let base = |m: Mode, dir: &Path| RunOptions {
        scenario: o.scenario.clone(),
        mode: m,
        seed,
        out_dir: dir.to_path_buf(),
        collector_bin: o.collector_bin.clone(),
        live: o.live,
        cgroups: o.cgroups,
        exe: o.exe.clone(),
    };
    let reused = match (&o.off_run, mode) {
        (Some(p), m) if m != Mode::Off => {
            let r: RunRecord = serde_json::from_slice(
                &fs::read(p).with_context(|| format!("read {}", p.display()))?,
            )
            .with_context(|| format!("{} is not a run record", p.display()))?;
            if r.seed != seed || r.scenario != o.scenario.name || r.mode != Mode::Off {
                bail!(
                    "{} is not an off run of {} with seed {seed}",
                    p.display(),
                    o.scenario.name
                );
            }
            Some(r)
        }
        _ => None,
    };
    let off = if reused.is_some() {
        reused
    } else if mode != Mode::Off && o.compare_off {
        eprintln!(
            "eval: {} in mode off (reference), seed {seed}",
            o.scenario.name
        );
        Some(harness::run(base(Mode::Off, &o.out_dir.join("off"))).await?)
    } else {
        None
    };
    eprintln!("eval: {} in mode {mode}, seed {seed}", o.scenario.name);
    let run = harness::run(base(mode, &o.out_dir.join(mode.as_str()))).await?;
    let (summary, faults) =
        metrics::summarize(&run, off.as_ref(), o.scenario.qos.merge_gap_ticks as usize);
    fs::write(
        o.out_dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    fs::write(
        o.out_dir.join("faults.json"),
        serde_json::to_vec_pretty(&faults)?,
    )?;
    fs::write(
        o.out_dir.join("report.html"),
        report::html(&run, off.as_ref(), &summary, &faults),
    )?;
    Ok(EvalOutput {
        summary,
        faults,
        run,
        off,
        dir: o.out_dir,
    })
}
