//! `cargo xtask bench`: runs every bench and merges their JSON into one summary.
//!
//! Each bench binary writes its own figures as a JSON object to
//! `target/seer-bench/parts/<bench>.json` (see `seer_benches::report`); this command runs them
//! and merges the parts into `target/seer-bench/summary.json`. A full run starts from an empty
//! parts folder; `--only NAME` re-runs one bench and keeps the other benches' last figures.

use std::fs;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use crate::{cargo, libtorch, root, run_step};

/// `cargo xtask bench [--only NAME]`.
pub(crate) fn run(only: Option<&str>) -> Result<()> {
    let libtorch = libtorch::setup()?;
    let out = root().join("target").join("seer-bench");
    let parts = out.join("parts");
    // A full run starts from no parts, so a bench renamed or removed since the last run cannot
    // leave its old figures in the summary; `--only` replaces its own part and keeps the rest.
    if only.is_none() && parts.exists() {
        fs::remove_dir_all(&parts).with_context(|| format!("clearing {}", parts.display()))?;
    }
    fs::create_dir_all(&parts)?;
    let mut cmd = cargo();
    cmd.env("LIBTORCH", &libtorch)
        .env("SEER_BENCH_OUT", &parts)
        .args(["bench", "--workspace"]);
    if let Some(name) = only {
        cmd.args(["--bench", name]);
    }
    run_step("benches", &mut cmd)?;

    let mut summary = Map::new();
    let mut names: Vec<_> = fs::read_dir(&parts)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    for path in names {
        let text = fs::read_to_string(&path)?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Value::Object(map) = value {
            summary.extend(map);
        }
    }
    let file = out.join("summary.json");
    let text = serde_json::to_string_pretty(&Value::Object(summary))?;
    let tmp = out.join(".summary.json.tmp");
    fs::write(&tmp, &text)?;
    fs::rename(&tmp, &file)?;
    println!("{text}");
    eprintln!("wrote {}", file.display());
    Ok(())
}
