//! The values that flow through rules, features and models.

use std::fmt;
use std::sync::Arc;

/// The string payload of a [`Value`]: up to 23 bytes inline (an event's
/// ids, types, currencies and IPs are shorter), a shared `Arc<str>` beyond.
/// Cloning never copies more than 24 bytes; it dereferences to `str` and
/// converts from `&str`, `String` and `Arc<str>`.
pub type Str = smol_str::SmolStr;

/// The type of a value, as declared in the event schema, the feature
/// definitions and the model manifest, and as checked by the rules language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Number,
    String,
    Bool,
    Timestamp,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Number => "number",
            ValueType::String => "string",
            ValueType::Bool => "bool",
            ValueType::Timestamp => "timestamp",
        }
    }

    /// Parses the spelling used in schema and definition files.
    pub fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "number" => ValueType::Number,
            "string" => ValueType::String,
            "bool" | "boolean" => ValueType::Bool,
            "timestamp" => ValueType::Timestamp,
            _ => return None,
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value, or its absence.
///
/// `Missing` is a value of every type: a field absent from the event, a
/// feature with no history, a model output that could not be computed.
/// Short strings are stored inline and long ones reference-counted, so
/// that reading an event's strings allocates nothing for the usual fields
/// and copying a value into a feature's `last` slot never copies a long
/// string's bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Missing,
    Number(f64),
    String(Str),
    Bool(bool),
    /// Milliseconds since the Unix epoch, UTC.
    Timestamp(i64),
}

impl Value {
    pub fn is_missing(&self) -> bool {
        matches!(self, Value::Missing)
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_timestamp(&self) -> Option<i64> {
        match self {
            Value::Timestamp(t) => Some(*t),
            _ => None,
        }
    }

    /// The type of a present value; `None` for `Missing`.
    pub fn value_type(&self) -> Option<ValueType> {
        Some(match self {
            Value::Missing => return None,
            Value::Number(_) => ValueType::Number,
            Value::String(_) => ValueType::String,
            Value::Bool(_) => ValueType::Bool,
            Value::Timestamp(_) => ValueType::Timestamp,
        })
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(Str::new(s))
    }
}

impl From<Arc<str>> for Value {
    fn from(s: Arc<str>) -> Self {
        Value::String(Str::from(s))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Missing => f.write_str("missing"),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Timestamp(t) => f.write_str(&crate::time::format_rfc3339_ms(*t)),
        }
    }
}
