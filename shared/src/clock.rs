//! The wall clock, read in one place. Credential expiry, registry timestamps and secret
//! rotation all count unix time; a clock set before 1970 reads as 0 (every credential
//! expired: fail closed), one past the year 584 million saturates.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_and_milliseconds_agree() {
        let (s, ms) = (super::unix_secs(), super::unix_ms());
        // 2020-01-01 or later, and the two readings within a second of each other.
        assert!(s >= 1_577_836_800, "{s}");
        assert!(ms / 1000 >= s && ms / 1000 <= s + 1, "{s} {ms}");
    }
}
