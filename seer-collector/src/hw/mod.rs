//! The node sampler: hardware and software counters, PSI and /proc, once per tick.

/// Names of the per-node features, in column order of a node's feature row. A value the
/// machine cannot provide is `None` (unsupported), never 0.
pub const NODE_FEATURES: &[&str] = &[
    "cpu_busy_frac",
    "cpu_steal_frac",
    "node_runq_wait_ms_per_s",
    "psi_cpu_some",
    "psi_memory_some",
    "psi_memory_full",
    "psi_io_some",
    "psi_io_full",
    "ctx_switches_per_s",
    "page_faults_per_s",
    "major_faults_per_s",
    "net_drops_per_s",
    "tcp_retrans_per_s",
    "listen_overflows_per_s",
    "disk_await_ms",
    "disk_inflight",
    "ipc",
    "llc_mpki",
    "cache_miss_ratio",
];

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Per-service contention signals read from `/proc/<pid>/schedstat` and cgroup `cpu.stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceHw {
    /// Run-queue wait, milliseconds per second (summed over the service's processes).
    pub runq_wait_ms_per_s: Option<f32>,
    /// CPU used, cores.
    pub cpu_used_cores: Option<f32>,
    /// cgroup throttled time, milliseconds per second.
    pub throttled_ms_per_s: Option<f32>,
}

/// One node sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// Node name.
    pub node: String,
    /// Sample time, unix nanoseconds.
    pub unix_ns: u64,
    /// Values in [`NODE_FEATURES`] order; `None` = unsupported on this node.
    pub features: Vec<Option<f32>>,
    /// Per-service signals for services whose pid or cgroup is known on this node.
    pub services: Vec<(String, ServiceHw)>,
}

/// Where a service runs on this node: its pids and cgroup, learned from its window posts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcTarget {
    /// Process ids (at most a few per service).
    pub pids: Vec<u32>,
    /// cgroup path relative to the controller root (e.g. `/seer/c`).
    pub cgroup: Option<String>,
}

/// The services the sampler watches on this node, shared with the ingest path.
pub type TargetMap = Arc<Mutex<HashMap<String, ProcTarget>>>;

pub mod perf;
pub mod procfs;

use std::path::{Path, PathBuf};
use std::time::Instant;

/// A source of cumulative hardware/software counters (perf in production, an injected source
/// in tests).
///
/// Called from the sampler thread only: [`CounterSource::probe`] once at start, then
/// [`CounterSource::read`] once per tick. Neither may block for long.
pub trait CounterSource: Send {
    /// Opens every counter once; `Err(reason)` marks it unsupported for the whole run.
    fn probe(&mut self) -> Vec<(&'static str, Result<(), String>)>;
    /// Cumulative values of the counters that probed fine (`None` if a read failed).
    fn read(&mut self) -> Vec<(&'static str, Option<u64>)>;
}

/// The result of probing every counter family at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// (counter, supported, reason when not).
    pub counters: Vec<(String, bool, Option<String>)>,
}

impl ProbeReport {
    /// Names of supported counters.
    pub fn supported(&self) -> Vec<&str> {
        self.counters
            .iter()
            .filter(|c| c.1)
            .map(|c| c.0.as_str())
            .collect()
    }

    /// Names of unsupported counters.
    pub fn unsupported(&self) -> Vec<&str> {
        self.counters
            .iter()
            .filter(|c| !c.1)
            .map(|c| c.0.as_str())
            .collect()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ProcPrev {
    run_ns: u64,
    wait_ns: u64,
    throttled_ns: Option<u64>,
}

/// Samples one node: perf counters, PSI, /proc and per-service process/cgroup signals.
pub struct Sampler {
    node: String,
    proc_root: PathBuf,
    cgroup_root: PathBuf,
    source: Box<dyn CounterSource>,
    report: ProbeReport,
    prev: HashMap<&'static str, u64>,
    prev_at: Option<Instant>,
    prev_proc: HashMap<String, ProcPrev>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("node", &self.node)
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Sampler {
    /// A sampler for `node` reading `/proc` and `/sys/fs/cgroup`, with counters from `source`.
    /// Probes everything now.
    pub fn new(node: String, source: Box<dyn CounterSource>) -> Self {
        Self::with_roots(
            node,
            source,
            Path::new("/proc"),
            Path::new("/sys/fs/cgroup"),
        )
    }

    /// Like [`Sampler::new`] with other roots (tests).
    pub fn with_roots(
        node: String,
        mut source: Box<dyn CounterSource>,
        proc_root: &Path,
        cgroup_root: &Path,
    ) -> Self {
        let mut report = ProbeReport::default();
        for (name, r) in source.probe() {
            report.counters.push((name.to_owned(), r.is_ok(), r.err()));
        }
        let files: [(&str, &str); 10] = [
            ("proc_stat", "stat"),
            ("psi_cpu", "pressure/cpu"),
            ("psi_memory", "pressure/memory"),
            ("psi_io", "pressure/io"),
            ("schedstat", "schedstat"),
            ("vmstat", "vmstat"),
            ("net_dev", "net/dev"),
            ("net_snmp", "net/snmp"),
            ("net_netstat", "net/netstat"),
            ("diskstats", "diskstats"),
        ];
        for (name, rel) in files {
            let ok = read(&proc_root.join(rel)).is_some();
            report.counters.push((
                name.to_owned(),
                ok,
                (!ok).then(|| format!("{} not readable", proc_root.join(rel).display())),
            ));
        }
        Self {
            node,
            proc_root: proc_root.to_owned(),
            cgroup_root: cgroup_root.to_owned(),
            source,
            report,
            prev: HashMap::new(),
            prev_at: None,
            prev_proc: HashMap::new(),
        }
    }

    /// What probing found.
    pub fn report(&self) -> &ProbeReport {
        &self.report
    }

    /// Takes a sample. Rates need two samples: the first returns `None` for every rate.
    pub fn sample(&mut self, unix_ns: u64, targets: &HashMap<String, ProcTarget>) -> NodeSample {
        let now = Instant::now();
        let dt = self
            .prev_at
            .map(|p| now.duration_since(p).as_secs_f64())
            .filter(|d| *d > 0.0);
        self.prev_at = Some(now);
        let mut cur: HashMap<&'static str, u64> = HashMap::new();
        let p = |rel: &str| read(&self.proc_root.join(rel));
        if let Some(s) = p("stat").and_then(|t| procfs::stat(&t)) {
            cur.insert("cpu_total", s.total);
            cur.insert("cpu_idle", s.idle);
            cur.insert("cpu_steal", s.steal);
            cur.insert("ctxt", s.ctxt);
        }
        for (key, rel) in [
            ("psi_cpu", "pressure/cpu"),
            ("psi_memory", "pressure/memory"),
            ("psi_io", "pressure/io"),
        ] {
            if let Some((some, full)) = p(rel).and_then(|t| procfs::psi(&t)) {
                cur.insert(key, some);
                if let Some(f) = full {
                    cur.insert(
                        match key {
                            "psi_memory" => "psi_memory_full",
                            "psi_io" => "psi_io_full",
                            _ => "psi_cpu_full",
                        },
                        f,
                    );
                }
            }
        }
        if let Some(v) = p("schedstat").and_then(|t| procfs::schedstat_node(&t)) {
            cur.insert("runq_wait_ns", v);
        }
        if let Some(t) = p("vmstat") {
            if let Some(v) = procfs::keyed(&t, "pgfault") {
                cur.insert("pgfault", v);
            }
            if let Some(v) = procfs::keyed(&t, "pgmajfault") {
                cur.insert("pgmajfault", v);
            }
        }
        if let Some(v) = p("net/dev").and_then(|t| procfs::net_dev_drops(&t)) {
            cur.insert("net_drops", v);
        }
        if let Some(v) = p("net/snmp").and_then(|t| procfs::snmp(&t, "Tcp", "RetransSegs")) {
            cur.insert("tcp_retrans", v);
        }
        if let Some(v) =
            p("net/netstat").and_then(|t| procfs::snmp(&t, "TcpExt", "ListenOverflows"))
        {
            cur.insert("listen_overflows", v);
        }
        if let Some((ios, ms, inflight)) = p("diskstats").and_then(|t| procfs::diskstats(&t)) {
            cur.insert("disk_ios", ios);
            cur.insert("disk_ms", ms);
            cur.insert("disk_inflight", inflight);
        }
        for (name, v) in self.source.read() {
            if let Some(v) = v {
                cur.insert(name, v);
            }
        }
        let d = |k: &str| -> Option<f64> {
            let (c, p) = (cur.get(k)?, self.prev.get(k)?);
            Some(c.saturating_sub(*p) as f64)
        };
        let rate = |k: &str| -> Option<f64> { Some(d(k)? / dt?) };
        let features: Vec<Option<f32>> = NODE_FEATURES
            .iter()
            .map(|f| {
                let v = match *f {
                    "cpu_busy_frac" => d("cpu_total")
                        .filter(|t| *t > 0.0)
                        .and_then(|t| Some(1.0 - d("cpu_idle")? / t)),
                    "cpu_steal_frac" => d("cpu_total")
                        .filter(|t| *t > 0.0)
                        .and_then(|t| Some(d("cpu_steal")? / t)),
                    "node_runq_wait_ms_per_s" => rate("runq_wait_ns").map(|v| v / 1e6),
                    "psi_cpu_some" => rate("psi_cpu").map(|v| v / 1e6),
                    "psi_memory_some" => rate("psi_memory").map(|v| v / 1e6),
                    "psi_memory_full" => rate("psi_memory_full").map(|v| v / 1e6),
                    "psi_io_some" => rate("psi_io").map(|v| v / 1e6),
                    "psi_io_full" => rate("psi_io_full").map(|v| v / 1e6),
                    "ctx_switches_per_s" => rate("context_switches").or_else(|| rate("ctxt")),
                    "page_faults_per_s" => rate("page_faults").or_else(|| rate("pgfault")),
                    "major_faults_per_s" => rate("pgmajfault"),
                    "net_drops_per_s" => rate("net_drops"),
                    "tcp_retrans_per_s" => rate("tcp_retrans"),
                    "listen_overflows_per_s" => rate("listen_overflows"),
                    "disk_await_ms" => d("disk_ios")
                        .and_then(|n| Some(if n > 0.0 { d("disk_ms")? / n } else { 0.0 })),
                    "disk_inflight" => cur.get("disk_inflight").map(|v| *v as f64),
                    "ipc" => d("cycles")
                        .filter(|c| *c > 0.0)
                        .and_then(|c| Some(d("instructions")? / c)),
                    "llc_mpki" => d("instructions")
                        .filter(|i| *i > 0.0)
                        .and_then(|i| Some(d("llc_misses")? / (i / 1000.0))),
                    "cache_miss_ratio" => d("llc_references")
                        .filter(|r| *r > 0.0)
                        .and_then(|r| Some(d("llc_misses")? / r)),
                    _ => None,
                };
                v.filter(|x| x.is_finite()).map(|x| x as f32)
            })
            .collect();
        let services = targets
            .iter()
            .take(1024)
            .map(|(svc, t)| (svc.clone(), self.sample_service(svc, t, dt)))
            .collect();
        self.prev = cur;
        NodeSample {
            node: self.node.clone(),
            unix_ns,
            features,
            services,
        }
    }

    fn sample_service(&mut self, svc: &str, t: &ProcTarget, dt: Option<f64>) -> ServiceHw {
        let mut run = 0u64;
        let mut wait = 0u64;
        let mut any = false;
        for pid in &t.pids {
            let task_dir = self.proc_root.join(pid.to_string()).join("task");
            let Ok(entries) = std::fs::read_dir(&task_dir) else {
                continue;
            };
            for e in entries.flatten().take(512) {
                if let Some((r, w)) =
                    read(&e.path().join("schedstat")).and_then(|s| procfs::schedstat_task(&s))
                {
                    run += r;
                    wait += w;
                    any = true;
                }
            }
        }
        let throttled = t.cgroup.as_deref().and_then(|cg| {
            let cg = cg.trim_start_matches('/');
            for base in ["cpu", "cpu,cpuacct", "cpuacct,cpu"] {
                if let Some(v) = read(&self.cgroup_root.join(base).join(cg).join("cpu.stat"))
                    .and_then(|s| procfs::keyed(&s, "throttled_time"))
                {
                    return Some(v);
                }
            }
            for base in ["unified", ""] {
                if let Some(v) = read(&self.cgroup_root.join(base).join(cg).join("cpu.stat"))
                    .and_then(|s| procfs::keyed(&s, "throttled_usec"))
                {
                    return Some(v.saturating_mul(1000));
                }
            }
            None
        });
        let prev = self.prev_proc.insert(
            svc.to_owned(),
            ProcPrev {
                run_ns: run,
                wait_ns: wait,
                throttled_ns: throttled,
            },
        );
        let (Some(prev), Some(dt)) = (prev, dt) else {
            return ServiceHw::default();
        };
        let per_s = |c: u64, p: u64| c.saturating_sub(p) as f64 / dt;
        ServiceHw {
            runq_wait_ms_per_s: any.then(|| (per_s(wait, prev.wait_ns) / 1e6) as f32),
            cpu_used_cores: any.then(|| (per_s(run, prev.run_ns) / 1e9) as f32),
            throttled_ms_per_s: throttled
                .zip(prev.throttled_ns)
                .map(|(c, p)| (per_s(c, p) / 1e6) as f32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An injected PMU: cycles and instructions grow, LLC is "missing".
    struct FakePmu {
        n: u64,
    }
    impl CounterSource for FakePmu {
        fn probe(&mut self) -> Vec<(&'static str, Result<(), String>)> {
            vec![
                ("cycles", Ok(())),
                ("instructions", Ok(())),
                ("llc_misses", Err("no PMU".into())),
            ]
        }
        fn read(&mut self) -> Vec<(&'static str, Option<u64>)> {
            self.n += 1;
            vec![
                ("cycles", Some(self.n * 1000)),
                ("instructions", Some(self.n * 2500)),
            ]
        }
    }

    fn col(n: &str) -> usize {
        NODE_FEATURES.iter().position(|f| *f == n).unwrap()
    }

    #[test]
    fn pmu_path_with_injected_source_and_unsupported_is_none() {
        let mut s = Sampler::new("n1".into(), Box::new(FakePmu { n: 0 }));
        assert!(s.report().supported().contains(&"cycles"));
        assert!(s.report().unsupported().contains(&"llc_misses"));
        let first = s.sample(1, &HashMap::new());
        assert!(
            first.features[col("ipc")].is_none(),
            "no rate from one sample"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = s.sample(2, &HashMap::new());
        assert_eq!(second.features[col("ipc")], Some(2.5));
        assert_eq!(
            second.features[col("llc_mpki")],
            None,
            "unsupported is None, never 0"
        );
        // Real /proc on this machine: CPU busy fraction is a fraction.
        if let Some(b) = second.features[col("cpu_busy_frac")] {
            assert!((0.0..=1.0).contains(&b));
        }
    }

    #[test]
    fn rates_from_a_fake_proc_and_missing_files_are_unsupported() {
        struct NoPmu;
        impl CounterSource for NoPmu {
            fn probe(&mut self) -> Vec<(&'static str, Result<(), String>)> {
                vec![("cycles", Err("no PMU".into()))]
            }
            fn read(&mut self) -> Vec<(&'static str, Option<u64>)> {
                Vec::new()
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pressure")).unwrap();
        let write = |busy: u64, idle: u64, steal: u64, psi_us: u64| {
            std::fs::write(
                root.join("stat"),
                format!("cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\nctxt 100\n"),
            )
            .unwrap();
            std::fs::write(
                root.join("pressure/cpu"),
                format!("some avg10=0.00 avg60=0.00 avg300=0.00 total={psi_us}\n"),
            )
            .unwrap();
        };
        write(100, 100, 0, 0);
        let mut s = Sampler::with_roots("n".into(), Box::new(NoPmu), root, root);
        assert!(s.report().unsupported().contains(&"psi_io"));
        assert!(s.report().supported().contains(&"psi_cpu"));
        s.sample(1, &HashMap::new());
        std::thread::sleep(std::time::Duration::from_millis(50));
        // +60 busy, +20 idle, +20 steal ticks; PSI cpu stalled for 25 ms.
        write(160, 120, 20, 25_000);
        let f = s.sample(2, &HashMap::new()).features;
        let busy = f[col("cpu_busy_frac")].unwrap();
        assert!((busy - 0.8).abs() < 1e-6, "{busy}");
        assert!((f[col("cpu_steal_frac")].unwrap() - 0.2).abs() < 1e-6);
        let psi = f[col("psi_cpu_some")].unwrap();
        assert!(psi > 0.0 && psi <= 0.5, "{psi}");
        for missing in [
            "psi_io_some",
            "psi_memory_some",
            "disk_await_ms",
            "net_drops_per_s",
            "ipc",
        ] {
            assert_eq!(
                f[col(missing)],
                None,
                "{missing} must be unsupported, not 0"
            );
        }
    }

    #[test]
    fn per_service_schedstat_of_this_process() {
        let mut s = Sampler::new("n1".into(), Box::new(perf::PerfSource::new()));
        let mut targets = HashMap::new();
        targets.insert(
            "me".to_string(),
            ProcTarget {
                pids: vec![std::process::id()],
                cgroup: Some("/does-not-exist".into()),
            },
        );
        s.sample(1, &targets);
        // Burn some CPU so run time grows.
        let mut x = 0u64;
        let t0 = Instant::now();
        while t0.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert_ne!(x, 1);
        let second = s.sample(2, &targets);
        let hw = second.services[0].1;
        if std::path::Path::new("/proc/self/task").exists() {
            assert!(hw.cpu_used_cores.unwrap() > 0.0);
            assert!(hw.runq_wait_ms_per_s.is_some());
        }
        assert_eq!(
            hw.throttled_ms_per_s, None,
            "unknown cgroup is unsupported, not 0"
        );
    }
}
