//! Fault kinds, classes, schedules and ground-truth records.
//!
//! | kind | how it is injected | peak `intensity` unit | ground-truth resource |
//! |---|---|---|---|
//! | `cpu-hog` | a hog process inside the culprit's cpu cgroup (it shares the quota) | cores demanded | `cpu` |
//! | `slow-dependency` | the culprit's backend call (made while holding its worker) slows | extra ms per request | `dependency` |
//! | `lock-contention` | a background thread in the culprit holds the lock its requests need | fraction of time held | `lock` |
//! | `load-spike` | the load generator's rate is multiplied | rate multiplier | `load` |
//! | `memory-pressure` | a process in the culprit's cgroup grows and churns a buffer | MiB | `memory` |
//!
//! A gradual fault ramps linearly from nothing to its peak over `ramp_s` (10-30 s), then holds
//! for `hold_s`; a step fault jumps to its peak and holds. The culprit of a load spike is the
//! service closest to saturation (computed from the topology), its resource is `load`.

use serde::{Deserialize, Serialize};

use crate::cpu::Envelope;

/// What is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// CPU contention: a hog inside the culprit's cgroup.
    CpuHog,
    /// The culprit's own backend dependency slows down.
    SlowDependency,
    /// Lock or pool contention inside the culprit.
    LockContention,
    /// A rise of the offered load.
    LoadSpike,
    /// Memory pressure inside the culprit's cgroup.
    MemoryPressure,
}

impl FaultKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::CpuHog => "cpu-hog",
            FaultKind::SlowDependency => "slow-dependency",
            FaultKind::LockContention => "lock-contention",
            FaultKind::LoadSpike => "load-spike",
            FaultKind::MemoryPressure => "memory-pressure",
        }
    }

    /// The scarce resource this fault creates (the ground truth for resource accuracy).
    pub fn resource(self) -> &'static str {
        match self {
            FaultKind::CpuHog => "cpu",
            FaultKind::SlowDependency => "dependency",
            FaultKind::LockContention => "lock",
            FaultKind::LoadSpike => "load",
            FaultKind::MemoryPressure => "memory",
        }
    }

    /// Default peak intensity (see the module table).
    pub fn default_intensity(self) -> f64 {
        match self {
            FaultKind::CpuHog => 0.6,
            FaultKind::SlowDependency => 25.0,
            FaultKind::LockContention => 0.99,
            FaultKind::LoadSpike => 3.2,
            FaultKind::MemoryPressure => 400.0,
        }
    }
}

/// How fast a fault reaches its peak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FaultClass {
    /// Ramps over 10-30 s: gives seconds of warning.
    Gradual,
    /// Jumps to its peak: gives almost none.
    Step,
}

impl FaultClass {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultClass::Gradual => "gradual",
            FaultClass::Step => "step",
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What is injected.
    pub kind: FaultKind,
    /// The culprit service (ignored for `load-spike`, whose culprit is the bottleneck).
    #[serde(default)]
    pub service: String,
    /// Gradual or step.
    pub class: FaultClass,
    /// Start, seconds after the run starts.
    pub start_s: f64,
    /// Ramp to peak, seconds (0 for step faults).
    #[serde(default)]
    pub ramp_s: f64,
    /// Hold at peak, seconds.
    pub hold_s: f64,
    /// Peak intensity (unit per kind).
    pub intensity: f64,
}

impl FaultSpec {
    /// End of the injection, seconds after the run starts.
    pub fn end_s(&self) -> f64 {
        self.start_s + self.ramp_len() + self.hold_s
    }

    /// Effective ramp length (0 for step faults).
    pub fn ramp_len(&self) -> f64 {
        match self.class {
            FaultClass::Gradual => self.ramp_s.max(0.0),
            FaultClass::Step => 0.0,
        }
    }

    /// The intensity envelope, relative to the fault's start.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            peak: self.intensity,
            ramp_s: self.ramp_len(),
            hold_s: self.hold_s,
        }
    }
}

/// Ground truth of one injected fault, as logged and as posted to the collector.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroundTruth {
    /// Index in the schedule.
    pub id: usize,
    /// The culprit service.
    pub service: String,
    /// The scarce resource.
    pub resource: String,
    /// `gradual` or `step`.
    pub class: FaultClass,
    /// The fault kind.
    pub kind: FaultKind,
    /// Start, unix nanoseconds.
    pub start_unix_ns: u64,
    /// End, unix nanoseconds.
    pub end_unix_ns: u64,
    /// Start, seconds after the run starts.
    pub start_s: f64,
    /// End, seconds after the run starts.
    pub end_s: f64,
}
