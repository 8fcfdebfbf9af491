//! One service of the social-network app, run as its own process.
//!
//! A request to `POST /<op>`:
//! 1. passes the service's reactive limiter, when its control mode has one (else a 503);
//! 2. waits for one of the service's worker permits (its own queue);
//! 3. burns `work_ms` of thread CPU time holding the permit (plus the slow-dependency and lock
//!    faults, when injected);
//! 4. releases the permit and makes the operation's downstream calls, stage by stage, the calls of
//!    a stage in parallel;
//! 5. answers 200, or 503 when a callee shed it, or 502 when a callee failed or timed out.
//!
//! Fault knobs live on a separate admin listener (`POST /fault?slow_us=..&lock=..&hog=..`) so that
//! they are not part of the measured traffic.

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

use crate::control::Limiter;
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

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Svc {
    spec: ServiceSpec,
    addrs: BTreeMap<String, SocketAddr>,
    client: HttpClient,
    pool: Semaphore,
    knobs: Arc<Knobs>,
    lock: Arc<Mutex<()>>,
    limiter: Option<Limiter>,
    call_timeout: Duration,
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
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(5))
        .build(connector);
    let knobs = Arc::new(Knobs::default());
    let lock = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    spawn_lock_contender(Arc::clone(&knobs), Arc::clone(&lock), Arc::clone(&stop));
    spawn_inprocess_hog(Arc::clone(&knobs), Arc::clone(&stop));
    let svc = Arc::new(Svc {
        pool: Semaphore::new(spec.pool.max(1)),
        limiter: Limiter::for_mode(cfg.mode, &cfg.control),
        spec,
        addrs: cfg.topology.addrs.clone(),
        client,
        knobs: Arc::clone(&knobs),
        lock,
        call_timeout: Duration::from_millis(cfg.call_timeout_ms),
    });

    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    let admin_listener = TcpListener::bind(admin)
        .await
        .with_context(|| format!("bind {admin}"))?;
    tokio::spawn(serve_admin(admin_listener, Arc::clone(&knobs)));
    let serve = serve_app(listener, svc);
    let deadline = tokio::time::sleep(Duration::from_secs_f64(cfg.deadline_s.max(1.0)));
    tokio::select! {
        _ = serve => {}
        _ = deadline => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}

async fn serve_app(listener: TcpListener, svc: Arc<Svc>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = Arc::clone(&svc);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let svc = Arc::clone(&svc);
                async move { Ok::<_, Infallible>(handle(svc, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
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
    let started = Instant::now();
    let op = req.uri().path().trim_start_matches('/').to_string();
    let _ = req.into_body().collect().await;
    if let Some(l) = &svc.limiter
        && !l.try_acquire()
    {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "shed by limiter");
    }
    let resp = serve_op(&svc, &op).await;
    if let Some(l) = &svc.limiter {
        l.complete(started.elapsed(), resp.status().is_success());
    }
    resp
}

async fn serve_op(svc: &Svc, op: &str) -> Response<Full<Bytes>> {
    {
        let Ok(_permit) = svc.pool.acquire().await else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "pool closed");
        };
        let work_ns = (svc.spec.work_ms * 1e6) as u64;
        if svc.knobs.lock_milli.load(Ordering::Relaxed) > 0 {
            // The request's work needs the lock a background thread contends for.
            let _g = svc.lock.lock();
            burn_cpu_ns(work_ns);
        } else {
            burn_cpu_ns(work_ns);
        }
        let slow = svc.knobs.slow_us.load(Ordering::Relaxed);
        if slow > 0 {
            // A slow backend (database) call made while holding the worker.
            tokio::time::sleep(Duration::from_micros(slow)).await;
        }
    }
    let Some(stages) = svc.spec.ops.get(op) else {
        return reply(StatusCode::OK, "ok");
    };
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
                set.spawn(async move { call_downstream(&client, uri, timeout).await });
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

async fn call_downstream(client: &HttpClient, uri: String, timeout: Duration) -> StatusCode {
    let Ok(req) = Request::post(uri).body(Full::new(Bytes::new())) else {
        return StatusCode::BAD_GATEWAY;
    };
    match tokio::time::timeout(timeout, client.request(req)).await {
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

async fn serve_admin(listener: TcpListener, knobs: Arc<Knobs>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let knobs = Arc::clone(&knobs);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let knobs = Arc::clone(&knobs);
                async move {
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
                    Ok::<_, Infallible>(reply(StatusCode::OK, "ok"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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
