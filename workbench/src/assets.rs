//! The browser bundle, embedded in the binary.
//!
//! `webui/dist` as `scripts/build-webui.sh` builds it, chosen by the build
//! script; without it, a page that says how to build the UI.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "$VERDICT_WEBUI_DIST"]
struct Bundle;

/// True when the real bundle is embedded, false for the placeholder page.
pub fn ui_built() -> bool {
    !cfg!(verdict_webui_placeholder)
}

/// The single page. Scripts come from this origin only; CodeMirror sets
/// inline styles, hence `style-src 'unsafe-inline'`.
pub fn index() -> Response {
    match Bundle::get("index.html") {
        Some(f) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                ),
            ],
            f.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no index.html in the bundle\n").into_response(),
    }
}

/// One file of `assets/` (names carry a content hash, so they are cached
/// for good).
pub fn asset(path: &str) -> Response {
    let name = format!("assets/{path}");
    match Bundle::get(&name) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, f.metadata.mimetype().to_owned()),
                (
                    header::CACHE_CONTROL,
                    "public, max-age=31536000, immutable".to_owned(),
                ),
            ],
            f.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
