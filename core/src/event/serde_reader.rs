//! The serde_json reading of an event: the reference the fast reader is
//! held to, and the source of the exact `not valid JSON` message when the
//! fast reader meets bytes that are not JSON.
//!
//! It walks the JSON once with serde_json's deserializer and writes each
//! declared field into its slot; unknown fields are skipped unbuilt. It
//! does not look for duplicated keys: only the fast reader does.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{epoch_ms_value, expected, quote};
use crate::schema::Node;
use crate::time::parse_rfc3339_ms;
use crate::{EVENT_ID_SLOT, Rejection, Schema, Value, ValueType};

/// Reads `bytes` against `schema` with serde_json: the slot values, or the
/// rejection (all but `TooLarge` and `DuplicateKey`).
pub(crate) fn read(schema: &Schema, bytes: &[u8]) -> Result<Vec<Value>, Rejection> {
    let mut out = Slots {
        values: vec![Value::Missing; schema.len()],
        problem: None,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let top = TopSeed {
        node: &schema.root,
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
    for (slot, field) in schema.fields().iter().enumerate() {
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
    Ok(out.values)
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
            ValueType::Timestamp => match epoch_ms_value(v) {
                Ok(t) => Leaf::Ok(t),
                Err(message) => Leaf::BadTimestamp(message),
            },
            _ => Leaf::Wrong(format!("number {v}")),
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Leaf, E> {
        Ok(match self.0 {
            ValueType::String => Leaf::Ok(Value::String(v.into())),
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
