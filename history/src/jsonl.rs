//! JSON-lines histories: plain event files (`verdict gen` output, one
//! event per line) and the JSON-lines form of the decision log (one
//! `{"event": …, "decision": …}` object per line).
//!
//! A line is a plain event when it has a top-level `event_id`; otherwise
//! it must be a log line. The reader needs only each event's id and
//! timestamp; the rest of the event is kept as the original bytes for the
//! engine to parse.

use std::borrow::Cow;
use std::fmt;

use arrow::array::RecordBatch;
use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_json::value::RawValue;
use verdict_core::time::{MAX_EPOCH_MS, parse_rfc3339_ms};
use verdict_core::{Decision, Position};

use crate::schema::{DecidedRow, PositionRef, RowsBuilder};

/// An event timestamp as the event schema accepts it: RFC 3339 text or
/// whole epoch milliseconds.
struct Ts(Result<i64, String>);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 string or epoch milliseconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Ts, E> {
                Ok(Ts(parse_rfc3339_ms(s)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Ts, E> {
                Ok(Ts(i64::try_from(n)
                    .ok()
                    .filter(|n| *n <= MAX_EPOCH_MS)
                    .ok_or_else(|| {
                        format!("epoch milliseconds {n} are past the year 9999")
                    })))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Ts, E> {
                Ok(Ts(Err(format!("epoch milliseconds {n} are before 1970"))))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Ts, E> {
                if n.fract() == 0.0 && (0.0..=MAX_EPOCH_MS as f64).contains(&n) {
                    Ok(Ts(Ok(n as i64)))
                } else {
                    Ok(Ts(Err(format!("{n} is not whole epoch milliseconds"))))
                }
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Ts, E> {
                Ok(Ts(Err("a bool is not a timestamp".into())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Ts, E> {
                Ok(Ts(Err("null is not a timestamp".into())))
            }
        }
        d.deserialize_any(V)
    }
}

/// The top level of a line: a plain event's id and timestamp, or a log
/// line's parts. Other fields are skipped without being built.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<Ts>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    decision: Option<&'a RawValue>,
    #[serde(borrow, default)]
    instance: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    position: Option<&'a RawValue>,
}

/// The parts of an event the reader needs.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<Ts>,
}

fn key(
    event_id: Option<Cow<'_, str>>,
    timestamp: Option<Ts>,
) -> Result<(Cow<'_, str>, i64), String> {
    let id = event_id.ok_or("the event has no `event_id`")?;
    if id.is_empty() {
        return Err("the event's `event_id` is empty".into());
    }
    let ts = timestamp
        .ok_or("the event has no `timestamp`")?
        .0
        .map_err(|e| format!("the event's `timestamp`: {e}"))?;
    Ok((id, ts))
}

/// Parses one line into `rows`; an error says what is wrong with it.
pub(crate) fn push_line(rows: &mut RowsBuilder, line: &[u8]) -> Result<(), String> {
    let parsed: Line<'_> =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON object: {e}"))?;
    if parsed.event_id.is_some() || parsed.decision.is_none() {
        let (id, ts) = key(parsed.event_id, parsed.timestamp)
            .map_err(|e| format!("{e} (a line is an event with `event_id` and `timestamp`, or a decision-log line with `event` and `decision`)"))?;
        rows.push_plain(&id, ts, trim(line));
        return Ok(());
    }
    let event = parsed
        .event
        .ok_or("a decision-log line has `decision` but no `event`")?;
    let raw = event.get().as_bytes();
    let head: Head<'_> =
        serde_json::from_slice(raw).map_err(|e| format!("`event` is not an event object: {e}"))?;
    let (id, ts) = key(head.event_id, head.timestamp)?;
    let decision: Decision = serde_json::from_str(parsed.decision.expect("checked").get())
        .map_err(|e| format!("`decision` is not a decision (docs/contracts.md): {e}"))?;
    if *decision.event_id != *id {
        return Err(format!(
            "`decision.event_id` `{}` is not the event's `event_id` `{id}`",
            decision.event_id
        ));
    }
    let position: Option<Position> = match parsed.position {
        None => None,
        Some(p) => Some(
            serde_json::from_str(p.get())
                .map_err(|e| format!("`position` is not a source position: {e}"))?,
        ),
    };
    let instance = parsed.instance.unwrap_or(Cow::Borrowed(""));
    rows.push_decided(&DecidedRow {
        event_id: &id,
        timestamp_ms: ts,
        event: raw,
        decision: decision.decision,
        hits: &decision.hits,
        shadow_hits: &decision.shadow_hits,
        scores: &decision.scores.0,
        ruleset_version: &decision.ruleset_version,
        model_version: decision.model_version.as_deref(),
        degraded: decision.degraded,
        latency_us: decision.latency_us,
        decided_at_ms: decision.decided_at,
        instance: &instance,
        position: position
            .as_ref()
            .map_or(PositionRef::None, PositionRef::from),
    });
    Ok(())
}

fn trim(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let start = line[..end]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(end);
    &line[start..end]
}

/// Lines that were skipped under [`crate::OnInvalid::Skip`].
#[derive(Debug, Default)]
pub(crate) struct SkippedLines {
    pub count: u64,
    /// The first one: line number and reason.
    pub first: Option<(u64, String)>,
}

/// Every line of one file, as one batch (in file order) and the line
/// number of each row. Blank lines are not events and are passed over.
pub(crate) fn load(
    bytes: &[u8],
    skip_invalid: bool,
) -> Result<(RecordBatch, Vec<u64>, SkippedLines), (u64, String)> {
    let mut rows = RowsBuilder::new();
    let mut lines = Vec::new();
    let mut skipped = SkippedLines::default();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let no = i as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match push_line(&mut rows, line) {
            Ok(()) => lines.push(no),
            Err(reason) if skip_invalid => {
                skipped.count += 1;
                if skipped.first.is_none() {
                    skipped.first = Some((no, reason));
                }
            }
            Err(reason) => return Err((no, reason)),
        }
    }
    Ok((rows.finish_unsorted(), lines, skipped))
}

/// Writes the JSON-lines form of one decided event: the event's original
/// bytes under `event`, the decision as `contracts.md` shows it under
/// `decision`, then `instance` and `position`.
pub fn write_log_line(
    out: &mut Vec<u8>,
    event: &[u8],
    decision: &Decision,
    instance: &str,
    position: Option<&Position>,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(trim(event));
    out.extend_from_slice(b",\"decision\":");
    serde_json::to_writer(&mut *out, decision)?;
    out.extend_from_slice(b",\"instance\":");
    serde_json::to_writer(&mut *out, instance)?;
    if let Some(p) = position {
        out.extend_from_slice(b",\"position\":");
        serde_json::to_writer(&mut *out, p)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<RecordBatch, String> {
        let mut rows = RowsBuilder::new();
        push_line(&mut rows, line.as_bytes())?;
        Ok(rows.finish())
    }

    #[test]
    fn a_plain_event_needs_an_id_and_a_timestamp() {
        assert!(one(r#"{"event_id":"e1","timestamp":"2026-11-01T00:00:00Z","amount":3}"#).is_ok());
        assert!(one(r#"{"event_id":"e1","timestamp":1790000000000}"#).is_ok());
        let e = one(r#"{"event_id":"e1"}"#).unwrap_err();
        assert!(e.contains("no `timestamp`"), "{e}");
        let e = one(r#"{"timestamp":1}"#).unwrap_err();
        assert!(e.contains("no `event_id`"), "{e}");
        let e = one(r#"{"event_id":"e1","timestamp":"yesterday"}"#).unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        let e = one(r#"{"event_id":"e1","timestamp":1.5}"#).unwrap_err();
        assert!(e.contains("whole epoch"), "{e}");
        let e = one(r#"{"event_id":"e1","#).unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
        let e = one(r#"[1,2]"#).unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn a_log_line_must_agree_with_its_event() {
        let ok = r#"{"event":{"event_id":"e1","timestamp":5},"decision":{"event_id":"e1","decision":"deny","hits":[{"rule":"r","action":"deny","reason":"x"}],"shadow_hits":[],"scores":{},"ruleset_version":"rs-1","model_version":null,"degraded":false,"latency_us":3,"decided_at":"2026-11-01T00:00:00.000Z"},"instance":"a"}"#;
        assert_eq!(one(ok).unwrap().num_rows(), 1);
        let e = one(&ok.replace(r#""decision":"deny""#, r#""decision":"block""#)).unwrap_err();
        assert!(e.contains("`decision` is not a decision"), "{e}");
        let e = one(&ok.replacen(
            r#""event_id":"e1","decision""#,
            r#""event_id":"e2","decision""#,
            1,
        ))
        .unwrap_err();
        assert!(e.contains("is not the event's"), "{e}");
    }

    #[test]
    fn load_reports_the_first_bad_line_or_counts_skipped_ones() {
        let text = b"{\"event_id\":\"a\",\"timestamp\":1}\n\n{oops\n{\"event_id\":\"b\",\"timestamp\":2}\n";
        let (line, reason) = load(text, false).unwrap_err();
        assert_eq!(line, 3);
        assert!(reason.contains("not a JSON object"), "{reason}");
        let (batch, lines, skipped) = load(text, true).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(lines, [1, 4]);
        assert_eq!(skipped.count, 1);
        assert_eq!(skipped.first.unwrap().0, 3);
    }
}
