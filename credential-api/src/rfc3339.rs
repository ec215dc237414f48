//! RFC 3339 timestamps (`2026-11-23T16:41:36Z`) from Unix seconds.
//!
//! The API reports expiry times both as Unix seconds (for programs) and as RFC 3339 text (for
//! people reading responses and logs). The conversion is a few lines of well-known civil-calendar
//! arithmetic, so it lives here rather than pulling a date-time crate into the service.

/// The last second [`format_utc`] can show: 9999-12-31T23:59:59Z. RFC 3339 years have four
/// digits, so later times are clamped to this one rather than printed in a form clients reject.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799;

const SECS_PER_DAY: u64 = 86_400;

/// `unix_secs` as an RFC 3339 UTC timestamp with second precision, e.g. `2026-11-23T16:41:36Z`.
///
/// Times after 9999-12-31T23:59:59Z are clamped to it ([`MAX_UNIX_SECS`]); leap seconds do not
/// exist in Unix time, so none are ever produced.
#[must_use]
pub fn format_utc(unix_secs: u64) -> String {
    let secs = unix_secs.min(MAX_UNIX_SECS);
    let (year, month, day) = civil_from_days(secs / SECS_PER_DAY);
    let in_day = secs % SECS_PER_DAY;
    let (hour, minute, second) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// `unix_ms` as an RFC 3339 UTC timestamp with millisecond precision, e.g.
/// `2026-11-23T16:41:36.250Z` (clamped as [`format_utc`]).
#[must_use]
pub fn format_utc_ms(unix_ms: u64) -> String {
    let secs = format_utc(unix_ms / 1000);
    let ms = if unix_ms / 1000 > MAX_UNIX_SECS {
        999
    } else {
        unix_ms % 1000
    };
    format!("{}.{ms:03}Z", secs.trim_end_matches('Z'))
}

/// An RFC 3339 time in an answer: serialized as its text, described in the OpenAPI document as
/// a `date-time` string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(value_type = String, format = DateTime)]
pub struct Timestamp(String);

impl Timestamp {
    /// Unix seconds, shown to the second ([`format_utc`]).
    #[must_use]
    pub fn secs(unix_secs: u64) -> Self {
        Self(format_utc(unix_secs))
    }

    /// Unix milliseconds, shown to the millisecond ([`format_utc_ms`]).
    #[must_use]
    pub fn millis(unix_ms: u64) -> Self {
        Self(format_utc_ms(unix_ms))
    }
}

/// Year, month (1–12) and day (1–31) of the proleptic Gregorian calendar for a count of days
/// since 1970-01-01.
///
/// This is Howard Hinnant's `civil_from_days`, restricted to non-negative inputs so it can stay
/// in unsigned arithmetic: it shifts the year to start on March 1 (so the leap day is the last
/// day of the shifted year) and splits days into 400-year eras of exactly 146 097 days, which
/// makes every step a plain division with no tables or loops.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 719 468 days from 0000-03-01 (the start of era 0) to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let shifted_month = (5 * day_of_year + 2) / 153; // [0, 11], 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    // January and February belong to the shifted year that began the previous March.
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent inverse for the round-trip tests: parses exactly the format `format_utc`
    /// writes and counts days the slow, obvious way (whole years, then whole months), so it
    /// shares no arithmetic with `civil_from_days`.
    fn parse(text: &str) -> u64 {
        let b = text.as_bytes();
        assert_eq!(b.len(), 20, "{text}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19]),
            (b'-', b'-', b'T', b':', b':', b'Z'),
            "{text}"
        );
        let num = |range: std::ops::Range<usize>| -> u64 { text[range].parse().unwrap() };
        let (year, month, day) = (num(0..4), num(5..7), num(8..10));
        let (hour, minute, second) = (num(11..13), num(14..16), num(17..19));
        assert!(year >= 1970, "{text}");
        assert!((1..=12).contains(&month), "{text}");
        assert!((1..=days_in_month(year, month)).contains(&day), "{text}");
        assert!(hour < 24 && minute < 60 && second < 60, "{text}");

        let mut days: u64 = (1970..year)
            .map(|y| if is_leap(y) { 366 } else { 365 })
            .sum();
        days += (1..month).map(|m| days_in_month(year, m)).sum::<u64>();
        days += day - 1;
        days * SECS_PER_DAY + hour * 3600 + minute * 60 + second
    }

    fn is_leap(year: u64) -> bool {
        year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
    }

    fn days_in_month(year: u64, month: u64) -> u64 {
        match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn epoch() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(86_399), "1970-01-01T23:59:59Z");
    }

    #[test]
    fn leap_days() {
        assert_eq!(format_utc(1_709_208_000), "2024-02-29T12:00:00Z");
        assert_eq!(format_utc(68_169_600), "1972-02-29T00:00:00Z");
        // 2000 is a leap year (divisible by 400), 2100 is not (divisible by 100 only).
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn year_ends() {
        assert_eq!(format_utc(946_684_799), "1999-12-31T23:59:59Z");
        assert_eq!(format_utc(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(format_utc(1_798_761_600), "2027-01-01T00:00:00Z");
        assert_eq!(format_utc(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    /// Values checked with `date -u -d @N +%Y-%m-%dT%H:%M:%SZ`.
    #[test]
    fn known_values() {
        assert_eq!(format_utc(1_234_567_890), "2009-02-13T23:31:30Z");
        assert_eq!(format_utc(1_795_452_096), "2026-11-23T16:41:36Z");
        assert_eq!(format_utc(2_000_000_000), "2033-05-18T03:33:20Z");
    }

    #[test]
    fn clamps_after_year_9999() {
        assert_eq!(format_utc(MAX_UNIX_SECS), "9999-12-31T23:59:59Z");
        assert_eq!(format_utc(MAX_UNIX_SECS + 1), "9999-12-31T23:59:59Z");
        assert_eq!(format_utc(u64::MAX), "9999-12-31T23:59:59Z");
    }

    /// Every day boundary for the first 150 years, with the second before it.
    #[test]
    fn round_trips_every_midnight() {
        for day in 0..(150 * 366) {
            let secs = day * SECS_PER_DAY;
            assert_eq!(parse(&format_utc(secs)), secs);
            assert!(format_utc(secs).ends_with("T00:00:00Z"));
            if secs > 0 {
                assert_eq!(parse(&format_utc(secs - 1)), secs - 1);
                assert!(format_utc(secs - 1).ends_with("T23:59:59Z"));
            }
        }
    }

    /// Many values across the whole supported range, including times of day away from midnight.
    #[test]
    fn round_trips_across_range() {
        // A stride coprime to the day length, so the time of day varies from sample to sample.
        let stride = 7_919 * 3_607;
        let mut previous = String::new();
        for secs in (0..=MAX_UNIX_SECS).step_by(stride).chain([MAX_UNIX_SECS]) {
            let text = format_utc(secs);
            assert_eq!(parse(&text), secs, "{text}");
            // Fixed-width fields make text order agree with time order.
            assert!(text > previous, "{text} after {previous}");
            previous = text;
        }
    }

    #[test]
    fn milliseconds() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_utc_ms(1_795_000_000_250),
            format!("{}", format_utc(1_795_000_000).replace('Z', ".250Z"))
        );
        assert_eq!(format_utc_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
