//! Parsing and validating one event.
//!
//! The parser walks the JSON once and writes each declared field straight into
//! its slot; unknown fields are skipped without being built. A bad event is
//! not an error of the process: it is a [`Rejection`], which the caller turns
//! into a dead-letter record with the original bytes.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::schema::Node;
use crate::time::{MAX_EPOCH_MS, parse_rfc3339_ms};
use crate::{EVENT_ID_SLOT, EVENT_TYPE_SLOT, Schema, TIMESTAMP_SLOT, Value, ValueType};

/// Events larger than this are rejected unread unless configured otherwise.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

/// A parsed, validated event: one value per schema slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    values: Box<[Value]>,
}

impl Event {
    /// Builds an event from slot values (tests, generators). The built-in
    /// slots must hold an id, a type and a timestamp.
    pub fn from_values(values: Vec<Value>) -> Event {
        debug_assert!(values.len() > TIMESTAMP_SLOT);
        Event {
            values: values.into_boxed_slice(),
        }
    }

    pub fn id(&self) -> &str {
        self.values[EVENT_ID_SLOT].as_str().unwrap_or("")
    }

    /// The id as a shared string, for decisions.
    pub fn id_arc(&self) -> Arc<str> {
        match &self.values[EVENT_ID_SLOT] {
            Value::String(s) => s.clone(),
            _ => Arc::from(""),
        }
    }

    pub fn event_type(&self) -> &str {
        self.values[EVENT_TYPE_SLOT].as_str().unwrap_or("")
    }

    /// Event time, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.values[TIMESTAMP_SLOT].as_timestamp().unwrap_or(0)
    }

    /// Every slot, in schema order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    pub fn get(&self, slot: usize) -> &Value {
        self.values.get(slot).unwrap_or(&Value::Missing)
    }
}

/// What kind of problem sent an event to the dead letters; the label of the
/// `verdict_dead_letters_total{reason}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    TooLarge,
    NotJson,
    NotObject,
    MissingField,
    WrongType,
    BadTimestamp,
    InvalidValue,
}

impl RejectionKind {
    pub const ALL: [RejectionKind; 7] = [
        RejectionKind::TooLarge,
        RejectionKind::NotJson,
        RejectionKind::NotObject,
        RejectionKind::MissingField,
        RejectionKind::WrongType,
        RejectionKind::BadTimestamp,
        RejectionKind::InvalidValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::TooLarge => "too_large",
            RejectionKind::NotJson => "not_json",
            RejectionKind::NotObject => "not_object",
            RejectionKind::MissingField => "missing_field",
            RejectionKind::WrongType => "wrong_type",
            RejectionKind::BadTimestamp => "bad_timestamp",
            RejectionKind::InvalidValue => "invalid_value",
        }
    }
}

/// Why an event was refused. The `Display` text is the dead-letter reason:
/// it names the field and what was expected, so a person can fix the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "event is {size} bytes, over the limit of {limit} bytes (raise `max_event_bytes` if such events are legitimate)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {message}")]
    NotJson { message: String },
    #[error("an event must be a JSON object, found {found}")]
    NotObject { found: &'static str },
    #[error("required field `{field}` is missing")]
    MissingField { field: String },
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "field `{field}`: {message}; use RFC 3339 (2026-11-24T08:15:30.250Z) or epoch milliseconds"
    )]
    BadTimestamp { field: String, message: String },
    #[error("field `{field}`: {message}")]
    InvalidValue { field: String, message: String },
}

impl Rejection {
    pub fn kind(&self) -> RejectionKind {
        match self {
            Rejection::TooLarge { .. } => RejectionKind::TooLarge,
            Rejection::NotJson { .. } => RejectionKind::NotJson,
            Rejection::NotObject { .. } => RejectionKind::NotObject,
            Rejection::MissingField { .. } => RejectionKind::MissingField,
            Rejection::WrongType { .. } => RejectionKind::WrongType,
            Rejection::BadTimestamp { .. } => RejectionKind::BadTimestamp,
            Rejection::InvalidValue { .. } => RejectionKind::InvalidValue,
        }
    }
}

/// Turns bytes into events against one schema.
#[derive(Debug, Clone)]
pub struct EventParser {
    schema: Arc<Schema>,
    max_bytes: usize,
}

impl EventParser {
    pub fn new(schema: Arc<Schema>) -> EventParser {
        EventParser {
            schema,
            max_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }

    pub fn with_max_bytes(mut self, max_bytes: usize) -> EventParser {
        self.max_bytes = max_bytes;
        self
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Parses and validates one event. Never panics, whatever the bytes.
    pub fn parse(&self, bytes: &[u8]) -> Result<Event, Rejection> {
        if bytes.len() > self.max_bytes {
            return Err(Rejection::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let mut out = Slots {
            values: vec![Value::Missing; self.schema.len()],
            problem: None,
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let top = TopSeed {
            node: &self.schema.root,
            out: &mut out,
        }
        .deserialize(&mut de)
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| Rejection::NotJson {
            message: e.to_string(),
        })?;
        if let Some(found) = top {
            return Err(Rejection::NotObject { found });
        }
        if let Some(problem) = out.problem {
            return Err(problem);
        }
        for (slot, field) in self.schema.fields().iter().enumerate() {
            if field.required && out.values[slot].is_missing() {
                return Err(Rejection::MissingField {
                    field: field.path.clone(),
                });
            }
        }
        if out.values[EVENT_ID_SLOT].as_str() == Some("") {
            return Err(Rejection::InvalidValue {
                field: "event_id".into(),
                message: "must not be empty".into(),
            });
        }
        Ok(Event {
            values: out.values.into_boxed_slice(),
        })
    }
}

/// The values being filled in, and the first problem met.
struct Slots {
    values: Vec<Value>,
    problem: Option<Rejection>,
}

impl Slots {
    fn note(&mut self, problem: Rejection) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }
}

/// The root: an object, or the name of what was found instead.
struct TopSeed<'a> {
    node: &'a Node,
    out: &'a mut Slots,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Option<&'static str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ObjectVisitor {
            node: self.node,
            out: self.out,
        })
    }
}

/// Visits an object whose keys are looked up in one trie node. Anything but
/// an object is consumed and reported as the kind of JSON it was.
struct ObjectVisitor<'a> {
    node: &'a Node,
    out: &'a mut Slots,
}

macro_rules! not_object {
    ($($method:ident($ty:ty) => $found:expr),* $(,)?) => {
        $(fn $method<E: de::Error>(self, _v: $ty) -> Result<Self::Value, E> {
            Ok(Some($found))
        })*
    };
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    not_object! {
        visit_bool(bool) => "a boolean",
        visit_i64(i64) => "a number",
        visit_u64(u64) => "a number",
        visit_f64(f64) => "a number",
        visit_str(&str) => "a string",
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(child) = map.next_key_seed(KeySeed(self.node))? {
            match child {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(node) => match node.leaf {
                    Some((slot, ty)) => map.next_value_seed(LeafSeed {
                        node,
                        slot,
                        ty,
                        out: &mut *self.out,
                    })?,
                    None => {
                        let found = map.next_value_seed(TopSeed {
                            node,
                            out: &mut *self.out,
                        })?;
                        if let Some(found) = found
                            && found != "null"
                        {
                            self.out.note(Rejection::WrongType {
                                field: node.path.to_string(),
                                expected: "an object",
                                found: found.to_owned(),
                            });
                        }
                    }
                },
            }
        }
        Ok(None)
    }
}

/// Looks a key up among a node's children without allocating.
struct KeySeed<'a>(&'a Node);

impl<'de, 'a> DeserializeSeed<'de> for KeySeed<'a> {
    type Value = Option<&'a Node>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'a> Visitor<'de> for KeySeed<'a> {
    type Value = Option<&'a Node>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.children.get(key))
    }
}

/// Reads one declared field into its slot, checking its type.
struct LeafSeed<'a> {
    node: &'a Node,
    slot: usize,
    ty: ValueType,
    out: &'a mut Slots,
}

/// What a leaf held: a value of the right type, or a description of what
/// was found instead.
enum Leaf {
    Ok(Value),
    Wrong(String),
    BadTimestamp(String),
}

impl<'de> DeserializeSeed<'de> for LeafSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let leaf = d.deserialize_any(LeafVisitor(self.ty))?;
        let field = || self.node.path.to_string();
        match leaf {
            Leaf::Ok(v) => self.out.values[self.slot] = v,
            Leaf::Wrong(found) => self.out.note(Rejection::WrongType {
                field: field(),
                expected: expected(self.ty),
                found,
            }),
            Leaf::BadTimestamp(message) => self.out.note(Rejection::BadTimestamp {
                field: field(),
                message,
            }),
        }
        Ok(())
    }
}

fn expected(ty: ValueType) -> &'static str {
    match ty {
        ValueType::Number => "a number",
        ValueType::String => "a string",
        ValueType::Bool => "a boolean",
        ValueType::Timestamp => "a timestamp (RFC 3339 string or epoch milliseconds)",
    }
}

/// Shortens a found string for a message, on a character boundary.
fn quote(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return format!("string {s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("string {:?}…", &s[..end])
}

fn epoch_ms(n: f64) -> Leaf {
    if n.fract() == 0.0 && (0.0..=MAX_EPOCH_MS as f64).contains(&n) {
        Leaf::Ok(Value::Timestamp(n as i64))
    } else {
        Leaf::BadTimestamp(format!(
            "{n} is not epoch milliseconds between 1970 and 9999"
        ))
    }
}

struct LeafVisitor(ValueType);

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(expected(self.0))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Leaf, E> {
        Ok(match self.0 {
            ValueType::Bool => Leaf::Ok(Value::Bool(v)),
            _ => Leaf::Wrong(format!("boolean {v}")),
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Leaf, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Leaf, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Leaf, E> {
        Ok(match self.0 {
            ValueType::Number => Leaf::Ok(Value::Number(v)),
            ValueType::Timestamp => epoch_ms(v),
            _ => Leaf::Wrong(format!("number {v}")),
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Leaf, E> {
        Ok(match self.0 {
            ValueType::String => Leaf::Ok(Value::String(Arc::from(v))),
            ValueType::Timestamp => match parse_rfc3339_ms(v) {
                Ok(ms) => Leaf::Ok(Value::Timestamp(ms)),
                Err(message) => Leaf::BadTimestamp(message),
            },
            _ => Leaf::Wrong(quote(v)),
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Leaf, E> {
        Ok(Leaf::Ok(Value::Missing))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Leaf::Wrong("an array".into()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Leaf::Wrong("an object".into()))
    }
}
