//! Resource diagnosis: which resource a flagged service is short of, and what to do about it.
//!
//! A [`Diagnoser`] keeps a healthy baseline (running mean and variance) for every signal of every
//! service and of the node, learned only from ticks where the service was not flagged. For a
//! flagged service it scores each signal by how far it sits above its baseline (in standard
//! deviations; for signals where lower is worse, such as IPC, below), maps signals to resources
//! by name, and names the resource with the largest deviation, with the signals as evidence.
//!
//! Signals map to resources by name:
//!
//! | resource | signals (name contains) | recommended action |
//! |---|---|---|
//! | [`Resource::Cpu`] | `runq`, `throttl`, `cpu`, `steal`, `psi_cpu` | raise the service's CPU quota (cgroup `cpu.max` / `cpu.cfs_quota_us`) by the demand of any co-located hog, or move the hog |
//! | [`Resource::Memory`] | `psi_memory`, `mem`, `page_fault`, `swap` | raise the memory limit or relieve memory pressure (cgroup `memory.max`), or migrate the service |
//! | [`Resource::CacheMemoryBandwidth`] | `llc`, `cache`, `mpki`, `membw`, `ipc` (lower is worse) | partition the last-level cache and memory bandwidth (Intel CAT / MBA), or move the noisy neighbour |
//! | [`Resource::Io`] | `psi_io`, `disk`, `blk`, `io_` | throttle competing I/O (cgroup `io.max`) or move the service to a quieter disk |
//! | [`Resource::Network`] | `net`, `retrans`, `drop`, `listen_overflow`, `tcp` | partition network bandwidth (tc HTB) or raise the listen backlog |
//! | [`Resource::Downstream`] | `downstream_ms` (inclusive p99 minus self p99) | act on the named dependency; shed at the entry meanwhile |
//! | [`Resource::Unknown`] | nothing deviates by 3 sd or more | shed load at the entry (lower the admit fraction) and investigate |

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::features::Running;

/// Deviation (in standard deviations) below which no resource is named.
const MIN_DEVIATION: f32 = 3.0;

/// A resource a service can be short of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resource {
    /// CPU time: run-queue wait, throttling, steal, CPU pressure.
    Cpu,
    /// Memory: pressure, page faults, swapping.
    Memory,
    /// Last-level cache or memory bandwidth: LLC misses, falling IPC.
    CacheMemoryBandwidth,
    /// Disk I/O: pressure, await, queue depth.
    Io,
    /// Network: drops, retransmits, listen overflows.
    Network,
    /// A downstream dependency: the time spent waiting on callees grew, not the own work.
    Downstream,
    /// No signal deviates enough to name one.
    Unknown,
}

impl Resource {
    /// The recommended action (see the table in the [module docs](self)).
    pub fn action(self) -> &'static str {
        match self {
            Resource::Cpu => {
                "raise the service's CPU quota by the demand of any co-located hog, or move the hog"
            }
            Resource::Memory => {
                "raise the memory limit or relieve memory pressure, or migrate the service"
            }
            Resource::CacheMemoryBandwidth => {
                "partition the last-level cache and memory bandwidth (CAT/MBA), or move the noisy neighbour"
            }
            Resource::Io => "throttle competing I/O or move the service to a quieter disk",
            Resource::Network => "partition network bandwidth (tc HTB) or raise the listen backlog",
            Resource::Downstream => "act on the downstream dependency; shed at the entry meanwhile",
            Resource::Unknown => "shed load at the entry and investigate",
        }
    }

    /// Short lower-case name (`"cpu"`, `"cache_memory_bandwidth"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::CacheMemoryBandwidth => "cache_memory_bandwidth",
            Resource::Io => "io",
            Resource::Network => "network",
            Resource::Downstream => "downstream",
            Resource::Unknown => "unknown",
        }
    }

    /// The resource a signal speaks for, and whether a lower value is the bad direction.
    ///
    /// `None` for signals that are not about a resource (queues, arrivals, latency).
    pub fn of_signal(name: &str) -> Option<(Resource, bool)> {
        let n = name.to_ascii_lowercase();
        let has = |keys: &[&str]| keys.iter().any(|k| n.contains(k));
        if n.contains("downstream") {
            Some((Resource::Downstream, false))
        } else if has(&["psi_io", "disk", "blk", "io_"]) {
            Some((Resource::Io, false))
        } else if has(&["llc", "cache", "mpki", "membw"]) {
            Some((Resource::CacheMemoryBandwidth, false))
        } else if n.contains("ipc") {
            Some((Resource::CacheMemoryBandwidth, true))
        } else if has(&["psi_memory", "mem", "page_fault", "swap"]) {
            Some((Resource::Memory, false))
        } else if has(&["runq", "throttl", "cpu", "steal"]) {
            Some((Resource::Cpu, false))
        } else if has(&["net", "retrans", "drop", "listen_overflow", "tcp"]) {
            Some((Resource::Network, false))
        } else {
            None
        }
    }
}

/// One signal's deviation from its healthy baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Signal name (`node.` prefix for node counters).
    pub signal: String,
    /// Current value.
    pub value: f32,
    /// Healthy mean.
    pub baseline: f32,
    /// Deviation in healthy standard deviations, signed so that positive is worse.
    pub deviation: f32,
}

/// The diagnosis of one flagged service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The most deviated resource.
    pub resource: Resource,
    /// The recommended action for it.
    pub action: String,
    /// For [`Resource::Downstream`]: the callee that looks most at fault, when known.
    pub dependency: Option<String>,
    /// The most deviated signals, worst first (at most 3).
    pub evidence: Vec<Evidence>,
}

/// Healthy baselines and the diagnosis rule.
#[derive(Debug, Default)]
pub struct Diagnoser {
    baselines: HashMap<String, HashMap<String, Running>>,
    /// Signal name -> whether it speaks for a resource (cached: names repeat every tick).
    relevant: HashMap<String, bool>,
}

/// Baseline key of node-level counters.
const NODE: &str = "\u{0}node";

impl Diagnoser {
    /// An empty diagnoser: every signal starts without a baseline.
    pub fn new() -> Self {
        Diagnoser::default()
    }

    /// Learns one healthy tick of `service`'s signals and of the node's.
    pub fn learn(&mut self, service: &str, signals: &[(&str, f32)], node: &[(&str, f32)]) {
        let relevant = &mut self.relevant;
        let baselines = &mut self.baselines;
        let mut learn = |key: &str, signals: &[(&str, f32)]| {
            if !baselines.contains_key(key) {
                baselines.insert(key.to_owned(), HashMap::new());
            }
            let Some(map) = baselines.get_mut(key) else {
                return;
            };
            for (name, v) in signals {
                let speaks = match relevant.get(*name) {
                    Some(r) => *r,
                    None => {
                        let r = Resource::of_signal(name).is_some();
                        relevant.insert((*name).to_owned(), r);
                        r
                    }
                };
                if v.is_finite() && speaks {
                    match map.get_mut(*name) {
                        Some(r) => r.update(f64::from(*v)),
                        None => {
                            let mut r = Running::default();
                            r.update(f64::from(*v));
                            map.insert((*name).to_owned(), r);
                        }
                    }
                }
            }
        };
        learn(service, signals);
        learn(NODE, node);
    }

    /// Names the resource `service` is short of, from its signals and the node's.
    pub fn diagnose(
        &self,
        service: &str,
        signals: &[(&str, f32)],
        node: &[(&str, f32)],
    ) -> Diagnosis {
        let mut scored: Vec<(Resource, Evidence)> = Vec::new();
        let mut score = |key: &str, prefix: &str, signals: &[(&str, f32)]| {
            let Some(map) = self.baselines.get(key) else {
                return;
            };
            for (name, v) in signals {
                let (Some((resource, lower_is_worse)), Some(base)) =
                    (Resource::of_signal(name), map.get(*name))
                else {
                    continue;
                };
                if !v.is_finite() || base.n < 10 {
                    continue;
                }
                let floor = 0.05 * base.mean.abs() + 1e-3;
                let sd = base.var.sqrt().max(floor);
                let mut dev = ((f64::from(*v) - base.mean) / sd) as f32;
                if lower_is_worse {
                    dev = -dev;
                }
                scored.push((
                    resource,
                    Evidence {
                        signal: format!("{prefix}{name}"),
                        value: *v,
                        baseline: base.mean as f32,
                        deviation: dev,
                    },
                ));
            }
        };
        score(service, "", signals);
        score(NODE, "node.", node);
        scored.sort_by(|a, b| b.1.deviation.total_cmp(&a.1.deviation));
        let resource = match scored.first() {
            Some((r, e)) if e.deviation >= MIN_DEVIATION => *r,
            _ => Resource::Unknown,
        };
        Diagnosis {
            resource,
            action: resource.action().to_owned(),
            dependency: None,
            evidence: scored.into_iter().take(3).map(|(_, e)| e).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_map_to_resources() {
        assert_eq!(
            Resource::of_signal("runq_wait_ms_per_s"),
            Some((Resource::Cpu, false))
        );
        assert_eq!(
            Resource::of_signal("psi_io_some"),
            Some((Resource::Io, false))
        );
        assert_eq!(
            Resource::of_signal("psi_memory_full"),
            Some((Resource::Memory, false))
        );
        assert_eq!(
            Resource::of_signal("ipc"),
            Some((Resource::CacheMemoryBandwidth, true))
        );
        assert_eq!(
            Resource::of_signal("net_retransmits_per_s"),
            Some((Resource::Network, false))
        );
        assert_eq!(Resource::of_signal("queue_depth_mean"), None);
    }

    #[test]
    fn names_the_most_deviated_resource_with_evidence() {
        let mut d = Diagnoser::new();
        for k in 0..100 {
            let jitter = (k % 5) as f32 * 0.1;
            d.learn(
                "svc",
                &[
                    ("runq_wait_ms_per_s", 5.0 + jitter),
                    ("queue_depth_mean", 0.2),
                ],
                &[
                    ("psi_memory_some", 1.0 + jitter),
                    ("llc_mpki", 2.0 + jitter),
                ],
            );
        }
        let cpu = d.diagnose(
            "svc",
            &[("runq_wait_ms_per_s", 80.0)],
            &[("psi_memory_some", 1.1), ("llc_mpki", 2.1)],
        );
        assert_eq!(cpu.resource, Resource::Cpu);
        assert_eq!(cpu.evidence[0].signal, "runq_wait_ms_per_s");
        assert_eq!(cpu.action, Resource::Cpu.action());
        let mem = d.diagnose(
            "svc",
            &[("runq_wait_ms_per_s", 5.1)],
            &[("psi_memory_some", 30.0), ("llc_mpki", 2.1)],
        );
        assert_eq!(mem.resource, Resource::Memory);
        assert_eq!(mem.evidence[0].signal, "node.psi_memory_some");
        let calm = d.diagnose("svc", &[("runq_wait_ms_per_s", 5.1)], &[]);
        assert_eq!(calm.resource, Resource::Unknown);
        let unseen = d.diagnose("new", &[("runq_wait_ms_per_s", 500.0)], &[]);
        assert_eq!(unseen.resource, Resource::Unknown, "no baseline, no claim");
    }
}
