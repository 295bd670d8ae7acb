//! The one error type of `verdict-models`.

use std::path::PathBuf;

/// What went wrong loading, checking or running a model. Each message says
/// what, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The ONNX Runtime library could not be found.
    #[error(
        "ONNX Runtime library not found ({searched}); run scripts/ensure-python.sh (or set ORT_DYLIB_PATH to the path of libonnxruntime.so)"
    )]
    RuntimeMissing { searched: String },
    /// The ONNX Runtime library was found but could not be loaded.
    #[error(
        "cannot load ONNX Runtime from {path}: {reason}; run scripts/ensure-python.sh (or set ORT_DYLIB_PATH to a working libonnxruntime.so)"
    )]
    RuntimeLoad { path: PathBuf, reason: String },
    /// Reading a manifest or model file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid TOML or breaks a rule of the manifest format.
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// A manifest input names a path the catalogue does not know, or one of
    /// a type a model cannot take.
    #[error("model manifest {path}: input {index} `{input}`: {reason}")]
    Input {
        path: PathBuf,
        index: usize,
        input: String,
        reason: String,
    },
    /// The ONNX model's inputs or outputs disagree with its manifest.
    #[error("model {model} ({file}) does not match its manifest: {reason}")]
    ShapeMismatch {
        model: String,
        file: PathBuf,
        reason: String,
    },
    /// ONNX Runtime refused to load the model file.
    #[error("cannot load model {model} from {file}: {reason}")]
    Load {
        model: String,
        file: PathBuf,
        reason: String,
    },
    /// Running the model failed.
    #[error("model {model} failed to score: {reason}")]
    Run { model: String, reason: String },
    /// The model's scoring thread has stopped; the scorer must be rebuilt.
    #[error("model {model}: the scoring thread has stopped")]
    Stopped { model: String },
    /// A row of the wrong width was handed to the scorer.
    #[error("model {model}: row has {got} values, the manifest lists {want} inputs")]
    RowWidth {
        model: String,
        got: usize,
        want: usize,
    },
    /// A reloaded model names different outputs than the one serving; rules
    /// were checked against the old names, so the swap is refused.
    #[error(
        "model {model}: the new manifest's outputs [{new}] differ from the serving model's [{old}]; outputs can only change with a restart"
    )]
    OutputsChanged {
        model: String,
        old: String,
        new: String,
    },
    /// The manifest asks for the native evaluator, which cannot evaluate
    /// this model.
    #[error(
        "model {model} ({file}) cannot be scored by the native evaluator: {reason}; set evaluator = \"auto\" (or \"onnxruntime\") in its manifest"
    )]
    NotNative {
        model: String,
        file: PathBuf,
        reason: String,
    },
    /// An explanation was asked of a model that has none.
    #[error("model {model} has no explanations: {reason}")]
    NoExplanations { model: String, reason: String },
    /// The model configuration is invalid.
    #[error("model configuration: {0}")]
    Config(String),
}
