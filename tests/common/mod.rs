//! Shared helpers for the integration tests: run the real `virtwasm` binary in a clean
//! environment and look at what it printed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What one run printed.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn failed(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "expected failure; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stderr
    }
}

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_virtwasm"))
}

/// A private, shared cache of precompiled plugins for the test runs.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("virtwasm-test-cache")
}

/// A `virtwasm` command with a clean environment: no inherited URIs or plugin directories,
/// a test cache, and `HOME`/XDG directories inside `home`.
pub fn command(home: &Path) -> Command {
    let mut c = Command::new(binary());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("VIRTWASM_CACHE_DIR", cache_dir())
        .stdin(Stdio::null());
    c
}

/// Runs `virtwasm ARGS...`.
pub fn virtwasm(home: &Path, args: &[&str]) -> Run {
    Run::from(command(home).args(args).output().expect("run virtwasm"))
}

/// Runs `virtwasm --plugin-dir DIR -c URI "SCRIPT"`: a script against a plugin installed
/// in a directory, as a third party's would be.
pub fn with_plugin(home: &Path, plugin_dir: &Path, uri: &str, script: &str) -> Run {
    virtwasm(
        home,
        &[
            "--plugin-dir",
            plugin_dir.to_str().expect("utf-8 path"),
            "-c",
            uri,
            script,
        ],
    )
}

/// Runs `virtwasm -c test:///default "SCRIPT"`.
pub fn test_driver(script: &str) -> Run {
    let home = tempfile::tempdir().unwrap();
    virtwasm(home.path(), &["-c", "test:///default", script])
}

/// Runs `virtwasm ARGS...` feeding `input` on standard input.
pub fn with_stdin(home: &Path, args: &[&str], input: &str) -> Run {
    use std::io::Write;
    let mut child = command(home)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap())
}

/// `virsh`, when Debian's libvirt-clients is installed.
pub fn virsh() -> Option<PathBuf> {
    ["/usr/bin/virsh", "/usr/local/bin/virsh"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}
