//! The standard `process_*` Prometheus metrics (the names every client library exports), read
//! from Linux's `/proc/self`: open and maximum file descriptors (every allocation and TCP
//! client is one, so they run out before memory does), resident memory, CPU time and start
//! time. Elsewhere, or when `/proc` cannot be read, the lines are left out rather than made up.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The names [`Process`] exports.
pub const NAMES: &[&str] = &[
    "process_open_fds",
    "process_max_fds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
];

/// Linux's user-visible clock tick (`USER_HZ`), fixed at 100 on every architecture's ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// The `process_*` metrics, read from `/proc/self` each time a registry holding this collector
/// is encoded (a scrape): nothing to keep up to date between scrapes.
#[derive(Debug, Clone, Copy)]
pub struct Process;

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        gauge(
            &mut e,
            "process_open_fds",
            "Open file descriptors.",
            open_fds(),
        )?;
        gauge(
            &mut e,
            "process_max_fds",
            "The soft limit on open file descriptors.",
            max_fds(),
        )?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        if let Some(f) = fields {
            // Named without `_total`: the encoder appends it to counters.
            e.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time, seconds.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(
                &((f.utime + f.stime) / TICKS_PER_SECOND),
                None,
            )?;
        }
        gauge(
            &mut e,
            "process_resident_memory_bytes",
            "Resident memory, bytes.",
            resident_bytes(),
        )?;
        gauge(
            &mut e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, seconds.",
            fields.and_then(|f| Some(boot_time()? + f.start_ticks / TICKS_PER_SECOND)),
        )
    }
}

/// A gauge, or nothing when it could not be read (left out rather than made up).
fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<impl EncodeGaugeValue>,
) -> std::fmt::Result {
    match value {
        Some(v) => e
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&v),
        None => Ok(()),
    }
}

/// The `process_*` metrics alone as Prometheus text, `# HELP` and `# TYPE` lines included.
pub fn render() -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Process));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &registry);
    out
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct StatFields {
    utime: f64,
    stime: f64,
    start_ticks: f64,
}

/// Fields 14, 15 and 22 of `/proc/self/stat` (utime, stime, starttime), counted after the
/// command name, which is in parentheses and may itself hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    // `f[0]` is field 3 (state).
    let field = |n: usize| f.get(n - 3)?.parse::<f64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_skip_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (geo (turn) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 8 0 123456 1000000 300 18446744073709551615";
        assert_eq!(
            stat_fields(stat),
            Some(StatFields {
                utime: 250.0,
                stime: 75.0,
                start_ticks: 123456.0
            })
        );
        assert_eq!(stat_fields("garbage"), None);
    }

    #[test]
    fn this_process_is_measured_on_linux() {
        let text = render();
        if cfg!(target_os = "linux") {
            for name in NAMES {
                let value: f64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                    .parse()
                    .unwrap();
                assert!(value >= 0.0, "{name} {value}");
            }
            let fds: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("process_open_fds "))
                .unwrap()
                .parse()
                .unwrap();
            assert!(fds >= 3.0, "stdin, stdout and stderr at least");
        }
    }
}
