//! The plugins' own unit tests: the pure logic of the QEMU driver (where PCI devices and SCSI
//! disks go, how addresses read and are written back), run natively. The plugin workspace
//! builds for `wasm32-wasip2`, which this workspace's `cargo test` does not run, so this test
//! runs `cargo test` there for the host's target, in a target directory of its own.

use std::path::Path;
use std::process::Command;

/// The host's target triple, as rustc names it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

#[test]
fn the_qemu_drivers_unit_tests_pass_natively() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root.join("plugins"))
        .args(["test", "--locked", "-p", "virtwasm-plugin-qemu", "--target"])
        .arg(host_triple())
        .arg("--target-dir")
        .arg(root.join("target/plugin-units"));
    // This test's own cargo settings are for this workspace, not that one.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(
            key.as_str(),
            "CARGO_HOME" | "CARGO_NET_OFFLINE" | "CARGO_REGISTRIES_CRATES_IO_PROTOCOL"
        );
        if (key.starts_with("CARGO_") && !keep)
            || matches!(
                key.as_str(),
                "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().expect("run cargo test in plugins/");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the QEMU driver's unit tests failed:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(passed >= 7, "fewer unit tests ran than exist:\n{stdout}");
}
