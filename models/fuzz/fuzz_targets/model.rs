//! Any bytes as a model's `.onnx` file, named by a fixed manifest (the tiny
//! test model's): `Model::load` returns a model whose tensors agree with the
//! manifest, or a `ModelError`; never panics. A model that loads scores one
//! row. Needs ONNX Runtime (`ORT_DYLIB_PATH`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verdict_models::{Manifest, Model, Runtime};

struct Fixture {
    runtime: Runtime,
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let runtime = Runtime::discover(None).expect("ONNX Runtime: set ORT_DYLIB_PATH");
        let dir = std::env::temp_dir().join(format!("verdict-fuzz-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        std::fs::write(
            dir.join("fuzz.manifest.toml"),
            include_str!("../../tests/data/tiny.manifest.toml").replace("tiny.onnx", "fuzz.onnx"),
        )
        .expect("writing the manifest");
        Fixture { runtime, dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    std::fs::write(f.dir.join("fuzz.onnx"), data).expect("writing the model");
    let manifest = Manifest::load(&f.dir.join("fuzz.manifest.toml")).expect("the fixed manifest");
    if let Ok(mut model) = Model::load(manifest, &f.runtime, 1) {
        let mut out = Vec::new();
        let _ = model.run(&[1.0, 2.0, 0.0], &mut out);
    }
});
