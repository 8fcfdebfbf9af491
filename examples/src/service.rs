//! One service of the social-network app, run as its own process.
//!
//! A request to `POST /<op>`:
//! 1. passes the service's reactive limiter, when its control mode has one (else a 503);
//! 2. waits for one of the service's worker permits (its own queue);
//! 3. burns `work_ms` of thread CPU time holding the permit (plus the slow-dependency and lock
//!    faults, when injected: a slow dependency is a backend call, such as a database query,
//!    made while holding the permit and traced as a client call to `backend`, as an
//!    instrumented database client would);
//! 4. releases the permit and makes the operation's downstream calls, stage by stage, the calls of
//!    a stage in parallel;
//! 5. answers 200, or 503 when a callee shed it, or 502 when a callee failed or timed out.
//!
//! Fault knobs live on a separate admin listener (`POST /fault?slow_us=..&lock=..&hog=..`) so that
//! they are not part of the measured traffic. The same listener serves `GET /state` and the
//! actuator's worker knob, `POST /workers?extra=N` (N workers on top of the service's pool).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use seer_proto::AdviceReply;
use seer_sdk::{
    Counters, EndpointId, ExportBatch, Exporter, HttpExporter, LimiterConfig, LimiterKind,
    LimiterMode, Recorder, Shed,
};
use seer_tower::{SeerClient, SeerClientLayer, SeerLayer};
use tower::{Layer, ServiceExt};

use crate::cpu::burn_cpu_ns;
use crate::scenario::{ControlSpec, Mode};
use crate::topology::{ServiceSpec, Topology};

/// Everything a service process needs, passed by the harness as a JSON file.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServiceConfig {
    /// This service's name.
    pub name: String,
    /// The app, with every service's addresses.
    pub topology: Topology,
    /// The control mode.
    pub mode: Mode,
    /// Settings of the control modes.
    pub control: ControlSpec,
    /// Collector base URL (`http://127.0.0.1:port`), when one runs.
    pub collector: Option<String>,
    /// The cgroup this process runs in, relative to the cpu hierarchy, when known.
    pub cgroup: Option<String>,
    /// Tick, milliseconds.
    pub tick_ms: u64,
    /// Timeout of a downstream call, milliseconds.
    pub call_timeout_ms: u64,
    /// The end-to-end QoS target, milliseconds (slower spans are always exported).
    pub qos_ms: f64,
    /// The process exits by itself after this many seconds.
    pub deadline_s: f64,
}

/// The fault knobs of one service, set through its admin listener.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Extra time per request spent on a slow backend while holding the worker, microseconds.
    pub slow_us: AtomicU64,
    /// Fraction (in thousandths) of time a background thread holds the service's lock.
    pub lock_milli: AtomicU64,
    /// In-process CPU hog demand (thousandths of a core): the fallback without cgroups.
    pub hog_milli: AtomicU64,
}

type HttpClient = SeerClient<Client<HttpConnector, Full<Bytes>>>;

struct Svc {
    spec: ServiceSpec,
    addrs: BTreeMap<String, SocketAddr>,
    client: HttpClient,
    pool: Arc<Workers>,
    knobs: Arc<Knobs>,
    lock: Arc<Mutex<()>>,
    call_timeout: Duration,
    recorder: Recorder,
    /// The client span name of the slow-dependency fault's backend call.
    backend: EndpointId,
}

/// What a service saw of Seer's advice and its own shedding, served on `GET /state` of its
/// admin listener.
#[derive(Debug, Default)]
pub struct AdviceSeen {
    /// Advice replies received from the collector.
    pub replies: AtomicU64,
    /// Replies that asked for shedding (admit fraction below 1 or an in-flight cap).
    pub shedding_replies: AtomicU64,
    /// Replies naming this service the culprit.
    pub culprit_replies: AtomicU64,
    /// Requests this service shed (advice, in-flight cap or local limiter).
    pub shed: AtomicU64,
}

/// The exporter every service uses: the SDK's HTTP exporter, with the advice that comes back
/// either passed on (modes that shed on Seer's advice) or reduced to its risk and culprit with
/// admit-all (every other mode, so that Seer measures and predicts but does not act).
#[derive(Debug)]
pub struct ModeExporter {
    inner: HttpExporter,
    obey: bool,
    seen: Arc<AdviceSeen>,
}

impl ModeExporter {
    fn filter(&self, reply: Option<AdviceReply>) -> Option<AdviceReply> {
        let mut r = reply?;
        self.seen.replies.fetch_add(1, Ordering::Relaxed);
        if r.admit_fraction < 1.0 || r.max_in_flight.is_some() {
            self.seen.shedding_replies.fetch_add(1, Ordering::Relaxed);
        }
        if r.culprit {
            self.seen.culprit_replies.fetch_add(1, Ordering::Relaxed);
        }
        if !self.obey {
            r.admit_fraction = 1.0;
            r.max_in_flight = None;
        }
        Some(r)
    }
}

impl Exporter for ModeExporter {
    fn export(&mut self, batch: ExportBatch<'_>, counters: &Counters) -> Option<AdviceReply> {
        let r = self.inner.export(batch, counters);
        self.filter(r)
    }

    fn poll(&mut self, counters: &Counters) -> Option<AdviceReply> {
        let r = self.inner.poll(counters);
        self.filter(r)
    }

    fn flush(&mut self, deadline: std::time::Instant, counters: &Counters) -> Option<AdviceReply> {
        let r = self.inner.flush(deadline, counters);
        self.filter(r)
    }
}

/// The SDK recorder of a service, configured for its control mode: the reactive baselines are
/// the SDK's own limiters (static in-flight cap, AIMD, Gradient2) in `always` mode.
fn recorder_for(
    cfg: &ServiceConfig,
    seen: &Arc<AdviceSeen>,
) -> (Recorder, seer_sdk::ExportWorker<ModeExporter>) {
    let endpoint = cfg
        .collector
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9".to_string());
    let c = &cfg.control;
    let mut b = seer_sdk::Builder::new(cfg.name.clone())
        .with_endpoint(endpoint.clone())
        .with_tick(Duration::from_millis(cfg.tick_ms))
        .with_sample_ratio(0.05)
        .with_slow_threshold(Duration::from_secs_f64(c.aimd_latency_ms / 1000.0));
    let initial = c.initial_limit.max(1.0) as u32;
    b = match cfg.mode {
        Mode::StaticLimit => b.with_max_in_flight(c.static_limit.max(1) as u32),
        Mode::Aimd => b.with_limiter(
            LimiterConfig::new(LimiterKind::aimd())
                .with_mode(LimiterMode::Always)
                .with_initial(initial),
        ),
        Mode::Gradient => b.with_limiter(
            LimiterConfig::new(LimiterKind::Gradient {
                tolerance: c.gradient_tolerance,
                smoothing: 0.2,
                long_ticks: 100,
            })
            .with_mode(LimiterMode::Always)
            .with_initial(initial),
        ),
        _ => b,
    };
    let exporter = ModeExporter {
        inner: HttpExporter::new(&endpoint, None, Duration::from_millis(500)),
        obey: cfg.mode.is_throttle(),
        seen: Arc::clone(seen),
    };
    b.build_with(exporter)
}

/// Runs one service until its deadline.
///
/// # Errors
/// When it cannot bind its addresses.
pub async fn run(cfg: ServiceConfig) -> Result<()> {
    let spec = cfg
        .topology
        .service(&cfg.name)
        .cloned()
        .with_context(|| format!("unknown service {}", cfg.name))?;
    let addr = *cfg
        .topology
        .addrs
        .get(&cfg.name)
        .context("no address for this service")?;
    let admin = *cfg
        .topology
        .admin_addrs
        .get(&cfg.name)
        .context("no admin address for this service")?;
    if let Some(rel) = &cfg.cgroup {
        // The harness moves this process into its cgroup right after spawning it; wait for that
        // so the SDK reports the right cgroup with its windows.
        wait_for_cgroup(rel).await;
    }
    let seen = Arc::new(AdviceSeen::default());
    let (recorder, worker) = recorder_for(&cfg, &seen);
    let export = worker.spawn().context("cannot start the export thread")?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = SeerClientLayer::new(recorder).layer(
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector),
    );
    let knobs = Arc::new(Knobs::default());
    let lock = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    spawn_lock_contender(Arc::clone(&knobs), Arc::clone(&lock), Arc::clone(&stop));
    spawn_inprocess_hog(Arc::clone(&knobs), Arc::clone(&stop));
    let workers = Arc::new(Workers::new(spec.pool.max(1)));
    let svc = Arc::new(Svc {
        pool: Arc::clone(&workers),
        spec,
        addrs: cfg.topology.addrs.clone(),
        client,
        knobs: Arc::clone(&knobs),
        lock,
        call_timeout: Duration::from_millis(cfg.call_timeout_ms),
        recorder,
        backend: recorder.client_name("POST", "backend"),
    });

    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    let admin_listener = TcpListener::bind(admin)
        .await
        .with_context(|| format!("bind {admin}"))?;
    tokio::spawn(serve_admin(
        admin_listener,
        Arc::clone(&knobs),
        Arc::clone(&seen),
        workers,
    ));
    let serve = serve_app(listener, svc, recorder, seen);
    let deadline = tokio::time::sleep(Duration::from_secs_f64(cfg.deadline_s.max(1.0)));
    tokio::select! {
        _ = serve => {}
        _ = deadline => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.store(true, Ordering::Relaxed);
    let _ = export.shutdown(Duration::from_millis(300));
    Ok(())
}

async fn serve_app(
    listener: TcpListener,
    svc: Arc<Svc>,
    recorder: Recorder,
    seen: Arc<AdviceSeen>,
) {
    let on_shed = move |_: &Shed| {
        seen.shed.fetch_add(1, Ordering::Relaxed);
        reply(StatusCode::SERVICE_UNAVAILABLE, "shed")
    };
    let layer = SeerLayer::new(recorder).with_on_shed(on_shed);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = Arc::clone(&svc);
        let service = layer.layer(tower::service_fn(move |req: Request<Incoming>| {
            let svc = Arc::clone(&svc);
            async move { Ok::<_, Infallible>(handle(svc, req).await) }
        }));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(service),
                )
                .await;
        });
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    r
}

async fn handle(svc: Arc<Svc>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let op = req.uri().path().trim_start_matches('/').to_string();
    let _ = req.into_body().collect().await;
    serve_op(&svc, &op).await
}

async fn serve_op(svc: &Svc, op: &str) -> Response<Full<Bytes>> {
    {
        // Waiting for the service's own worker is its own queue (SeerLayer's queue signal).
        let queued = seer_sdk::context::enter_queue();
        let Ok(_permit) = svc.pool.sem.acquire().await else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "pool closed");
        };
        drop(queued);
        let work_ns = (svc.spec.work_ms * 1e6) as u64;
        if svc.knobs.lock_milli.load(Ordering::Relaxed) > 0 {
            // The request's work needs the lock a background thread contends for.
            let queued = seer_sdk::context::enter_queue();
            let _g = svc.lock.lock();
            drop(queued);
            burn_cpu_ns(work_ns);
        } else {
            burn_cpu_ns(work_ns);
        }
        let slow = svc.knobs.slow_us.load(Ordering::Relaxed);
        if slow > 0 {
            // A slow backend (database) call made while holding the worker, traced like an
            // instrumented database client would: the request counts as blocked on a
            // downstream call meanwhile, not as doing its own work.
            let call = svc.recorder.begin_client(svc.backend, None);
            tokio::time::sleep(Duration::from_micros(slow)).await;
            call.finish(200, false);
        }
    }
    let Some(stages) = svc.spec.ops.get(op) else {
        return reply(StatusCode::OK, "ok");
    };
    let cx = seer_sdk::context::current();
    for stage in stages {
        let mut set = tokio::task::JoinSet::new();
        for call in stage {
            let Some(addr) = svc.addrs.get(&call.service).copied() else {
                continue;
            };
            for _ in 0..call.count {
                let uri = format!("http://{addr}/{}", call.op);
                let client = svc.client.clone();
                let timeout = svc.call_timeout;
                let call = async move { call_downstream(client, uri, timeout).await };
                match &cx {
                    // Carry the request's context so client spans are its children and the
                    // wait counts as blocked on a callee, not as its own work.
                    Some(cx) => set.spawn(cx.clone().wrap(call)),
                    None => set.spawn(call),
                };
            }
        }
        let mut worst = StatusCode::OK;
        while let Some(r) = set.join_next().await {
            let status = r.unwrap_or(StatusCode::BAD_GATEWAY);
            if status == StatusCode::SERVICE_UNAVAILABLE && worst == StatusCode::OK {
                worst = status;
            } else if !status.is_success() && status != StatusCode::SERVICE_UNAVAILABLE {
                worst = StatusCode::BAD_GATEWAY;
            }
        }
        if worst == StatusCode::SERVICE_UNAVAILABLE {
            return reply(worst, "callee shed");
        }
        if worst != StatusCode::OK {
            return reply(worst, "callee failed");
        }
    }
    reply(StatusCode::OK, "ok")
}

async fn call_downstream(client: HttpClient, uri: String, timeout: Duration) -> StatusCode {
    let Ok(req) = Request::post(uri).body(Full::new(Bytes::new())) else {
        return StatusCode::BAD_GATEWAY;
    };
    match tokio::time::timeout(timeout, client.oneshot(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            status
        }
        _ => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// A background thread that holds the service's lock for `lock_milli` thousandths of each 20 ms.
fn spawn_lock_contender(knobs: Arc<Knobs>, lock: Arc<Mutex<()>>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let slice = Duration::from_millis(20);
        while !stop.load(Ordering::Relaxed) {
            let duty = knobs.lock_milli.load(Ordering::Relaxed).min(1000) as f64 / 1000.0;
            if duty <= 0.0 {
                std::thread::sleep(slice);
                continue;
            }
            {
                let _g = lock.lock();
                std::thread::sleep(slice.mul_f64(duty));
            }
            std::thread::sleep(slice.mul_f64(1.0 - duty).max(Duration::from_micros(200)));
        }
    });
}

/// The no-cgroup fallback of the CPU fault: a thread in the service's own process spinning for
/// `hog_milli` thousandths of each 10 ms.
fn spawn_inprocess_hog(knobs: Arc<Knobs>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let slice = Duration::from_millis(10);
        while !stop.load(Ordering::Relaxed) {
            let duty = knobs.hog_milli.load(Ordering::Relaxed).min(1000) as f64 / 1000.0;
            let start = Instant::now();
            if duty > 0.0 {
                burn_cpu_ns((slice.as_nanos() as f64 * duty) as u64);
            }
            let spent = start.elapsed();
            if spent < slice {
                std::thread::sleep(slice - spent);
            }
        }
    });
}

async fn serve_admin(
    listener: TcpListener,
    knobs: Arc<Knobs>,
    seen: Arc<AdviceSeen>,
    workers: Arc<Workers>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let knobs = Arc::clone(&knobs);
        let seen = Arc::clone(&seen);
        let workers = Arc::clone(&workers);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let knobs = Arc::clone(&knobs);
                let seen = Arc::clone(&seen);
                let workers = Arc::clone(&workers);
                async move {
                    if req.uri().path() == "/state" {
                        let body = serde_json::json!({
                            "advice_replies": seen.replies.load(Ordering::Relaxed),
                            "shedding_replies": seen.shedding_replies.load(Ordering::Relaxed),
                            "culprit_replies": seen.culprit_replies.load(Ordering::Relaxed),
                            "shed": seen.shed.load(Ordering::Relaxed),
                            "workers": workers.size(),
                            "workers_busy": workers.busy(),
                        });
                        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        return Ok::<_, Infallible>(r);
                    }
                    if req.uri().path() == "/fault" {
                        for (k, v) in query_pairs(req.uri().query().unwrap_or("")) {
                            let v: f64 = v.parse().unwrap_or(0.0);
                            match k.as_str() {
                                "slow_us" => knobs.slow_us.store(v as u64, Ordering::Relaxed),
                                "lock" => knobs
                                    .lock_milli
                                    .store((v * 1000.0) as u64, Ordering::Relaxed),
                                "hog" => knobs
                                    .hog_milli
                                    .store((v * 1000.0) as u64, Ordering::Relaxed),
                                _ => {}
                            }
                        }
                    }
                    if req.uri().path() == "/workers" {
                        let extra = query_pairs(req.uri().query().unwrap_or(""))
                            .into_iter()
                            .find(|(k, _)| k == "extra")
                            .and_then(|(_, v)| v.parse::<usize>().ok());
                        let Some(extra) = extra else {
                            return Ok(reply(StatusCode::BAD_REQUEST, "want /workers?extra=N"));
                        };
                        workers.set_extra(extra);
                    }
                    Ok::<_, Infallible>(reply(StatusCode::OK, "ok"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A service's worker permits: its configured pool plus the extra workers the actuator may add
/// while the service is blocked on a slow dependency (the scarce resource is then workers, not
/// CPU: each one waits on the backend while holding its permit).
#[derive(Debug)]
struct Workers {
    sem: Arc<Semaphore>,
    base: usize,
    /// Extra permits currently granted (removal is asynchronous; see [`Workers::set_extra`]).
    extra: Mutex<usize>,
}

impl Workers {
    fn new(base: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(base)),
            base,
            extra: Mutex::new(0),
        }
    }

    /// Workers in total.
    fn size(&self) -> usize {
        self.base + self.extra.lock().map_or(0, |e| *e)
    }

    /// Workers holding a permit now.
    fn busy(&self) -> usize {
        self.size().saturating_sub(self.sem.available_permits())
    }

    /// Sets the extra workers to `n`. Added permits are usable at once; removed ones are taken
    /// back as they are released (each is acquired in turn, fairly with requests, and forgotten),
    /// so no request in flight is cut off.
    fn set_extra(&self, n: usize) {
        let Ok(mut extra) = self.extra.lock() else {
            return;
        };
        if n > *extra {
            self.sem.add_permits(n - *extra);
        } else if n < *extra {
            let sem = Arc::clone(&self.sem);
            let take = *extra - n;
            tokio::spawn(async move {
                for _ in 0..take {
                    match sem.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => return,
                    }
                }
            });
        }
        *extra = n;
    }
}

async fn wait_for_cgroup(rel: &str) {
    for _ in 0..100 {
        let inside = std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|t| {
            t.lines().any(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
                    && l.ends_with(rel)
            })
        });
        if inside {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Splits `a=1&b=2` into pairs.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn extra_workers_come_at_once_and_leave_as_they_are_released() {
        let w = Workers::new(2);
        let a = w.sem.acquire().await.unwrap();
        let b = w.sem.acquire().await.unwrap();
        assert_eq!((w.size(), w.busy()), (2, 2));
        w.set_extra(3);
        assert_eq!((w.size(), w.busy()), (5, 2));
        let extra: Vec<_> = [(); 3]
            .iter()
            .map(|()| w.sem.try_acquire().unwrap())
            .collect();
        assert!(w.sem.try_acquire().is_err(), "5 workers in all");
        assert_eq!(w.busy(), 5);
        // Back to the pool of 2 while all 5 are busy: nothing in flight is cut off...
        w.set_extra(0);
        assert_eq!(w.size(), 2);
        drop(extra);
        drop(a);
        drop(b);
        // ...and the 3 released permits are taken back as they come free.
        for _ in 0..100 {
            if w.sem.available_permits() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(w.sem.available_permits(), 2);
        assert_eq!(w.busy(), 0);
    }
}
