//! Parsers for the /proc and cgroup files the sampler reads. Each takes the file's text and
//! returns cumulative counters; the sampler turns them into per-second rates.

/// Cumulative CPU time from the `cpu` line of `/proc/stat` (USER_HZ ticks) and `ctxt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// All time.
    pub total: u64,
    /// Idle + iowait.
    pub idle: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
    /// Context switches since boot.
    pub ctxt: u64,
}

/// Parses `/proc/stat`.
pub fn stat(text: &str) -> Option<CpuTimes> {
    let mut out = CpuTimes::default();
    let mut seen = false;
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        match it.next() {
            Some("cpu") => {
                let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
                if v.len() < 8 {
                    return None;
                }
                // user nice system idle iowait irq softirq steal [guest guest_nice]
                out.total = v[..8].iter().sum();
                out.idle = v[3] + v[4];
                out.steal = v[7];
                seen = true;
            }
            Some("ctxt") => out.ctxt = it.next()?.parse().ok()?,
            _ => {}
        }
    }
    seen.then_some(out)
}

/// `(some total µs, full total µs)` from a `/proc/pressure/*` file (`full` is absent for cpu
/// on older kernels).
pub fn psi(text: &str) -> Option<(u64, Option<u64>)> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let total = line
            .split_ascii_whitespace()
            .find_map(|kv| kv.strip_prefix("total="))
            .and_then(|v| v.parse::<u64>().ok());
        if line.starts_with("some") {
            some = total;
        } else if line.starts_with("full") {
            full = total;
        }
    }
    Some((some?, full))
}

/// Sum over CPUs of run-queue wait (ns) from `/proc/schedstat` (field 8 of each `cpuN` line).
pub fn schedstat_node(text: &str) -> Option<u64> {
    let mut sum = 0u64;
    let mut seen = false;
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if let Some(v) = f.get(8).and_then(|v| v.parse::<u64>().ok()) {
            sum += v;
            seen = true;
        }
    }
    seen.then_some(sum)
}

/// `(run ns, wait ns)` from a `/proc/<pid>/task/<tid>/schedstat`.
pub fn schedstat_task(text: &str) -> Option<(u64, u64)> {
    let mut it = text.split_ascii_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A named counter from a `key value` file (`/proc/vmstat`, cgroup `cpu.stat`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_ascii_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// Total receive + transmit drops over all interfaces from `/proc/net/dev`.
pub fn net_dev_drops(text: &str) -> Option<u64> {
    let mut sum = 0u64;
    let mut seen = false;
    for line in text.lines().skip(2) {
        let (_, rest) = line.split_once(':')?;
        let f: Vec<u64> = rest
            .split_ascii_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 12 {
            sum += f[3] + f[11];
            seen = true;
        }
    }
    seen.then_some(sum)
}

/// A counter from the two-line `Proto: names` / `Proto: values` layout of `/proc/net/snmp`
/// and `/proc/net/netstat`.
pub fn snmp(text: &str, proto: &str, name: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let idx = names.split_ascii_whitespace().position(|n| n == name)?;
    values.split_ascii_whitespace().nth(idx)?.parse().ok()
}

/// Disk totals from `/proc/diskstats`: (ios completed, ms spent on them, in flight), over
/// whole disks (partitions, loop, ram and device-mapper devices skipped).
pub fn diskstats(text: &str) -> Option<(u64, u64, u64)> {
    let mut out = (0u64, 0u64, 0u64);
    let mut seen = false;
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let name = f[2];
        if !is_whole_disk(name) {
            continue;
        }
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.0 += n(3) + n(7);
        out.1 += n(6) + n(10);
        out.2 += n(11);
        seen = true;
    }
    seen.then_some(out)
}

fn is_whole_disk(name: &str) -> bool {
    if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("dm-") {
        return false;
    }
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        return !name.contains('p') || name.rfind('p').is_some_and(|i| i < 4);
    }
    !name.ends_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_psi_schedstat() {
        let s = "cpu  10 0 5 80 5 0 0 3 0 0\ncpu0 5 0 2 40 2 0 0 1 0 0\nctxt 12345\n";
        let c = stat(s).unwrap();
        assert_eq!(c.total, 103);
        assert_eq!(c.idle, 85);
        assert_eq!(c.steal, 3);
        assert_eq!(c.ctxt, 12345);
        let p = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99\n";
        assert_eq!(psi(p), Some((1234, Some(99))));
        assert_eq!(psi("some avg10=0.00 total=7\n"), Some((7, None)));
        let ss = "version 15\ntimestamp 1\ncpu0 0 0 0 0 0 0 100 200 5\ncpu1 0 0 0 0 0 0 100 300 5\ndomain0 3 ...\n";
        assert_eq!(schedstat_node(ss), Some(500));
        assert_eq!(schedstat_task("1000 2000 3\n"), Some((1000, 2000)));
    }

    #[test]
    fn parses_net_disk_and_keyed() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n  eth0: 100 10 0 2 0 0 0 0 200 20 0 3 0 0 0 0\n    lo: 1 1 0 1 0 0 0 0 1 1 0 0 0 0 0 0\n";
        assert_eq!(net_dev_drops(dev), Some(6));
        let snmp_text = "Tcp: RtoAlgorithm RtoMin RetransSegs\nTcp: 1 200 42\n";
        assert_eq!(snmp(snmp_text, "Tcp", "RetransSegs"), Some(42));
        assert_eq!(snmp(snmp_text, "Udp", "X"), None);
        let disks = "   8       0 sda 10 0 0 50 20 0 0 70 2 0 0 0 0 0 0\n   8       1 sda1 5 0 0 20 5 0 0 5 0 0 0 0 0 0 0\n   7       0 loop0 1 0 0 1 0 0 0 0 0 0 0 0 0 0 0\n 259 0 nvme0n1 1 0 0 5 1 0 0 5 1 0 0 0 0\n 259 1 nvme0n1p1 1 0 0 5 1 0 0 5 1 0 0 0 0\n";
        assert_eq!(diskstats(disks), Some((32, 130, 3)));
        assert_eq!(keyed("pgfault 10\npgmajfault 2\n", "pgmajfault"), Some(2));
        assert_eq!(
            keyed("nr_throttled 3\nthrottled_time 500\n", "throttled_time"),
            Some(500)
        );
    }
}
