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

/// Installs the test driver under the name `ptest` with persistent state (definitions on
/// disk, as the QEMU driver's), in a plugin directory under `home`; returns the directory.
pub fn persistent_test_driver(home: &Path) -> PathBuf {
    let dir = home.join("plugins/ptest");
    std::fs::create_dir_all(&dir).unwrap();
    let bundled = &virtwasm_bundle::BUNDLED[0];
    std::fs::write(dir.join("ptest.wasm"), bundled.wasm).unwrap();
    let manifest = bundled
        .manifest
        .replace("name = \"test\"", "name = \"ptest\"")
        .replace("schemes = [\"test\"]", "schemes = [\"ptest\"]")
        .replace("state = \"per-process\"", "state = \"persistent\"")
        .replace("node-files = true", "node-files = false");
    std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    home.join("plugins")
}

/// The daemon under test.
pub fn daemon_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_virtwasmd"))
}

/// A `virtwasmd --root ROOT` started for one test, with the persistent `ptest` driver
/// installed; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub child: Option<std::process::Child>,
    /// A command the daemon runs under, e.g. `ip netns exec NS` (it must exec the daemon, so
    /// the child's pid is the daemon's).
    pub wrapper: Vec<String>,
    pub root: PathBuf,
    pub home: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts a daemon with `args` after `--root ROOT`, and waits for its socket.
    pub fn start(home: &Path, args: &[&str]) -> Daemon {
        Self::start_under(home, args, &[])
    }

    /// [`Daemon::start`] with `config` as its `virtwasmd.toml` (the test `[files]` table is
    /// added unless the config has its own).
    pub fn start_with_config(home: &Path, config: &str, args: &[&str]) -> Daemon {
        let etc = home.join("daemon-root/etc/virtwasm");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("virtwasmd.toml"), config).unwrap();
        Self::start(home, args)
    }

    /// [`Daemon::start`] under `wrapper` (e.g. `["ip", "netns", "exec", NS]`).
    pub fn start_under(home: &Path, args: &[&str], wrapper: &[&str]) -> Daemon {
        let root = home.join("daemon-root");
        let mut d = Daemon {
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            child: None,
            root,
            home: home.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            log: home.join("virtwasmd.log"),
        };
        d.spawn();
        d
    }

    /// The environment a daemon or client of this test runs with.
    pub fn env(home: &Path, c: &mut Command) {
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("VIRTWASM_CACHE_DIR", cache_dir())
            .env("VIRTWASM_PLUGIN_DIR", persistent_test_driver(home));
    }

    /// The `[files]` table every test daemon gets (appended to a test's own config that has
    /// none): clients may name files under the temporary directory (where every test's
    /// directory is, so two daemons of one test can share a guest's files, as two hosts
    /// share storage for a migration) and the test guest's, as an operator lists the
    /// directories holding their images.
    fn allow_test_files(&self) {
        let etc = self.root.join("etc/virtwasm");
        std::fs::create_dir_all(&etc).unwrap();
        let path = etc.join("virtwasmd.toml");
        let mut config = std::fs::read_to_string(&path).unwrap_or_default();
        if config.contains("[files]") {
            return;
        }
        config.push_str(&format!(
            "\n[files]\nallowed = [{:?}, {:?}]\n",
            std::env::temp_dir().display().to_string(),
            env!("CARGO_TARGET_TMPDIR")
        ));
        std::fs::write(&path, config).unwrap();
    }

    /// (Re)starts the process.
    pub fn spawn(&mut self) {
        self.allow_test_files();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(daemon_binary());
                c
            }
            None => Command::new(daemon_binary()),
        };
        Self::env(&self.home, &mut c);
        c.arg("--root")
            .arg(&self.root)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let self_starts = self
            .log_text()
            .lines()
            .filter(|l| l.contains("virtwasmd ready on"))
            .count();
        let child = c.spawn().expect("start virtwasmd");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Ready when it says so (after loading its drivers' state), not merely listening.
        let ready = |d: &Daemon| {
            d.log_text()
                .lines()
                .filter(|l| l.contains("virtwasmd ready on"))
                .count()
                > self_starts
        };
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() || !ready(self) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "virtwasmd exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "virtwasmd did not listen within 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// What the daemon logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 10 s for the log to contain `what`, and returns the log.
    ///
    /// For what the daemon logs after the client has its answer (a refused TLS handshake
    /// is reported to the peer before the daemon's task writes its line), so reading
    /// the log once would race.
    pub fn wait_for_log(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = self.log_text();
            if text.contains(what) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not log {what:?} within 10 s:\n{text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The read-write socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("run/virtwasm/virtwasm-sock")
    }

    /// The read-only socket.
    pub fn ro_socket(&self) -> PathBuf {
        self.root.join("run/virtwasm/virtwasm-sock-ro")
    }

    /// A URI reaching this daemon's read-write socket for `driver:///path`.
    pub fn uri(&self, driver: &str, path: &str) -> String {
        format!("{driver}+unix://{path}?socket={}", self.socket().display())
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends `signal` and waits for the process to end.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: a signal to our own child, by pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap()
    }

    /// Runs `virtwasm -c URI SCRIPT` as a client of this daemon.
    pub fn client(&self, uri: &str, script: &str) -> Run {
        let mut c = Command::new(binary());
        Self::env(&self.home, &mut c);
        c.args(["-c", uri, script]).stdin(Stdio::null());
        Run::from(c.output().expect("run virtwasm"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to our own child, by pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        // The daemon leaves guests running by design; a test must not. Every child it
        // started is recorded in its children directory: end them, by pid.
        let children = self.root.join("run/virtwasm/children");
        for entry in std::fs::read_dir(&children).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let pid = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["pid"].as_i64());
            if let Some(pid) = pid {
                // SAFETY: a signal to a process this test's daemon started, by pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// One HTTP/1.1 request over a daemon's unix socket, the way curl would send it, with
/// `headers` (each ending in CRLF) added; returns the status line and the body.
pub fn http(
    socket: &Path,
    method: &str,
    target: &str,
    headers: &str,
    body: &str,
) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // The daemon may answer (413) and close before reading a body it refuses: a failed
    // write is not the test's failure, the answer is what counts.
    let _ = write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Read what arrives; a reset after the answer (the daemon closing with our unread body
    // in flight) ends the read, not the test.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
