//! Window stats stay exact when many threads record (each into its own accumulator) and exit.
#![cfg(feature = "testing")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use seer_sdk::testing::InMemoryExporter;
use seer_sdk::{Builder, DEFAULT_PRIORITY, clock};

#[test]
fn every_request_of_every_thread_is_counted_once() {
    const THREADS: u64 = 4;
    const PER: u64 = 20_000;
    let exporter = InMemoryExporter::new();
    let (recorder, worker) = Builder::new("svc")
        .with_sample_ratio(0.1)
        .with_tick(Duration::from_millis(5))
        .build_with(exporter.clone());
    let handle = worker.spawn().unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let ep = recorder.endpoint("GET", if t % 2 == 0 { "/even" } else { "/odd" });
                for i in 0..PER {
                    let s = recorder
                        .begin_server(ep, None, clock::now(), Duration::ZERO, DEFAULT_PRIORITY)
                        .unwrap();
                    s.finish(if i % 100 == 0 { 500 } else { 200 }, i % 100 == 0);
                    if i % 5000 == 0 {
                        std::thread::sleep(Duration::from_millis(7)); // cross tick edges
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    handle.shutdown(Duration::from_secs(5)).unwrap();
    let windows: Vec<_> = exporter
        .windows()
        .into_iter()
        .flat_map(|b| b.windows)
        .collect();
    let sum = |f: fn(&seer_proto::EndpointWindow) -> u64| windows.iter().map(f).sum::<u64>();
    let c = recorder.counters();
    // Nothing was dropped at this rate, so every request is in the windows exactly once.
    assert_eq!(c.dropped(), 0, "{c:?}");
    assert_eq!(sum(|w| w.completions), THREADS * PER, "{c:?}");
    assert_eq!(sum(|w| w.arrivals), THREADS * PER);
    assert_eq!(sum(|w| w.errors), THREADS * PER / 100);
    assert_eq!(c.recorded, THREADS * PER);
    // Errors are always exported; the rest at about the sample ratio.
    let spans = exporter.spans();
    assert_eq!(
        spans.iter().filter(|s| s.is_error()).count() as u64,
        THREADS * PER / 100
    );
    assert_eq!(
        c.exported + c.unsampled,
        c.recorded,
        "{c:?} spans {}",
        spans.len()
    );
}
