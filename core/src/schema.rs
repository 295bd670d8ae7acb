//! The event schema: which fields an event may carry and of what type.
//!
//! A schema file ships beside the rules (`schema.toml`):
//!
//! ```toml
//! [fields]
//! user_id = { type = "string", required = true }
//! amount = "number"
//! "attributes.channel" = "string"
//! ```
//!
//! `event_id` and `event_type` (strings) and `timestamp` (RFC 3339 or epoch
//! milliseconds) are always present and required; they need no declaration.
//! Every field gets a slot, an index into [`crate::Event::values`], fixed when
//! the schema is loaded so that nothing on the event path looks a name up.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::{CoreError, ValueType};

/// The slot of `event_id` in every schema.
pub const EVENT_ID_SLOT: usize = 0;
/// The slot of `event_type` in every schema.
pub const EVENT_TYPE_SLOT: usize = 1;
/// The slot of `timestamp` in every schema.
pub const TIMESTAMP_SLOT: usize = 2;

/// One declared field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    /// Dotted path from the event's root, without the `event.` prefix.
    pub path: String,
    pub ty: ValueType,
    /// A required field that is absent sends the event to the dead letters.
    pub required: bool,
}

/// A node of the field-path trie the event parser walks.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) children: HashMap<Box<str>, Node>,
    /// `Some` on a leaf: the field's slot and type.
    pub(crate) leaf: Option<(usize, ValueType)>,
    /// The dotted path of this node, for messages.
    pub(crate) path: Box<str>,
}

/// The event schema, with every field resolved to a slot.
#[derive(Debug)]
pub struct Schema {
    fields: Vec<FieldDef>,
    by_path: HashMap<String, usize>,
    pub(crate) root: Node,
    source: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    #[serde(default)]
    fields: BTreeMap<String, FieldSpec>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum FieldSpec {
    Short(String),
    Long {
        #[serde(rename = "type")]
        ty: String,
        #[serde(default)]
        required: bool,
    },
}

impl Schema {
    /// Reads and checks a schema file.
    pub fn load(path: &Path) -> Result<Schema, CoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        Schema::parse(&text, path)
    }

    /// Parses schema text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Schema, CoreError> {
        let file: SchemaFile = toml::from_str(text).map_err(|e| CoreError::Syntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut fields = Vec::with_capacity(file.fields.len());
        for (path, spec) in file.fields {
            let (ty, required) = match spec {
                FieldSpec::Short(ty) => (ty, false),
                FieldSpec::Long { ty, required } => (ty, required),
            };
            let field_err = |message: String| CoreError::Field {
                path: origin.to_owned(),
                field: path.clone(),
                message,
            };
            let ty = ValueType::parse(&ty).ok_or_else(|| {
                field_err(format!(
                    "unknown type `{ty}`; use one of number, string, bool, timestamp"
                ))
            })?;
            let path = path.strip_prefix("event.").unwrap_or(&path).to_owned();
            if path.split('.').any(|part| part.is_empty()) {
                return Err(field_err("a field path has an empty segment".into()));
            }
            if matches!(path.as_str(), "event_id" | "event_type" | "timestamp") {
                return Err(field_err(
                    "event_id, event_type and timestamp are built in; do not declare them".into(),
                ));
            }
            fields.push(FieldDef { path, ty, required });
        }
        Schema::from_fields(fields, Some(origin.to_owned()))
    }

    /// Builds a schema from declared fields (the built-in three are added).
    pub fn from_fields(
        declared: Vec<FieldDef>,
        source: Option<PathBuf>,
    ) -> Result<Schema, CoreError> {
        let mut fields = vec![
            FieldDef {
                path: "event_id".into(),
                ty: ValueType::String,
                required: true,
            },
            FieldDef {
                path: "event_type".into(),
                ty: ValueType::String,
                required: true,
            },
            FieldDef {
                path: "timestamp".into(),
                ty: ValueType::Timestamp,
                required: true,
            },
        ];
        fields.extend(declared);
        let mut root = Node::default();
        let mut by_path = HashMap::new();
        for (slot, field) in fields.iter().enumerate() {
            let conflict = |message: &str| CoreError::Field {
                path: source.clone().unwrap_or_default(),
                field: field.path.clone(),
                message: message.to_owned(),
            };
            if by_path.insert(field.path.clone(), slot).is_some() {
                return Err(conflict("declared twice"));
            }
            let mut node = &mut root;
            let mut prefix = String::new();
            for part in field.path.split('.') {
                if node.leaf.is_some() {
                    return Err(conflict("its parent is declared as a plain field"));
                }
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                node = node.children.entry(part.into()).or_insert_with(|| Node {
                    path: prefix.as_str().into(),
                    ..Node::default()
                });
            }
            if !node.children.is_empty() {
                return Err(conflict("it has nested fields declared under it"));
            }
            node.leaf = Some((slot, field.ty));
        }
        Ok(Schema {
            fields,
            by_path,
            root,
            source,
        })
    }

    /// Every field, built-in ones first, in slot order.
    pub fn fields(&self) -> &[FieldDef] {
        &self.fields
    }

    /// The number of slots an event of this schema has.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The slot of a dotted field path (with or without `event.`).
    pub fn slot(&self, path: &str) -> Option<usize> {
        let path = path.strip_prefix("event.").unwrap_or(path);
        self.by_path.get(path).copied()
    }

    /// The file the schema came from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Schema, CoreError> {
        Schema::parse(text, Path::new("schema.toml"))
    }

    #[test]
    fn builtins_come_first() {
        let s = parse(
            "[fields]\namount = \"number\"\nuser_id = { type = \"string\", required = true }\n",
        )
        .unwrap();
        assert_eq!(s.slot("event_id"), Some(EVENT_ID_SLOT));
        assert_eq!(s.slot("event.timestamp"), Some(TIMESTAMP_SLOT));
        assert_eq!(s.slot("amount"), Some(3));
        assert!(s.fields()[4].required);
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn rejects_bad_declarations() {
        let e = parse("[fields]\namount = \"money\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown type `money`"), "{e}");
        let e = parse("[fields]\na = \"string\"\n\"a.b\" = \"string\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`a.b`"), "{e}");
        let e = parse("[fields]\ntimestamp = \"number\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("built in"), "{e}");
        let e = parse("[felds]\n").unwrap_err().to_string();
        assert!(e.contains("schema.toml"), "{e}");
    }
}
