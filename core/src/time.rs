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
}
