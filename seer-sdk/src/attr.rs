//! Attribute keys the SDK writes on exported spans and resources.

/// OTel `service.name`.
pub const SERVICE_NAME: &str = "service.name";
/// OTel `host.name`.
pub const HOST_NAME: &str = "host.name";
/// OTel `process.pid`.
pub const PROCESS_PID: &str = "process.pid";
/// The process's cgroup path.
pub const CGROUP: &str = "seer.cgroup";
/// OTel `http.response.status_code`.
pub const HTTP_STATUS: &str = "http.response.status_code";
/// Time queued before admission or the handler's own worker, ns.
pub const QUEUE_WAIT_NS: &str = "seer.queue_wait_ns";
/// Exclusive (self) time, ns.
pub const SELF_NS: &str = "seer.self_ns";
/// In-flight requests of the endpoint at arrival.
pub const INFLIGHT: &str = "seer.inflight";
/// Local in-flight at arrival.
pub const LOCAL_INFLIGHT: &str = "seer.local_inflight";
/// Admission priority (written when not the default).
pub const PRIORITY: &str = "seer.priority";
/// The request was shed.
pub const SHED: &str = "seer.shed";
/// The response future was dropped before completion.
pub const CANCELLED: &str = "seer.cancelled";
/// Kept because slower than its QoS threshold.
pub const SLOW: &str = "seer.slow";
