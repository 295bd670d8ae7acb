//! The decision and dead-letter records of `contracts.md`.

use std::fmt;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;

use crate::Str;

/// What a rule asks for, and what a decision is. Ordered by severity:
/// `Approve < Review < Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Approve,
    Review,
    Deny,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Approve, Action::Review, Action::Deny];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Review => "review",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule whose condition held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub rule: Arc<str>,
    pub action: Action,
    pub reason: Arc<str>,
}

/// Model scores by output name, in the order the model declares them.
/// Serialised as a JSON object. Inline for up to two outputs (a champion
/// and a challenger of one output each), so a decision's scores allocate
/// nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores(pub SmallVec<[(Arc<str>, f64); 2]>);

impl<const N: usize> From<[(Arc<str>, f64); N]> for Scores {
    fn from(scores: [(Arc<str>, f64); N]) -> Scores {
        Scores(scores.into_iter().collect())
    }
}

impl Serialize for Scores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Scores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, f64>::deserialize(d)?;
        Ok(Scores(
            map.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
        ))
    }
}

/// One model input's part in a decision's score: an exact TreeSHAP
/// contribution to the model's margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The manifest's input path (`feature.device.account_count_7d`).
    pub input: Arc<str>,
    /// The value the model was fed; `None` (`null`) when it was missing.
    pub value: Option<f64>,
    /// Its contribution to the margin (log-odds for a binary classifier).
    pub contribution: f64,
}

/// The outcome for one event, exactly as `contracts.md` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The event's id, shared with the event (inline up to 23 bytes).
    pub event_id: Str,
    pub decision: Action,
    /// Every non-shadow hit, the winner first.
    pub hits: Vec<Hit>,
    pub shadow_hits: Vec<Hit>,
    pub scores: Scores,
    /// The model inputs that moved the score most, largest first; only for
    /// the outcomes `[model.explain]` names, and absent (empty) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explanation: Vec<Contribution>,
    pub ruleset_version: Arc<str>,
    /// `null` when no model is configured.
    pub model_version: Option<Arc<str>>,
    /// True when a stage missed its deadline or failed and the rules decided
    /// without its output.
    pub degraded: bool,
    /// From the moment the event was read to the decision being handed to
    /// the output.
    pub latency_us: u64,
    #[serde(serialize_with = "ser_rfc3339", deserialize_with = "de_rfc3339")]
    pub decided_at: i64,
}

impl Decision {
    /// Appends the decision's JSON to `out`: byte for byte what
    /// `serde_json::to_writer` writes, without building anything on the way
    /// (scores that are not finite are `null`, as serde_json writes them).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"event_id\":");
        json_str(out, &self.event_id);
        out.extend_from_slice(b",\"decision\":\"");
        out.extend_from_slice(self.decision.as_str().as_bytes());
        out.extend_from_slice(b"\",\"hits\":");
        json_hits(out, &self.hits);
        out.extend_from_slice(b",\"shadow_hits\":");
        json_hits(out, &self.shadow_hits);
        out.extend_from_slice(b",\"scores\":{");
        for (i, (name, score)) in self.scores.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, name);
            out.push(b':');
            json_f64(out, *score);
        }
        out.push(b'}');
        if !self.explanation.is_empty() {
            out.extend_from_slice(b",\"explanation\":[");
            for (i, c) in self.explanation.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"input\":");
                json_str(out, &c.input);
                out.extend_from_slice(b",\"value\":");
                match c.value {
                    Some(v) => json_f64(out, v),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"contribution\":");
                json_f64(out, c.contribution);
                out.push(b'}');
            }
            out.push(b']');
        }
        out.extend_from_slice(b",\"ruleset_version\":");
        json_str(out, &self.ruleset_version);
        out.extend_from_slice(b",\"model_version\":");
        match &self.model_version {
            Some(v) => json_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(if self.degraded {
            b",\"degraded\":true,\"latency_us\":"
        } else {
            b",\"degraded\":false,\"latency_us\":"
        });
        out.extend_from_slice(itoa::Buffer::new().format(self.latency_us).as_bytes());
        out.extend_from_slice(b",\"decided_at\":\"");
        crate::time::write_rfc3339_ms(out, self.decided_at);
        out.extend_from_slice(b"\"}");
    }
}

fn json_hits(out: &mut Vec<u8>, hits: &[Hit]) {
    out.push(b'[');
    for (i, h) in hits.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"rule\":");
        json_str(out, &h.rule);
        out.extend_from_slice(b",\"action\":\"");
        out.extend_from_slice(h.action.as_str().as_bytes());
        out.extend_from_slice(b"\",\"reason\":");
        json_str(out, &h.reason);
        out.push(b'}');
    }
    out.push(b']');
}

fn json_f64(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string with serde_json's escapes: `\"`, `\\`, the short forms
/// of five control characters, `\u00XX` (lower-case hex) for the others;
/// everything else as it is.
pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        if short == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

fn ser_rfc3339<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format_rfc3339_ms(*ms))
}

fn de_rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    crate::time::parse_rfc3339_ms(&s).map_err(serde::de::Error::custom)
}

/// Where an input record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Position {
    File {
        file: String,
        line: u64,
    },
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
    Http {
        http: String,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::File { file, line } => write!(f, "{file}:{line}"),
            Position::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}[{partition}]@{offset}"),
            Position::Http { http } => write!(f, "http {http}"),
        }
    }
}

/// A rejected input, kept whole so it can be fixed and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub position: Position,
    /// The `RejectionKind` label (`wrong_type`, `not_json` …).
    pub kind: String,
    /// What was wrong, in words a person can act on.
    pub reason: String,
    /// The original bytes when they are UTF-8 …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// … otherwise the original bytes, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_base64: Option<String>,
}

impl DeadLetter {
    pub fn new(position: Position, rejection: &crate::Rejection, bytes: &[u8]) -> DeadLetter {
        let (original, original_base64) = match std::str::from_utf8(bytes) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (None, Some(base64(bytes))),
        };
        DeadLetter {
            position,
            kind: rejection.kind().as_str().to_owned(),
            reason: rejection.to_string(),
            original,
            original_base64,
        }
    }

    /// The original bytes, decoded.
    pub fn original_bytes(&self) -> Vec<u8> {
        match (&self.original, &self.original_base64) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(b)) => unbase64(b),
            (None, None) => Vec::new(),
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = B64.iter().position(|&b| b == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_serialises_to_the_contract() {
        let d = Decision {
            event_id: "e-000123".into(),
            decision: Action::Deny,
            hits: vec![Hit {
                rule: "model_high_risk".into(),
                action: Action::Deny,
                reason: "model score above 0.92".into(),
            }],
            shadow_hits: vec![],
            scores: Scores::from([("fraud_score".into(), 0.963)]),
            explanation: vec![],
            ruleset_version: "rs-5f1c9a2e".into(),
            model_version: Some("fraud-gbt-2026-11-20".into()),
            degraded: false,
            latency_us: 640,
            decided_at: crate::time::parse_rfc3339_ms("2026-11-24T08:15:30.251Z").unwrap(),
        };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"event_id":"e-000123","decision":"deny","hits":[{"rule":"model_high_risk","action":"deny","reason":"model score above 0.92"}],"shadow_hits":[],"scores":{"fraud_score":0.963},"ruleset_version":"rs-5f1c9a2e","model_version":"fraud-gbt-2026-11-20","degraded":false,"latency_us":640,"decided_at":"2026-11-24T08:15:30.251Z"}"#
        );
        let back: Decision = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }

    /// `write_json` writes what serde_json writes, on decisions with
    /// every escape, non-finite and extreme scores, and timestamps from
    /// before 1970 to past year 9999.
    #[test]
    fn written_json_is_serde_json_byte_for_byte() {
        let texts = [
            "",
            "e-1",
            "quote \" back \\ slash",
            "\u{0}\u{1}\u{8}\u{9}\n\u{b}\u{c}\r\u{1f}\u{7f}",
            "ünïcødé ✓ 😀",
            "</script>",
            "\u{2028}",
        ];
        let scores = [
            0.963,
            0.0,
            -0.0,
            1.0,
            1e300,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
            123456.789,
            1.0 / 3.0,
        ];
        let times = [
            0,
            1,
            -1,
            999,
            1_795_508_130_251,
            -62_135_596_800_000,
            -62_135_596_800_001,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MAX,
            i64::MIN,
            951_782_400_000,
        ];
        let mut n = 0;
        for (i, t) in times.iter().enumerate() {
            for (j, s) in texts.iter().enumerate() {
                let hit = |k: usize| Hit {
                    rule: texts[(j + k) % texts.len()].into(),
                    action: Action::ALL[k % 3],
                    reason: texts[(i + k) % texts.len()].into(),
                };
                let d = Decision {
                    event_id: (*s).into(),
                    decision: Action::ALL[(i + j) % 3],
                    hits: (0..j % 3).map(hit).collect(),
                    shadow_hits: (0..i % 2).map(hit).collect(),
                    scores: Scores(
                        (0..(i + j) % 4)
                            .map(|k| (texts[k].into(), scores[(i * 3 + j + k) % scores.len()]))
                            .collect(),
                    ),
                    explanation: (0..(i + 2 * j) % 3)
                        .map(|k| Contribution {
                            input: texts[(i + k) % texts.len()].into(),
                            value: (k % 2 == 0).then(|| scores[(i + j + k) % scores.len()]),
                            contribution: scores[(2 * i + j + k) % scores.len()],
                        })
                        .collect(),
                    ruleset_version: texts[i % texts.len()].into(),
                    model_version: (j % 2 == 0).then(|| texts[(i + 1) % texts.len()].into()),
                    degraded: (i + j) % 2 == 1,
                    latency_us: [0, 7, u64::MAX][(i + j) % 3],
                    decided_at: *t,
                };
                let mut out = b"prefix".to_vec();
                d.write_json(&mut out);
                let want = serde_json::to_vec(&d).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out[6..]),
                    String::from_utf8_lossy(&want)
                );
                assert_eq!(&out[..6], b"prefix");
                n += 1;
            }
        }
        assert_eq!(n, times.len() * texts.len());
        for x in scores {
            let mut out = Vec::new();
            json_f64(&mut out, x);
            assert_eq!(out, serde_json::to_vec(&x).unwrap());
        }
    }

    #[test]
    fn base64_round_trips() {
        for bytes in [
            &b""[..],
            b"\xff",
            b"\xff\x00",
            b"\xff\x00\x80",
            b"hello \xc3(",
        ] {
            assert_eq!(unbase64(&base64(bytes)), bytes);
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }
}
