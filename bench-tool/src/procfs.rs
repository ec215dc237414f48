//! What `/proc` says about a process: CPU time (all threads, `utime + stime` of
//! `/proc/PID/stat`) and resident memory (`VmRSS` of `/proc/PID/status`).

use std::time::Duration;

/// CPU time a process has used, all threads together (exited threads included).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    // After "comm)": field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let tck = crate::sys::clock_ticks_per_second();
    Some(Duration::from_micros(
        (utime + stime).saturating_mul(1_000_000) / tck,
    ))
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What `/proc/stat` says about one CPU, microseconds since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// Idle plus I/O wait. With the tickless idle of these kernels (NO_HZ) both are the
    /// measured time the CPU slept (`get_cpu_idle_time_us`), not tick samples, so wall time
    /// less this is the CPU's busy time however short its bursts.
    pub idle_us: u64,
    /// Time the hypervisor ran something else while this CPU wanted to run.
    pub steal_us: u64,
    /// Time in softirq (tick-sampled: indicative only at low load).
    pub softirq_us: u64,
}

/// Reads `/proc/stat` for each of `cpus`, in that order; `None` if a CPU is missing.
pub fn cpu_times(cpus: &[u32]) -> Option<Vec<CpuTimes>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_times(&stat, cpus)
}

fn parse_cpu_times(stat: &str, cpus: &[u32]) -> Option<Vec<CpuTimes>> {
    let tck = crate::sys::clock_ticks_per_second();
    let us = |ticks: u64| ticks.saturating_mul(1_000_000) / tck;
    cpus.iter()
        .map(|cpu| {
            let name = format!("cpu{cpu}");
            let line = stat
                .lines()
                .find(|l| l.split_ascii_whitespace().next() == Some(name.as_str()))?;
            // user nice system idle iowait irq softirq steal guest guest_nice
            let f: Vec<u64> = line
                .split_ascii_whitespace()
                .skip(1)
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            Some(CpuTimes {
                idle_us: us(f.get(3)? + f.get(4)?),
                steal_us: us(*f.get(7)?),
                softirq_us: us(*f.get(6)?),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_read_the_named_cpus_in_order() {
        let stat = "cpu  10 0 10 100 1 0 2 3 0 0\n\
                    cpu0 5 0 5 50 1 0 1 1 0 0\n\
                    cpu1 5 0 5 50 0 0 1 2 0 0\n\
                    intr 1 2 3\n";
        let tck = crate::sys::clock_ticks_per_second();
        let t = parse_cpu_times(stat, &[1, 0]).unwrap();
        assert_eq!(t[0].idle_us, 50 * 1_000_000 / tck);
        assert_eq!(t[0].steal_us, 2 * 1_000_000 / tck);
        assert_eq!(t[1].idle_us, 51 * 1_000_000 / tck);
        assert_eq!(parse_cpu_times(stat, &[2]), None);
    }
}
