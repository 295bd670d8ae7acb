//! Timestamps: parsing RFC 3339 and epoch milliseconds, formatting RFC 3339.

use chrono::{DateTime, SecondsFormat, Utc};

/// Parses an RFC 3339 timestamp into milliseconds since the Unix epoch.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with
/// millisecond precision (`2026-11-24T08:15:30.250Z`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{ms}"),
    }
}

/// Appends [`format_rfc3339_ms`] of `ms` to `out`, without allocating for
/// the years 0000 to 9999.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, ms: i64) {
    // Days from 0000-03-01 to 1970-01-01 is 719_468; the range keeps the
    // arithmetic below exact and the year within four digits.
    const MIN: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const MAX: i64 = MAX_EPOCH_MS;
    if !(MIN..=MAX).contains(&ms) {
        out.extend_from_slice(format_rfc3339_ms(ms).as_bytes());
        return;
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, min);
    put(17, 2, s);
    put(20, 3, milli);
    out.extend_from_slice(&buf);
}

/// Year, month and day of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The largest epoch-millisecond value accepted in an event: year 9999.
pub const MAX_EPOCH_MS: i64 = 253_402_300_799_999;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339_ms("2026-11-24T08:15:30.250Z").unwrap();
        assert_eq!(format_rfc3339_ms(ms), "2026-11-24T08:15:30.250Z");
        assert_eq!(parse_rfc3339_ms("2026-11-24T16:15:30.250+08:00"), Ok(ms));
        assert!(parse_rfc3339_ms("2026-11-24 08:15").is_err());
    }

    #[test]
    fn written_timestamps_match_the_formatter() {
        let mut ms = -62_167_219_200_000i64;
        let mut checked = 0;
        while ms <= MAX_EPOCH_MS + 10_000_000_000 {
            for t in [ms, ms + 1, ms - 1, ms + 86_399_999] {
                let mut out = Vec::new();
                write_rfc3339_ms(&mut out, t);
                assert_eq!(String::from_utf8(out).unwrap(), format_rfc3339_ms(t), "{t}");
                checked += 1;
            }
            ms += 7_777_777_777;
        }
        assert!(checked > 100_000);
    }
}
