//! The catalogue: every name a rule or a model manifest may refer to, with
//! its type and the slot it is read from.
//!
//! It is filled once at load time from the event schema, the feature
//! definitions and the model manifests. Checking a rule or a manifest
//! resolves each path here to a [`Slot`]; evaluation then reads slots from a
//! [`Record`] and never looks a name up.

use std::collections::HashMap;

use crate::{Schema, Value, ValueType};

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// `event.X`: a field of the event, by schema slot.
    Event,
    /// `feature.E.N`: a feature of the event's entities, by feature slot.
    Feature,
    /// `model.N`: a model output, by output slot.
    Model,
}

impl Namespace {
    pub fn prefix(self) -> &'static str {
        match self {
            Namespace::Event => "event",
            Namespace::Feature => "feature",
            Namespace::Model => "model",
        }
    }
}

/// A resolved name: which array of a [`Record`] and which index in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub ns: Namespace,
    pub index: u32,
}

/// One name in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueEntry {
    /// The full rules-language path: `event.amount`, `feature.user.txn_count_1h`.
    pub path: String,
    pub slot: Slot,
    pub ty: ValueType,
}

/// Every name known to rules and model manifests.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    entries: Vec<CatalogueEntry>,
    by_path: HashMap<String, usize>,
    counts: [u32; 3],
}

fn ns_index(ns: Namespace) -> usize {
    match ns {
        Namespace::Event => 0,
        Namespace::Feature => 1,
        Namespace::Model => 2,
    }
}

impl Catalogue {
    /// A catalogue holding the event fields of `schema`.
    pub fn from_schema(schema: &Schema) -> Catalogue {
        let mut c = Catalogue::default();
        for (slot, field) in schema.fields().iter().enumerate() {
            c.insert(
                format!("event.{}", field.path),
                Slot {
                    ns: Namespace::Event,
                    index: slot as u32,
                },
                field.ty,
            );
        }
        c.counts[0] = schema.len() as u32;
        c
    }

    /// Adds `feature.<entity>.<name>` at the next feature slot; returns it.
    /// Adding a path twice returns the first slot.
    pub fn add_feature(&mut self, entity: &str, name: &str, ty: ValueType) -> Slot {
        self.add_next(Namespace::Feature, format!("feature.{entity}.{name}"), ty)
    }

    /// Adds `model.<name>` at the next model-output slot; returns it.
    pub fn add_model_output(&mut self, name: &str, ty: ValueType) -> Slot {
        self.add_next(Namespace::Model, format!("model.{name}"), ty)
    }

    fn add_next(&mut self, ns: Namespace, path: String, ty: ValueType) -> Slot {
        if let Some(e) = self.lookup(&path) {
            return e.slot;
        }
        let i = ns_index(ns);
        let slot = Slot {
            ns,
            index: self.counts[i],
        };
        self.counts[i] += 1;
        self.insert(path, slot, ty);
        slot
    }

    fn insert(&mut self, path: String, slot: Slot, ty: ValueType) {
        self.by_path.insert(path.clone(), self.entries.len());
        self.entries.push(CatalogueEntry { path, slot, ty });
    }

    /// Looks a full path up (`event.amount`).
    pub fn lookup(&self, path: &str) -> Option<&CatalogueEntry> {
        self.by_path.get(path).map(|&i| &self.entries[i])
    }

    /// Every entry, in the order added.
    pub fn entries(&self) -> &[CatalogueEntry] {
        &self.entries
    }

    /// How many slots a namespace has: the length a [`Record`] array needs.
    pub fn len(&self, ns: Namespace) -> usize {
        self.counts[ns_index(ns)] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The closest known path to a misspelt one, for "did you mean" hints.
    pub fn suggest(&self, path: &str) -> Option<&str> {
        self.entries
            .iter()
            .map(|e| (edit_distance(path, &e.path), e.path.as_str()))
            .filter(|(d, p)| *d <= (p.len() / 3).max(2))
            .min_by_key(|(d, _)| *d)
            .map(|(_, p)| p)
    }
}

/// Levenshtein distance over bytes; names are short.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The values one event is decided on, as slot arrays.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub event: &'a [Value],
    pub features: &'a [Value],
    pub model: &'a [Value],
}

static MISSING: Value = Value::Missing;

impl<'a> Record<'a> {
    /// The value at a slot; `Missing` for a slot the arrays do not reach
    /// (a model that was skipped, say).
    #[inline]
    pub fn get(&self, slot: Slot) -> &'a Value {
        let values = match slot.ns {
            Namespace::Event => self.event,
            Namespace::Feature => self.features,
            Namespace::Model => self.model,
        };
        values.get(slot.index as usize).unwrap_or(&MISSING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn resolves_and_suggests() {
        let schema = Schema::parse("[fields]\namount = \"number\"\n", Path::new("s.toml")).unwrap();
        let mut c = Catalogue::from_schema(&schema);
        let f = c.add_feature("user", "txn_count_1h", ValueType::Number);
        assert_eq!(
            f,
            Slot {
                ns: Namespace::Feature,
                index: 0
            }
        );
        assert_eq!(c.add_feature("user", "txn_count_1h", ValueType::Number), f);
        let m = c.add_model_output("fraud_score", ValueType::Number);
        assert_eq!(c.lookup("event.amount").unwrap().slot.index, 3);
        assert_eq!(c.suggest("event.amout"), Some("event.amount"));
        assert_eq!(c.suggest("feature.user.nothing_like_it"), None);
        assert_eq!(c.len(Namespace::Event), 4);
        let ev = [
            Value::Missing,
            Value::Missing,
            Value::Missing,
            Value::Number(5.0),
        ];
        let r = Record {
            event: &ev,
            features: &[],
            model: &[],
        };
        assert_eq!(
            r.get(c.lookup("event.amount").unwrap().slot),
            &Value::Number(5.0)
        );
        assert_eq!(r.get(m), &Value::Missing);
    }
}
