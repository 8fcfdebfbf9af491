//! The test gate: what CI runs and what a developer runs before pushing.

use anyhow::{Result, bail};

use crate::{cargo, libtorch, run_step};

/// Crates that services link; they must never reach libtorch.
const FENCED: &[&str] = &["seer-proto", "seer-sdk", "seer-tower"];
const FORBIDDEN: &[&str] = &["tch", "torch-sys", "seer-model", "seer-collector"];

/// `cargo xtask test`.
pub(crate) fn run() -> Result<()> {
    let started = std::time::Instant::now();
    let libtorch = libtorch::setup()?;
    run_step("rustfmt", cargo().args(["fmt", "--all", "--check"]))?;
    deps_guard()?;
    run_step(
        "clippy",
        cargo()
            .env("LIBTORCH", &libtorch)
            .args(["clippy", "--workspace", "--all-targets", "--all-features"])
            .args(["--", "-D", "warnings"]),
    )?;
    run_step(
        "tests (unit, integration, doctests)",
        cargo().env("LIBTORCH", &libtorch).args([
            "test",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]),
    )?;
    eprintln!(
        "\nxtask test: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask deps-guard`: services must not pull libtorch under any feature set.
pub(crate) fn deps_guard() -> Result<()> {
    eprintln!("\n==> dependency fence ({})", FENCED.join(", "));
    for krate in FENCED {
        let out = cargo()
            .args(["tree", "-p", krate, "-e", "normal,build", "--all-features"])
            .args(["--prefix", "none"])
            .output()?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let offenders: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| FORBIDDEN.contains(name))
            .collect();
        if !offenders.is_empty() {
            bail!(
                "{krate} reaches {} with --all-features: services must never pull libtorch",
                offenders.join(", ")
            );
        }
        eprintln!("    {krate}: clean");
    }
    Ok(())
}
