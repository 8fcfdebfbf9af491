//! Restart keeps data; `kill -9` in the middle of writes leaves a store that reopens with
//! every acknowledged span.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use seer_collector::store::Store;

use crate::common::*;

const PB: &str = "application/x-protobuf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let trace = [0x5a; 16];
    {
        let running = seer_collector::Collector::new(config(dir.path()))
            .start()
            .await
            .unwrap();
        let req = request_of("svc", vec![span(trace, 1, 0, 2, "GET /", now_ns(), 1000)]);
        assert_eq!(
            post(running.local_addr(), "/v1/traces", PB, req.encode_to_vec())
                .await
                .status,
            200
        );
        running.shutdown().await.unwrap();
    }
    let running = seer_collector::Collector::new(config(dir.path()))
        .start()
        .await
        .unwrap();
    let r = get(running.local_addr(), &format!("/v1/traces/{}", hex(&trace))).await;
    assert_eq!(r.status, 200);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_seer-collector"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-sampler",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("SEER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The reader stays open until the kill: a closed pipe could fail the child's next line.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Four writers post batches of 200 spans as fast as they can; each records the traces
    // that got a 200.
    let acked: Arc<Mutex<Vec<[u8; 16]>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4u8 {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let mut trace = [w; 16];
                trace[12..].copy_from_slice(&n.to_be_bytes());
                let spans = (1..=200u64)
                    .map(|i| span(trace, i, 0, 2, "GET /", now_ns(), 1000))
                    .collect();
                let body = request_of("kill", spans).encode_to_vec();
                let req = http::Request::post(format!("http://{addr}/v1/traces"))
                    .header("content-type", PB)
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(trace),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the writers get going (more than 10 acknowledged batches, however slow the disk),
    // then kill mid-stream: the four writers keep posting until the kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() <= 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(stdout);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "the writers got going ({} batches)",
        acked.len()
    );
    let store = Store::open(dir.path(), 8 << 20).expect("store reopens after kill -9");
    for t in &acked {
        assert_eq!(
            store.trace(*t).unwrap().len(),
            200,
            "acknowledged trace {} lost",
            hex(t)
        );
    }
    let stats = store.stats().unwrap();
    assert!(stats.spans >= acked.len() as u64 * 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stores_the_ticks_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Nothing closes on its own before the shutdown.
    cfg.watermark_ms = 60_000;
    cfg.early_close = false;
    let running = seer_collector::Collector::new(cfg).start().await.unwrap();
    let tick_ns = 100_000_000;
    let mut h = seer_proto::Histogram::new_latency();
    h.record_ns(5_000_000);
    let batch = seer_proto::WindowBatch {
        version: seer_proto::WIRE_VERSION,
        service: "late".into(),
        pid: 1,
        tick_start_unix_ns: now_ns() / tick_ns * tick_ns,
        tick_ns,
        windows: vec![seer_proto::EndpointWindow {
            endpoint: "GET /".into(),
            arrivals: 3,
            completions: 3,
            latency: h.encode(),
            self_latency: h.encode(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = post(
        running.local_addr(),
        seer_proto::WINDOWS_PATH,
        PB,
        batch.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    running.shutdown().await.unwrap();
    let store = Store::open(dir.path(), 8 << 20).unwrap();
    let w = store.windows("late", 0, u64::MAX, 10).unwrap();
    assert_eq!(w.iter().map(|w| w.arrivals).sum::<u64>(), 3, "{w:?}");
}
