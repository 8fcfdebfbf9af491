//! `cargo xtask demo` and `cargo xtask eval`: provision libtorch, build the collector and the
//! social-network harness in release mode, then run the harness (`seer-examples`'
//! `social-network` binary), which starts the collector, the app, the load and the faults.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, display, libtorch, root, run_step};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root().join(p) })
        .unwrap_or_else(|| root().join("target"))
}

fn stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Provisions libtorch and builds the two release binaries; returns (harness, collector).
fn build() -> Result<(PathBuf, PathBuf)> {
    let libtorch = libtorch::setup()?;
    run_step(
        "build the collector and the social-network harness (release)",
        cargo().env("LIBTORCH", &libtorch).args([
            "build",
            "--release",
            "-p",
            "seer-collector",
            "-p",
            "seer-examples",
            "--bin",
            "seer-collector",
            "--bin",
            "social-network",
        ]),
    )?;
    let dir = target_dir().join("release");
    let harness = dir.join("social-network");
    let collector = dir.join("seer-collector");
    for b in [&harness, &collector] {
        if !b.exists() {
            bail!("{} was not built", b.display());
        }
    }
    Ok((harness, collector))
}

fn run_harness(cmd: &mut Command) -> Result<()> {
    eprintln!("\n==> {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("the harness failed ({status})");
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    p.canonicalize()
        .with_context(|| format!("scenario {} not found", p.display()))
}

/// `cargo xtask demo`.
pub(crate) fn demo(scenario: Option<PathBuf>, mode: Option<String>) -> Result<()> {
    let (harness, collector) = build()?;
    let out = target_dir().join("seer-demo").join(stamp().to_string());
    let mut cmd = Command::new(harness);
    cmd.current_dir(root())
        .arg("demo")
        .arg("--collector-bin")
        .arg(&collector)
        .arg("--out")
        .arg(&out);
    if let Some(s) = scenario {
        cmd.arg("--scenario").arg(absolute(&s)?);
    }
    if let Some(m) = mode {
        cmd.args(["--mode", &m]);
    }
    run_harness(&mut cmd)?;
    eprintln!(
        "\nxtask demo: report in {}",
        out.join("report.html").display()
    );
    Ok(())
}

/// `cargo xtask eval SCENARIO [--mode M] [--seed N]`.
pub(crate) fn eval(
    scenario: &Path,
    mode: Option<String>,
    seed: Option<u64>,
    out: Option<PathBuf>,
    off_run: Option<PathBuf>,
) -> Result<()> {
    let scenario = absolute(scenario)?;
    let (harness, collector) = build()?;
    let name = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    let out = match out {
        Some(o) if o.is_absolute() => o,
        Some(o) => std::env::current_dir()?.join(o),
        None => target_dir().join("seer-eval").join(format!(
            "{name}-{}-{}-{}",
            mode.as_deref().unwrap_or("default"),
            seed.map_or("default".to_string(), |s| s.to_string()),
            stamp()
        )),
    };
    let mut cmd = Command::new(harness);
    cmd.current_dir(root())
        .arg("eval")
        .arg(&scenario)
        .arg("--collector-bin")
        .arg(&collector)
        .arg("--out")
        .arg(&out);
    if let Some(m) = mode {
        cmd.args(["--mode", &m]);
    }
    if let Some(s) = seed {
        cmd.args(["--seed", &s.to_string()]);
    }
    if let Some(o) = off_run {
        cmd.arg("--off-run").arg(absolute(&o)?);
    }
    run_harness(&mut cmd)
}
