//! Chooses the folder of browser assets the crate embeds.
//!
//! The real bundle is `webui/dist`, built by `scripts/build-webui.sh` (Node
//! and npm are needed to build it, never to run Verdict). Without it, as on
//! a fresh checkout where `cargo clippy` runs first, a debug build embeds a
//! one-page placeholder that says how to build the UI, so the workspace
//! still compiles; a release build refuses to go on without the bundle
//! (set `VERDICT_WEBUI_PLACEHOLDER=1` to build one anyway, for benchmarks).

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dist = manifest.join("../webui/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!("cargo:rerun-if-env-changed=VERDICT_WEBUI_PLACEHOLDER");
    println!("cargo:rustc-check-cfg=cfg(verdict_webui_placeholder)");
    if dist.join("index.html").is_file() {
        println!("cargo:rustc-env=VERDICT_WEBUI_DIST={}", dist.display());
        return;
    }
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    if release && std::env::var_os("VERDICT_WEBUI_PLACEHOLDER").is_none() {
        panic!(
            "the workbench's browser bundle is not built ({} has no index.html): \
             run scripts/build-webui.sh first",
            dist.display()
        );
    }
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("placeholder");
    std::fs::create_dir_all(&out).expect("creating the placeholder folder");
    std::fs::write(
        out.join("index.html"),
        "<!doctype html><meta charset=utf-8><title>Verdict workbench</title>\
         <p>The workbench's browser bundle was not built into this binary. \
         Run <code>scripts/build-webui.sh</code>, then build Verdict again.</p>\n",
    )
    .expect("writing the placeholder page");
    println!("cargo:rustc-env=VERDICT_WEBUI_DIST={}", out.display());
    println!("cargo:rustc-cfg=verdict_webui_placeholder");
}
