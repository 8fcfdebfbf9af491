//! Resource diagnosis for a flagged service: the most deviated feature against its healthy
//! baseline names the scarce resource, and the resource maps to a recommended action.
//!
//! | resource | features that point at it | recommended action |
//! |---|---|---|
//! | `cpu` | run-queue wait, cgroup throttling, CPU used, steal, PSI cpu | raise the service's CPU quota (`cpu.cfs_quota_us`) or move the co-located CPU hog |
//! | `memory` | PSI memory, major page faults | raise the memory limit or move the memory-heavy neighbour |
//! | `cache` | LLC misses per kilo-instruction, IPC drop | partition the LLC (Intel CAT / AMD L3 QoS) or move the cache-thrashing neighbour |
//! | `io` | PSI io, disk await, disk in-flight | throttle the neighbours' io (blkio/io.max) or move the service |
//! | `network` | drops, retransmits, listen overflows | partition bandwidth (tc HTB) or raise the listen backlog |
//! | `downstream` | a callee is at higher risk than the service; or the service's own wait on its downstream calls (`downstream_wait_ms`: latency p99 minus self-latency p99, e.g. a slow database traced as a client call) | act on the downstream service or backend named in the evidence; shed at the entry meanwhile (more CPU does not help) |
//!
//! The baseline is an EWMA mean and variance per (service, feature) and per (node, feature),
//! updated only on ticks where the service was healthy. The most deviated feature names its
//! resource when it is 3 standard deviations above its mean, or 1.5 and at least twice the
//! mean (bursty counters such as throttling have a wide healthy spread); else `unknown`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The scarce resource behind a flagged service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU time: quota, run queue, steal.
    Cpu,
    /// Memory capacity or reclaim pressure.
    Memory,
    /// Last-level cache or memory bandwidth.
    Cache,
    /// Disk or block io.
    Io,
    /// Network stack.
    Network,
    /// A downstream dependency.
    Downstream,
    /// No feature deviated enough to say.
    Unknown,
}

impl Resource {
    /// The recommended action for the resource (the table in the module docs).
    pub fn action(self) -> &'static str {
        match self {
            Self::Cpu => {
                "raise the service's CPU quota (cpu.cfs_quota_us) or move the co-located CPU hog"
            }
            Self::Memory => "raise the memory limit or move the memory-heavy neighbour",
            Self::Cache => {
                "partition the LLC (Intel CAT / AMD L3 QoS) or move the cache-thrashing neighbour"
            }
            Self::Io => "throttle the neighbours' io (blkio/io.max) or move the service",
            Self::Network => "partition bandwidth (tc HTB) or raise the listen backlog",
            Self::Downstream => {
                "act on the downstream service or backend named in the evidence; shed at the entry meanwhile"
            }
            Self::Unknown => "shed load at the entry until the cause is known",
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Cache => "cache",
            Self::Io => "io",
            Self::Network => "network",
            Self::Downstream => "downstream",
            Self::Unknown => "unknown",
        }
    }
}

/// The derived service feature for time spent waiting on downstream calls: latency p99 minus
/// self-latency p99, ms (0 for a service that made no downstream call).
pub const DOWNSTREAM_WAIT: &str = "downstream_wait_ms";

/// The resource a feature points at, for service features ([`super::FEATURES`]) and node
/// features ([`crate::hw::NODE_FEATURES`]); `None` for load/latency context features.
pub fn resource_of(feature: &str) -> Option<Resource> {
    Some(match feature {
        "runq_wait_ms_per_s"
        | "throttled_ms_per_s"
        | "cpu_used_cores"
        | "cpu_steal_frac"
        | "cpu_busy_frac"
        | "psi_cpu_some"
        | "node_runq_wait_ms_per_s" => Resource::Cpu,
        "psi_memory_some" | "psi_memory_full" | "major_faults_per_s" | "page_faults_per_s" => {
            Resource::Memory
        }
        "llc_mpki" | "ipc" | "cache_miss_ratio" => Resource::Cache,
        "psi_io_some" | "psi_io_full" | "disk_await_ms" | "disk_inflight" => Resource::Io,
        "net_drops_per_s" | "tcp_retrans_per_s" | "listen_overflows_per_s" => Resource::Network,
        DOWNSTREAM_WAIT => Resource::Downstream,
        _ => return None,
    })
}

/// One piece of evidence: a feature, its value now and its healthy baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Feature name (service or node feature), or `callee:<name>` for a downstream.
    pub feature: String,
    /// Value this tick.
    pub value: f64,
    /// Healthy baseline mean.
    pub baseline: f64,
    /// Deviation in baseline standard deviations (IPC counts drops as positive).
    pub z: f64,
}

/// A diagnosis for one flagged service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The scarce resource.
    pub resource: Resource,
    /// What to do about it.
    pub action: String,
    /// The most deviated features, largest first (at most 5).
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Copy)]
struct Stat {
    mean: f64,
    var: f64,
    n: u32,
}

impl Stat {
    fn update(&mut self, v: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        let a = if self.n < 20 {
            1.0 / f64::from(self.n)
        } else {
            alpha
        };
        let d = v - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }

    fn z(&self, v: f64) -> f64 {
        let sd = self.var.sqrt().max(0.1 * self.mean.abs()).max(1e-3);
        (v - self.mean) / sd
    }
}

/// Whether a piece of evidence deviates enough to name its resource: 3 standard deviations
/// above its healthy mean, or 1.5 and at least twice the mean. Bursty counters (throttling,
/// run-queue wait) have a wide healthy spread, so a fault that multiplies them can stay under
/// 3 standard deviations.
fn deviated(e: &Evidence) -> bool {
    e.z >= 3.0 || (e.z >= 1.5 && e.value >= 2.0 * e.baseline && e.value > 0.0)
}

/// The deviation given to a riskier callee: it outranks any local deviation (finite, so it
/// survives JSON).
pub const DOWNSTREAM_Z: f64 = 1e6;

/// Keeps healthy baselines and diagnoses flagged services.
#[derive(Debug, Default)]
pub struct Diagnoser {
    stats: HashMap<(String, &'static str), Stat>,
    alpha: f64,
}

/// What the diagnoser sees of one service in one tick.
#[derive(Debug, Clone, Copy)]
pub struct ServiceView<'a> {
    /// Service name.
    pub service: &'a str,
    /// The service's features, in `feature_names` order; `NaN` when missing.
    pub features: &'a [f32],
    /// Column names of `features`.
    pub feature_names: &'a [&'static str],
    /// Node name and the node's features (`None` = unsupported on that node).
    pub node: Option<(&'a str, &'a [Option<f32>])>,
    /// Column names of the node features.
    pub node_feature_names: &'a [&'static str],
}

impl Diagnoser {
    /// A diagnoser with a 0.05 EWMA weight.
    pub fn new() -> Self {
        Self {
            stats: HashMap::new(),
            alpha: 0.05,
        }
    }

    fn each<'a>(view: &ServiceView<'a>) -> Vec<(String, &'static str, f64)> {
        let mut out = Vec::new();
        let (mut total, mut own) = (None, None);
        for (name, v) in view.feature_names.iter().zip(view.features) {
            match *name {
                "latency_p99_ms" => total = Some(*v),
                "self_latency_p99_ms" => own = Some(*v),
                _ => {}
            }
            if resource_of(name).is_some() && v.is_finite() {
                out.push((view.service.to_owned(), *name, f64::from(*v)));
            }
        }
        if let (Some(total), Some(own)) = (total, own)
            && total.is_finite()
            && own.is_finite()
        {
            let wait = f64::from(total - own).max(0.0);
            out.push((view.service.to_owned(), DOWNSTREAM_WAIT, wait));
        }
        if let Some((node, values)) = view.node {
            for (name, v) in view.node_feature_names.iter().zip(values) {
                if let Some(v) = v.filter(|v| v.is_finite())
                    && resource_of(name).is_some()
                {
                    out.push((format!("node:{node}"), *name, f64::from(v)));
                }
            }
        }
        out
    }

    /// Folds a healthy tick of a service into the baselines.
    pub fn learn(&mut self, view: &ServiceView<'_>) {
        let alpha = self.alpha;
        for (key, name, v) in Self::each(view) {
            self.stats
                .entry((key, name))
                .or_insert(Stat {
                    mean: v,
                    var: 0.0,
                    n: 0,
                })
                .update(v, alpha);
        }
        if self.stats.len() > 200_000 {
            self.stats.clear();
        }
    }

    /// Diagnoses a flagged service. `callees` are (name, risk) of its direct callees, and
    /// `risk` its own risk.
    pub fn diagnose(
        &self,
        view: &ServiceView<'_>,
        risk: f32,
        callees: &[(&str, f32)],
    ) -> Diagnosis {
        let mut evidence: Vec<(Resource, Evidence)> = Self::each(view)
            .into_iter()
            .filter_map(|(key, name, v)| {
                let st = self.stats.get(&(key, name))?;
                let mut z = st.z(v);
                if name == "ipc" {
                    z = -z;
                }
                let resource = resource_of(name)?;
                Some((
                    resource,
                    Evidence {
                        feature: name.to_owned(),
                        value: v,
                        baseline: st.mean,
                        z,
                    },
                ))
            })
            .collect();
        if let Some((callee, crisk)) = callees
            .iter()
            .filter(|(_, r)| r.is_finite())
            .max_by(|a, b| a.1.total_cmp(&b.1))
            && *crisk > risk
        {
            {
                evidence.push((
                    Resource::Downstream,
                    Evidence {
                        feature: format!("callee:{callee}"),
                        value: f64::from(*crisk),
                        baseline: f64::from(risk),
                        // A callee at higher risk outranks any local deviation.
                        z: DOWNSTREAM_Z,
                    },
                ));
            }
        }
        evidence.sort_by(|a, b| b.1.z.total_cmp(&a.1.z));
        let resource = match evidence.first() {
            Some((r, e)) if deviated(e) => *r,
            _ => Resource::Unknown,
        };
        Diagnosis {
            resource,
            action: resource.action().to_owned(),
            evidence: evidence.into_iter().take(5).map(|(_, e)| e).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["runq_wait_ms_per_s", "throttled_ms_per_s", "latency_p99_ms"];
    const NODE: &[&str] = &["psi_io_some", "llc_mpki"];

    fn view<'a>(f: &'a [f32], n: &'a [Option<f32>]) -> ServiceView<'a> {
        ServiceView {
            service: "c",
            features: f,
            feature_names: NAMES,
            node: Some(("n1", n)),
            node_feature_names: NODE,
        }
    }

    #[test]
    fn throttling_names_cpu_and_unsupported_counters_are_ignored() {
        let mut d = Diagnoser::new();
        for i in 0..50 {
            let j = (i % 5) as f32 * 0.1;
            d.learn(&view(&[1.0 + j, 0.0 + j, 5.0], &[Some(0.5 + j), None]));
        }
        let got = d.diagnose(&view(&[30.0, 60.0, 50.0], &[Some(0.6), None]), 0.9, &[]);
        assert_eq!(got.resource, Resource::Cpu);
        assert!(got.evidence[0].feature == "throttled_ms_per_s");
        assert!(got.evidence.iter().all(|e| e.feature != "llc_mpki"));
        assert!(got.action.contains("quota"));
    }

    #[test]
    fn bursty_throttling_several_times_its_mean_names_cpu() {
        let mut d = Diagnoser::new();
        // Healthy ticks with occasional heavy throttling: mean ~330, wide spread.
        for i in 0..100 {
            let thr = if i % 5 == 0 { 1650.0 } else { 0.0 };
            d.learn(&view(&[50.0, thr, 5.0], &[Some(0.5), None]));
        }
        let got = d.diagnose(&view(&[50.0, 1750.0, 5.0], &[Some(0.5), None]), 0.9, &[]);
        assert!(got.evidence[0].z < 3.0, "{got:?}");
        assert_eq!(got.resource, Resource::Cpu, "{got:?}");
        // Twice the mean but within 1.5 standard deviations is not enough.
        let got = d.diagnose(&view(&[50.0, 700.0, 5.0], &[Some(0.5), None]), 0.9, &[]);
        assert_eq!(got.resource, Resource::Unknown, "{got:?}");
    }

    #[test]
    fn riskier_callee_names_downstream_and_quiet_is_unknown() {
        let mut d = Diagnoser::new();
        for _ in 0..30 {
            d.learn(&view(&[1.0, 0.0, 5.0], &[Some(0.5), None]));
        }
        let got = d.diagnose(
            &view(&[1.0, 0.0, 5.0], &[Some(0.5), None]),
            0.6,
            &[("d", 0.9)],
        );
        assert_eq!(got.resource, Resource::Downstream);
        assert_eq!(got.evidence[0].feature, "callee:d");
        let got = d.diagnose(&view(&[1.0, 0.0, 5.0], &[Some(0.5), None]), 0.6, &[]);
        assert_eq!(got.resource, Resource::Unknown);
    }

    #[test]
    fn own_downstream_wait_names_downstream_and_a_cpu_hog_stays_cpu() {
        const LAT: &[&str] = &[
            "throttled_ms_per_s",
            "latency_p99_ms",
            "self_latency_p99_ms",
        ];
        let view = |f: &'static [f32]| ServiceView {
            service: "db-user",
            features: f,
            feature_names: LAT,
            node: None,
            node_feature_names: NODE,
        };
        let mut d = Diagnoser::new();
        // Healthy: no downstream call, so latency and self latency are the same samples.
        for _ in 0..50 {
            d.learn(&view(&[1.0, 12.0, 12.0]));
            d.learn(&view(&[2.0, 14.0, 14.0]));
        }
        // A slow backend call: the request waits 30 ms on it, its own work is unchanged.
        let slow = d.diagnose(&view(&[1.5, 44.0, 13.0]), 0.9, &[]);
        assert_eq!(slow.resource, Resource::Downstream, "{slow:?}");
        assert_eq!(slow.evidence[0].feature, DOWNSTREAM_WAIT);
        assert!((slow.evidence[0].value - 31.0).abs() < 1e-9);
        // A CPU hog: throttled, and slower at its own work, with no downstream wait.
        let hog = d.diagnose(&view(&[400.0, 60.0, 60.0]), 0.9, &[]);
        assert_eq!(hog.resource, Resource::Cpu, "{hog:?}");
        assert!(
            hog.evidence
                .iter()
                .all(|e| e.feature != DOWNSTREAM_WAIT || e.z <= 0.0),
            "{hog:?}"
        );
    }
}
