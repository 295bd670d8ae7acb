//! Ground truth: which events were fraud.
//!
//! Two sources: a field of the event itself ([`LabelField`], such as the
//! generator's `label`, read from the event's original bytes, since such a
//! field is usually not declared in the event schema), or a file of
//! chargebacks joined by `event_id` ([`Chargebacks`]: listed events are
//! fraud, every other event is legitimate).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::BacktestError;

/// Which values of the label field mean fraud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRule {
    /// These values mark fraud; any other value is legitimate.
    FraudValues(Vec<String>),
    /// These values mark a legitimate event; any other value is fraud (the
    /// generator: `legit`, while each fraud scenario has its own name).
    LegitValues(Vec<String>),
}

/// A label read from a field of each event. A value is compared by its
/// text: a string as it is, a bool as `true`/`false`, a number by value
/// (`1` matches `1.0`). An event without the field, or with `null`, is
/// unlabelled.
#[derive(Debug, Clone)]
pub struct LabelField {
    field: String,
    path: Vec<String>,
    rule: LabelRule,
    /// The rule's values that read as numbers, for comparing numbers.
    numbers: Vec<f64>,
    seen: u64,
    found: u64,
    first_keys: Option<Vec<String>>,
}

/// One scalar found at the label's path.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Null,
    Other(&'static str),
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a label")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Num(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar<'de>, A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an object"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Scalar<'de>, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an array"))
    }
}

/// Walks an object to `path` and returns what is there, skipping the rest
/// without building it.
struct PathSeed<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = Option<Scalar<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PathSeed<'_> {
    type Value = Option<Scalar<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = m.next_key::<Cow<'de, str>>()? {
            if found.is_none() && key == self.0[0].as_str() {
                found = if self.0.len() == 1 {
                    Some(m.next_value_seed(ScalarSeed)?)
                } else {
                    m.next_value_seed(PathSeed(&self.0[1..]))?
                };
            } else {
                m.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    // Anything else on the way down means the path is not there.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// The top-level keys of an object, for a hint.
struct Keys;

impl<'de> Visitor<'de> for Keys {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Vec<String>, A::Error> {
        let mut keys = Vec::new();
        while let Some(k) = m.next_key::<String>()? {
            m.next_value::<IgnoredAny>()?;
            keys.push(k);
        }
        Ok(keys)
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

impl LabelField {
    /// A label read from `field` (a dotted path, `label` or
    /// `attributes.fraud`), its values read by `rule`.
    pub fn new(field: &str, rule: LabelRule) -> Result<LabelField, BacktestError> {
        let path: Vec<String> = field.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(BacktestError::Options(format!(
                "label field `{field}` is not a field name (a name, or a dotted path such as attributes.fraud)"
            )));
        }
        let values = match &rule {
            LabelRule::FraudValues(v) | LabelRule::LegitValues(v) => v,
        };
        if values.is_empty() {
            return Err(BacktestError::Options(format!(
                "label field `{field}`: no values given for what marks fraud (or a legitimate event)"
            )));
        }
        let numbers = values
            .iter()
            .filter_map(|v| v.parse::<f64>().ok())
            .collect();
        Ok(LabelField {
            field: field.to_owned(),
            path,
            rule,
            numbers,
            seen: 0,
            found: 0,
            first_keys: None,
        })
    }

    /// The field's name.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// A one-line description for the report.
    pub fn describe(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.rule {
            LabelRule::FraudValues(v) => {
                format!(
                    "field `{}`: {} mark fraud, any other value is legitimate",
                    self.field,
                    list(v)
                )
            }
            LabelRule::LegitValues(v) => {
                format!(
                    "field `{}`: {} mark a legitimate event, any other value is fraud",
                    self.field,
                    list(v)
                )
            }
        }
    }

    fn listed(&self, s: &str) -> bool {
        match &self.rule {
            LabelRule::FraudValues(v) | LabelRule::LegitValues(v) => v.iter().any(|x| x == s),
        }
    }

    /// The label of one event: `Some(true)` fraud, `Some(false)`
    /// legitimate, `None` when the event has no such field (or `null`).
    pub fn classify(
        &mut self,
        event_id: &str,
        event: &[u8],
    ) -> Result<Option<bool>, BacktestError> {
        self.seen += 1;
        if self.first_keys.is_none() {
            let mut de = serde_json::Deserializer::from_slice(event);
            self.first_keys =
                Some(de::Deserializer::deserialize_map(&mut de, Keys).unwrap_or_default());
        }
        let mut de = serde_json::Deserializer::from_slice(event);
        let found =
            PathSeed(&self.path)
                .deserialize(&mut de)
                .map_err(|e| BacktestError::EventJson {
                    event_id: event_id.to_owned(),
                    reason: e.to_string(),
                })?;
        let listed = match found {
            None | Some(Scalar::Null) => return Ok(None),
            Some(Scalar::Str(s)) => self.listed(&s),
            Some(Scalar::Bool(b)) => self.listed(if b { "true" } else { "false" }),
            Some(Scalar::Num(n)) => self.numbers.contains(&n),
            Some(Scalar::Other(found)) => {
                return Err(BacktestError::LabelValue {
                    field: self.field.clone(),
                    event_id: event_id.to_owned(),
                    found,
                });
            }
        };
        self.found += 1;
        Ok(Some(match self.rule {
            LabelRule::FraudValues(_) => listed,
            LabelRule::LegitValues(_) => !listed,
        }))
    }

    /// After the pass: an error when events were seen but none had the
    /// field, with the nearest field name of the first event as a hint.
    pub fn check(&self) -> Result<(), BacktestError> {
        if self.seen == 0 || self.found > 0 {
            return Ok(());
        }
        let keys = self.first_keys.clone().unwrap_or_default();
        let near = keys
            .iter()
            .map(|k| (edit_distance(k, &self.path[0]), k))
            .filter(|(d, _)| *d <= 2)
            .min();
        let hint = match near {
            Some((_, k)) => format!(" (did you mean `{k}`?)"),
            None if keys.is_empty() => String::new(),
            None => format!(" (the first event has {})", keys.join(", ")),
        };
        Err(BacktestError::LabelNotFound {
            field: self.field.clone(),
            events: self.seen,
            hint,
        })
    }
}

/// Chargebacks joined by `event_id`: the listed events are fraud, every
/// other event is legitimate.
#[derive(Debug, Clone)]
pub struct Chargebacks {
    path: String,
    ids: HashSet<Box<str>, ahash::RandomState>,
}

/// A chargeback file larger than this is refused.
pub const MAX_CHARGEBACK_BYTES: u64 = 1 << 30;

impl Chargebacks {
    /// Reads a CSV file (with a header naming an `event_id` column) or a
    /// Parquet file (with an `event_id` string column), by its extension
    /// (`.parquet`; anything else is read as CSV).
    pub fn load(path: &Path) -> Result<Chargebacks, BacktestError> {
        let name = path.display().to_string();
        let io = |source| BacktestError::ChargebacksIo {
            path: name.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_CHARGEBACK_BYTES {
            return Err(BacktestError::Chargebacks {
                path: name,
                reason: format!("{size} bytes is more than the {MAX_CHARGEBACK_BYTES} allowed"),
            });
        }
        let parquet = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        let ids = if parquet {
            Self::parquet(path, &name)?
        } else {
            Self::csv(path, &name)?
        };
        Ok(Chargebacks { path: name, ids })
    }

    /// Chargebacks from a list of ids (tests, or ids read elsewhere).
    pub fn from_ids<I: IntoIterator<Item = S>, S: AsRef<str>>(origin: &str, ids: I) -> Chargebacks {
        Chargebacks {
            path: origin.to_owned(),
            ids: ids.into_iter().map(|s| Box::from(s.as_ref())).collect(),
        }
    }

    fn csv(
        path: &Path,
        name: &str,
    ) -> Result<HashSet<Box<str>, ahash::RandomState>, BacktestError> {
        let bad = |reason: String| BacktestError::Chargebacks {
            path: name.to_owned(),
            reason,
        };
        let mut r = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
        let headers = r.headers().map_err(|e| bad(e.to_string()))?.clone();
        let col = headers
            .iter()
            .position(|h| h.trim() == "event_id")
            .ok_or_else(|| {
                bad(format!(
                    "no `event_id` column in the header ({}); the first line names the columns",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })?;
        let mut ids = HashSet::default();
        for (i, row) in r.records().enumerate() {
            let row = row.map_err(|e| bad(format!("line {}: {e}", i + 2)))?;
            let id = row.get(col).unwrap_or("").trim();
            if id.is_empty() {
                return Err(bad(format!("line {}: empty `event_id`", i + 2)));
            }
            ids.insert(Box::from(id));
        }
        Ok(ids)
    }

    fn parquet(
        path: &Path,
        name: &str,
    ) -> Result<HashSet<Box<str>, ahash::RandomState>, BacktestError> {
        use arrow::array::{Array, StringArray};
        use parquet::arrow::ProjectionMask;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let bad = |reason: String| BacktestError::Chargebacks {
            path: name.to_owned(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|source| BacktestError::ChargebacksIo {
            path: name.to_owned(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
        let idx = builder
            .schema()
            .fields()
            .iter()
            .position(|f| f.name() == "event_id")
            .ok_or_else(|| bad("no `event_id` column".into()))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut ids = HashSet::default();
        let mut row = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            let col = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| bad(format!("`event_id` is not a string column ({e})")))?;
            let col = col
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to utf8");
            for i in 0..col.len() {
                if col.is_null(i) || col.value(i).is_empty() {
                    return Err(bad(format!("row {}: empty `event_id`", row + i as u64)));
                }
                ids.insert(Box::from(col.value(i)));
            }
            row += col.len() as u64;
        }
        Ok(ids)
    }

    /// True when the event is a chargeback.
    pub fn contains(&self, event_id: &str) -> bool {
        self.ids.contains(event_id)
    }

    /// The label of one event: `Some(true)` when charged back, else
    /// `Some(false)`.
    pub fn label(&self, event_id: &str) -> Option<bool> {
        Some(self.contains(event_id))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A one-line description for the report.
    pub fn describe(&self) -> String {
        format!(
            "chargebacks from {} ({} events): listed events are fraud, all others legitimate",
            self.path,
            self.ids.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legit() -> LabelField {
        LabelField::new("label", LabelRule::LegitValues(vec!["legit".into()])).unwrap()
    }

    #[test]
    fn the_generator_label_reads_legit_and_fraud() {
        let mut l = legit();
        assert_eq!(
            l.classify("a", br#"{"label":"legit","x":{"label":"y"}}"#)
                .unwrap(),
            Some(false)
        );
        assert_eq!(
            l.classify("b", br#"{"a":[1,{"label":2}],"label":"velocity"}"#)
                .unwrap(),
            Some(true)
        );
        assert_eq!(l.classify("c", br#"{"event_id":"c"}"#).unwrap(), None);
        assert_eq!(l.classify("d", br#"{"label":null}"#).unwrap(), None);
        assert!(l.check().is_ok());
    }

    #[test]
    fn nested_numeric_and_bool_labels() {
        let mut l = LabelField::new(
            "attributes.fraud",
            LabelRule::FraudValues(vec!["1".into(), "true".into()]),
        )
        .unwrap();
        assert_eq!(
            l.classify("a", br#"{"attributes":{"fraud":1.0}}"#).unwrap(),
            Some(true)
        );
        assert_eq!(
            l.classify("b", br#"{"attributes":{"fraud":0}}"#).unwrap(),
            Some(false)
        );
        assert_eq!(
            l.classify("c", br#"{"attributes":{"fraud":true}}"#)
                .unwrap(),
            Some(true)
        );
        assert_eq!(l.classify("d", br#"{"attributes":"fraud"}"#).unwrap(), None);
    }

    #[test]
    fn a_label_that_is_an_object_is_an_error() {
        let e = legit()
            .classify("e-1", br#"{"label":{"a":1}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("`e-1` is an object"), "{e}");
    }

    #[test]
    fn a_misspelt_label_field_is_caught_with_a_hint() {
        let mut l = LabelField::new("lable", LabelRule::LegitValues(vec!["legit".into()])).unwrap();
        for _ in 0..3 {
            assert_eq!(
                l.classify("a", br#"{"event_id":"a","label":"legit"}"#)
                    .unwrap(),
                None
            );
        }
        let e = l.check().unwrap_err();
        assert_eq!(
            e.to_string(),
            "label field `lable`: found in none of the 3 events compared (did you mean `label`?); name a field the events carry (the generator's is `label`)"
        );
    }

    #[test]
    fn chargebacks_from_csv() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cb.csv");
        std::fs::write(&f, "date,event_id\n2026-11-02,e-1\n2026-11-03,e-3\n").unwrap();
        let cb = Chargebacks::load(&f).unwrap();
        assert!(cb.contains("e-1") && cb.contains("e-3") && !cb.contains("e-2"));
        std::fs::write(&f, "date,id\n2026-11-02,e-1\n").unwrap();
        let e = Chargebacks::load(&f).unwrap_err();
        assert!(
            e.to_string()
                .contains("no `event_id` column in the header (date, id)"),
            "{e}"
        );
        let e = Chargebacks::load(&dir.path().join("none.csv")).unwrap_err();
        assert!(matches!(e, BacktestError::ChargebacksIo { .. }), "{e:?}");
    }
}
