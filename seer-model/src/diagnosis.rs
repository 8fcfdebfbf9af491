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
    /// Signal name -> the resource it speaks for ([`Resource::of_signal`], cached: the same
    /// names repeat every tick, and matching them costs a lower-case copy and a dozen substring
    /// searches).
    relevant: HashMap<String, Option<(Resource, bool)>>,
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
                    Some(r) => r.is_some(),
                    None => {
                        let r = Resource::of_signal(name);
                        relevant.insert((*name).to_owned(), r);
                        r.is_some()
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
    pub fn diagnose<'a>(
        &self,
        service: &str,
        signals: &[(&'a str, f32)],
        node: &[(&'a str, f32)],
    ) -> Diagnosis {
        // (resource, prefix, name, value, baseline, deviation); evidence strings are built only
        // for the few kept.
        let mut scored: Vec<(Resource, &str, &str, f32, f32, f32)> = Vec::new();
        let mut score = |key: &str, prefix: &'static str, signals: &[(&'a str, f32)]| {
            let Some(map) = self.baselines.get(key) else {
                return;
            };
            for (name, v) in signals {
                let speaks = match self.relevant.get(*name) {
                    Some(r) => *r,
                    None => Resource::of_signal(name),
                };
                let (Some((resource, lower_is_worse)), Some(base)) = (speaks, map.get(*name))
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
                scored.push((resource, prefix, name, *v, base.mean as f32, dev));
            }
        };
        score(service, "", signals);
        score(NODE, "node.", node);
        scored.sort_by(|a, b| b.5.total_cmp(&a.5));
        let resource = match scored.first() {
            Some(e) if e.5 >= MIN_DEVIATION => e.0,
            _ => Resource::Unknown,
        };
        Diagnosis {
            resource,
            action: resource.action().to_owned(),
            dependency: None,
            evidence: scored
                .into_iter()
                .take(3)
                .map(|(_, prefix, name, value, baseline, deviation)| Evidence {
                    signal: format!("{prefix}{name}"),
                    value,
                    baseline,
                    deviation,
                })
                .collect(),
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
        assert_eq!(mem.evidence.len(), 3, "{mem:?}");
        assert!(
            mem.evidence
                .windows(2)
                .all(|w| w[0].deviation >= w[1].deviation),
            "worst first: {mem:?}"
        );
        let calm = d.diagnose("svc", &[("runq_wait_ms_per_s", 5.1)], &[]);
        assert_eq!(calm.resource, Resource::Unknown);
        let unseen = d.diagnose("new", &[("runq_wait_ms_per_s", 500.0)], &[]);
        assert_eq!(unseen.resource, Resource::Unknown, "no baseline, no claim");
    }
}
