use std::path::PathBuf;

/// Errors of loading Verdict's shared definitions (the event schema).
///
/// Event-level problems are not errors of this kind: a bad event is a
/// [`crate::Rejection`], a value that goes to the dead-letter output.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The schema file could not be read.
    #[error("cannot read event schema {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The schema file is not valid TOML or not of the schema's shape.
    #[error("event schema {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// The schema is well-formed TOML but says something impossible.
    #[error("event schema {path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}
