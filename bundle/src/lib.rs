//! The first-party plugins, built from `plugins/` for `wasm32-wasip2` by this crate's build
//! script and compiled into the binaries, plus the paths of the test-only plugins.
//!
//! This crate deliberately depends on nothing of the host: a plugin change rebuilds this
//! small crate and relinks the binaries, not the host library and its `bindgen!`.

/// One bundled plugin.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    /// Its `plugin.toml`.
    pub manifest: &'static str,
    /// Its component.
    pub wasm: &'static [u8],
    /// sha256 of `wasm`, hex.
    pub sha256: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
