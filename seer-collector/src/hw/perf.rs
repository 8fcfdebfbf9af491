//! Hardware and software counters through `perf_event_open` (perf-event2), behind the
//! [`CounterSource`] trait so the PMU path can be tested with an injected source on machines
//! that expose no PMU.

use super::CounterSource;

/// The counters Seer asks perf for.
pub const PERF_COUNTERS: &[&str] = &[
    "cycles",
    "instructions",
    "llc_references",
    "llc_misses",
    "branch_misses",
    "context_switches",
    "page_faults",
    "cpu_migrations",
];

#[cfg(target_os = "linux")]
mod imp {
    use perf_event::Builder;
    use perf_event::events::{Cache, CacheId, CacheOp, CacheResult, Event, Hardware, Software};

    type SetEvent = Box<dyn FnOnce(&mut Builder<'_>)>;

    fn event(name: &str) -> Option<SetEvent> {
        fn set<E: Event + 'static>(e: E) -> SetEvent {
            Box::new(move |b| {
                b.event(e);
            })
        }
        Some(match name {
            "cycles" => set(Hardware::CPU_CYCLES),
            "instructions" => set(Hardware::INSTRUCTIONS),
            "llc_references" => set(Cache {
                which: CacheId::LL,
                operation: CacheOp::READ,
                result: CacheResult::ACCESS,
            }),
            "llc_misses" => set(Cache {
                which: CacheId::LL,
                operation: CacheOp::READ,
                result: CacheResult::MISS,
            }),
            "branch_misses" => set(Hardware::BRANCH_MISSES),
            "context_switches" => set(Software::CONTEXT_SWITCHES),
            "page_faults" => set(Software::PAGE_FAULTS),
            "cpu_migrations" => set(Software::CPU_MIGRATIONS),
            _ => return None,
        })
    }

    /// System-wide counters: one per CPU per event (`any_pid().one_cpu(i)`), summed.
    #[derive(Default)]
    pub(super) struct Perf {
        pub(super) counters: Vec<(&'static str, Vec<perf_event::Counter>)>,
    }

    impl std::fmt::Debug for Perf {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Perf")
                .field(
                    "counters",
                    &self.counters.iter().map(|c| c.0).collect::<Vec<_>>(),
                )
                .finish()
        }
    }

    pub(super) fn open(
        name: &'static str,
        cpus: &[usize],
    ) -> Result<Vec<perf_event::Counter>, String> {
        let mut out = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let mut b = Builder::new(Software::DUMMY);
            let Some(set) = event(name) else {
                return Err("unknown counter".into());
            };
            set(&mut b);
            b.any_pid().one_cpu(cpu).exclude_hv(true);
            let mut c = b.build().map_err(|e| match e.raw_os_error() {
                Some(2) => "not supported by this machine (no PMU)".to_owned(),
                Some(13) | Some(1) => {
                    "permission denied (needs root or perf_event_paranoid <= 0)".to_owned()
                }
                _ => e.to_string(),
            })?;
            c.enable().map_err(|e| e.to_string())?;
            out.push(c);
        }
        Ok(out)
    }
}

/// The real source: perf-event2 counters, opened system-wide per CPU.
#[derive(Debug, Default)]
pub struct PerfSource {
    #[cfg(target_os = "linux")]
    inner: imp::Perf,
}

impl PerfSource {
    /// A source that opens its counters on [`CounterSource::probe`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl CounterSource for PerfSource {
    fn probe(&mut self) -> Vec<(&'static str, Result<(), String>)> {
        #[cfg(target_os = "linux")]
        {
            let cpus = online_cpus();
            PERF_COUNTERS
                .iter()
                .map(|name| match imp::open(name, &cpus) {
                    Ok(c) => {
                        self.inner.counters.push((name, c));
                        (*name, Ok(()))
                    }
                    Err(e) => (*name, Err(e)),
                })
                .collect()
        }
        #[cfg(not(target_os = "linux"))]
        {
            PERF_COUNTERS
                .iter()
                .map(|n| (*n, Err("perf_event_open is Linux-only".to_owned())))
                .collect()
        }
    }

    fn read(&mut self) -> Vec<(&'static str, Option<u64>)> {
        #[cfg(target_os = "linux")]
        {
            self.inner
                .counters
                .iter_mut()
                .map(|(name, cs)| {
                    let mut sum = 0u64;
                    for c in cs.iter_mut() {
                        match c.read_count_and_time() {
                            Ok(v) => {
                                let v = scaled(v.count, v.time_enabled, v.time_running);
                                sum = sum.wrapping_add(v);
                            }
                            Err(_) => return (*name, None),
                        }
                    }
                    (*name, Some(sum))
                })
                .collect()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Vec::new()
        }
    }
}

/// The CPUs a system-wide counter must be opened on: every online CPU of the machine (not
/// `available_parallelism`, which follows this process's cgroup quota and affinity), from
/// `/sys/devices/system/cpu/online`; the first `available_parallelism` CPUs if it is unreadable.
#[cfg(target_os = "linux")]
fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, usize::from)).collect()
        })
}

/// Parses a kernel CPU list (`0-3,5,7-8`); `None` if malformed or empty.
fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let c: usize = part.trim().parse().ok()?;
                (c, c)
            }
        };
        // A list longer than any machine's is malformed, not a reason to open 2^64 counters.
        if hi < lo || hi >= 1 << 16 {
            return None;
        }
        out.extend(lo..=hi);
    }
    (!out.is_empty()).then_some(out)
}

/// A counter's value scaled for multiplexing: the kernel ran it `running` of the `enabled`
/// nanoseconds (more events than hardware counters take turns), so the count is extrapolated to
/// the whole time; 0 if it never ran.
fn scaled(count: u64, enabled: u64, running: u64) -> u64 {
    if running == 0 {
        return 0;
    }
    if running >= enabled {
        return count;
    }
    u64::try_from(u128::from(count) * u128::from(enabled) / u128::from(running)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_cpu_list("0,2-3,7"), Some(vec![0, 2, 3, 7]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
        assert_eq!(parse_cpu_list("a-b"), None);
    }

    #[test]
    fn multiplexed_counts_are_extrapolated_to_the_enabled_time() {
        assert_eq!(scaled(100, 1000, 1000), 100);
        assert_eq!(scaled(100, 1000, 250), 400);
        assert_eq!(scaled(100, 1000, 0), 0);
        assert_eq!(scaled(u64::MAX, 2, 1), u64::MAX);
    }
}
