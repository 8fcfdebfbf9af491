//! `seer-model-eval`: the offline quality check behind `cargo xtask model-eval`.
//!
//! Streams a seeded queueing simulation through the model's online training and prediction and
//! through the reactive baseline, and prints both scores as JSON (see `seer_model::sim`).
//!
//! Usage: `seer-model-eval [--seed N] [--faults N] [--describe]`. `--describe` prints statistics
//! of the simulated data instead of training.

use std::process::ExitCode;

use seer_model::sim::{self, EvalConfig, FEATURES, World};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn describe(cfg: &EvalConfig) -> serde_json::Value {
    let mut world = World::new(cfg.world);
    let services = world.services();
    let faults = world.faults().to_vec();
    let n = services.len();
    let width = FEATURES.len();
    let mut sum = vec![0.0f64; n];
    let mut sq = vec![0.0f64; n];
    let mut healthy = 0u64;
    let mut violation = Vec::new();
    let mut outside = 0u64;
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for _ in 0..world.len() {
        let t = world.step();
        if t.fault.is_none() && !t.violation {
            healthy += 1;
            p50.push(t.p50_ms);
            p99.push(t.p99_ms);
            for i in 0..n {
                let q = f64::from(t.features[i * width + 3]);
                sum[i] += q;
                sq[i] += q * q;
            }
        }
        if t.violation
            && !faults
                .iter()
                .any(|f| f.start <= t.tick && t.tick < f.end + 100)
        {
            outside += 1;
        }
        violation.push(t.violation);
    }
    let eps = sim::episodes(&violation);
    let with_episode = faults
        .iter()
        .filter(|f| eps.iter().any(|(s, _)| *s >= f.start && *s < f.end + 50))
        .count();
    let gradual_delay: Vec<u64> = faults
        .iter()
        .filter(|f| f.class == sim::FaultClass::Gradual)
        .filter_map(|f| {
            eps.iter()
                .find(|(s, _)| *s >= f.start && *s < f.end + 50)
                .map(|(s, _)| s - f.start)
        })
        .collect();
    let quiet_episodes = eps
        .iter()
        .filter(|(s, _)| !faults.iter().any(|f| f.start <= *s && *s < f.end + 100))
        .count();
    let queues: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let m = sum[i] / healthy.max(1) as f64;
            let sd = (sq[i] / healthy.max(1) as f64 - m * m).max(0.0).sqrt();
            serde_json::json!({"service": services[i], "healthy_queue_mean": m, "healthy_queue_sd": sd})
        })
        .collect();
    serde_json::json!({
        "ticks": world.len(),
        "faults": faults.len(),
        "faults_with_episode": with_episode,
        "episodes": eps.len(),
        "healthy_e2e_p50_ms_median": median(&mut p50),
        "healthy_e2e_p99_ms_median": median(&mut p99),
        "episodes_away_from_faults": quiet_episodes,
        "violation_ticks": violation.iter().filter(|v| **v).count(),
        "violation_ticks_away_from_faults": outside,
        "gradual_ticks_to_episode": gradual_delay,
        "queues": queues,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Result<EvalConfig, String> {
        let seed = arg::<u64>(&args, "--seed")?.unwrap_or(1);
        let mut cfg = EvalConfig::new(seed);
        if let Some(f) = arg::<usize>(&args, "--faults")? {
            cfg.world.faults_per_class = f;
        }
        Ok(cfg)
    })();
    let cfg = match parsed {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("seer-model-eval: {msg}");
            return ExitCode::FAILURE;
        }
    };
    if args.iter().any(|a| a == "--speed") {
        let mut out = serde_json::Map::new();
        for (name, s, w, b) in [("bench", 64, 30, 1), ("eval", 13, 64, 8)] {
            match sim::speed(s, w, b, 200) {
                Ok(speed) => {
                    out.insert(name.to_owned(), serde_json::json!(speed));
                }
                Err(err) => {
                    eprintln!("seer-model-eval: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("{}", serde_json::Value::Object(out));
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--describe") {
        println!(
            "{}",
            serde_json::to_string_pretty(&describe(&cfg)).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    match sim::evaluate(&cfg) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("seer-model-eval: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
