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
        cpus: usize,
    ) -> Result<Vec<perf_event::Counter>, String> {
        let mut out = Vec::with_capacity(cpus);
        for cpu in 0..cpus {
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
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            PERF_COUNTERS
                .iter()
                .map(|name| match imp::open(name, cpus) {
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
                        match c.read() {
                            Ok(v) => sum = sum.wrapping_add(v),
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
