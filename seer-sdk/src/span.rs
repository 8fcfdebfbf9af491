//! Finished spans as exporters see them.

use std::sync::Arc;

use crate::id::{SpanId, TraceId};
use crate::record::{SpanKind, flags};

/// One span chosen for export, with times in unix nanoseconds.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FinishedSpan {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent span id ([`SpanId::INVALID`] for a root).
    pub parent_span_id: SpanId,
    /// Name: the endpoint (`"GET /users/{id}"`) for server spans, else the span name.
    pub name: Arc<str>,
    /// Kind.
    pub kind: SpanKind,
    /// Start, unix ns.
    pub start_unix_ns: u64,
    /// End, unix ns.
    pub end_unix_ns: u64,
    /// HTTP status (0 if none or cancelled).
    pub status: u16,
    /// [`flags`] bits.
    pub flags: u8,
    /// Time queued before admission or the handler's own worker, ns.
    pub queue_wait_ns: u64,
    /// Exclusive (self) time: duration minus time blocked on downstream calls, ns.
    pub self_ns: u64,
    /// In-flight requests of the endpoint at arrival.
    pub inflight: u32,
    /// Local in-flight at arrival.
    pub local_inflight: u32,
    /// Admission priority.
    pub priority: u8,
    /// Whether this span was kept because it was slower than its QoS threshold.
    pub slow: bool,
}

impl FinishedSpan {
    /// Duration, ns.
    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns)
    }

    /// Whether head sampling kept it.
    pub fn is_sampled(&self) -> bool {
        self.flags & flags::SAMPLED != 0
    }

    /// Whether it ended in error.
    pub fn is_error(&self) -> bool {
        self.flags & flags::ERROR != 0
    }

    /// Whether it was shed.
    pub fn is_shed(&self) -> bool {
        self.flags & flags::SHED != 0
    }

    /// Whether its future was dropped before completion.
    pub fn is_cancelled(&self) -> bool {
        self.flags & flags::CANCELLED != 0
    }

    /// Whether its parent came from another process.
    pub fn has_remote_parent(&self) -> bool {
        self.flags & flags::REMOTE_PARENT != 0
    }
}

/// Who is sending: attached to every export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// Service name.
    pub service: String,
    /// Node name (may be empty).
    pub node: String,
    /// Process id.
    pub pid: u32,
    /// cgroup path (may be empty).
    pub cgroup: String,
}

impl Resource {
    /// This process's resource for `service` on `node`: pid and cgroup are read from the OS.
    pub fn detect(service: &str, node: &str) -> Self {
        Self {
            service: service.to_owned(),
            node: node.to_owned(),
            pid: std::process::id(),
            cgroup: read_cgroup().unwrap_or_default(),
        }
    }
}

/// The process's cgroup from `/proc/self/cgroup`: the v1 `cpu` controller's path when present
/// (the group whose CPU quota the actuator writes), else the unified (v2) path.
pub fn read_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    parse_cgroup(&text)
}

pub(crate) fn parse_cgroup(text: &str) -> Option<String> {
    let mut v1_cpu = None;
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_owned());
        } else if ctrls.split(',').any(|c| c == "cpu") {
            v1_cpu = Some(path.to_owned());
        }
    }
    v1_cpu.or(v2).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2() {
        assert_eq!(
            parse_cgroup("0::/user.slice/x\n").as_deref(),
            Some("/user.slice/x")
        );
        let v1 = "12:memory:/m\n4:cpu,cpuacct:/seer/svc\n0::/\n";
        assert_eq!(parse_cgroup(v1).as_deref(), Some("/seer/svc"));
        assert_eq!(parse_cgroup("garbage"), None);
    }
}
