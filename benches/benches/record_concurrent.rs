// record_concurrent: the recording hot path under contention, and drops under a steady load.
//
// Latest results, `cargo bench -p seer-benches --bench record_concurrent`, on a
//   2-vCPU AMD EPYC VM (KVM, TSC clocksource) shared with two other builds: load average 6-9 during
//   these runs, so absolute ns are 2-4x a quiet machine's; rustc 1.95, release + line tables:
//   Before per-thread window stats: record.spans_per_sec 6.5M-10.5M, but 60-95% of those
//   records were dropped at full speed (full rings), and drop_fraction at 1M/s was 0.0-0.049.
//   After (load 10-11): record.spans_per_sec 3.96M with 0.08% dropped at full speed (every
//   request fully counted); record.drop_fraction 0.0 at 1M spans/s offered, 299,108 of
//   3,000,000 spans exported (sample 0.1). Target >= 10M spans/s NOT met on this loaded VM.
//   After unsampled requests stopped building records (window stats only, per thread) and the
//   shared service-wide in-flight counter left the hot path (it was the one line both recording
//   threads wrote): load 4.5: record.spans_per_sec 10.69M (0.57% dropped at full speed),
//   drop_fraction 0.0 at 1M/s (299,505 exported). At load 13: 4.00M, drop_fraction 0.022 (the
//   export queue, i.e. the I/O thread starved of CPU, not the rings).
//
// 1. `record.spans_per_sec`: 2 threads record server spans (begin + finish, sample ratio 0.1)
//    as fast as they can for a fixed time, while the export worker drains, cuts windows, encodes
//    OTLP and posts to a real HTTP server on loopback. Total spans per second over both threads.
//    Records the worker could not keep up with are dropped (counted), never waited for.
// 2. `record.drop_fraction`: the same pipeline with 1M spans/s offered (2 threads x 500k/s,
//    paced in 1 ms slots); dropped / recorded.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "support/sink.rs"]
mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use seer_sdk::{Builder, DEFAULT_PRIORITY, clock};

const FULL_SPEED_SECS: f64 = 2.0;
const PACED_SECS: f64 = 3.0;
const THREADS: usize = 2;

fn pipeline(sink_url: &str) -> (seer_sdk::Recorder, seer_sdk::ExportHandle) {
    Builder::new("bench")
        .with_endpoint(sink_url)
        .with_sample_ratio(0.1)
        .install()
        .unwrap()
}

/// Records `per_sec` spans per second per thread (0: as fast as possible) for `secs`.
fn run(recorder: seer_sdk::Recorder, per_sec: u64, secs: f64) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let ep = recorder.endpoint("GET", if t == 0 { "/a" } else { "/b" });
                let mut n = 0u64;
                let start = Instant::now();
                let slot = Duration::from_millis(1);
                let per_slot = per_sec / 1000;
                while !stop.load(Ordering::Relaxed) {
                    let batch = if per_sec == 0 { 256 } else { per_slot };
                    for _ in 0..batch {
                        let span = recorder
                            .begin_server(ep, None, clock::now(), Duration::ZERO, DEFAULT_PRIORITY)
                            .unwrap();
                        span.finish(200, false);
                    }
                    n += batch;
                    if per_sec > 0 {
                        // Sleep to the start of the next slot.
                        let due = slot * u32::try_from(n / per_slot).unwrap();
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("record_concurrent: bench");
        return;
    }
    let sink = sink::start();

    // 1. Full speed.
    let (recorder, handle) = pipeline(&sink.url);
    let t = Instant::now();
    let n = run(recorder, 0, FULL_SPEED_SECS);
    let spans_per_sec = n as f64 / t.elapsed().as_secs_f64();
    handle.shutdown(Duration::from_secs(2)).ok();
    let full = recorder.counters();

    // 2. 1M spans/s offered.
    let (recorder, handle) = pipeline(&sink.url);
    let t = Instant::now();
    let offered = run(recorder, 500_000, PACED_SECS);
    let offered_rate = offered as f64 / t.elapsed().as_secs_f64();
    handle.shutdown(Duration::from_secs(3)).ok();
    let paced = recorder.counters();
    let drop_fraction = paced.dropped() as f64 / paced.recorded.max(1) as f64;

    let figures = serde_json::json!({
        "record": {
            "spans_per_sec": spans_per_sec,
            "threads": THREADS,
            "full_speed_dropped_buffer_full": full.dropped_buffer_full,
            "full_speed_recorded": full.recorded,
            "drop_fraction": drop_fraction,
            "paced_offered_per_sec": offered_rate,
            "paced_recorded": paced.recorded,
            "paced_exported": paced.exported,
            "paced_unsampled": paced.unsampled,
            "paced_dropped": paced.dropped(),
            "paced_windows_sent": paced.windows_sent,
            "sink_requests": sink.requests.load(Ordering::Relaxed),
            "sink_bytes": sink.bytes.load(Ordering::Relaxed),
        }
    });
    seer_benches::report("record_concurrent", &figures).unwrap();
}
