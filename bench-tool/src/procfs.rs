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
