//! CPU work measured in thread CPU time, and the hogs the fault injector starts.
//!
//! Work is burned until the calling thread has used the requested CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), so a throttled cgroup or a contended core stretches the wall time
//! of a request exactly as it would stretch real work.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// CPU time used by the calling thread, nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant libc knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Burns `ns` nanoseconds of the calling thread's CPU time.
///
/// Gives up after 2 s of wall time so that a frozen cgroup cannot hold a worker forever.
pub fn burn_cpu_ns(ns: u64) {
    if ns == 0 {
        return;
    }
    let start = thread_cpu_ns();
    let wall = Instant::now();
    let mut x = 0u64;
    loop {
        for i in 0..256u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        if thread_cpu_ns().saturating_sub(start) >= ns || wall.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    black_box(x);
}

/// Shape of a hog's intensity over time: a linear ramp from 0 to `peak` over `ramp_s`, then a
/// hold at `peak` for `hold_s`, then off.
#[derive(Clone, Copy, Debug)]
pub struct Envelope {
    /// Peak intensity.
    pub peak: f64,
    /// Ramp length, seconds (0 for a step).
    pub ramp_s: f64,
    /// Hold at peak, seconds.
    pub hold_s: f64,
}

impl Envelope {
    /// Intensity at `t` seconds after the start; `None` once it has ended.
    pub fn at(&self, t: f64) -> Option<f64> {
        if t < 0.0 {
            return Some(0.0);
        }
        if t >= self.ramp_s + self.hold_s {
            return None;
        }
        if t < self.ramp_s {
            Some(self.peak * t / self.ramp_s)
        } else {
            Some(self.peak)
        }
    }
}

/// Runs a CPU hog in this thread's process: `max(2, ceil(peak))` spinning threads sharing the
/// demand equally, each with a duty cycle over 10 ms slices, so that together they demand
/// `intensity` cores. Two threads at least, so that inside a cgroup the hog takes a growing share
/// of the quota from the service's worker as its duty rises. Returns when the envelope ends or
/// `stop` is set.
pub fn run_cpu_hog(env: Envelope, stop: &Arc<AtomicBool>) {
    let threads = env.peak.ceil().max(2.0) as usize;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let slice = Duration::from_millis(10);
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = started.elapsed().as_secs_f64();
                    let Some(total) = env.at(t) else { break };
                    let mine = (total / threads as f64).clamp(0.0, 1.0);
                    let busy_ns = (mine * slice.as_nanos() as f64) as u64;
                    let slice_start = Instant::now();
                    burn_cpu_ns(busy_ns);
                    let spent = slice_start.elapsed();
                    if spent < slice {
                        std::thread::sleep(slice - spent);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

/// Runs a memory hog: keeps a buffer that grows to `peak` MiB along the envelope and rewrites it
/// continuously, also unmapping and refaulting a slice of it, so the process adds page faults,
/// memory bandwidth and resident memory to its cgroup.
pub fn run_mem_hog(env: Envelope, stop: &Arc<AtomicBool>, touched: &AtomicU64) {
    const PAGE: usize = 4096;
    let started = Instant::now();
    let mut buf: Vec<u8> = Vec::new();
    let mut round = 0u8;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t = started.elapsed().as_secs_f64();
        let Some(mb) = env.at(t) else { break };
        let want = (mb.max(0.0) * 1024.0 * 1024.0) as usize;
        if want > buf.len() {
            buf.resize(want, 1);
        } else if want + 8 * 1024 * 1024 < buf.len() {
            buf.truncate(want);
            buf.shrink_to_fit();
        }
        // Refault an eighth of the buffer each round: drop it and allocate it again.
        let churn = buf.len() / 8;
        if churn > 0 {
            buf.truncate(buf.len() - churn);
            buf.shrink_to_fit();
            buf.resize(buf.len() + churn, round);
        }
        round = round.wrapping_add(1);
        let slice_start = Instant::now();
        let mut i = 0;
        while i < buf.len() {
            buf[i] = buf[i].wrapping_add(round);
            i += PAGE / 4;
            if slice_start.elapsed() > Duration::from_millis(8) {
                break;
            }
        }
        touched.fetch_add(i as u64, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burn_uses_thread_cpu_time() {
        let before = thread_cpu_ns();
        burn_cpu_ns(2_000_000);
        let used = thread_cpu_ns() - before;
        assert!(used >= 2_000_000, "{used}");
    }

    #[test]
    fn envelope_ramps_holds_and_ends() {
        let e = Envelope {
            peak: 0.5,
            ramp_s: 10.0,
            hold_s: 5.0,
        };
        assert_eq!(e.at(5.0), Some(0.25));
        assert_eq!(e.at(12.0), Some(0.5));
        assert_eq!(e.at(15.0), None);
    }
}
