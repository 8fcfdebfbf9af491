//! One run of a scenario: the collector, the twelve services, the load, the fault schedule, the
//! prediction poller, the actuator and the live display, all bounded in time and cleaned up on
//! exit or Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cgroup::Cgroups;
use crate::collector::{JsonClient, LABELS_PATH, PREDICTIONS_PATH, PredSet, parse_predictions};
use crate::faults::{FaultKind, FaultSpec, GroundTruth};
use crate::loadgen::{self, LoadStats};
use crate::scenario::{Mode, Scenario};
use crate::service::ServiceConfig;
use crate::topology::Topology;

/// Quota of the collector's cgroup, percent of one core.
pub const COLLECTOR_QUOTA_PCT: f64 = 45.0;
/// `cpu.shares` of the collector's cgroup (the default is 1024).
pub const COLLECTOR_SHARES: u64 = 128;

/// How to run a scenario once.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// The control mode.
    pub mode: Mode,
    /// The seed.
    pub seed: u64,
    /// Where logs and records go.
    pub out_dir: PathBuf,
    /// The collector binary; without it the run has no predictions.
    pub collector_bin: Option<PathBuf>,
    /// Show the live view in the terminal.
    pub live: bool,
    /// Use cgroups when available.
    pub cgroups: bool,
    /// The `social-network` binary that runs services and hogs.
    pub exe: PathBuf,
}

/// What the collector said at one tick, compactly.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TickPred {
    /// Risk per service, in [`RunRecord::services`] order.
    pub risks: Vec<f32>,
    /// Services named as culprits, with their resource.
    pub named: Vec<(String, String)>,
    /// Collector mode.
    pub mode: String,
    /// The collector tick this prediction is for. Several harness ticks show the same
    /// prediction when the collector is late; confirmations count distinct predictions.
    /// Absent in runs recorded before it was kept (each harness tick then counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_tick: Option<u64>,
    /// Predictions that arrived earlier in the same harness tick (two collector ticks can
    /// close within one), oldest first: their collector tick and named pairs. Confirmations
    /// count them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<(u64, Vec<(String, String)>)>,
}

/// One raise by the actuator: a CPU quota, or (for a culprit blocked on a slow dependency) its
/// workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Actuation {
    /// The service.
    pub service: String,
    /// When the quota was raised, seconds into the run.
    pub start_s: f64,
    /// When it was restored (`None` if still raised at the end).
    pub end_s: Option<f64>,
    /// The raised quota, percent of one core (the highest, when it was raised again); for a
    /// workers raise, the service's unchanged quota.
    pub quota_pct: f64,
    /// For a workers raise: the service's workers while raised (`None` for a quota raise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

/// One tick of client-side ground truth.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TickRow {
    /// Requests sent.
    pub sent: u64,
    /// Ok responses.
    pub ok: u64,
    /// Shed (503) responses.
    pub shed: u64,
    /// Other errors.
    pub errors: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Windowed percentile at this tick, milliseconds.
    pub window_p_ms: Option<f64>,
}

/// Everything a run produced, saved as `run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Scenario name.
    pub scenario: String,
    /// Control mode.
    pub mode: Mode,
    /// Seed.
    pub seed: u64,
    /// Tick, milliseconds.
    pub tick_ms: u64,
    /// Run length, seconds.
    pub duration_s: f64,
    /// QoS percentile.
    pub qos_percentile: f64,
    /// QoS target, milliseconds.
    pub qos_target_ms: f64,
    /// QoS window, ticks.
    pub qos_window_ticks: usize,
    /// Whether services ran in their own cgroups.
    pub cgroups: bool,
    /// Whether a collector ran.
    pub collector: bool,
    /// Service names.
    pub services: Vec<String>,
    /// Client-side ticks.
    pub ticks: Vec<TickRow>,
    /// Whole-run client percentile (ok and timed-out requests), milliseconds.
    pub p_ms: Option<f64>,
    /// Predictions per tick (`None` when the collector did not answer).
    pub preds: Vec<Option<TickPred>>,
    /// Ground truth of the injected faults.
    pub faults: Vec<GroundTruth>,
    /// Actuator actions.
    pub actuations: Vec<Actuation>,
    /// What each service saw of Seer's advice and its own shedding (its admin `/state`).
    pub service_states: BTreeMap<String, serde_json::Value>,
    /// Notes about the run (fallbacks taken, errors seen).
    pub notes: Vec<String>,
}

#[derive(Default)]
struct Shared {
    preds: Mutex<BTreeMap<usize, TickPred>>,
    /// Each new prediction's collector tick and named (service, resource) pairs, in order, as
    /// they arrive: the actuators follow it.
    named: NamedFeed,
    /// Predictions an actuator skipped because it fell more than the feed holds behind.
    lagged: AtomicU64,
    latest: Mutex<Option<PredSet>>,
    active: Mutex<Vec<String>>,
    actuations: Mutex<Vec<Actuation>>,
    truths: Mutex<Vec<GroundTruth>>,
    notes: Mutex<Vec<String>>,
}

/// Named culprits per prediction: (collector tick, (service, resource) pairs).
type Named = (u64, Vec<(String, String)>);

/// The channel that carries every prediction's named culprits to the actuators, in order (a
/// `watch` would hand a slow reader only the latest, and a confirmation would skip one).
struct NamedFeed(tokio::sync::broadcast::Sender<Named>);

impl Default for NamedFeed {
    fn default() -> Self {
        // 25 s of predictions at the default tick: far more than an actuator's turn.
        Self(tokio::sync::broadcast::Sender::new(256))
    }
}

impl NamedFeed {
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Named> {
        self.0.subscribe()
    }

    fn send(&self, n: Named) {
        // No receiver (no actuator in this mode) is not an error.
        let _ = self.0.send(n);
    }
}

impl Shared {
    /// Records the start of an actuation; its index in the run's actuations.
    fn begin_actuation(&self, a: Actuation) -> Option<usize> {
        let mut list = self.actuations.lock().ok()?;
        list.push(a);
        Some(list.len() - 1)
    }

    /// Updates actuation `idx` in place.
    fn update_actuation(&self, idx: usize, f: impl FnOnce(&mut Actuation)) {
        if let Ok(mut list) = self.actuations.lock()
            && let Some(a) = list.get_mut(idx)
        {
            f(a);
        }
    }

    fn note(&self, s: impl Into<String>) {
        let s = s.into();
        if let Ok(mut n) = self.notes.lock()
            && !n.contains(&s)
        {
            eprintln!("harness: {s}");
            n.push(s);
        }
    }
}

/// Child processes, killed on drop.
#[derive(Debug, Default)]
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// A free loopback port for a service, chosen below the kernel's ephemeral range (32768 and up
/// by default). A port the kernel hands out for port 0 is free only until the service binds it,
/// and in between any outgoing connection on the machine may take it; ports below the range are
/// never used for outgoing connections, so only an explicit bind can collide.
/// Ports already handed out by this process are never handed out again (the listener that
/// proved a port free is closed before the service binds it, so the kernel could offer it twice).
fn free_port() -> Result<SocketAddr> {
    use rand::Rng;
    static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port: u16 = rng.random_range(20_000..32_000);
        if taken.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            taken.insert(port);
            return Ok(l.local_addr()?);
        }
    }
    bail!("no free loopback port in 20000-31999")
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    fs::File::create(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// Runs a scenario once and returns its record (also written to `out_dir/run.json`).
///
/// # Errors
/// When the app cannot be started; faults and a missing collector are noted, not errors.
pub async fn run(opts: RunOptions) -> Result<RunRecord> {
    let sc = &opts.scenario;
    fs::create_dir_all(opts.out_dir.join("logs"))?;
    let logs = opts.out_dir.join("logs");
    let shared = Arc::new(Shared::default());
    let tick = Duration::from_millis(sc.tick_ms);
    let mut topo = Topology::social_network().with_overrides(&sc.topology)?;
    for s in topo.names() {
        topo.addrs.insert(s.clone(), free_port()?);
        topo.admin_addrs.insert(s, free_port()?);
    }
    let services = topo.names();
    let schedule = sc.schedule(&services);
    let base_rps = sc.load.profile.base_rate();
    let bottleneck = topo.bottleneck(&sc.load, base_rps);

    let cgroups = if opts.cgroups {
        match Cgroups::probe() {
            Ok(c) => Some(Arc::new(c)),
            Err(why) => {
                shared.note(format!(
                    "cgroups unavailable ({why}): services run without CPU quotas, CPU faults \
                     are hog threads inside the culprit's process, and the actuator is off"
                ));
                None
            }
        }
    } else {
        shared.note("cgroups disabled: no CPU quotas, in-process CPU hogs, no actuator");
        None
    };
    let mut children = Children::default();
    let exe = opts.exe.clone();
    let run_s = sc.total_s();
    let deadline_s = run_s + 30.0;

    // The collector, in its own capped cgroup with low shares.
    let mut collector: Option<JsonClient> = None;
    if let Some(bin) = opts.collector_bin.as_ref().filter(|b| b.exists()) {
        let addr = free_port()?;
        let cfg_path = opts.out_dir.join("collector.toml");
        fs::write(&cfg_path, collector_config(sc))?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(opts.out_dir.join("collector-data"))
            .arg("--config")
            .arg(&cfg_path)
            .arg("--tick-ms")
            .arg(sc.tick_ms.to_string())
            .env("OMP_NUM_THREADS", "1")
            .env("RUST_LOG", "warn")
            .stdout(log_file(&logs, "collector"))
            .stderr(log_file(&logs, "collector.err"))
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id();
        children.0.push(child);
        if let Some(cg) = &cgroups {
            cg.create("collector", COLLECTOR_QUOTA_PCT, Some(COLLECTOR_SHARES))?;
            cg.add_pid("collector", pid)?;
        }
        let client = JsonClient::new(&format!("http://{addr}"));
        if wait_ready(&client, "/healthz", Duration::from_secs(60)).await {
            collector = Some(client);
        } else {
            shared.note("the collector did not become healthy within 60 s; running without it");
        }
    } else {
        shared.note("no collector binary: the run has no predictions (detection metrics are null)");
    }

    // The services, one process and one cgroup each.
    let svc_dir = opts.out_dir.join("services");
    fs::create_dir_all(&svc_dir)?;
    for spec in &topo.services {
        let cgroup_rel = cgroups.as_ref().map(|c| c.rel_path(&spec.name));
        let cfg = ServiceConfig {
            name: spec.name.clone(),
            topology: topo.clone(),
            mode: opts.mode,
            control: sc.control.clone(),
            collector: collector.as_ref().map(|c| c.base().to_string()),
            cgroup: cgroup_rel.clone(),
            tick_ms: sc.tick_ms,
            call_timeout_ms: sc.load.timeout_ms,
            qos_ms: sc.qos.target_ms,
            deadline_s,
        };
        let path = svc_dir.join(format!("{}.json", spec.name));
        fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
        if let Some(cg) = &cgroups {
            cg.create(&spec.name, spec.quota_pct, None)?;
        }
        let mut cmd = Command::new(&exe);
        cmd.arg("service")
            .arg("--config")
            .arg(&path)
            .env("SEER_SERVICE", &spec.name)
            .env("SEER_TICK_MS", sc.tick_ms.to_string())
            .stdout(log_file(&logs, &spec.name))
            .stderr(log_file(&logs, &format!("{}.err", spec.name)));
        if let Some(c) = &collector {
            cmd.env("SEER_ENDPOINT", c.base());
        }
        if let Some(rel) = &cgroup_rel {
            cmd.env("SEER_CGROUP", rel);
        }
        let child = cmd.spawn().context("cannot start a service")?;
        let pid = child.id();
        children.0.push(child);
        if let Some(cg) = &cgroups {
            cg.add_pid(&spec.name, pid)?;
        }
    }
    for s in &services {
        let admin = JsonClient::new(&format!("http://{}", topo.admin_addrs[s]));
        if !wait_ready(&admin, "/health", Duration::from_secs(20)).await {
            bail!("service {s} did not start (see {})", logs.display());
        }
    }

    // Everything below is timed from `origin`.
    let origin = Instant::now() + Duration::from_millis(100);
    let origin_unix_ns = unix_ns() + 100_000_000;
    let stats = Arc::new(LoadStats::new(tick, origin));
    let stop = Arc::new(AtomicBool::new(false));
    let frontend = topo.addrs["frontend"];
    let load = tokio::spawn(loadgen::run(
        frontend,
        sc.load.clone(),
        opts.seed,
        Arc::clone(&stats),
        Duration::from_secs_f64(run_s),
    ));
    let injector = tokio::spawn(inject(InjectCtx {
        schedule: schedule.clone(),
        bottleneck,
        topo: topo.clone(),
        cgroups: cgroups.clone(),
        collector: collector.clone(),
        stats: Arc::clone(&stats),
        shared: Arc::clone(&shared),
        exe: exe.clone(),
        logs: logs.clone(),
        origin,
        origin_unix_ns,
        stop: Arc::clone(&stop),
    }));
    let poller = collector.clone().map(|c| {
        tokio::spawn(poll_predictions(
            c,
            services.clone(),
            sc.control.risk_threshold,
            Arc::clone(&stats),
            Arc::clone(&shared),
            Arc::clone(&stop),
        ))
    });
    let workers_actuator = opts.mode.is_actuate().then(|| {
        tokio::spawn(actuate_workers(
            topo.clone(),
            sc.clone(),
            Arc::clone(&stats),
            Arc::clone(&shared),
            Arc::clone(&stop),
        ))
    });
    let actuator = match (&cgroups, opts.mode.is_actuate()) {
        (Some(cg), true) => Some(tokio::spawn(actuate(
            Arc::clone(cg),
            topo.clone(),
            sc.clone(),
            Arc::clone(&stats),
            Arc::clone(&shared),
            Arc::clone(&stop),
        ))),
        (None, true) => {
            shared.note("the CPU-quota actuator needs cgroups; it is off in this run (the workers actuator runs)");
            None
        }
        _ => None,
    };
    let live = tokio::spawn(live_view(
        opts.live,
        collector.clone(),
        sc.clone(),
        opts.mode,
        services.clone(),
        Arc::clone(&stats),
        Arc::clone(&shared),
        Arc::clone(&stop),
    ));

    let interrupted = tokio::select! {
        _ = load => false,
        _ = tokio::signal::ctrl_c() => true,
        _ = terminated() => true,
    };
    stop.store(true, Ordering::Relaxed);
    let _ = injector.await;
    if let Some(p) = poller {
        let _ = p.await;
    }
    if let Some(a) = actuator {
        let _ = a.await;
    }
    if let Some(a) = workers_actuator {
        let _ = a.await;
    }
    let _ = live.await;
    let mut service_states = BTreeMap::new();
    for s in &services {
        let admin = JsonClient::new(&format!("http://{}", topo.admin_addrs[s]));
        match admin.get("/state").await {
            Ok(v) => {
                service_states.insert(s.clone(), v);
            }
            Err(e) => shared.note(format!("no state from {s}: {e:#}")),
        }
    }
    drop(children);
    if let Some(cg) = &cgroups {
        cg.cleanup();
    }
    if interrupted {
        bail!("interrupted: services stopped and cgroups removed");
    }

    let mut record = build_record(
        &opts,
        sc,
        &services,
        &stats,
        &shared,
        collector.is_some(),
        cgroups.is_some(),
    );
    record.service_states = service_states;
    fs::write(opts.out_dir.join("run.json"), serde_json::to_vec(&record)?)?;
    Ok(record)
}

fn build_record(
    opts: &RunOptions,
    sc: &Scenario,
    services: &[String],
    stats: &LoadStats,
    shared: &Shared,
    collector: bool,
    cgroups: bool,
) -> RunRecord {
    let ticks = stats.snapshot();
    let n = ((sc.total_s() * 1000.0) as u64 / sc.tick_ms) as usize;
    let window = (sc.qos.window_ms / sc.tick_ms).max(1) as usize;
    let wp = loadgen::windowed_percentile(&ticks, window, sc.qos.percentile, sc.qos.min_samples);
    let mut all = loadgen::new_hist();
    for t in &ticks {
        let _ = all.add(&t.hist);
    }
    let p_ms =
        (!all.is_empty()).then(|| all.value_at_quantile(sc.qos.percentile / 100.0) as f64 / 1000.0);
    let rows: Vec<TickRow> = ticks
        .iter()
        .take(n)
        .zip(wp)
        .map(|(t, p)| TickRow {
            sent: t.sent,
            ok: t.ok,
            shed: t.shed,
            errors: t.errors,
            timeouts: t.timeouts,
            window_p_ms: p,
        })
        .collect();
    let preds_map = shared.preds.lock().map(|p| p.clone()).unwrap_or_default();
    let preds = preds_per_tick(&preds_map, rows.len());
    let lagged = shared.lagged.load(Ordering::Relaxed);
    if lagged > 0 {
        shared.note(format!(
            "actuators fell behind the predictions and skipped {lagged} of them"
        ));
    }
    RunRecord {
        scenario: sc.name.clone(),
        mode: opts.mode,
        seed: opts.seed,
        tick_ms: sc.tick_ms,
        duration_s: sc.total_s(),
        qos_percentile: sc.qos.percentile,
        qos_target_ms: sc.qos.target_ms,
        qos_window_ticks: window,
        cgroups,
        collector,
        services: services.to_vec(),
        ticks: rows,
        p_ms,
        preds,
        faults: shared.truths.lock().map(|t| t.clone()).unwrap_or_default(),
        actuations: shared
            .actuations
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default(),
        service_states: BTreeMap::new(),
        notes: shared.notes.lock().map(|n| n.clone()).unwrap_or_default(),
    }
}

/// The collector's TOML: the QoS spec on the frontend's entry endpoints.
pub fn collector_config(sc: &Scenario) -> String {
    let mut s = String::new();
    s.push_str(&format!("episode_gap_ticks = {}\n", sc.qos.merge_gap_ticks));
    s.push_str(&format!(
        "\n[advice]\nthreshold = {:.2}\n",
        sc.control.risk_threshold
    ));
    for m in &sc.load.mix {
        s.push_str(&format!(
            "\n[[qos]]\nservice = \"frontend\"\nendpoint = \"POST /{}\"\npercentile = {:.4}\ntarget_ms = {:.1}\nwindow_ms = {}\n",
            m.op,
            sc.qos.percentile / 100.0,
            sc.qos.target_ms,
            sc.qos.window_ms
        ));
    }
    s
}

/// Resolves on SIGTERM (e.g. from `timeout`), so a terminated run still cleans up.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

async fn wait_ready(client: &JsonClient, path: &str, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if client.hit(path).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

struct InjectCtx {
    schedule: Vec<FaultSpec>,
    bottleneck: String,
    topo: Topology,
    cgroups: Option<Arc<Cgroups>>,
    collector: Option<JsonClient>,
    stats: Arc<LoadStats>,
    shared: Arc<Shared>,
    exe: PathBuf,
    logs: PathBuf,
    origin: Instant,
    origin_unix_ns: u64,
    stop: Arc<AtomicBool>,
}

/// The fault injector: applies the schedule each tick and records the ground truth.
async fn inject(ctx: InjectCtx) {
    #[derive(PartialEq)]
    enum St {
        Pending,
        Active,
        Done,
    }
    let mut state: Vec<St> = ctx.schedule.iter().map(|_| St::Pending).collect();
    let mut hogs = Children::default();
    let admins: BTreeMap<String, JsonClient> = ctx
        .topo
        .admin_addrs
        .iter()
        .map(|(k, a)| (k.clone(), JsonClient::new(&format!("http://{a}"))))
        .collect();
    let mut interval = tokio::time::interval(ctx.stats.tick);
    while !ctx.stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let now_s = ctx.origin.elapsed().as_secs_f64();
        let mut active_names = Vec::new();
        let mut multiplier = 1.0;
        for (i, f) in ctx.schedule.iter().enumerate() {
            let culprit = if f.kind == FaultKind::LoadSpike {
                ctx.bottleneck.clone()
            } else {
                f.service.clone()
            };
            let rel = now_s - f.start_s;
            if state[i] == St::Pending && rel >= 0.0 {
                state[i] = St::Active;
                let truth = GroundTruth {
                    id: i,
                    service: culprit.clone(),
                    resource: f.kind.resource().into(),
                    class: f.class,
                    kind: f.kind,
                    start_unix_ns: ctx.origin_unix_ns + (f.start_s * 1e9) as u64,
                    end_unix_ns: ctx.origin_unix_ns + (f.end_s() * 1e9) as u64,
                    start_s: f.start_s,
                    end_s: f.end_s(),
                };
                post_label(&ctx, &truth, "start").await;
                if let Ok(mut t) = ctx.shared.truths.lock() {
                    t.push(truth);
                }
                if let Err(e) = start_process_fault(&ctx, f, &mut hogs) {
                    ctx.shared
                        .note(format!("fault {i} ({}): {e:#}", f.kind.as_str()));
                }
            }
            if state[i] != St::Active {
                continue;
            }
            let level = f.envelope().at(rel);
            let value = level.unwrap_or(0.0);
            let admin = admins.get(&f.service);
            match f.kind {
                FaultKind::SlowDependency => {
                    if let Some(a) = admin {
                        let _ = a
                            .hit(&format!("/fault?slow_us={}", (value * 1000.0) as u64))
                            .await;
                    }
                }
                FaultKind::LockContention => {
                    if let Some(a) = admin {
                        let _ = a.hit(&format!("/fault?lock={value:.3}")).await;
                    }
                }
                FaultKind::CpuHog if ctx.cgroups.is_none() => {
                    if let Some(a) = admin {
                        let _ = a.hit(&format!("/fault?hog={:.3}", value.min(1.0))).await;
                    }
                }
                FaultKind::LoadSpike => multiplier *= 1.0 + (value - 1.0).max(0.0),
                _ => {}
            }
            if level.is_none() {
                state[i] = St::Done;
                if let Some(t) = ctx
                    .shared
                    .truths
                    .lock()
                    .ok()
                    .and_then(|t| t.iter().find(|t| t.id == i).cloned())
                {
                    post_label(&ctx, &t, "end").await;
                }
            } else {
                active_names.push(format!(
                    "{} {} on {} ({:.0}% of peak)",
                    f.class.as_str(),
                    f.kind.as_str(),
                    culprit,
                    100.0 * value / f.intensity.max(1e-9)
                ));
            }
        }
        ctx.stats.set_multiplier(multiplier);
        if let Ok(mut a) = ctx.shared.active.lock() {
            *a = active_names;
        }
    }
    // Leave no knob set.
    for a in admins.values() {
        let _ = a.hit("/fault?slow_us=0&lock=0&hog=0").await;
    }
    drop(hogs);
}

fn start_process_fault(ctx: &InjectCtx, f: &FaultSpec, hogs: &mut Children) -> Result<()> {
    let kind = match f.kind {
        FaultKind::CpuHog if ctx.cgroups.is_some() => "cpu",
        FaultKind::MemoryPressure => "mem",
        _ => return Ok(()),
    };
    let env = f.envelope();
    let child = Command::new(&ctx.exe)
        .args(["hog", "--kind", kind])
        .args(["--peak", &env.peak.to_string()])
        .args(["--ramp-s", &env.ramp_s.to_string()])
        .args(["--hold-s", &env.hold_s.to_string()])
        .stdout(Stdio::null())
        .stderr(log_file(&ctx.logs, &format!("hog-{}-{}", kind, f.service)))
        .spawn()?;
    let pid = child.id();
    hogs.0.push(child);
    if let Some(cg) = &ctx.cgroups {
        cg.add_pid(&f.service, pid)?;
    }
    Ok(())
}

async fn post_label(ctx: &InjectCtx, t: &GroundTruth, phase: &str) {
    let mut line = serde_json::to_value(t).unwrap_or_default();
    line["phase"] = json!(phase);
    let _ = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ctx.logs.join("faults.jsonl"))
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "{line}")
        });
    if phase != "start" {
        return;
    }
    // One label per fault, at its start, with its planned end (the collector appends labels).
    if let Some(c) = &ctx.collector {
        let resource = match t.resource.as_str() {
            "dependency" => "downstream",
            other => other,
        };
        let body = json!({
            "service": t.service,
            "resource": resource,
            "class": t.class.as_str(),
            "start": t.start_unix_ns,
            "end": t.end_unix_ns,
        });
        if let Err(e) = c.post(LABELS_PATH, &body).await {
            ctx.shared
                .note(format!("the collector refused ground-truth labels: {e:#}"));
        }
    }
}

/// How many ticks a prediction stands for when no newer one has come.
const PRED_FRESH_TICKS: usize = 5;

/// Per harness tick, the latest prediction received by then, if at most [`PRED_FRESH_TICKS`]
/// old: predictions are recorded when they arrive, and a tick in which none arrived shows the one
/// before (with the same collector tick, so it confirms nothing new).
fn preds_per_tick(recorded: &BTreeMap<usize, TickPred>, ticks: usize) -> Vec<Option<TickPred>> {
    (0..ticks)
        .map(|i| {
            recorded
                .range(..=i)
                .next_back()
                .filter(|(t, _)| i - **t <= PRED_FRESH_TICKS)
                .map(|(t, p)| {
                    let mut p = p.clone();
                    if *t != i {
                        // Carried forward: what arrived before it was shown at its own tick.
                        p.earlier.clear();
                    }
                    p
                })
        })
        .collect()
}

/// Records a prediction at the harness tick it arrived; one that arrived earlier in the same
/// tick moves into its `earlier`, so none is lost to the metrics.
fn record_pred(recorded: &mut BTreeMap<usize, TickPred>, tick: usize, mut pred: TickPred) {
    if let Some(e) = recorded.remove(&tick) {
        let mut earlier = e.earlier;
        earlier.extend(e.collector_tick.map(|t| (t, e.named)));
        earlier.append(&mut pred.earlier);
        pred.earlier = earlier;
    }
    recorded.insert(tick, pred);
}

/// The culprits a prediction names, with their resource: services flagged `culprit` at risk
/// `threshold` or more, or, from a predictor that flags none, the riskiest at or above it.
fn named_in(set: &PredSet, threshold: f64) -> Vec<(String, String)> {
    let mut named: Vec<(String, String)> = set
        .services
        .iter()
        .filter(|p| p.culprit && p.risk >= threshold)
        .map(|p| (p.service.clone(), p.resource.clone().unwrap_or_default()))
        .collect();
    if named.is_empty()
        && !set.services.iter().any(|p| p.culprit)
        && let Some(top) = set
            .services
            .iter()
            .filter(|p| p.risk >= threshold)
            .max_by(|a, b| a.risk.total_cmp(&b.risk))
    {
        named.push((
            top.service.clone(),
            top.resource.clone().unwrap_or_default(),
        ));
    }
    named
}

/// Follows the collector's predictions with a long poll (`?after=TICK`), so each prediction is
/// recorded once, at the harness tick it became available, and published to the actuators.
async fn poll_predictions(
    client: JsonClient,
    services: Vec<String>,
    threshold: f64,
    stats: Arc<LoadStats>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    // The collector holds the request until a newer tick is predicted, at most this long (under
    // the client's 2 s timeout), so the loop also notices `stop`.
    let wait_ms = (stats.tick.as_millis() as u64 * 5).clamp(100, 1000);
    let mut last: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        let path = match last {
            Some(t) => format!("{PREDICTIONS_PATH}?after={t}&wait_ms={wait_ms}"),
            None => PREDICTIONS_PATH.to_string(),
        };
        let asked = Instant::now();
        match client.get(&path).await {
            Ok(v) => {
                // A long poll's answer carries every prediction after `last` (`since`); the
                // first request, and older collectors, only the latest.
                let (offered, sets): (usize, Vec<PredSet>) =
                    match v.get("since").and_then(|s| s.as_array()) {
                        Some(a) => (a.len(), a.iter().filter_map(parse_predictions).collect()),
                        // `latest` is null until the first tick has been predicted.
                        None => (
                            usize::from(v.get("latest").is_some_and(|l| !l.is_null())),
                            parse_predictions(&v).into_iter().collect(),
                        ),
                    };
                if sets.len() < offered {
                    shared.note("could not read some of /v1/predictions (unknown shape)");
                }
                if sets.is_empty() && last.is_none() {
                    tokio::time::sleep(stats.tick).await;
                    continue;
                }
                let tick = stats.tick_now();
                let before = last;
                for set in sets {
                    if last.is_some_and(|t| set.tick <= t) {
                        // The wait ran out with nothing newer.
                        continue;
                    }
                    last = Some(set.tick);
                    let named = named_in(&set, threshold);
                    shared.named.send((set.tick, named.clone()));
                    let risks = services
                        .iter()
                        .map(|s| {
                            set.services
                                .iter()
                                .find(|p| &p.service == s)
                                .map_or(0.0, |p| p.risk as f32)
                        })
                        .collect();
                    if let Ok(mut p) = shared.preds.lock() {
                        record_pred(
                            &mut p,
                            tick,
                            TickPred {
                                risks,
                                named,
                                mode: set.mode.clone(),
                                collector_tick: Some(set.tick),
                                earlier: Vec::new(),
                            },
                        );
                    }
                    if let Ok(mut l) = shared.latest.lock() {
                        *l = Some(set);
                    }
                }
                // Nothing new, at once: a collector that does not hold the request (one
                // without the long poll) is asked once a tick, not in a tight loop.
                if last == before
                    && let Some(rest) = stats.tick.checked_sub(asked.elapsed())
                {
                    tokio::time::sleep(rest).await;
                }
            }
            Err(e) => {
                shared.note(format!("predictions unavailable: {e:#}"));
                tokio::time::sleep(stats.tick).await;
            }
        }
    }
}

/// CPU-use samples of a group over the last second, and since when its use has been low.
type UsageTrack = (std::collections::VecDeque<(Instant, u64)>, Option<Instant>);

/// A culprit whose quota the actuator raised.
struct Raise {
    /// When the first raise happened.
    since: Instant,
    /// When the culprit was last named.
    last_named: Instant,
    /// Its entry in the run's actuations.
    idx: usize,
    /// The quota now set, percent of one core.
    quota_pct: f64,
    /// Ticks in a row it was named since the last raise.
    named_since_raise: u32,
}

/// Whether a raised culprit should get more: named for `escalate_ticks` ticks since the last
/// raise while using at least 90% of what it was given (`rate_cores` over the last second), and
/// not yet at `max_pct`.
fn should_escalate(r: &Raise, rate_cores: f64, escalate_ticks: u32, max_pct: f64) -> bool {
    escalate_ticks > 0
        && r.named_since_raise >= escalate_ticks
        && rate_cores.is_finite()
        && rate_cores >= 0.9 * r.quota_pct / 100.0
        && r.quota_pct < max_pct
}

/// Waits at most `wait` for a prediction newer than `seen` (a collector tick), then takes every
/// other one already queued, without waiting: the named (service, resource) pairs of each, oldest
/// first, or none when none came. Actuators count confirmations in predictions, not in their own
/// loop turns, so a late prediction is never counted twice, and a turn slowed by an admin call
/// leaves no backlog behind it to be acted on late.
async fn next_named(
    rx: &mut tokio::sync::broadcast::Receiver<Named>,
    seen: &mut Option<u64>,
    wait: Duration,
    lagged: &AtomicU64,
) -> Vec<Vec<(String, String)>> {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    // Whether tick `t` is newer than any taken; if so it is taken.
    let mut fresh = |t: u64| {
        let new = seen.is_none_or(|s| t > s);
        if new {
            *seen = Some(t);
        }
        new
    };
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    // The first: waited for.
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok((t, named))) if fresh(t) => {
                out.push(named);
                break;
            }
            // Already seen: read on.
            Ok(Ok(_)) => {}
            // More than the feed holds went by unread: counted (the run's notes show it).
            Ok(Err(RecvError::Lagged(n))) => {
                lagged.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(RecvError::Closed)) | Err(_) => return out,
        }
    }
    // The rest: only what is already queued.
    loop {
        match rx.try_recv() {
            Ok((t, named)) if fresh(t) => out.push(named),
            Ok(_) => {}
            Err(TryRecvError::Lagged(n)) => {
                lagged.fetch_add(n, Ordering::Relaxed);
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => return out,
        }
    }
}

/// Per service, how many predictions in a row named it, as an actuator counts confirmations.
#[derive(Debug, Default)]
struct Streaks {
    by_service: BTreeMap<String, u32>,
    /// Loop turns in a row in which no prediction came.
    quiet_turns: usize,
}

impl Streaks {
    /// Counts one prediction: `hit` says whether it named a service.
    fn advance(&mut self, services: &[String], hit: impl Fn(&str) -> bool) {
        self.quiet_turns = 0;
        for s in services {
            let e = self.by_service.entry(s.clone()).or_default();
            *e = if hit(s) { *e + 1 } else { 0 };
        }
    }

    /// Counts a loop turn (about a tick) in which no prediction came. After
    /// [`PRED_FRESH_TICKS`] of them every streak is broken, as the metrics break a run of
    /// confirmations on a tick without a prediction; true when that happened now.
    fn quiet(&mut self) -> bool {
        self.quiet_turns += 1;
        if self.quiet_turns != PRED_FRESH_TICKS {
            return false;
        }
        self.by_service.values_mut().for_each(|n| *n = 0);
        true
    }

    /// The services named in at least `n` predictions in a row.
    fn confirmed(&self, n: u32) -> impl Iterator<Item = &String> {
        self.by_service
            .iter()
            .filter(move |(_, c)| **c >= n)
            .map(|(s, _)| s)
    }
}

/// A culprit whose workers the workers actuator raised.
struct WorkersRaise {
    since: Instant,
    last_named: Instant,
    /// Its entry in the run's actuations.
    idx: usize,
    /// Since when its busy workers have fit in its own pool.
    fits_since: Option<Instant>,
}

/// Extra workers for a pool of `pool` raised `factor` times.
fn extra_workers(pool: usize, factor: f64) -> usize {
    ((factor - 1.0).max(0.0) * pool as f64).ceil() as usize
}

/// The workers actuator: after a culprit named short of a downstream dependency (resource
/// `downstream`: its requests wait on a slow backend while holding their worker, so more CPU
/// does not help, more workers do) is named in `actuate_confirm_ticks` predictions in a row,
/// give it `actuate_workers_factor` times its worker pool. Hold at least `actuate_hold_s`, until it has
/// not been named for 2 s and its busy workers have fit in its own pool for 2 s (the backend is
/// fast again), then restore. It is the only writer of the workers knob.
async fn actuate_workers(
    topo: Topology,
    sc: Scenario,
    stats: Arc<LoadStats>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let c = &sc.control;
    if c.actuate_workers_factor <= 1.0 {
        return;
    }
    let admins: BTreeMap<String, JsonClient> = topo
        .admin_addrs
        .iter()
        .map(|(s, a)| (s.clone(), JsonClient::new(&format!("http://{a}"))))
        .collect();
    let services = topo.names();
    let mut streaks = Streaks::default();
    let mut raised: BTreeMap<String, WorkersRaise> = BTreeMap::new();
    let mut rx = shared.named.subscribe();
    let mut seen = None;
    while !stop.load(Ordering::Relaxed) {
        // Streaks advance once per prediction, every one in order; the hold and release checks
        // below also run when none came within a tick.
        let preds = next_named(&mut rx, &mut seen, stats.tick, &shared.lagged).await;
        if preds.is_empty() {
            streaks.quiet();
        }
        for named in &preds {
            let hit = |s: &str| named.iter().any(|(n, r)| n == s && r == "downstream");
            streaks.advance(&services, hit);
            for (_, r) in raised.iter_mut().filter(|(s, _)| hit(s)) {
                r.last_named = Instant::now();
            }
        }
        let now_s = stats.origin.elapsed().as_secs_f64();
        for s in streaks.confirmed(c.actuate_confirm_ticks) {
            let (Some(spec), Some(admin)) = (topo.service(s), admins.get(s)) else {
                continue;
            };
            if raised.contains_key(s) {
                continue;
            }
            let extra = extra_workers(spec.pool, c.actuate_workers_factor);
            if extra == 0 || admin.hit(&format!("/workers?extra={extra}")).await.is_err() {
                continue;
            }
            if let Some(idx) = shared.begin_actuation(Actuation {
                service: s.clone(),
                start_s: now_s,
                end_s: None,
                quota_pct: spec.quota_pct,
                workers: Some(spec.pool + extra),
            }) {
                let now = Instant::now();
                raised.insert(
                    s.clone(),
                    WorkersRaise {
                        since: now,
                        last_named: now,
                        idx,
                        fits_since: None,
                    },
                );
            }
        }
        let hold = Duration::from_secs_f64(c.actuate_hold_s);
        let mut done = Vec::new();
        for (s, r) in raised.iter_mut() {
            let (Some(spec), Some(admin)) = (topo.service(s), admins.get(s)) else {
                continue;
            };
            let busy = admin
                .get("/state")
                .await
                .ok()
                .and_then(|v| v["workers_busy"].as_u64());
            match busy {
                Some(b) if b as usize <= spec.pool => {
                    r.fits_since.get_or_insert_with(Instant::now);
                }
                _ => r.fits_since = None,
            }
            let two = Duration::from_secs(2);
            if r.since.elapsed() >= hold
                && r.last_named.elapsed() >= two
                && r.fits_since.is_some_and(|t| t.elapsed() >= two)
            {
                done.push(s.clone());
            }
        }
        for s in done {
            if let (Some(r), Some(admin)) = (raised.remove(&s), admins.get(&s)) {
                let _ = admin.hit("/workers?extra=0").await;
                shared.update_actuation(r.idx, |a| a.end_s = Some(now_s));
            }
        }
    }
    for s in raised.keys() {
        if let Some(admin) = admins.get(s) {
            let _ = admin.hit("/workers?extra=0").await;
        }
    }
}

/// The local actuator: after a culprit short of CPU (or memory) is named for
/// `actuate_confirm_ticks` predictions in a row, raise its quota by `actuate_extra_pct`; while it
/// stays named for `actuate_escalate_ticks` more predictions and uses at least 90% of the raised quota, raise it
/// again (up to `actuate_max_pct` and the machine's cores): the documented action for CPU is to
/// give the culprit the demand of its co-located hog, which one fixed step may not cover. Hold
/// at least `actuate_hold_s`, until it has not been named for 2 s, and until the group's CPU use
/// has fit in its normal quota (under 80% of it) for 2 s, so that a hog still in the group does
/// not bite again as soon as the quota drops; then restore. It is the only writer of quotas
/// after set-up.
async fn actuate(
    cg: Arc<Cgroups>,
    topo: Topology,
    sc: Scenario,
    stats: Arc<LoadStats>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let c = &sc.control;
    let services = topo.names();
    let mut streaks = Streaks::default();
    let mut raised: BTreeMap<String, Raise> = BTreeMap::new();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let max_pct = c.actuate_max_pct.min(100.0 * cores as f64);
    // Per raised group: the CPU-use samples of the last second, and since when use has been low.
    let mut usage: BTreeMap<String, UsageTrack> = BTreeMap::new();
    let mut rx = shared.named.subscribe();
    let mut seen = None;
    while !stop.load(Ordering::Relaxed) {
        // Streaks advance once per prediction, every one in order; usage sampling, escalation
        // and release also run when none came within a tick.
        let preds = next_named(&mut rx, &mut seen, stats.tick, &shared.lagged).await;
        if preds.is_empty() && streaks.quiet() {
            raised.values_mut().for_each(|r| r.named_since_raise = 0);
        }
        for named in &preds {
            let hit = |s: &str| {
                named
                    .iter()
                    .any(|(n, r)| n == s && matches!(r.as_str(), "cpu" | "memory" | "unknown" | ""))
            };
            streaks.advance(&services, hit);
            for (s, r) in &mut raised {
                if hit(s) {
                    r.last_named = Instant::now();
                    r.named_since_raise += 1;
                } else {
                    r.named_since_raise = 0;
                }
            }
        }
        let now_s = stats.origin.elapsed().as_secs_f64();
        for s in streaks.confirmed(c.actuate_confirm_ticks) {
            if !raised.contains_key(s) {
                let base = topo.service(s).map_or(20.0, |x| x.quota_pct);
                let q = (base + c.actuate_extra_pct).min(max_pct);
                if cg.set_quota(s, q).is_ok()
                    && let Some(idx) = shared.begin_actuation(Actuation {
                        service: s.clone(),
                        start_s: now_s,
                        end_s: None,
                        quota_pct: q,
                        workers: None,
                    })
                {
                    raised.insert(
                        s.clone(),
                        Raise {
                            since: Instant::now(),
                            last_named: Instant::now(),
                            idx,
                            quota_pct: q,
                            named_since_raise: 0,
                        },
                    );
                }
            }
        }
        for (s, r) in raised.iter_mut() {
            let base = topo.service(s).map_or(20.0, |x| x.quota_pct) / 100.0;
            let (samples, low_since) = usage.entry(s.clone()).or_default();
            let now = Instant::now();
            samples.push_back((now, cg.cpu_usage_ns(s)));
            while samples.len() > 2
                && samples
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
            {
                samples.pop_front();
            }
            let rate = match (samples.front(), samples.back()) {
                (Some((t0, u0)), Some((t1, u1))) if t1 > t0 => {
                    u1.saturating_sub(*u0) as f64 / t1.duration_since(*t0).as_nanos() as f64
                }
                _ => f64::INFINITY,
            };
            if rate < 0.8 * base {
                low_since.get_or_insert(now);
            } else {
                *low_since = None;
            }
            if should_escalate(r, rate, c.actuate_escalate_ticks, max_pct) {
                let q = (r.quota_pct + c.actuate_extra_pct).min(max_pct);
                if cg.set_quota(s, q).is_ok() {
                    r.quota_pct = q;
                    r.named_since_raise = 0;
                    shared.update_actuation(r.idx, |a| a.quota_pct = q);
                }
            }
        }
        let hold = Duration::from_secs_f64(c.actuate_hold_s);
        let done: Vec<String> = raised
            .iter()
            .filter(|(s, r)| {
                let fits = usage
                    .get(*s)
                    .and_then(|(_, low)| *low)
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(2));
                r.since.elapsed() >= hold
                    && r.last_named.elapsed() >= Duration::from_secs(2)
                    && fits
            })
            .map(|(s, _)| s.clone())
            .collect();
        for s in done {
            usage.remove(&s);
            if let Some(r) = raised.remove(&s) {
                let base = topo.service(&s).map_or(20.0, |x| x.quota_pct);
                let _ = cg.set_quota(&s, base);
                shared.update_actuation(r.idx, |a| a.end_s = Some(now_s));
            }
        }
    }
    for s in raised.keys() {
        let base = topo.service(s).map_or(20.0, |x| x.quota_pct);
        let _ = cg.set_quota(s, base);
    }
}

/// Prints, once a second: p99 against the QoS target, throughput, the shed fraction, active
/// faults, per-service risk and the named culprits with their resource.
#[allow(clippy::too_many_arguments)]
async fn live_view(
    enabled: bool,
    collector: Option<JsonClient>,
    sc: Scenario,
    mode: Mode,
    services: Vec<String>,
    stats: Arc<LoadStats>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    if !enabled {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let window = (sc.qos.window_ms / sc.tick_ms).max(1) as usize;
    let per_s = (1000 / sc.tick_ms).max(1) as usize;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    while !stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let ticks = stats.snapshot();
        if ticks.len() < 2 {
            continue;
        }
        let upto = ticks.len() - 1;
        let recent = &ticks[upto.saturating_sub(per_s)..upto];
        let sent: u64 = recent.iter().map(|t| t.sent).sum();
        let shed: u64 = recent.iter().map(|t| t.shed).sum();
        let ok: u64 = recent.iter().map(|t| t.ok).sum();
        let wp = loadgen::windowed_percentile(&ticks[..upto], window, sc.qos.percentile, 1);
        let p = wp.last().copied().flatten();
        let latest = shared.latest.lock().ok().and_then(|l| l.clone());
        let active = shared.active.lock().map(|a| a.clone()).unwrap_or_default();
        let acts = shared
            .actuations
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        let t = stats.origin.elapsed().as_secs_f64();
        let status = match p {
            Some(p) if p > sc.qos.target_ms => "VIOLATION",
            Some(_) => "ok",
            None => "-",
        };
        out.push_str(&format!(
            "seer demo: {} [{}]  t={:>5.1}s / {:.0}s\n",
            sc.name,
            mode,
            t,
            sc.total_s()
        ));
        out.push_str(&format!(
            "  p{:.0} (1 s window) {:>7} ms vs QoS {:.0} ms  {status}\n  offered {:>4} rps  goodput {:>4} rps  shed {:>5.1}%\n",
            sc.qos.percentile,
            p.map_or("-".to_string(), |p| format!("{p:.1}")),
            sc.qos.target_ms,
            sent,
            ok,
            100.0 * shed as f64 / sent.max(1) as f64,
        ));
        out.push_str(&format!(
            "  faults: {}\n",
            if active.is_empty() {
                "none".to_string()
            } else {
                active.join("; ")
            }
        ));
        match latest {
            Some(set) => {
                out.push_str(&format!(
                    "  collector: mode {} model v{}  global risk {:.2}\n",
                    set.mode, set.model_version, set.global_risk
                ));
                for s in &services {
                    let pred = set.services.iter().find(|p| &p.service == s);
                    let risk = pred.map_or(0.0, |p| p.risk);
                    let bar = "#".repeat((risk * 20.0).round() as usize);
                    let flag = match pred {
                        Some(p) if p.culprit => format!(
                            "  <- CULPRIT ({})",
                            p.resource.clone().unwrap_or_else(|| "?".into())
                        ),
                        _ => String::new(),
                    };
                    out.push_str(&format!("    {s:<14} {risk:>4.2} {bar:<20}{flag}\n"));
                }
            }
            None => out.push_str("  collector: no predictions yet\n"),
        }
        if let Some(c) = &collector
            && let Ok(v) = c.get("/v1/alerts?open=true&limit=5").await
        {
            let alerts = v
                .get("alerts")
                .and_then(|a| a.as_array())
                .cloned()
                .unwrap_or_default();
            for a in alerts.iter().take(5) {
                let field = |k: &str| a.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
                out.push_str(&format!(
                    "  ALERT {}{} resource {} risk {:.2}: {}\n",
                    field("service"),
                    if a.get("culprit").and_then(serde_json::Value::as_bool) == Some(true) {
                        " (culprit)"
                    } else {
                        ""
                    },
                    field("resource"),
                    a.get("risk")
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(0.0),
                    field("action"),
                ));
            }
            if alerts.is_empty() {
                out.push_str("  alerts: none open\n");
            }
        }
        if let Some(a) = acts.iter().rev().find(|a| a.end_s.is_none()) {
            match a.workers {
                Some(w) => out.push_str(&format!(
                    "  actuator: {} workers raised to {w} at t={:.1}s\n",
                    a.service, a.start_s
                )),
                None => out.push_str(&format!(
                    "  actuator: {} quota raised to {:.0}% at t={:.1}s\n",
                    a.service, a.quota_pct, a.start_s
                )),
            }
        }
        if !tty {
            out.push('\n');
        }
        eprint!("{out}");
    }
}

impl JsonClient {
    /// `GET base+path`, ignoring the body; `Ok` on any 2xx.
    ///
    /// # Errors
    /// On a transport error, a timeout or a non-2xx status.
    pub async fn hit(&self, path: &str) -> Result<()> {
        match self.get(path).await {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:#}").contains("not JSON") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_raise_is_a_multiple_of_the_pool() {
        assert_eq!(extra_workers(1, 4.0), 3);
        assert_eq!(extra_workers(2, 4.0), 6);
        assert_eq!(extra_workers(3, 1.5), 2);
        assert_eq!(extra_workers(2, 1.0), 0, "factor 1 turns it off");
        assert_eq!(extra_workers(2, 0.5), 0);
    }

    #[test]
    fn each_tick_shows_the_latest_fresh_prediction() {
        let pred = |t| TickPred {
            risks: vec![],
            named: vec![],
            mode: "predicting".into(),
            collector_tick: Some(t),
            earlier: vec![],
        };
        let recorded = BTreeMap::from([(2, pred(20)), (3, pred(21)), (5, pred(23))]);
        let ticks: Vec<Option<u64>> = preds_per_tick(&recorded, 13)
            .iter()
            .map(|p| p.as_ref().and_then(|p| p.collector_tick))
            .collect();
        let (a, b, c) = (Some(20), Some(21), Some(23));
        assert_eq!(
            ticks,
            [None, None, a, b, b, c, c, c, c, c, c, None, None],
            "carried at most {PRED_FRESH_TICKS} ticks"
        );
    }

    #[test]
    fn predictions_arriving_in_one_tick_are_all_kept() {
        let pred = |t, s: &str| TickPred {
            risks: vec![],
            named: vec![(s.into(), "cpu".into())],
            mode: "predicting".into(),
            collector_tick: Some(t),
            earlier: vec![],
        };
        let mut recorded = BTreeMap::new();
        record_pred(&mut recorded, 4, pred(40, "a"));
        record_pred(&mut recorded, 5, pred(41, "b"));
        record_pred(&mut recorded, 5, pred(42, "c"));
        record_pred(&mut recorded, 5, pred(43, "d"));
        let p = &recorded[&5];
        assert_eq!(p.collector_tick, Some(43));
        let earlier: Vec<(u64, &str)> = p
            .earlier
            .iter()
            .map(|(t, n)| (*t, n[0].0.as_str()))
            .collect();
        assert_eq!(earlier, [(41, "b"), (42, "c")], "oldest first");
        assert!(recorded[&4].earlier.is_empty());
        // Shown again at the next tick, it no longer carries what arrived before it.
        let shown = preds_per_tick(&recorded, 7);
        assert_eq!(shown[5].as_ref().map(|p| p.earlier.len()), Some(2));
        assert_eq!(shown[6].as_ref().map(|p| p.earlier.len()), Some(0));
        assert_eq!(shown[6].as_ref().and_then(|p| p.collector_tick), Some(43));
    }

    #[test]
    fn named_in_takes_flagged_culprits_or_the_riskiest() {
        let pred = |s: &str, risk, culprit| crate::collector::Pred {
            service: s.into(),
            risk,
            culprit,
            resource: Some("cpu".into()),
        };
        let mut set = PredSet {
            services: vec![pred("a", 0.9, false), pred("b", 0.6, true)],
            ..Default::default()
        };
        assert_eq!(named_in(&set, 0.5), [("b".to_string(), "cpu".to_string())]);
        assert!(
            named_in(&set, 0.7).is_empty(),
            "a flagged culprit under the threshold"
        );
        set.services[1].culprit = false;
        assert_eq!(named_in(&set, 0.5), [("a".to_string(), "cpu".to_string())]);
        assert!(named_in(&set, 0.95).is_empty());
    }

    #[tokio::test]
    async fn next_named_waits_for_a_newer_prediction_and_takes_the_queued_ones() {
        let shared = Shared::default();
        let mut rx = shared.named.subscribe();
        let mut seen = None;
        let wait = Duration::from_millis(20);
        let named = |s: &str| vec![(s.to_string(), "cpu".to_string())];
        assert!(
            next_named(&mut rx, &mut seen, wait, &shared.lagged)
                .await
                .is_empty(),
            "nothing yet"
        );
        // Tick 0 is a prediction like any other.
        shared.named.send((0, named("text")));
        let got = next_named(&mut rx, &mut seen, wait, &shared.lagged).await;
        assert_eq!(got, [named("text")]);
        assert_eq!(seen, Some(0));
        assert!(
            next_named(&mut rx, &mut seen, wait, &shared.lagged)
                .await
                .is_empty(),
            "seen once"
        );
        // The same collector tick published again is not a new prediction.
        shared.named.send((0, vec![]));
        assert!(
            next_named(&mut rx, &mut seen, wait, &shared.lagged)
                .await
                .is_empty()
        );
        // Three published before the reader turns (a slow turn): all taken in one turn, in
        // order, the repeated tick once.
        shared.named.send((8, vec![]));
        shared.named.send((9, named("user")));
        shared.named.send((9, named("user")));
        shared.named.send((10, named("media")));
        assert_eq!(
            next_named(&mut rx, &mut seen, wait, &shared.lagged).await,
            [vec![], named("user"), named("media")]
        );
        assert_eq!(seen, Some(10));
        // A reader that falls more than the feed holds behind skips the oldest, counted.
        for t in 11..311 {
            shared.named.send((t, vec![]));
        }
        let got = next_named(&mut rx, &mut seen, wait, &shared.lagged).await;
        assert_eq!(got.len(), 256);
        assert_eq!(shared.lagged.load(Ordering::Relaxed), 300 - 256);
        assert_eq!(seen, Some(310));
    }

    #[test]
    fn streaks_count_predictions_in_a_row_and_break_when_predictions_stop() {
        let services = ["a".to_string(), "b".to_string()];
        let mut st = Streaks::default();
        let confirmed = |st: &Streaks, n| st.confirmed(n).cloned().collect::<Vec<_>>();
        for _ in 0..3 {
            st.advance(&services, |s| s == "a");
        }
        assert_eq!(confirmed(&st, 3), ["a"]);
        // A prediction that does not name it breaks the run.
        st.advance(&services, |s| s == "b");
        assert!(confirmed(&st, 2).is_empty());
        assert_eq!(confirmed(&st, 1), ["b"]);
        // Turns without a prediction: the streak holds for a few, then breaks.
        st.advance(&services, |s| s == "b");
        for _ in 1..PRED_FRESH_TICKS {
            assert!(!st.quiet());
        }
        assert_eq!(confirmed(&st, 2), ["b"]);
        assert!(st.quiet(), "the streaks break now");
        assert!(confirmed(&st, 1).is_empty());
        assert!(!st.quiet(), "and once");
        // A prediction starts the count of quiet turns again.
        st.advance(&services, |s| s == "a");
        for _ in 1..PRED_FRESH_TICKS {
            assert!(!st.quiet());
        }
        assert_eq!(confirmed(&st, 1), ["a"]);
    }

    fn raise(quota_pct: f64, named_since_raise: u32) -> Raise {
        Raise {
            since: Instant::now(),
            last_named: Instant::now(),
            idx: 0,
            quota_pct,
            named_since_raise,
        }
    }

    #[test]
    fn a_culprit_using_its_raise_while_still_named_gets_more() {
        // Raised to 120%, named 10 ticks since, using 1.15 cores: raise again.
        assert!(should_escalate(&raise(120.0, 10), 1.15, 10, 200.0));
        // Not named long enough, or not using what it got: no.
        assert!(!should_escalate(&raise(120.0, 9), 1.15, 10, 200.0));
        assert!(!should_escalate(&raise(120.0, 10), 0.9, 10, 200.0));
        // At the cap, with escalation off, or with no usage sample yet: no.
        assert!(!should_escalate(&raise(200.0, 30), 2.0, 10, 200.0));
        assert!(!should_escalate(&raise(120.0, 30), 1.2, 0, 200.0));
        assert!(!should_escalate(
            &raise(120.0, 30),
            f64::INFINITY,
            10,
            200.0
        ));
    }
}
