//! `cargo xtask model-eval [--seed N]`: the model's offline quality check.
//!
//! Builds `seer-model-eval` in release and runs it: a seeded queueing simulation of a
//! social-network-like service graph streamed through the model's online training and
//! prediction, and through the reactive baseline, printing both scores as JSON (the metric
//! definitions are in `seer_model::sim`).

use anyhow::Result;

use crate::{cargo, libtorch, run_step};

/// `cargo xtask model-eval [--seed N] [--faults N]`.
pub(crate) fn run(seed: u64, faults: Option<usize>) -> Result<()> {
    let libtorch = libtorch::setup()?;
    let mut cmd = cargo();
    cmd.env("LIBTORCH", &libtorch).args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "seer-model",
        "--bin",
        "seer-model-eval",
        "--",
        "--seed",
        &seed.to_string(),
    ]);
    if let Some(f) = faults {
        cmd.args(["--faults", &f.to_string()]);
    }
    run_step("model-eval", &mut cmd)
}
