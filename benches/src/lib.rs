//! Benchmark support: where each bench writes its figures.
//!
//! Every bench measures against a baseline in the same process and the same run, and writes
//! its figures (medians, ratios) with [`report`]. `cargo xtask bench` merges the parts into
//! `target/seer-bench/summary.json`.

use std::path::PathBuf;

/// Writes `figures` (a JSON object whose top-level keys are the bench's namespace, e.g.
/// `{"layer_overhead": {...}}`) to `<SEER_BENCH_OUT or target/seer-bench/parts>/<bench>.json`
/// and prints it.
///
/// # Errors
///
/// Any I/O error writing the file.
pub fn report(bench: &str, figures: &serde_json::Value) -> std::io::Result<PathBuf> {
    let dir = std::env::var_os("SEER_BENCH_OUT").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("seer-bench")
                .join("parts")
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{bench}.json"));
    let text = serde_json::to_string_pretty(figures).map_err(std::io::Error::other)?;
    // Whole or not at all: a bench killed mid-write leaves the previous part, never half a file.
    let tmp = dir.join(format!(".{bench}.json.tmp"));
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, &path)?;
    println!("{text}");
    Ok(path)
}

/// The median of `samples` (sorted in place); `NaN` when empty.
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len().is_multiple_of(2) {
        (samples[mid - 1] + samples[mid]) / 2.0
    } else {
        samples[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
