//! The simulated service graph: queues, faults, stalls, noise and the end-to-end QoS.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Feature columns the simulation emits (the collector's per-service columns, same order).
pub const FEATURES: &[&str] = &[
    "arrivals_rps",
    "inflight_mean",
    "local_inflight_mean",
    "queue_depth_mean",
    "queue_wait_p99_ms",
    "self_latency_p50_ms",
    "self_latency_p99_ms",
    "latency_p99_ms",
    "error_rate",
    "shed_rate",
    "runq_wait_ms_per_s",
    "cpu_used_cores",
    "throttled_ms_per_s",
];

/// Node counters the simulation emits.
pub const NODE_FEATURES: &[&str] = &["psi_cpu_some", "psi_memory_some", "psi_io_some"];

/// Service names and call graph, after DeathStarBench's Social Network.
const SERVICES: &[&str] = &[
    "nginx-frontend",
    "compose-post",
    "home-timeline",
    "user-timeline",
    "text",
    "media",
    "unique-id",
    "user",
    "post-storage",
    "write-home-timeline",
    "url-shorten",
    "user-mention",
    "social-graph",
];

const EDGES: &[(usize, usize)] = &[
    (0, 1),
    (0, 2),
    (0, 3),
    (1, 4),
    (1, 5),
    (1, 6),
    (1, 7),
    (1, 8),
    (1, 9),
    (4, 10),
    (4, 11),
    (2, 8),
    (2, 12),
    (3, 8),
    (9, 12),
];

/// Entry request mix: (first-level service, share).
const MIX: &[(usize, f64)] = &[(1, 0.3), (2, 0.5), (3, 0.2)];

/// The two fault classes, reported separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultClass {
    /// Reaches overload over 10-30 s: a growing CPU hog, a quota lowered in steps, or a
    /// dependency slowing down.
    Gradual,
    /// Full intensity at once.
    Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hog,
    Quota,
    Slow,
}

/// One injected fault.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Fault {
    /// Gradual or step.
    pub class: FaultClass,
    /// Index of the culprit service.
    pub service: usize,
    /// First tick of the fault.
    pub start: u64,
    /// Ticks to full intensity (0 for a step).
    pub ramp: u64,
    /// First tick after the fault.
    pub end: u64,
    #[serde(skip)]
    kind: Kind,
    /// Capacity factor at full intensity.
    floor: f64,
}

impl Fault {
    /// Capacity factor at `tick` (1 = healthy) and the fault's intensity in 0..=1.
    fn factor(&self, tick: u64) -> (f64, f64) {
        if tick < self.start || tick >= self.end {
            return (1.0, 0.0);
        }
        let mut p = if self.ramp == 0 {
            1.0
        } else {
            ((tick - self.start) as f64 / self.ramp as f64).min(1.0)
        };
        if self.kind == Kind::Quota && self.ramp > 0 {
            p = ((p * 4.0).ceil() / 4.0).min(1.0); // four quota steps
        }
        (1.0 - (1.0 - self.floor) * p, p)
    }
}

/// Knobs of the simulation.
#[derive(Debug, Clone, Copy)]
pub struct WorldConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Faults of each class.
    pub faults_per_class: usize,
    /// Entry load, requests per tick (100 ms).
    pub entry_rate: f64,
    /// QoS target: end-to-end p99 over a 1 s (10-tick) sliding window, ms.
    pub target_ms: f64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 1,
            faults_per_class: 40,
            entry_rate: 30.0,
            target_ms: 100.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Svc {
    /// Visits per entry request.
    visits: f64,
    /// Capacity, requests per tick.
    mu: f64,
    /// Mean service time, ms.
    base_ms: f64,
    /// Backlog carried over ticks.
    backlog: f64,
    /// Observation-noise spike carried into the next tick.
    spike: f64,
    /// Probability of a measurement spike per tick.
    spike_p: f64,
    /// Mean spike size.
    spike_size: f64,
    /// Healthy run-queue wait, ms/s.
    runq: f64,
}

/// One simulated tick.
#[derive(Debug, Clone)]
pub struct SimTick {
    /// Tick index.
    pub tick: u64,
    /// `services x FEATURES`, row-major.
    pub features: Vec<f32>,
    /// Node counters, in [`NODE_FEATURES`] order.
    pub node: Vec<f32>,
    /// End-to-end p99 over the last 1 s, ms.
    pub p99_ms: f64,
    /// End-to-end median over the last 1 s, ms.
    pub p50_ms: f64,
    /// The windowed p99 exceeded the target.
    pub violation: bool,
    /// The injected fault active in this tick, if any (index into [`World::faults`]).
    pub fault: Option<usize>,
    /// A machine-wide stall is under way.
    pub stall: bool,
    /// A benign load burst is under way.
    pub burst: bool,
}

/// A seeded queueing simulation of a social-network-like service graph.
///
/// Per 100 ms tick, each service receives Poisson arrivals (the entry rate times its visits per
/// request, with a slow diurnal swing and benign load bursts), serves a Poisson number of them at
/// its capacity (healthy utilisation 0.2-0.5), and carries the rest as backlog. Its measured own
/// queue is the backlog plus the M/M/2 queue at its utilisation plus the spiky measurement noise
/// seen live (per-tick queue sd about 0.9-1.6, mean 0.2-0.6 with the M/M/2 queue included).
/// Machine-wide stalls (0.3-0.5 s, every 20-60 s) cut every service's capacity to 70-85% at
/// once and raise every run-queue wait; benign load bursts (+10-25% for 2-6 s, every 30-90 s)
/// and a slow 10% swing of the entry rate raise every queue together. A fault cuts one service's
/// capacity: gradually over 10-30 s (a growing hog, a quota lowered in four steps, or a slowing
/// service), or at once (step). End-to-end latencies are sampled per request along the call tree
/// (sum down a chain, max over a fan-out), and the QoS is their p99 over a 1 s sliding window
/// against the target.
#[derive(Debug)]
pub struct World {
    cfg: WorldConfig,
    rng: StdRng,
    svcs: Vec<Svc>,
    children: Vec<Vec<usize>>,
    faults: Vec<Fault>,
    tick: u64,
    latencies: VecDeque<Vec<f64>>,
    stall_until: u64,
    stall_factor: f64,
    next_stall: u64,
    burst_until: u64,
    burst_factor: f64,
    next_burst: u64,
    horizon: u64,
}

fn poisson(rng: &mut StdRng, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda < 30.0 {
        let l = (-lambda).exp();
        let mut k = 0.0;
        let mut p = 1.0;
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1.0;
        }
    }
    (lambda + lambda.sqrt() * normal(rng)).round().max(0.0)
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn exp1(rng: &mut StdRng) -> f64 {
    -rng.random::<f64>().max(1e-12).ln()
}

impl World {
    /// Builds the graph and the fault schedule from the seed.
    pub fn new(cfg: WorldConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let n = SERVICES.len();
        let mut children = vec![Vec::new(); n];
        for &(a, b) in EDGES {
            children[a].push(b);
        }
        // Visits per entry request: frontend 1, then down the tree by the mix.
        let mut visits = vec![0.0; n];
        visits[0] = 1.0;
        fn visit(children: &[Vec<usize>], visits: &mut [f64], s: usize, share: f64) {
            visits[s] += share;
            for &c in &children[s] {
                visit(children, visits, c, share);
            }
        }
        for &(s, share) in MIX {
            visit(&children, &mut visits, s, share);
        }
        let svcs = (0..n)
            .map(|i| {
                let rho = rng.random_range(0.2..0.5);
                let mu = cfg.entry_rate * visits[i] / rho;
                Svc {
                    visits: visits[i],
                    mu,
                    base_ms: 100.0 / mu,
                    backlog: 0.0,
                    spike: 0.0,
                    spike_p: rng.random_range(0.03..0.06),
                    spike_size: rng.random_range(3.0..5.0),
                    runq: rng.random_range(5.0..20.0),
                }
            })
            .collect::<Vec<_>>();
        // The schedule: classes interleaved in random order, quiet gaps of 20-50 s between.
        let mut classes: Vec<FaultClass> = (0..cfg.faults_per_class)
            .flat_map(|_| [FaultClass::Gradual, FaultClass::Step])
            .collect();
        for i in (1..classes.len()).rev() {
            let j = rng.random_range(0..=i);
            classes.swap(i, j);
        }
        let mut t = 400u64;
        let mut faults = Vec::with_capacity(classes.len());
        for class in classes {
            let service = rng.random_range(1..n);
            let rho = cfg.entry_rate * svcs[service].visits / svcs[service].mu;
            let kind = match rng.random_range(0..3) {
                0 => Kind::Hog,
                1 => Kind::Quota,
                _ => Kind::Slow,
            };
            let (ramp, hold, overload) = match class {
                FaultClass::Gradual => (
                    rng.random_range(100..=300u64),
                    rng.random_range(30..=60u64),
                    rng.random_range(1.3..1.7),
                ),
                FaultClass::Step => (0, rng.random_range(40..=80u64), rng.random_range(1.6..2.6)),
            };
            let floor = rho / overload;
            faults.push(Fault {
                class,
                service,
                start: t,
                ramp,
                end: t + ramp + hold,
                kind,
                floor,
            });
            t += ramp + hold + rng.random_range(200..=500u64);
        }
        let next_stall = rng.random_range(200..600);
        let next_burst = rng.random_range(300..900);
        World {
            cfg,
            rng,
            svcs,
            children,
            faults,
            tick: 0,
            latencies: VecDeque::with_capacity(10),
            stall_until: 0,
            stall_factor: 1.0,
            next_stall,
            burst_until: 0,
            burst_factor: 1.0,
            next_burst,
            horizon: t,
        }
    }

    /// Service names.
    pub fn services(&self) -> Vec<String> {
        SERVICES.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Caller -> callee edges.
    pub fn edges(&self) -> &'static [(usize, usize)] {
        EDGES
    }

    /// The injected faults, in time order.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Ticks the schedule takes (the last fault plus its quiet gap).
    pub fn len(&self) -> u64 {
        self.horizon
    }

    /// Whether the schedule is empty.
    pub fn is_empty(&self) -> bool {
        self.horizon == 0
    }

    fn active_fault(&self, tick: u64) -> Option<usize> {
        let i = self.faults.partition_point(|f| f.end <= tick);
        self.faults
            .get(i)
            .filter(|f| f.start <= tick && tick < f.end)
            .map(|_| i)
    }

    /// Advances one tick.
    pub fn step(&mut self) -> SimTick {
        let t = self.tick;
        self.tick += 1;
        let fault = self.active_fault(t);
        let rng = &mut self.rng;
        if t == self.next_stall {
            self.stall_until = t + rng.random_range(3..=5);
            self.stall_factor = rng.random_range(0.7..0.85);
            self.next_stall = t + rng.random_range(200..600);
        }
        if t == self.next_burst {
            self.burst_until = t + rng.random_range(20..=60);
            self.burst_factor = rng.random_range(1.1..1.25);
            self.next_burst = t + rng.random_range(300..900);
        }
        let stalled = t < self.stall_until;
        let stall = if stalled { self.stall_factor } else { 1.0 };
        let burst = if t < self.burst_until {
            self.burst_factor
        } else {
            1.0
        };
        let diurnal = 1.0 + 0.1 * (std::f64::consts::TAU * t as f64 / 3000.0).sin();
        let entry = self.cfg.entry_rate * diurnal * burst;
        let (f_svc, f_factor, f_intensity, f_kind) = match fault {
            Some(i) => {
                let f = self.faults[i];
                let (factor, p) = f.factor(t);
                (Some(f.service), factor, p, Some(f.kind))
            }
            None => (None, 1.0, 0.0, None),
        };

        let n = self.svcs.len();
        let width = FEATURES.len();
        let mut features = vec![0.0f32; n * width];
        let mut wait_ms = vec![0.0; n];
        let mut self_p50 = vec![0.0; n];
        let mut self_p99 = vec![0.0; n];
        for (i, s) in self.svcs.iter_mut().enumerate() {
            let own_fault = f_svc == Some(i);
            let cap_factor =
                stall * if own_fault { f_factor } else { 1.0 } * (1.0 + 0.03 * normal(rng));
            let mu = (s.mu * cap_factor).max(0.1);
            let lambda = entry * s.visits;
            let arrivals = poisson(rng, lambda);
            let served = poisson(rng, mu).min(s.backlog + arrivals);
            let before = s.backlog;
            s.backlog = (s.backlog + arrivals - served).max(0.0);
            let backlog_avg = 0.5 * (before + s.backlog);
            let rho = (lambda / mu).min(0.97);
            // Requests waiting for one of two workers (M/M/2).
            let mm2_q = 2.0 * rho.powi(3) / (1.0 - rho * rho);
            // Measurement spikes (GC pauses, scheduler hiccups), sometimes lasting two ticks.
            s.spike = if rng.random::<f64>() < s.spike_p {
                s.spike_size * exp1(rng)
            } else if rng.random::<f64>() < 0.3 {
                s.spike * 0.5
            } else {
                0.0
            };
            let service_ms = 100.0 / mu;
            let wait = backlog_avg / mu * 100.0 + service_ms * mm2_q / rho.max(0.05);
            wait_ms[i] = wait;
            let queue = backlog_avg + mm2_q + s.spike;
            self_p50[i] = (wait + service_ms) * 0.69;
            self_p99[i] = (wait + service_ms) * 4.6 + s.spike * service_ms;
            let hog = own_fault && matches!(f_kind, Some(Kind::Hog));
            let quota = own_fault && matches!(f_kind, Some(Kind::Quota));
            let runq = s.runq * (1.0 + 0.3 * normal(rng)).max(0.2)
                + if stalled {
                    rng.random_range(150.0..400.0)
                } else {
                    0.0
                }
                + if hog {
                    500.0 * f_intensity * (1.0 + 0.2 * normal(rng)).max(0.0)
                } else {
                    0.0
                };
            let throttled = if quota {
                600.0 * f_intensity * (1.0 + 0.2 * normal(rng)).max(0.0)
            } else {
                (2.0 * exp1(rng)).min(20.0) * rng.random::<f64>()
            };
            let row = &mut features[i * width..(i + 1) * width];
            row[0] = (arrivals * 10.0) as f32;
            row[2] = (queue + rho) as f32;
            row[3] = queue as f32;
            row[4] = (wait * 3.0 + s.spike * service_ms * 2.0) as f32;
            row[5] = self_p50[i] as f32;
            row[6] = self_p99[i] as f32;
            row[8] = 0.0;
            row[9] = 0.0;
            row[10] = runq as f32;
            row[11] = (rho * 0.3) as f32;
            row[12] = throttled as f32;
        }
        // Inclusive latency and in-flight (which includes waiting on callees).
        let mut inclusive = vec![0.0; n];
        for i in (0..n).rev() {
            let down = self.children[i]
                .iter()
                .map(|c| inclusive[*c])
                .fold(0.0, f64::max);
            inclusive[i] = self_p99[i] + down;
        }
        for i in 0..n {
            let row = &mut features[i * width..(i + 1) * width];
            row[7] = inclusive[i] as f32;
            let down_wait: f64 = self.children[i].iter().map(|c| wait_ms[*c] / 100.0).sum();
            row[1] = row[2] + (entry * self.svcs[i].visits * down_wait) as f32;
        }
        // End-to-end latencies of this tick's requests.
        let requests = (entry.round() as usize).min(60);
        let mut lat = Vec::with_capacity(requests);
        for _ in 0..requests {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut first = MIX[0].0;
            for &(s, share) in MIX {
                acc += share;
                first = s;
                if u < acc {
                    break;
                }
            }
            let own0 = self.svcs[0].base_ms * exp1(rng) + wait_ms[0] * exp1(rng);
            lat.push(own0 + request_latency(&self.children, &wait_ms, &self.svcs, first, rng));
        }
        if self.latencies.len() == 10 {
            self.latencies.pop_front();
        }
        self.latencies.push_back(lat);
        let mut window: Vec<f64> = self.latencies.iter().flatten().copied().collect();
        window.sort_by(f64::total_cmp);
        let p99 = window
            .get(((window.len() as f64) * 0.99).floor() as usize)
            .or(window.last())
            .copied()
            .unwrap_or(0.0);
        let cpu_pressure = if stalled { 40.0 } else { 3.0 }
            + if matches!(f_kind, Some(Kind::Hog)) {
                20.0 * f_intensity
            } else {
                0.0
            };
        let node = vec![
            (cpu_pressure * (1.0 + 0.2 * normal(rng)).max(0.0)) as f32,
            (0.5 * exp1(rng)) as f32,
            (0.5 * exp1(rng)) as f32,
        ];
        SimTick {
            tick: t,
            features,
            node,
            p99_ms: p99,
            p50_ms: window.get(window.len() / 2).copied().unwrap_or(0.0),
            violation: p99 > self.cfg.target_ms,
            fault,
            stall: stalled,
            burst: burst > 1.0,
        }
    }
}

fn request_latency(
    children: &[Vec<usize>],
    wait_ms: &[f64],
    svcs: &[Svc],
    s: usize,
    rng: &mut StdRng,
) -> f64 {
    let own = svcs[s].base_ms * exp1(rng) + wait_ms[s] * exp1(rng);
    let down = children[s]
        .iter()
        .map(|c| request_latency(children, wait_ms, svcs, *c, rng))
        .fold(0.0, f64::max);
    own + down
}
