//! The SDK's documented example driver (`plugins/example`), loaded from a plugin directory as
//! a third party's plugin would be, and driven through the CLI.

mod common;

use std::path::Path;

use common::{Run, with_plugin};

fn install(home: &Path) -> std::path::PathBuf {
    let dir = home.join("plugins/example");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(virtwasm_bundle::EXAMPLE_WASM, dir.join("example.wasm")).unwrap();
    std::fs::copy(virtwasm_bundle::EXAMPLE_MANIFEST, dir.join("plugin.toml")).unwrap();
    home.join("plugins")
}

fn run(home: &Path, script: &str) -> Run {
    let uri = format!("example:///embed?root={}", home.join("root").display());
    with_plugin(home, &install(home), &uri, script)
}

#[test]
fn the_documented_example_driver_runs_a_lifecycle() {
    let home = tempfile::tempdir().unwrap();
    let xml = home.path().join("g.xml");
    std::fs::write(&xml, "<domain type='kvm'><name>g1</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>").unwrap();
    let r = run(
        home.path(),
        &format!(
            "define {}; start g1; suspend g1; domstate g1 --reason; resume g1; shutdown g1; domstate g1 --reason",
            xml.display()
        ),
    );
    assert_eq!(
        r.ok(),
        format!(
            "Domain 'g1' defined from {}\n\nDomain 'g1' started\n\nDomain 'g1' suspended\n\npaused (user)\n\nDomain 'g1' resumed\n\nDomain 'g1' is being shutdown\n\nshut off (shutdown)\n\n",
            xml.display()
        )
    );
    // Its own refusal, worded by the driver and prefixed by the host.
    let r = run(home.path(), "suspend g1");
    assert_eq!(
        r.failed(),
        "error: Failed to suspend domain 'g1'\nerror: Requested operation is not valid: domain is not running\n"
    );
    // A verb it does not implement is plainly unsupported.
    let r = run(home.path(), "start g1; reset g1");
    assert_eq!(
        r.failed(),
        "error: Failed to reset domain 'g1'\nerror: this function is not supported by the connection driver: virDomainReset\n"
    );
}

#[test]
fn the_sdk_documentation_shows_the_example_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = std::fs::read_to_string(root.join("plugins/example/src/lib.rs")).unwrap();
    let sdk = std::fs::read_to_string(root.join("sdk/src/lib.rs")).unwrap();
    let doc: Vec<String> = sdk
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l).to_string())
        .collect();
    let code: Vec<&str> = example
        .lines()
        .filter(|l| !l.starts_with("//!"))
        .skip_while(|l| l.is_empty())
        .collect();
    let doc_text = doc.join("\n");
    assert!(
        doc_text.contains(&code.join("\n").trim_end().to_string()),
        "sdk/src/lib.rs documents an outdated copy of plugins/example/src/lib.rs"
    );
}
