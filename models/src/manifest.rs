//! The model manifest: the TOML file beside each `.onnx` that says what the
//! model is called, which values it takes (as rules-language paths, in
//! order), what stands in for a missing input, and which outputs rules see.
//!
//! ```toml
//! name = "fraud-gbt"
//! version = "fraud-gbt-2026-11-25"
//! file = "fraud-gbt.onnx"            # relative to this manifest
//! inputs = ["feature.user.txn_count_1h", "event.amount"]
//! missing = nan                      # or a number, e.g. -1.0
//!
//! evaluator = "auto"                # or "native", "onnxruntime"
//! covers = "fraud-gbt.covers.json"   # node covers, for explanations
//!
//! [[outputs]]
//! name = "fraud_score"               # rules read it as model.fraud_score
//! from = "probabilities"             # the ONNX output tensor
//! index = 1                          # the column of that tensor
//! ```
//!
//! `evaluator` picks what scores the model: `auto` (the default) the
//! native tree evaluator for a model that is only a supported tree
//! ensemble and ONNX Runtime for any other; `native` or `onnxruntime`
//! force one (`native` refuses a model it cannot evaluate). `covers` names
//! the covers file the training tools write, which explanations need.
//!
//! `missing` defaults to `nan`, which tree models exported from
//! scikit-learn's `HistGradientBoostingClassifier` route down the branch
//! learned for missing values; a model trained on imputed data names its
//! imputation constant instead. A boolean input is fed as 1.0 / 0.0.
//!
//! This module parses and checks manifests; it does not run models.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use verdict_core::{Catalogue, Record, Slot, Value, ValueType};

use crate::ModelError;

/// The largest manifest file accepted.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// The most inputs a manifest may list.
pub const MAX_INPUTS: usize = 4096;
/// The most outputs a manifest may list.
pub const MAX_OUTPUTS: usize = 64;

/// One output exposed to rules as `model.<name>`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The name rules use: `model.<name>`.
    pub name: String,
    /// The ONNX output tensor it is read from.
    pub from: String,
    /// The column of a `[batch, k]` output; absent for a `[batch]` output.
    #[serde(default)]
    pub index: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    file: PathBuf,
    inputs: Vec<String>,
    #[serde(default = "nan")]
    missing: f64,
    #[serde(default)]
    input_tensor: Option<String>,
    #[serde(default)]
    evaluator: Evaluator,
    #[serde(default)]
    covers: Option<PathBuf>,
    outputs: Vec<OutputSpec>,
}

/// What scores a model (`evaluator` in the manifest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evaluator {
    /// The native evaluator for a model that is only a supported tree
    /// ensemble, ONNX Runtime for any other.
    #[default]
    Auto,
    /// The native tree evaluator; a model it cannot evaluate is refused.
    Native,
    /// ONNX Runtime.
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl Evaluator {
    /// The name used in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Evaluator::Auto => "auto",
            Evaluator::Native => "native",
            Evaluator::OnnxRuntime => "onnxruntime",
        }
    }
}

fn nan() -> f64 {
    f64::NAN
}

/// A parsed, self-consistent manifest (not yet checked against a catalogue).
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The model's name (`fraud-gbt`).
    pub name: String,
    /// The version reported in each decision's `model_version`.
    pub version: String,
    /// The `.onnx` file, resolved against the manifest's folder.
    pub file: PathBuf,
    /// Input paths, in the order of the model's input columns.
    pub inputs: Vec<String>,
    /// The value fed for a missing input (NaN unless a number is given).
    pub missing: f32,
    /// The ONNX input tensor to feed; the model's only input when absent.
    pub input_tensor: Option<String>,
    /// What scores the model.
    pub evaluator: Evaluator,
    /// The covers file (node covers for explanations), resolved against
    /// the manifest's folder; none: explanations are unavailable.
    pub covers: Option<PathBuf>,
    /// Outputs exposed to rules.
    pub outputs: Vec<OutputSpec>,
    /// Where the manifest was read from.
    pub path: PathBuf,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Manifest {
    /// Reads and parses a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_MANIFEST_BYTES as u64 {
            return Err(ModelError::Manifest {
                path: path.to_path_buf(),
                reason: format!(
                    "file is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Manifest::parse(&text, path)
    }

    /// Parses manifest text; `path` names it in errors and anchors `file`.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ModelError> {
        let bad = |reason: String| ModelError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "text is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                text.len()
            )));
        }
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if raw.name.trim().is_empty() {
            return Err(bad("`name` is empty; give the model a name".into()));
        }
        if raw.version.trim().is_empty() {
            return Err(bad("`version` is empty; give the model a version".into()));
        }
        if raw.inputs.is_empty() {
            return Err(bad(
                "`inputs` is empty; list the model's inputs in order".into()
            ));
        }
        if raw.inputs.len() > MAX_INPUTS {
            return Err(bad(format!(
                "{} inputs, more than the {MAX_INPUTS} allowed",
                raw.inputs.len()
            )));
        }
        for (i, input) in raw.inputs.iter().enumerate() {
            if let Some(j) = raw.inputs[..i].iter().position(|p| p == input) {
                return Err(bad(format!(
                    "input `{input}` is listed twice (positions {j} and {i})"
                )));
            }
        }
        if raw.outputs.is_empty() {
            return Err(bad(
                "no [[outputs]]; name at least one output for rules to read".into(),
            ));
        }
        if raw.outputs.len() > MAX_OUTPUTS {
            return Err(bad(format!(
                "{} outputs, more than the {MAX_OUTPUTS} allowed",
                raw.outputs.len()
            )));
        }
        for (i, out) in raw.outputs.iter().enumerate() {
            if !is_identifier(&out.name) {
                return Err(bad(format!(
                    "output name `{}` must be lower-case letters, digits and `_`, starting with a letter or `_`",
                    out.name
                )));
            }
            if raw.outputs[..i].iter().any(|o| o.name == out.name) {
                return Err(bad(format!("output `{}` is listed twice", out.name)));
            }
            if out.from.is_empty() {
                return Err(bad(format!(
                    "output `{}` has an empty `from`; name the ONNX output tensor",
                    out.name
                )));
            }
        }
        if !raw.missing.is_nan() && !raw.missing.is_finite() {
            return Err(bad("`missing` must be nan or a finite number".into()));
        }
        let resolve = |p: PathBuf| {
            if p.is_absolute() {
                p
            } else {
                path.parent().unwrap_or(Path::new(".")).join(p)
            }
        };
        let file = resolve(raw.file);
        let covers = raw.covers.map(resolve);
        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            file,
            inputs: raw.inputs,
            missing: raw.missing as f32,
            input_tensor: raw.input_tensor,
            evaluator: raw.evaluator,
            covers,
            outputs: raw.outputs,
            path: path.to_path_buf(),
        })
    }

    /// Resolves every input path against the catalogue. Each must exist and
    /// be a number or a bool.
    pub fn check(&self, catalogue: &Catalogue) -> Result<ResolvedInputs, ModelError> {
        let mut slots = Vec::with_capacity(self.inputs.len());
        for (index, input) in self.inputs.iter().enumerate() {
            let err = |reason: String| ModelError::Input {
                path: self.path.clone(),
                index,
                input: input.clone(),
                reason,
            };
            let Some(entry) = catalogue.lookup(input) else {
                let hint = match catalogue.suggest(input) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => String::new(),
                };
                return Err(err(format!(
                    "not in the event schema, the feature definitions or the model outputs{hint}"
                )));
            };
            let kind = match entry.ty {
                ValueType::Number => InputKind::Number,
                ValueType::Bool => InputKind::Bool,
                other => {
                    return Err(err(format!(
                        "is a {}; a model input must be a number or a bool",
                        other.name()
                    )));
                }
            };
            slots.push((entry.slot, kind));
        }
        Ok(ResolvedInputs {
            slots: slots.into(),
            missing: self.missing,
        })
    }

    /// Adds `model.<name>` for each output to the catalogue (type number),
    /// returning the slots in manifest order.
    pub fn register_outputs(&self, catalogue: &mut Catalogue) -> Vec<Slot> {
        self.outputs
            .iter()
            .map(|o| catalogue.add_model_output(&o.name, ValueType::Number))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    Number,
    Bool,
}

/// A manifest's inputs resolved to catalogue slots: gathers one model row
/// from a [`Record`] without any name lookup.
#[derive(Debug, Clone)]
pub struct ResolvedInputs {
    slots: Arc<[(Slot, InputKind)]>,
    missing: f32,
}

impl ResolvedInputs {
    /// How many values a row has.
    pub fn width(&self) -> usize {
        self.slots.len()
    }

    /// The value fed for a missing input.
    pub fn missing(&self) -> f32 {
        self.missing
    }

    /// Fills `row` (of length [`width`](Self::width)) from the record: a
    /// number as f32, a bool as 1/0, anything missing (or of an unexpected
    /// type) as the manifest's missing value.
    pub fn gather(&self, record: &Record, row: &mut [f32]) {
        debug_assert_eq!(row.len(), self.slots.len());
        for (out, &(slot, kind)) in row.iter_mut().zip(self.slots.iter()) {
            *out = match (kind, record.get(slot)) {
                (InputKind::Number, Value::Number(n)) if !n.is_nan() => *n as f32,
                (InputKind::Bool, Value::Bool(b)) => f32::from(u8::from(*b)),
                _ => self.missing,
            };
        }
    }

    /// A freshly allocated row gathered from the record.
    pub fn gather_vec(&self, record: &Record) -> Vec<f32> {
        let mut row = vec![self.missing; self.slots.len()];
        self.gather(record, &mut row);
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_core::Schema;

    const GOOD: &str = r#"
name = "tiny"
version = "tiny-1"
file = "tiny.onnx"
inputs = ["event.amount", "feature.user.txn_count_1h", "event.attributes.new_device"]
[[outputs]]
name = "fraud_score"
from = "probabilities"
index = 1
"#;

    fn catalogue() -> Catalogue {
        let schema = Schema::parse(
            "[fields]\namount = \"number\"\ncurrency = \"string\"\n\"attributes.new_device\" = \"bool\"\n",
            Path::new("s.toml"),
        )
        .unwrap();
        let mut c = Catalogue::from_schema(&schema);
        c.add_feature("user", "txn_count_1h", ValueType::Number);
        c
    }

    fn parse(text: &str) -> Result<Manifest, ModelError> {
        Manifest::parse(text, Path::new("/m/tiny.manifest.toml"))
    }

    #[test]
    fn parses_and_resolves() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.file, Path::new("/m/tiny.onnx"));
        assert!(m.missing.is_nan());
        let mut c = catalogue();
        let inputs = m.check(&c).unwrap();
        assert_eq!(inputs.width(), 3);
        let slots = m.register_outputs(&mut c);
        assert_eq!(c.lookup("model.fraud_score").unwrap().slot, slots[0]);

        let mut event = vec![Value::Missing; c.len(verdict_core::Namespace::Event)];
        event[c.lookup("event.amount").unwrap().slot.index as usize] = Value::Number(12.5);
        event[c.lookup("event.attributes.new_device").unwrap().slot.index as usize] =
            Value::Bool(true);
        let record = Record {
            event: &event,
            features: &[Value::Missing],
            model: &[],
        };
        let row = inputs.gather_vec(&record);
        assert_eq!(row[0], 12.5);
        assert!(row[1].is_nan());
        assert_eq!(row[2], 1.0);
    }

    #[test]
    fn evaluator_and_covers() {
        let m = parse(GOOD).unwrap();
        assert_eq!((m.evaluator, m.covers.clone()), (Evaluator::Auto, None));
        for (text, want) in [
            ("auto", Evaluator::Auto),
            ("native", Evaluator::Native),
            ("onnxruntime", Evaluator::OnnxRuntime),
        ] {
            let m = parse(&format!("evaluator = \"{text}\"\n{GOOD}")).unwrap();
            assert_eq!(m.evaluator, want);
            assert_eq!(want.name(), text);
        }
        let m = parse(&format!("covers = \"tiny.covers.json\"\n{GOOD}")).unwrap();
        assert_eq!(m.covers.as_deref(), Some(Path::new("/m/tiny.covers.json")));
    }

    #[test]
    fn numeric_missing_value() {
        let m = parse(&GOOD.replace("file =", "missing = -1.0\nfile =")).unwrap();
        let inputs = m.check(&catalogue()).unwrap();
        let record = Record {
            event: &[],
            features: &[],
            model: &[],
        };
        assert_eq!(inputs.gather_vec(&record), vec![-1.0; 3]);
    }

    #[test]
    fn unknown_input_is_refused_with_a_hint() {
        let m = parse(&GOOD.replace("\"event.amount\"", "\"event.amout\"")).unwrap();
        let e = m.check(&catalogue()).unwrap_err().to_string();
        assert!(e.contains("input 0 `event.amout`"), "{e}");
        assert!(e.contains("did you mean `event.amount`"), "{e}");
    }

    #[test]
    fn string_input_is_refused() {
        let m = parse(&GOOD.replace("\"event.amount\"", "\"event.currency\"")).unwrap();
        let e = m.check(&catalogue()).unwrap_err().to_string();
        assert!(e.contains("is a string"), "{e}");
    }

    #[test]
    fn manifest_errors() {
        // Missing `version`.
        let e = parse(&GOOD.replace("version = \"tiny-1\"", "")).unwrap_err();
        assert!(e.to_string().contains("missing field `version`"), "{e}");
        // Unknown key.
        let e = parse(&format!("colour = 1\n{GOOD}")).unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        // Empty inputs.
        let e = parse(&GOOD.replace(
            "[\"event.amount\", \"feature.user.txn_count_1h\", \"event.attributes.new_device\"]",
            "[]",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("`inputs` is empty"), "{e}");
        // Duplicate input.
        let e =
            parse(&GOOD.replace("\"feature.user.txn_count_1h\"", "\"event.amount\"")).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        // Bad output name.
        let e = parse(&GOOD.replace("fraud_score", "Fraud Score")).unwrap_err();
        assert!(e.to_string().contains("output name `Fraud Score`"), "{e}");
        // Infinite missing value.
        let e = parse(&GOOD.replace("file =", "missing = inf\nfile =")).unwrap_err();
        assert!(e.to_string().contains("`missing` must be nan"), "{e}");
        // Unknown evaluator.
        let e = parse(&format!("evaluator = \"fast\"\n{GOOD}")).unwrap_err();
        assert!(e.to_string().contains("unknown variant `fast`"), "{e}");
        // Not TOML.
        let e = parse("name = ").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("model manifest /m/tiny.manifest.toml"),
            "{e}"
        );
    }
}
