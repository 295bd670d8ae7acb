//! Without ONNX Runtime, loading is an error value that says what to run;
//! never a panic. (Its own test binary: the process has not loaded a library.)

use std::path::Path;
use std::sync::Arc;

use verdict_models::{ModelConfig, ModelError, Models, NoObserver, Runtime, locate};

#[test]
fn a_missing_library_is_a_clear_error() {
    let e = Runtime::load(Path::new("/nonexistent/libonnxruntime.so.1.22.1")).unwrap_err();
    assert!(matches!(e, ModelError::RuntimeMissing { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/libonnxruntime.so.1.22.1 does not exist"),
        "{msg}"
    );
    assert!(
        msg.contains("run scripts/ensure-python.sh (or set ORT_DYLIB_PATH"),
        "{msg}"
    );

    let e = locate(Some(Path::new("/nonexistent/lib.so"))).unwrap_err();
    assert!(
        e.to_string()
            .contains("configured path /nonexistent/lib.so does not exist"),
        "{e}"
    );

    // Through the engine's entry point, with the configured path.
    let mut cfg = ModelConfig::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny.manifest.toml"),
    );
    cfg.ort_library = Some("/nonexistent/libonnxruntime.so".into());
    let mut c = verdict_core::Catalogue::default();
    let e = Models::load(&cfg, &mut c, Arc::new(NoObserver)).unwrap_err();
    assert!(
        e.to_string().contains("run scripts/ensure-python.sh"),
        "{e}"
    );
}

#[test]
fn a_file_that_is_not_a_library_is_a_clear_error() {
    let not_a_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny.manifest.toml");
    let e = Runtime::load(&not_a_lib).unwrap_err();
    assert!(matches!(e, ModelError::RuntimeLoad { .. }), "{e}");
    assert!(
        e.to_string().contains("cannot load ONNX Runtime from"),
        "{e}"
    );
}
