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
    python_venv()?;
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
        "rustdoc (broken links and markup are errors)",
        cargo()
            .env("LIBTORCH", &libtorch)
            .env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "--workspace", "--all-features", "--no-deps"]),
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

/// Python packages of the real-client test in seer-collector (OpenTelemetry's Python SDK and
/// its OTLP/HTTP protobuf exporter), pinned.
const PYTHON_PACKAGES: &[&str] = &[
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
];

/// Creates the git-ignored `.venv` with [`PYTHON_PACKAGES`] (idempotent: a second run only
/// checks the imports).
pub(crate) fn python_venv() -> Result<()> {
    let root = crate::root();
    let python = root.join(".venv").join("bin").join("python");
    let ready = |python: &std::path::Path| {
        std::process::Command::new(python)
            .args([
                "-c",
                "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && ready(&python) {
        eprintln!("\n==> python venv (.venv): ready");
        return Ok(());
    }
    if !python.exists() {
        run_step(
            "python venv (.venv)",
            std::process::Command::new("python3")
                .current_dir(&root)
                .args(["-m", "venv", ".venv"]),
        )?;
    }
    run_step(
        "python packages for the OTel real-client test",
        std::process::Command::new(&python)
            .current_dir(&root)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_PACKAGES),
    )
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
