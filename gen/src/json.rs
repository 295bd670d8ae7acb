//! Writing one event as a JSON line, straight into a byte buffer.
//!
//! Every string the generator writes is plain ASCII without quotes or
//! backslashes, so nothing needs escaping; numbers go through `itoa`, and
//! amounts are written from integer cents so that they always read back as
//! the same two-decimal value.

use super::{CHANNELS, EventKind, MERCHANT_CATEGORIES};

/// One event before it is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spec {
    /// Index into the population.
    pub user: u32,
    pub kind: EventKind,
    pub device: u32,
    pub ip: u32,
    /// Ignored for logins, which carry no amount.
    pub amount_cents: i64,
    pub channel: u8,
    pub new_device: bool,
    /// Index into the merchant list (payments).
    pub merchant: u16,
    /// Loan applications.
    pub term_months: u8,
    pub label: &'static str,
}

/// A field that a malformed event leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Omit {
    EventId,
    EventType,
    Timestamp,
    UserId,
}

/// How an event is written wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Omit(Omit),
    /// `"amount":"123.45"`.
    AmountAsString,
    /// `"term_months":"12"`.
    TermAsString,
    /// `"new_device":"no"`.
    NewDeviceAsString,
    /// `"user_id":123`.
    UserIdAsNumber,
    /// The timestamp written as this raw JSON token.
    Timestamp(&'static str),
}

/// How the timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeForm {
    Rfc3339,
    EpochMs,
}

/// Formats RFC 3339 timestamps, keeping the date of the last one so that
/// the calendar arithmetic runs once a day of event time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    day: Option<i64>,
    date: [u8; 10],
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn two(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

impl Clock {
    /// Appends `ms` (milliseconds since the epoch, years 0–9999) as
    /// `2026-11-24T08:15:30.250Z`.
    pub fn write_rfc3339(&mut self, out: &mut Vec<u8>, ms: i64) {
        let day = ms.div_euclid(86_400_000);
        if self.day != Some(day) {
            let (y, m, d) = civil_from_days(day);
            let y = y.clamp(0, 9999) as u32;
            let mut date = Vec::with_capacity(10);
            two(&mut date, y / 100);
            two(&mut date, y % 100);
            date.push(b'-');
            two(&mut date, m);
            date.push(b'-');
            two(&mut date, d);
            self.date.copy_from_slice(&date);
            self.day = Some(day);
        }
        let in_day = ms.rem_euclid(86_400_000) as u32;
        out.extend_from_slice(&self.date);
        out.push(b'T');
        two(out, in_day / 3_600_000);
        out.push(b':');
        two(out, in_day / 60_000 % 60);
        out.push(b':');
        two(out, in_day / 1000 % 60);
        out.push(b'.');
        let millis = in_day % 1000;
        out.push(b'0' + (millis / 100) as u8);
        two(out, millis % 100);
        out.push(b'Z');
    }
}

/// Appends `prefix` and `n` zero-padded to at least six digits (`u_000123`).
pub(crate) fn write_id(out: &mut Vec<u8>, prefix: &[u8], n: u64, width: usize) {
    out.extend_from_slice(prefix);
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

/// Appends an IPv4 address as a dotted quad.
pub(crate) fn write_ip(out: &mut Vec<u8>, ip: u32) {
    let mut buf = itoa::Buffer::new();
    for (i, octet) in ip.to_be_bytes().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(buf.format(octet).as_bytes());
    }
}

/// Appends an amount given in cents as a JSON number with two decimals.
pub(crate) fn write_cents(out: &mut Vec<u8>, cents: i64) {
    let cents = cents.max(0);
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(cents / 100).as_bytes());
    out.push(b'.');
    two(out, (cents % 100) as u32);
}

/// Appends a merchant name such as `electronics_017`.
pub(crate) fn write_merchant(out: &mut Vec<u8>, merchant: u16) {
    let category = MERCHANT_CATEGORIES[merchant as usize % MERCHANT_CATEGORIES.len()];
    out.extend_from_slice(category.as_bytes());
    write_id(
        out,
        b"_",
        (merchant as usize / MERCHANT_CATEGORIES.len()) as u64,
        3,
    );
}

/// Appends one event as a single-line JSON object (no newline).
pub(crate) fn write_event(
    out: &mut Vec<u8>,
    clock: &mut Clock,
    spec: &Spec,
    event_id: u64,
    t_ms: i64,
    form: TimeForm,
    fault: Fault,
) {
    let mut buf = itoa::Buffer::new();
    out.push(b'{');
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, name: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(name);
        out.extend_from_slice(b"\":");
    };
    if fault != Fault::Omit(Omit::EventId) {
        key(out, b"event_id");
        out.push(b'"');
        write_id(out, b"e-", event_id, 8);
        out.push(b'"');
    }
    if fault != Fault::Omit(Omit::EventType) {
        key(out, b"event_type");
        out.push(b'"');
        out.extend_from_slice(spec.kind.as_str().as_bytes());
        out.push(b'"');
    }
    if fault != Fault::Omit(Omit::Timestamp) {
        key(out, b"timestamp");
        match (fault, form) {
            (Fault::Timestamp(raw), _) => out.extend_from_slice(raw.as_bytes()),
            (_, TimeForm::EpochMs) => out.extend_from_slice(buf.format(t_ms).as_bytes()),
            (_, TimeForm::Rfc3339) => {
                out.push(b'"');
                clock.write_rfc3339(out, t_ms);
                out.push(b'"');
            }
        }
    }
    if fault != Fault::Omit(Omit::UserId) {
        key(out, b"user_id");
        if fault == Fault::UserIdAsNumber {
            out.extend_from_slice(buf.format(spec.user + 1).as_bytes());
        } else {
            out.push(b'"');
            write_id(out, b"u_", u64::from(spec.user) + 1, 6);
            out.push(b'"');
        }
    }
    key(out, b"device_id");
    out.push(b'"');
    write_id(out, b"d_", u64::from(spec.device), 6);
    out.push(b'"');
    key(out, b"ip");
    out.push(b'"');
    write_ip(out, spec.ip);
    out.push(b'"');
    if spec.kind != EventKind::Login {
        key(out, b"amount");
        if fault == Fault::AmountAsString {
            out.push(b'"');
            write_cents(out, spec.amount_cents);
            out.push(b'"');
        } else {
            write_cents(out, spec.amount_cents);
        }
    }
    key(out, b"currency");
    out.extend_from_slice(b"\"CNY\"");
    key(out, b"attributes");
    out.extend_from_slice(b"{\"channel\":\"");
    out.extend_from_slice(CHANNELS[spec.channel as usize].as_bytes());
    out.extend_from_slice(b"\",\"new_device\":");
    if fault == Fault::NewDeviceAsString {
        out.extend_from_slice(if spec.new_device {
            b"\"yes\""
        } else {
            b"\"no\""
        });
    } else {
        out.extend_from_slice(if spec.new_device { b"true" } else { b"false" });
    }
    match spec.kind {
        EventKind::Payment => {
            out.extend_from_slice(b",\"merchant\":\"");
            write_merchant(out, spec.merchant);
            out.push(b'"');
        }
        EventKind::LoanApplication => {
            out.extend_from_slice(b",\"term_months\":");
            if fault == Fault::TermAsString {
                out.push(b'"');
                out.extend_from_slice(buf.format(spec.term_months).as_bytes());
                out.push(b'"');
            } else {
                out.extend_from_slice(buf.format(spec.term_months).as_bytes());
            }
        }
        EventKind::Login => {}
    }
    out.push(b'}');
    key(out, b"label");
    out.push(b'"');
    out.extend_from_slice(spec.label.as_bytes());
    out.extend_from_slice(b"\"}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_chrono_across_days_and_leap_years() {
        let mut clock = Clock::default();
        let mut ms = -86_400_000i64 * 3 + 17;
        while ms < 4_102_444_800_000 {
            let mut out = Vec::new();
            clock.write_rfc3339(&mut out, ms);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                verdict_core::time::format_rfc3339_ms(ms)
            );
            ms += 7_654_321_987;
        }
    }

    #[test]
    fn numbers_and_ids() {
        let mut out = Vec::new();
        write_cents(&mut out, 123_405);
        out.push(b' ');
        write_cents(&mut out, 7);
        out.push(b' ');
        write_ip(&mut out, u32::from_be_bytes([203, 0, 113, 9]));
        out.push(b' ');
        write_id(&mut out, b"u_", 123, 6);
        out.push(b' ');
        write_id(&mut out, b"e-", 123_456_789, 8);
        assert_eq!(out, b"1234.05 0.07 203.0.113.9 u_000123 e-123456789");
    }
}
