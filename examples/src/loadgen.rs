//! The open-loop load generator: Poisson arrivals at a time-varying rate, a request mix, and
//! client-side latency in HDR histograms per tick: the ground truth for QoS.
//!
//! Open loop means arrivals never wait for responses, so an overloaded app sees its queue grow
//! instead of the load politely backing off. Outstanding requests are capped (each has a timeout)
//! to stay within the open-file limit under overload.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::scenario::LoadSpec;

/// Most requests outstanding at once; beyond it an arrival counts as a client-side error.
pub const MAX_OUTSTANDING: usize = 4000;

/// What the client saw in one tick (by completion time).
#[derive(Clone, Debug)]
pub struct TickStats {
    /// Requests sent in the tick.
    pub sent: u64,
    /// 2xx responses.
    pub ok: u64,
    /// 503 responses (shed somewhere on the path).
    pub shed: u64,
    /// Other failures (5xx, connection errors).
    pub errors: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Latency of ok and timed-out requests, microseconds.
    pub hist: Histogram<u64>,
}

impl TickStats {
    fn new() -> Self {
        Self {
            sent: 0,
            ok: 0,
            shed: 0,
            errors: 0,
            timeouts: 0,
            hist: new_hist(),
        }
    }
}

/// A latency histogram in microseconds, 1 us to 60 s, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("invariant: valid histogram bounds")
}

/// The per-tick record of a load run, shared with the live display.
#[derive(Debug)]
pub struct LoadStats {
    /// Tick length.
    pub tick: Duration,
    /// When tick 0 starts.
    pub origin: Instant,
    ticks: Mutex<Vec<TickStats>>,
    /// Current rate multiplier (f64 bits), set by the load-spike fault.
    pub multiplier: AtomicU64,
    /// Requests outstanding right now.
    pub outstanding: AtomicUsize,
}

impl LoadStats {
    /// An empty record starting now.
    pub fn new(tick: Duration, origin: Instant) -> Self {
        Self {
            tick,
            origin,
            ticks: Mutex::new(Vec::new()),
            multiplier: AtomicU64::new(1.0f64.to_bits()),
            outstanding: AtomicUsize::new(0),
        }
    }

    /// The current tick index.
    pub fn tick_now(&self) -> usize {
        (self.origin.elapsed().as_nanos() / self.tick.as_nanos().max(1)) as usize
    }

    fn with_tick(&self, idx: usize, f: impl FnOnce(&mut TickStats)) {
        if let Ok(mut t) = self.ticks.lock() {
            while t.len() <= idx {
                t.push(TickStats::new());
            }
            f(&mut t[idx]);
        }
    }

    /// A copy of the ticks so far.
    pub fn snapshot(&self) -> Vec<TickStats> {
        self.ticks.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Sets the load-spike multiplier.
    pub fn set_multiplier(&self, m: f64) {
        self.multiplier.store(m.to_bits(), Ordering::Relaxed);
    }

    fn multiplier(&self) -> f64 {
        f64::from_bits(self.multiplier.load(Ordering::Relaxed))
    }
}

/// Outcome of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// 503.
    Shed,
    /// Another failure.
    Error,
    /// No answer within the timeout.
    Timeout,
}

/// Runs the load for `duration` (from `stats.origin`), then waits for outstanding requests.
pub async fn run(
    frontend: SocketAddr,
    spec: LoadSpec,
    seed: u64,
    stats: Arc<LoadStats>,
    duration: Duration,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .pool_idle_timeout(Duration::from_secs(5))
        .build(connector);
    let mut rng = StdRng::seed_from_u64(seed);
    let total_w: f64 = spec
        .mix
        .iter()
        .map(|m| m.weight.max(0.0))
        .sum::<f64>()
        .max(1e-9);
    let timeout = Duration::from_millis(spec.timeout_ms.max(1));
    let mut next = stats.origin;
    let end = stats.origin + duration;
    loop {
        let t = next.saturating_duration_since(stats.origin).as_secs_f64();
        let rate = spec.profile.rate_at(t) * stats.multiplier();
        if rate <= 0.0 {
            next += Duration::from_millis(10);
        } else {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            next += Duration::from_secs_f64(-u.ln() / rate);
        }
        if next >= end {
            break;
        }
        // Draw the op before sleeping so the sequence depends only on the seed.
        let mut pick = rng.random_range(0.0..total_w);
        let mut op = spec.mix[0].op.as_str();
        for m in &spec.mix {
            if pick < m.weight.max(0.0) {
                op = m.op.as_str();
                break;
            }
            pick -= m.weight.max(0.0);
        }
        if rate <= 0.0 {
            tokio::time::sleep_until(next.into()).await;
            continue;
        }
        tokio::time::sleep_until(next.into()).await;
        let sent_tick = stats.tick_now();
        stats.with_tick(sent_tick, |s| s.sent += 1);
        if stats.outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
            stats.with_tick(sent_tick, |s| s.errors += 1);
            continue;
        }
        stats.outstanding.fetch_add(1, Ordering::Relaxed);
        let uri = format!("http://{frontend}/{op}");
        let client = client.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = one_request(&client, uri, timeout).await;
            let us = started.elapsed().as_micros() as u64;
            let idx = stats.tick_now();
            stats.with_tick(idx, |s| match outcome {
                Outcome::Ok => {
                    s.ok += 1;
                    let _ = s.hist.record(us.max(1));
                }
                Outcome::Shed => s.shed += 1,
                Outcome::Error => s.errors += 1,
                Outcome::Timeout => {
                    s.timeouts += 1;
                    let _ = s.hist.record(us.max(1));
                }
            });
            stats.outstanding.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Let the last requests finish (bounded by their timeout).
    let wait_until = Instant::now() + timeout + Duration::from_millis(200);
    while stats.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn one_request(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: String,
    timeout: Duration,
) -> Outcome {
    let Ok(req) = Request::post(uri).body(Full::new(Bytes::new())) else {
        return Outcome::Error;
    };
    match tokio::time::timeout(timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    })
    .await
    {
        Ok(Ok(s)) if s.is_success() => Outcome::Ok,
        Ok(Ok(StatusCode::SERVICE_UNAVAILABLE)) => Outcome::Shed,
        Ok(_) => Outcome::Error,
        Err(_) => Outcome::Timeout,
    }
}

/// The windowed percentile at each tick, milliseconds (`None` with fewer than `min` samples).
pub fn windowed_percentile(
    ticks: &[TickStats],
    window_ticks: usize,
    q: f64,
    min: u64,
) -> Vec<Option<f64>> {
    let w = window_ticks.max(1);
    let mut out = Vec::with_capacity(ticks.len());
    let mut acc = new_hist();
    for i in 0..ticks.len() {
        acc.reset();
        for t in &ticks[i.saturating_sub(w - 1)..=i] {
            let _ = acc.add(&t.hist);
        }
        if acc.len() < min {
            out.push(None);
        } else {
            out.push(Some(acc.value_at_quantile(q / 100.0) as f64 / 1000.0));
        }
    }
    out
}
