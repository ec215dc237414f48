//! The kernel's monotonic clock, which the fast path reads with `bpf_ktime_get_ns`: deadlines
//! the core gives as [`Instant`]s become nanoseconds on that clock.
#![allow(unsafe_code)]

use std::time::Instant;

/// CLOCK_MONOTONIC now, in nanoseconds (0 if it cannot be read, which Linux never fails).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// `deadline` on the kernel's monotonic clock. Measured from the present rather than by
/// converting `Instant`'s insides, which std keeps opaque; the error is the time between the
/// two clock reads, far below the core's one-second sweep.
pub fn kernel_ns(deadline: Instant) -> u64 {
    let now = Instant::now();
    let ns = monotonic_ns();
    let ahead = deadline.saturating_duration_since(now).as_nanos();
    ns.saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX))
}

/// Now on the kernel's monotonic clock.
pub fn now_ns() -> u64 {
    monotonic_ns()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn deadlines_land_ahead_of_now_by_their_distance() {
        let before = now_ns();
        let t = kernel_ns(Instant::now() + Duration::from_secs(10));
        let after = now_ns();
        assert!(t >= before + 9_000_000_000 && t <= after + 10_000_000_000);
        // A deadline in the past is now.
        assert!(kernel_ns(Instant::now() - Duration::from_secs(1)) <= now_ns());
    }
}
