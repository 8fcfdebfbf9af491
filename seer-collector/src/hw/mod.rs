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
