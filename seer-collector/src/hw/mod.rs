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
