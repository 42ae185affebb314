//! Builds the plugin workspace in `plugins/` for `wasm32-wasip2` and generates the table of
//! bundled plugins, so a fresh clone needs no manual step: `cargo build` builds the plugins.
//!
//! The plugins build in their own workspace and target directory (`target/wasm-plugins`):
//! guest cdylibs inside the host workspace break a native link, and a separate target dir
//! keeps this nested cargo from waiting on the outer one's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// First-party plugins compiled into the binary: (directory under plugins/, crate name).
const BUNDLED: &[(&str, &str)] = &[
    ("test", "virtwasm_plugin_test"),
    ("qemu", "virtwasm_plugin_qemu"),
    ("storage-dir", "virtwasm_plugin_storage_dir"),
];
/// Plugins built only for the test suite: (directory, crate name).
const FIXTURES: &[(&str, &str)] = &[
    ("hostile", "virtwasm_plugin_hostile"),
    ("example", "virtwasm_plugin_example"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    for watched in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugins/.cargo",
        "sdk",
        "wit",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }
    for (dir, _) in BUNDLED.iter().chain(FIXTURES) {
        println!("cargo::rerun-if-changed={}", plugins.join(dir).display());
    }
    let target_dir = std::env::var_os("VIRTWASM_PLUGIN_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/wasm-plugins"));
    println!("cargo::rerun-if-env-changed=VIRTWASM_PLUGIN_TARGET_DIR");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings are for the host target, not for wasm guests.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(
            key.as_str(),
            "CARGO_HOME"
                | "CARGO_MAKEFLAGS"
                | "CARGO_NET_OFFLINE"
                | "CARGO_REGISTRIES_CRATES_IO_PROTOCOL"
        );
        if (key.starts_with("CARGO_") && !keep)
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().expect("cannot run cargo to build the plugins");
    if !out.status.success() {
        panic!(
            "building the plugins in {} for wasm32-wasip2 failed.\n\
             If the target is missing, run `rustup target add wasm32-wasip2`.\n--- cargo said:\n{}",
            plugins.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let wasm_dir = target_dir.join("wasm32-wasip2/release");
    let mut code = String::new();
    code.push_str("/// The first-party plugins compiled into this binary.\npub static BUNDLED: &[Bundled] = &[\n");
    for (dir, krate) in BUNDLED {
        let wasm = wasm_dir.join(format!("{krate}.wasm"));
        code.push_str(&entry(&plugins.join(dir).join("plugin.toml"), &wasm));
    }
    code.push_str("];\n");
    for (dir, krate) in FIXTURES {
        let wasm = wasm_dir.join(format!("{krate}.wasm"));
        let upper = dir.to_uppercase();
        code.push_str(&format!(
            "/// Test fixture `{dir}`: its component.\npub const {upper}_WASM: &str = {:?};\n/// Test fixture `{dir}`: its manifest.\npub const {upper}_MANIFEST: &str = {:?};\n",
            wasm.display().to_string(),
            plugins.join(dir).join("plugin.toml").display().to_string()
        ));
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("bundled.rs"), code).unwrap();
}

fn entry(manifest: &Path, wasm: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    format!(
        "    Bundled {{ manifest: include_str!({:?}), wasm: include_bytes!({:?}), sha256: {:?} }},\n",
        manifest.display().to_string(),
        wasm.display().to_string(),
        sha
    )
}
