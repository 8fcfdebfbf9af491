//! Per-service CPU control with cgroup v1's cpu controller.
//!
//! Each service runs as its own process in its own cgroup under
//! `/sys/fs/cgroup/cpu/seer-demo/<run pid>/<service>`, with a CFS quota (`cpu.cfs_quota_us` over
//! a 100 ms period). That is what lets contention be put on exactly one service (a hog process
//! inside its cgroup shares its quota), lets the actuator give a service more CPU, and gives the
//! collector a per-service throttling signal (`cpu.stat`).
//!
//! **Ownership:** after set-up, only the actuator writes `cpu.cfs_quota_us`. The fault injector
//! never writes a quota; it puts CPU faults in as hog processes inside the culprit's cgroup.
//!
//! Where cgroup v1 is missing or not writable (no root, cgroup v2 only), [`Cgroups::probe`]
//! returns `None` and the harness falls back to in-process hog threads and no quotas, saying so.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// The cgroup v1 cpu hierarchy.
pub const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
/// The quota period the harness sets, microseconds.
pub const PERIOD_US: u64 = 100_000;

/// The cgroups of one run.
#[derive(Debug)]
pub struct Cgroups {
    base: PathBuf,
    quotas: Mutex<BTreeMap<String, f64>>,
}

/// Throttling counters from `cpu.stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuStat {
    /// Periods in which the cgroup was throttled.
    pub nr_throttled: u64,
    /// Total throttled time, nanoseconds.
    pub throttled_ns: u64,
}

impl Cgroups {
    /// Creates the run's cgroup folder, or returns `None` (with the reason) where cgroup v1's cpu
    /// controller is not usable.
    pub fn probe() -> std::result::Result<Self, String> {
        let root = Path::new(CPU_ROOT);
        if !root.join("cpu.cfs_quota_us").exists() {
            return Err(format!("{CPU_ROOT} has no cgroup v1 cpu controller"));
        }
        sweep_stale(&root.join("seer-demo"));
        let base = root.join("seer-demo").join(std::process::id().to_string());
        if let Err(e) = fs::create_dir_all(&base) {
            return Err(format!(
                "cannot create {} ({e}); run as root",
                base.display()
            ));
        }
        let me = Self {
            base,
            quotas: Mutex::new(BTreeMap::new()),
        };
        // A write test: a throwaway group with a quota.
        if let Err(e) = me.create("probe", 50.0, None) {
            me.cleanup();
            return Err(format!("cgroup v1 cpu controller not writable: {e:#}"));
        }
        let _ = fs::remove_dir(me.base.join("probe"));
        Ok(me)
    }

    /// Path of a group, relative to the cpu hierarchy root (what `/proc/<pid>/cgroup` shows).
    pub fn rel_path(&self, name: &str) -> String {
        self.path(name)
            .strip_prefix(CPU_ROOT)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// Creates a group with a quota (percent of one core) and optional `cpu.shares`.
    ///
    /// # Errors
    /// When the group cannot be created or written.
    pub fn create(&self, name: &str, quota_pct: f64, shares: Option<u64>) -> Result<()> {
        let p = self.path(name);
        fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        write(&p.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        self.set_quota(name, quota_pct)?;
        if let Some(s) = shares {
            write(&p.join("cpu.shares"), &s.to_string())?;
        }
        Ok(())
    }

    /// Sets a group's quota, percent of one core (only the actuator calls this after set-up).
    ///
    /// # Errors
    /// When the quota file cannot be written.
    pub fn set_quota(&self, name: &str, quota_pct: f64) -> Result<()> {
        let us = ((quota_pct / 100.0) * PERIOD_US as f64).round().max(1000.0) as u64;
        write(&self.path(name).join("cpu.cfs_quota_us"), &us.to_string())?;
        if let Ok(mut q) = self.quotas.lock() {
            q.insert(name.to_string(), quota_pct);
        }
        Ok(())
    }

    /// The quota last set on a group, percent of one core.
    pub fn quota(&self, name: &str) -> Option<f64> {
        self.quotas.lock().ok()?.get(name).copied()
    }

    /// Moves a process (all its threads) into a group.
    ///
    /// # Errors
    /// When `cgroup.procs` cannot be written.
    pub fn add_pid(&self, name: &str, pid: u32) -> Result<()> {
        write(&self.path(name).join("cgroup.procs"), &pid.to_string())
    }

    /// Reads a group's throttling counters.
    pub fn cpu_stat(&self, name: &str) -> CpuStat {
        let mut out = CpuStat::default();
        if let Ok(text) = fs::read_to_string(self.path(name).join("cpu.stat")) {
            for line in text.lines() {
                let mut it = line.split_whitespace();
                match (it.next(), it.next().and_then(|v| v.parse().ok())) {
                    (Some("nr_throttled"), Some(v)) => out.nr_throttled = v,
                    (Some("throttled_time"), Some(v)) => out.throttled_ns = v,
                    _ => {}
                }
            }
        }
        out
    }

    /// CPU time used so far by the processes now in a group (all their threads), nanoseconds,
    /// from `/proc/<pid>/stat`. Falls when a process leaves or exits; callers use the rate over
    /// short intervals and treat a fall as no use.
    pub fn cpu_usage_ns(&self, name: &str) -> u64 {
        // SAFETY: sysconf has no memory effects; _SC_CLK_TCK is a valid name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ns_per_tick = if hz > 0 {
            1_000_000_000 / hz as u64
        } else {
            10_000_000
        };
        let Ok(procs) = fs::read_to_string(self.path(name).join("cgroup.procs")) else {
            return 0;
        };
        procs
            .lines()
            .filter_map(|pid| fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok())
            .filter_map(|stat| {
                // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
                let rest = stat.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                let utime: u64 = f.get(11)?.parse().ok()?;
                let stime: u64 = f.get(12)?.parse().ok()?;
                Some((utime + stime) * ns_per_tick)
            })
            .sum()
    }

    /// Moves every process left in the run's groups back to the root and removes the groups.
    /// Safe to call more than once.
    pub fn cleanup(&self) {
        let Ok(entries) = fs::read_dir(&self.base) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if let Ok(procs) = fs::read_to_string(p.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = fs::write(Path::new(CPU_ROOT).join("cgroup.procs"), pid);
                }
            }
            let _ = fs::remove_dir(&p);
        }
        let _ = fs::remove_dir(&self.base);
        if let Some(parent) = self.base.parent() {
            // Only succeeds when no other run is using it.
            let _ = fs::remove_dir(parent);
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Removes the groups of earlier runs whose harness is gone (killed with SIGKILL).
fn sweep_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let alive = name
            .parse::<u32>()
            .is_ok_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if alive {
            continue;
        }
        let stale = Cgroups {
            base: e.path(),
            quotas: Mutex::new(BTreeMap::new()),
        };
        stale.cleanup();
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("write {value} to {}", path.display()))
}
