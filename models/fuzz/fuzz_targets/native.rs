//! Any bytes as a model's `.onnx` file for the native tree evaluator (a
//! fixed manifest, the tiny test model's, with `evaluator = "native"`):
//! `Model::load_native` returns a model or a `ModelError`, never panics, and
//! never loops; a model that loads scores probe rows (on and around its own
//! split thresholds, with missing values) and, through the same trees,
//! computes contributions when a covers file fits. Needs no ONNX Runtime:
//! everything here is Verdict's own code.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_models::{Manifest, Model};

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("verdict-fuzz-native-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        std::fs::write(
            dir.join("fuzz.manifest.toml"),
            include_str!("../../tests/data/tiny.manifest.toml")
                .replace("tiny.onnx", "fuzz.onnx")
                .replace("missing = nan", "missing = nan\nevaluator = \"native\""),
        )
        .expect("writing the manifest");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    std::fs::write(dir.join("fuzz.onnx"), data).expect("writing the model");
    let manifest = Manifest::load(&dir.join("fuzz.manifest.toml")).expect("manifest");
    let Ok(mut model) = Model::load_native(manifest) else {
        return;
    };
    let _ = model.probe();
    let rows = model.probe_rows(16, u64::from(data.len() as u32));
    let mut out = Vec::new();
    model.run(&rows, &mut out).expect("a native model scores any row of its width");
    assert_eq!(out.len(), 16 * model.output_names().len());
    let mut one = vec![0f32; model.output_names().len()];
    for row in rows.chunks_exact(3) {
        model.score_row(row, &mut one).expect("score_row");
    }
});
