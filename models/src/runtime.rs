//! Finding and loading the ONNX Runtime shared library.
//!
//! Verdict does not link ONNX Runtime; it loads `libonnxruntime.so` at start
//! from, in order: the path in the configuration, `ORT_DYLIB_PATH`, or the
//! project-local Python environment that `scripts/ensure-python.sh` creates
//! (`.verdict/venv/lib/python3*/site-packages/onnxruntime/capi/`), looked for
//! in the working directory and its parents. A library that is missing or
//! fails to load is an error value ([`ModelError::RuntimeMissing`],
//! [`ModelError::RuntimeLoad`]), never a panic, so the rules can go on
//! deciding without the model.
//!
//! ONNX Runtime allows one environment per process; [`Runtime::load`] makes
//! it once and hands out clones.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ModelError;

/// The environment variable naming the library file.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// A loaded ONNX Runtime: the process's one environment.
#[derive(Clone)]
pub struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .finish()
    }
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

impl Runtime {
    /// Finds the library (see the module doc for the order) and loads it.
    pub fn discover(explicit: Option<&Path>) -> Result<Runtime, ModelError> {
        let path = locate(explicit)?;
        Runtime::load(&path)
    }

    /// Loads the library at `path`. Once one library is loaded, later calls
    /// return the same runtime whatever path they name.
    pub fn load(path: &Path) -> Result<Runtime, ModelError> {
        let mut guard = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = guard.as_ref() {
            if rt.library != path {
                tracing::info!(
                    loaded = %rt.library.display(),
                    requested = %path.display(),
                    "ONNX Runtime is already loaded; using the loaded library"
                );
            }
            return Ok(rt.clone());
        }
        if !path.is_file() {
            return Err(ModelError::RuntimeMissing {
                searched: format!("{} does not exist", path.display()),
            });
        }
        let path = path.canonicalize().map_err(|e| ModelError::RuntimeLoad {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let load_err = |reason: String| ModelError::RuntimeLoad {
            path: path.clone(),
            reason,
        };
        let built = std::panic::catch_unwind(|| {
            ort::init_from(&path)
                .map_err(|e| e.to_string())?
                .with_name("verdict")
                .build()
                .map_err(|e| e.to_string())
        })
        .map_err(|_| load_err("ONNX Runtime panicked while loading".into()))?
        .map_err(load_err)?;
        let rt = Runtime {
            env: built,
            library: path,
        };
        tracing::info!(library = %rt.library.display(), "loaded ONNX Runtime");
        *guard = Some(rt.clone());
        Ok(rt)
    }

    /// The library file in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    pub(crate) fn env(&self) -> &ort::environment::Environment {
        &self.env
    }
}

/// The library path Verdict would load, without loading it.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ModelError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(ModelError::RuntimeMissing {
                searched: format!("configured path {} does not exist", p.display()),
            })
        };
    }
    if let Some(p) = std::env::var_os(ORT_DYLIB_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ModelError::RuntimeMissing {
                searched: format!("{ORT_DYLIB_ENV}={} does not exist", p.display()),
            })
        };
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in cwd.ancestors() {
        if let Some(p) = in_venv(&dir.join(".verdict").join("venv")) {
            return Ok(p);
        }
    }
    Err(ModelError::RuntimeMissing {
        searched: format!(
            "no configured path, {ORT_DYLIB_ENV} unset, no .verdict/venv in {} or its parents",
            cwd.display()
        ),
    })
}

/// `libonnxruntime.so*` inside a venv's onnxruntime package, if any.
fn in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let mut found: Vec<PathBuf> = lib
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .filter_map(|e| std::fs::read_dir(e.path().join("site-packages/onnxruntime/capi")).ok())
        .flat_map(|d| d.filter_map(Result::ok))
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("libonnxruntime.so") || n.starts_with("libonnxruntime.dylib")
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}
