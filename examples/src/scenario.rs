//! Scenario files: topology overrides, load profile, fault schedule, QoS target, duration, seed
//! and control mode, in TOML.
//!
//! Every field has a default, so a scenario the repository has never seen runs unchanged as long
//! as it is valid TOML with known keys. Paths inside a scenario are never needed: everything a
//! run needs is in the file itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::faults::{FaultClass, FaultKind, FaultSpec};

/// A whole scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Short name, used in report folders.
    pub name: String,
    /// What the scenario shows.
    pub description: String,
    /// Seed for arrivals, the request mix and generated fault schedules.
    pub seed: u64,
    /// Length of the measured run, seconds (after warm-up).
    pub duration_s: f64,
    /// Healthy warm-up before the first fault, seconds (part of the run, never faulted).
    pub warmup_s: f64,
    /// Tick length, milliseconds.
    pub tick_ms: u64,
    /// Control mode; `--mode` overrides it.
    pub mode: Mode,
    /// The QoS target.
    pub qos: QosSpec,
    /// The load.
    pub load: LoadSpec,
    /// Topology overrides.
    pub topology: TopologyOverrides,
    /// Settings of the control modes.
    pub control: ControlSpec,
    /// Explicit faults.
    pub faults: Vec<FaultSpec>,
    /// A generated fault schedule (appended to `faults`), reproducible from `seed`.
    pub fault_generator: Option<FaultGenerator>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "scenario".into(),
            description: String::new(),
            seed: 1,
            duration_s: 120.0,
            warmup_s: 20.0,
            tick_ms: 100,
            mode: Mode::Off,
            qos: QosSpec::default(),
            load: LoadSpec::default(),
            topology: TopologyOverrides::default(),
            control: ControlSpec::default(),
            faults: Vec::new(),
            fault_generator: None,
        }
    }
}

impl Scenario {
    /// Reads a scenario from any path.
    ///
    /// # Errors
    /// When the file cannot be read or is not a valid scenario.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let mut s: Scenario = toml::from_str(&text)
            .with_context(|| format!("invalid scenario {}", path.display()))?;
        if s.name == "scenario"
            && let Some(stem) = path.file_stem()
        {
            s.name = stem.to_string_lossy().into_owned();
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks the ranges that would make a run meaningless.
    ///
    /// # Errors
    /// On a duration, tick or target out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.duration_s > 0.0 && self.duration_s <= 3600.0) {
            bail!("duration_s must be in (0, 3600]");
        }
        if !(10..=1000).contains(&self.tick_ms) {
            bail!("tick_ms must be in [10, 1000]");
        }
        if self.qos.target_ms <= 0.0 {
            bail!("qos.target_ms must be positive");
        }
        if self.load.mix.is_empty() {
            bail!("load.mix must not be empty");
        }
        Ok(())
    }

    /// The full fault schedule: explicit faults plus generated ones, sorted by start.
    pub fn schedule(&self, services: &[String]) -> Vec<FaultSpec> {
        let mut out = self.faults.clone();
        if let Some(g) = &self.fault_generator {
            out.extend(g.generate(self.seed, self.warmup_s, self.duration_s, services));
        }
        out.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        out
    }

    /// Total wall time of a run, seconds.
    pub fn total_s(&self) -> f64 {
        self.duration_s
    }
}

/// How a run controls overload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No control: measure only.
    Off,
    /// Advice-driven shedding by SeerLayer.
    SeerThrottle,
    /// The local actuator gives the culprit more of its scarce resource: CPU quota, or workers
    /// when it is blocked on a slow dependency.
    SeerActuate,
    /// Both shedding and the actuator.
    SeerBoth,
    /// A static per-service concurrency limit.
    StaticLimit,
    /// An AIMD concurrency limiter per service.
    Aimd,
    /// A gradient (Gradient2/Vegas-like) concurrency limiter per service.
    Gradient,
}

impl Mode {
    /// All modes, in table order.
    pub const ALL: [Mode; 7] = [
        Mode::Off,
        Mode::SeerThrottle,
        Mode::SeerActuate,
        Mode::SeerBoth,
        Mode::StaticLimit,
        Mode::Aimd,
        Mode::Gradient,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::SeerThrottle => "seer-throttle",
            Mode::SeerActuate => "seer-actuate",
            Mode::SeerBoth => "seer-both",
            Mode::StaticLimit => "static-limit",
            Mode::Aimd => "aimd",
            Mode::Gradient => "gradient",
        }
    }

    /// Whether services shed on Seer's advice.
    pub fn is_throttle(self) -> bool {
        matches!(self, Mode::SeerThrottle | Mode::SeerBoth)
    }

    /// Whether the local actuator runs.
    pub fn is_actuate(self) -> bool {
        matches!(self, Mode::SeerActuate | Mode::SeerBoth)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .with_context(|| {
                format!(
                    "unknown mode `{s}` (one of: {})",
                    Mode::ALL.map(Mode::as_str).join(", ")
                )
            })
    }
}

/// The QoS target: a windowed percentile of client-side latency.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QosSpec {
    /// Percentile, e.g. 99.0.
    pub percentile: f64,
    /// Sliding window, milliseconds.
    pub window_ms: u64,
    /// Target latency at that percentile, milliseconds.
    pub target_ms: f64,
    /// Violation runs separated by fewer ticks than this merge into one episode.
    pub merge_gap_ticks: u32,
    /// Ticks with fewer completed requests in the window than this are never violations.
    pub min_samples: u64,
}

impl Default for QosSpec {
    fn default() -> Self {
        Self {
            percentile: 99.0,
            window_ms: 1000,
            target_ms: 100.0,
            merge_gap_ticks: 10,
            min_samples: 20,
        }
    }
}

/// The load: an open-loop Poisson process with a time-varying rate and a request mix.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSpec {
    /// The rate over time.
    pub profile: RateProfile,
    /// The request mix.
    pub mix: Vec<MixEntry>,
    /// Client timeout per request, milliseconds.
    pub timeout_ms: u64,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            profile: RateProfile::Constant { rps: 120.0 },
            mix: vec![
                MixEntry {
                    op: "compose".into(),
                    weight: 0.5,
                },
                MixEntry {
                    op: "home".into(),
                    weight: 0.35,
                },
                MixEntry {
                    op: "user".into(),
                    weight: 0.15,
                },
            ],
            timeout_ms: 1000,
        }
    }
}

/// One kind of request and its share of the load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    /// Frontend operation: `compose`, `home` or `user`.
    pub op: String,
    /// Relative weight.
    pub weight: f64,
}

/// Arrival rate over time (seconds since the start of the run).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RateProfile {
    /// A constant rate.
    Constant {
        /// Requests per second.
        rps: f64,
    },
    /// Piecewise constant: `[at_s, rps]` pairs.
    Steps {
        /// The steps, sorted by time.
        steps: Vec<(f64, f64)>,
    },
    /// A linear ramp between two rates.
    Ramp {
        /// Rate before `start_s`.
        from_rps: f64,
        /// Rate after `end_s`.
        to_rps: f64,
        /// Ramp start.
        start_s: f64,
        /// Ramp end.
        end_s: f64,
    },
    /// A base rate with short spikes.
    Spikes {
        /// The base rate.
        base_rps: f64,
        /// The spikes.
        spikes: Vec<Spike>,
    },
}

/// A short rise of the rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spike {
    /// Start, seconds.
    pub at_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// The rate during the spike.
    pub rps: f64,
}

impl RateProfile {
    /// The rate at time `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        match self {
            RateProfile::Constant { rps } => *rps,
            RateProfile::Steps { steps } => steps
                .iter()
                .take_while(|(at, _)| *at <= t)
                .last()
                .or(steps.first())
                .map_or(0.0, |(_, r)| *r),
            RateProfile::Ramp {
                from_rps,
                to_rps,
                start_s,
                end_s,
            } => {
                if t <= *start_s {
                    *from_rps
                } else if t >= *end_s {
                    *to_rps
                } else {
                    from_rps + (to_rps - from_rps) * (t - start_s) / (end_s - start_s).max(1e-9)
                }
            }
            RateProfile::Spikes { base_rps, spikes } => spikes
                .iter()
                .find(|s| t >= s.at_s && t < s.at_s + s.duration_s)
                .map_or(*base_rps, |s| s.rps),
        }
    }

    /// The base rate (at time 0), used to find the bottleneck service.
    pub fn base_rate(&self) -> f64 {
        self.rate_at(0.0)
    }
}

/// Per-service overrides of the default topology.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyOverrides {
    /// CPU work per request for every service, milliseconds of thread CPU time.
    pub default_work_ms: Option<f64>,
    /// CPU quota for every service, percent of one core.
    pub default_quota_pct: Option<f64>,
    /// Worker pool size for every service.
    pub default_pool: Option<usize>,
    /// Per-service overrides, by service name.
    pub services: BTreeMap<String, ServiceOverride>,
}

/// Overrides for one service.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceOverride {
    /// CPU work per request, milliseconds.
    pub work_ms: Option<f64>,
    /// CPU quota, percent of one core.
    pub quota_pct: Option<f64>,
    /// Worker pool size (permits).
    pub pool: Option<usize>,
    /// Replaces the calls of an operation: op -> stages; each stage is a list of
    /// `"service/op"` or `"service/op*count"` calls made in parallel.
    pub calls: BTreeMap<String, Vec<Vec<String>>>,
}

/// Settings of the control modes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSpec {
    /// `static-limit`: requests in flight per service.
    pub static_limit: usize,
    /// `aimd`: latency above which a completion counts as a drop, milliseconds.
    pub aimd_latency_ms: f64,
    /// `aimd` and `gradient`: initial limit.
    pub initial_limit: f64,
    /// `gradient`: tolerance multiplier of the long-term RTT.
    pub gradient_tolerance: f64,
    /// Actuator: predictions in a row (one per collector tick) a culprit must be named in before
    /// it acts.
    pub actuate_confirm_ticks: u32,
    /// Actuator: extra CPU quota given to the culprit, percent of one core.
    pub actuate_extra_pct: f64,
    /// Actuator: minimum hold, seconds.
    pub actuate_hold_s: f64,
    /// Actuator: predictions a raised culprit may stay named in while using at least 90% of its
    /// raised quota before the quota is raised again by `actuate_extra_pct` (a hog that keeps ramping
    /// outgrows one raise); 0 never raises twice.
    pub actuate_escalate_ticks: u32,
    /// Actuator: the highest quota it sets, percent of one core (capped at the machine's cores).
    pub actuate_max_pct: f64,
    /// Actuator: a culprit blocked on a slow dependency (resource `downstream`) gets this many
    /// times its worker pool (its workers wait on the backend, so more of them, not more CPU,
    /// restore its throughput); 1 turns this off.
    pub actuate_workers_factor: f64,
    /// Risk at or above which a service counts as named by the collector.
    pub risk_threshold: f64,
}

impl Default for ControlSpec {
    fn default() -> Self {
        Self {
            static_limit: 12,
            aimd_latency_ms: 40.0,
            initial_limit: 16.0,
            gradient_tolerance: 1.5,
            actuate_confirm_ticks: 3,
            actuate_extra_pct: 100.0,
            actuate_hold_s: 5.0,
            actuate_escalate_ticks: 10,
            actuate_max_pct: 200.0,
            actuate_workers_factor: 4.0,
            risk_threshold: 0.5,
        }
    }
}

/// Generates a reproducible fault schedule: `count` faults spaced `spacing_s` apart, each a
/// random (kind, service, class) from the lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultGenerator {
    /// Number of faults (capped by what fits in the run).
    pub count: usize,
    /// Kinds to draw from.
    pub kinds: Vec<FaultKind>,
    /// Target services to draw from (empty: any non-frontend service).
    pub services: Vec<String>,
    /// Classes to draw from, alternated in order when `alternate` is set.
    pub classes: Vec<FaultClass>,
    /// Alternate classes instead of drawing them.
    pub alternate: bool,
    /// Seconds between fault starts.
    pub spacing_s: f64,
    /// Ramp length range of gradual faults, seconds.
    pub ramp_s: (f64, f64),
    /// Hold at peak, seconds.
    pub hold_s: f64,
    /// Peak intensity per kind (see [`FaultKind`]); missing kinds use their default.
    pub intensity: BTreeMap<String, f64>,
}

impl Default for FaultGenerator {
    fn default() -> Self {
        Self {
            count: 4,
            kinds: vec![FaultKind::CpuHog],
            services: Vec::new(),
            classes: vec![FaultClass::Gradual, FaultClass::Step],
            alternate: true,
            spacing_s: 30.0,
            ramp_s: (15.0, 25.0),
            hold_s: 6.0,
            intensity: BTreeMap::new(),
        }
    }
}

impl FaultGenerator {
    /// The faults, reproducible from `seed`.
    pub fn generate(
        &self,
        seed: u64,
        warmup_s: f64,
        duration_s: f64,
        services: &[String],
    ) -> Vec<FaultSpec> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
        let pool: Vec<String> = if self.services.is_empty() {
            services
                .iter()
                .filter(|s| s.as_str() != "frontend")
                .cloned()
                .collect()
        } else {
            self.services.clone()
        };
        let kinds = if self.kinds.is_empty() {
            vec![FaultKind::CpuHog]
        } else {
            self.kinds.clone()
        };
        let classes = if self.classes.is_empty() {
            vec![FaultClass::Gradual]
        } else {
            self.classes.clone()
        };
        let mut out = Vec::new();
        let mut start = warmup_s;
        for i in 0..self.count {
            let kind = kinds[rng.random_range(0..kinds.len())];
            let class = if self.alternate {
                classes[i % classes.len()]
            } else {
                classes[rng.random_range(0..classes.len())]
            };
            let ramp = match class {
                FaultClass::Gradual => {
                    let (lo, hi) = self.ramp_s;
                    if hi > lo {
                        rng.random_range(lo..hi)
                    } else {
                        lo
                    }
                }
                FaultClass::Step => 0.0,
            };
            let service = if pool.is_empty() {
                "text".to_string()
            } else {
                pool[rng.random_range(0..pool.len())].clone()
            };
            let intensity = self
                .intensity
                .get(kind.as_str())
                .copied()
                .unwrap_or_else(|| kind.default_intensity());
            let spec = FaultSpec {
                kind,
                service,
                class,
                start_s: (start * 10.0).round() / 10.0,
                ramp_s: (ramp * 10.0).round() / 10.0,
                hold_s: self.hold_s,
                intensity,
            };
            if spec.end_s() + 3.0 > duration_s {
                break;
            }
            start = spec.end_s() + self.spacing_s.max(1.0);
            out.push(spec);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_load_and_generate_reproducibly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let services: Vec<String> = crate::topology::Topology::social_network().names();
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) != Some("toml") {
                continue;
            }
            let s = Scenario::load(&p).unwrap();
            let a = s.schedule(&services);
            assert_eq!(a, s.schedule(&services), "{}", p.display());
            assert!(!a.is_empty(), "{} has no faults", p.display());
            assert!(a.iter().all(|f| f.end_s() <= s.duration_s));
            n += 1;
        }
        assert!(n >= 5);
    }

    #[test]
    fn rate_profiles() {
        let r = RateProfile::Ramp {
            from_rps: 100.0,
            to_rps: 200.0,
            start_s: 10.0,
            end_s: 20.0,
        };
        assert_eq!(r.rate_at(0.0), 100.0);
        assert_eq!(r.rate_at(15.0), 150.0);
        assert_eq!(r.rate_at(30.0), 200.0);
        let s = RateProfile::Steps {
            steps: vec![(0.0, 50.0), (10.0, 80.0)],
        };
        assert_eq!(s.rate_at(5.0), 50.0);
        assert_eq!(s.rate_at(12.0), 80.0);
        assert!("seer-both".parse::<Mode>().is_ok());
        assert!("nope".parse::<Mode>().is_err());
    }
}
