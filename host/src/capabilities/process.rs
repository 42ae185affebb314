//! The `process` capability: run a program to completion, or spawn a long-lived child.
//!
//! Every call is checked against the manifest's allowlist. Children get a fixed environment
//! (`PATH`, `LC_ALL=C`) and nothing else of the host's: no inherited variables, descriptors or
//! terminal. Long-lived children belong to the host, not to the plugin instance that spawned
//! them: they outlive it, and a later call gets a fresh handle with `adopt`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use crate::bindings::virtwasm::plugin::process::{
    ExitStatus as WitExitStatus, Host, HostChild, Output,
};
use crate::bindings::virtwasm::plugin::types::{Error as WitError, ErrorKind as WitKind};
use crate::error::wit_error;

use super::HostState;

/// The `PATH` children run with, and where bare program names are looked up.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Most output kept from one `run`, per stream.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// How much of a spawned child's stderr the host keeps.
const STDERR_TAIL: usize = 64 * 1024;

/// The programs a plugin may run.
#[derive(Debug, Clone, Default)]
pub struct ProgramAllowlist {
    entries: Vec<String>,
}

impl ProgramAllowlist {
    /// An allowlist of absolute paths and bare names (a trailing `*` matches any suffix).
    pub fn new(entries: Vec<String>) -> Self {
        ProgramAllowlist { entries }
    }

    /// The entries, for display.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Resolves `requested` to the file to execute (symlinks resolved: what was checked is
    /// what runs), or says why it is not allowed.
    ///
    /// A bare name is looked up in [`CHILD_PATH`]. It is allowed when an absolute entry names
    /// the same file (after resolving symlinks), or when its file name matches a bare entry
    /// *and* it lives in one of the [`CHILD_PATH`] directories, so a plugin cannot run a
    /// look-alike `qemu-system-x86_64` from a directory of its choosing.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, String> {
        let listed = || {
            if self.entries.is_empty() {
                "its manifest grants no programs".to_string()
            } else {
                format!("allowed: {}", self.entries.join(", "))
            }
        };
        if requested.is_empty() || requested.contains('\0') {
            return Err("empty or malformed program name".into());
        }
        let path = if requested.contains('/') {
            if !requested.starts_with('/') || requested.split('/').any(|c| c == "..") {
                return Err(format!(
                    "program '{requested}' must be an absolute path without '..'"
                ));
            }
            PathBuf::from(requested)
        } else {
            find_in_path(requested)
                .ok_or_else(|| format!("program '{requested}' was not found in {CHILD_PATH}"))?
        };
        let real = std::fs::canonicalize(&path)
            .map_err(|e| format!("program '{}': {e}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let in_search_path = path
            .parent()
            .map(|dir| CHILD_PATH.split(':').any(|d| Path::new(d) == dir))
            .unwrap_or(false);
        for entry in &self.entries {
            if entry.starts_with('/') {
                let same = Path::new(entry) == path
                    || std::fs::canonicalize(entry)
                        .map(|e| e == real)
                        .unwrap_or(false);
                if same {
                    return Ok(real);
                }
            } else if in_search_path && name_matches(entry, name) {
                return Ok(real);
            }
        }
        Err(format!(
            "program '{requested}' is not in the plugin's allowlist ({})",
            listed()
        ))
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix) && name.len() > prefix.len(),
        None => pattern == name,
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    CHILD_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A child the host started for a plugin.
#[derive(Debug)]
pub struct ChildEntry {
    plugin: String,
    program: String,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
    /// The child's stderr: an unlinked private file, so the child can write after the host
    /// exits (a pipe would kill it with SIGPIPE) and the host can still read its last lines.
    stderr: Mutex<std::fs::File>,
}

impl ChildEntry {
    fn try_status(&self) -> std::io::Result<Option<ExitStatus>> {
        let mut status = self.status.lock().unwrap();
        if status.is_none() {
            *status = self.child.lock().unwrap().try_wait()?;
        }
        Ok(*status)
    }
}

/// Every long-lived child the host started, by pid. It outlives plugin instances: the host,
/// not the plugin, owns QEMU and its kin.
#[derive(Debug, Default)]
pub struct ChildRegistry {
    children: Mutex<HashMap<u32, Arc<ChildEntry>>>,
}

impl ChildRegistry {
    fn get(&self, plugin: &str, pid: u32) -> Option<Arc<ChildEntry>> {
        self.children
            .lock()
            .unwrap()
            .get(&pid)
            .filter(|e| e.plugin == plugin)
            .cloned()
    }

    /// Pids of the live children that belong to `plugin`.
    pub fn pids_of(&self, plugin: &str) -> Vec<u32> {
        self.children
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.plugin == plugin)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// The host side of a `child` resource: just the pid; the registry holds the process.
#[derive(Debug)]
pub struct ChildHandle {
    pid: u32,
}

/// A new private (0600) file in the temp directory, unlinked at once: only the host and the
/// child hold it open.
fn unlinked_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    for attempt in 0..100u32 {
        let path = dir.join(format!(".virtwasm-stderr-{}-{attempt}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}

/// The last `max` bytes written to `file`.
fn read_tail(file: &mut std::fs::File, max: u32) -> String {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(u64::from(max));
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.take(u64::from(max)).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn wit_status(s: ExitStatus) -> WitExitStatus {
    use std::os::unix::process::ExitStatusExt;
    WitExitStatus {
        code: s.code(),
        signal: s.signal(),
    }
}

/// A child with a clean environment. `path` is the resolved file (what the allowlist
/// checked); `argv0` the name the plugin asked for, which multi-call binaries look at.
fn base_command(path: &Path, argv0: &str, args: &[String]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(path);
    cmd.arg0(argv0);
    cmd.args(args)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("LC_ALL", "C")
        .current_dir("/");
    cmd
}

fn read_capped(mut r: impl Read, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        if out.len() < cap {
            let take = n.min(cap - out.len());
            out.extend_from_slice(&buf[..take]);
        }
    }
    out
}

impl HostState {
    fn denied(&self, why: String) -> WitError {
        tracing::warn!(plugin = %self.grants.plugin, "denied: {why}");
        wit_error(
            WitKind::PermissionDenied,
            format!("plugin '{}': {why}", self.grants.plugin),
        )
    }

    /// Counts wall time spent blocked in a host call, which the per-call guest budget excludes.
    fn timed<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let start = Instant::now();
        let r = f(self);
        self.host_time += start.elapsed();
        r
    }
}

impl Host for HostState {
    fn run(
        &mut self,
        program: String,
        args: Vec<String>,
        stdin: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Output, WitError>> {
        let path = match self.grants.programs.resolve(&program) {
            Ok(p) => p,
            Err(why) => return Ok(Err(self.denied(why))),
        };
        tracing::debug!(plugin = %self.grants.plugin, "run {} {:?}", path.display(), args);
        Ok(self.timed(|_| {
            run_to_completion(
                &path,
                &program,
                &args,
                stdin,
                Duration::from_millis(timeout_ms.min(super::MAX_HOST_WAIT_MS).into()),
            )
        }))
    }

    fn spawn(
        &mut self,
        program: String,
        args: Vec<String>,
    ) -> wasmtime::Result<Result<Resource<ChildHandle>, WitError>> {
        let path = match self.grants.programs.resolve(&program) {
            Ok(p) => p,
            Err(why) => return Ok(Err(self.denied(why))),
        };
        let log = match unlinked_file() {
            Ok(f) => f,
            Err(e) => {
                return Ok(Err(wit_error(
                    WitKind::OperationFailed,
                    format!("cannot create a stderr file for '{}': {e}", path.display()),
                )));
            }
        };
        let child_err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => {
                return Ok(Err(wit_error(
                    WitKind::OperationFailed,
                    format!("cannot share a stderr file with '{}': {e}", path.display()),
                )));
            }
        };
        let mut cmd = base_command(&path, &program, &args);
        // Its own process group: a terminal's ^C or hangup reaches the CLI, not the guests.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(child_err));
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(wit_error(
                    WitKind::OperationFailed,
                    format!("cannot start '{}': {e}", path.display()),
                )));
            }
        };
        let pid = child.id();
        tracing::info!(plugin = %self.grants.plugin, pid, "spawned {} {:?}", path.display(), args);
        let entry = ChildEntry {
            plugin: self.grants.plugin.clone(),
            program: path.display().to_string(),
            child: Mutex::new(child),
            status: Mutex::new(None),
            stderr: Mutex::new(log),
        };
        self.children
            .children
            .lock()
            .unwrap()
            .insert(pid, Arc::new(entry));
        Ok(Ok(self.table.push(ChildHandle { pid })?))
    }

    fn adopt(&mut self, pid: u32) -> wasmtime::Result<Result<Resource<ChildHandle>, WitError>> {
        if self.children.get(&self.grants.plugin, pid).is_none() {
            return Ok(Err(
                self.denied(format!("process {pid} was not started by this plugin"))
            ));
        }
        Ok(Ok(self.table.push(ChildHandle { pid })?))
    }
}

fn run_to_completion(
    path: &Path,
    argv0: &str,
    args: &[String],
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<Output, WitError> {
    let mut cmd = base_command(path, argv0, args);
    cmd.stdin(if stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        wit_error(
            WitKind::OperationFailed,
            format!("cannot start '{}': {e}", path.display()),
        )
    })?;
    if let Some(mut input) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
    }
    let out = child
        .stdout
        .take()
        .map(|s| std::thread::spawn(move || read_capped(s, MAX_OUTPUT)));
    let err = child
        .stderr
        .take()
        .map(|s| std::thread::spawn(move || read_capped(s, MAX_OUTPUT)));
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(wit_error(
                    WitKind::Timeout,
                    format!(
                        "'{}' did not finish within {} ms and was killed",
                        path.display(),
                        timeout.as_millis()
                    ),
                ));
            }
            Ok(None) => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(wit_error(
                    WitKind::OperationFailed,
                    format!("waiting for '{}': {e}", path.display()),
                ));
            }
        }
    };
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output {
        status: wit_status(status),
        stdout,
        stderr,
    })
}

impl HostChild for HostState {
    fn pid(&mut self, handle: Resource<ChildHandle>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&handle)?.pid)
    }

    fn wait(
        &mut self,
        handle: Resource<ChildHandle>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Option<WitExitStatus>, WitError>> {
        let pid = self.table.get(&handle)?.pid;
        let Some(entry) = self.children.get(&self.grants.plugin, pid) else {
            return Ok(Err(wit_error(
                WitKind::NotFound,
                format!("process {pid} is gone"),
            )));
        };
        let deadline =
            Instant::now() + Duration::from_millis(timeout_ms.min(super::MAX_HOST_WAIT_MS).into());
        Ok(self.timed(|_| {
            loop {
                match entry.try_status() {
                    Ok(Some(s)) => return Ok(Some(wit_status(s))),
                    Ok(None) if Instant::now() >= deadline => return Ok(None),
                    Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => {
                        return Err(wit_error(
                            WitKind::OperationFailed,
                            format!("waiting for {} ({pid}): {e}", entry.program),
                        ));
                    }
                }
            }
        }))
    }

    fn kill(
        &mut self,
        handle: Resource<ChildHandle>,
        signal: i32,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let pid = self.table.get(&handle)?.pid;
        let Some(entry) = self.children.get(&self.grants.plugin, pid) else {
            return Ok(Err(wit_error(
                WitKind::NotFound,
                format!("process {pid} is gone"),
            )));
        };
        if !matches!(
            signal,
            libc::SIGTERM
                | libc::SIGKILL
                | libc::SIGINT
                | libc::SIGHUP
                | libc::SIGCONT
                | libc::SIGSTOP
                | libc::SIGUSR1
                | libc::SIGUSR2
        ) {
            return Ok(Err(
                self.denied(format!("signal {signal} is not one a plugin may send"))
            ));
        }
        if entry.try_status().ok().flatten().is_some() {
            return Ok(Ok(()));
        }
        // SAFETY: plain syscall on a pid the host spawned and has not yet reaped, so the pid
        // cannot have been recycled for another process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Ok(Err(wit_error(
                WitKind::OperationFailed,
                format!("kill({pid}, {signal}): {e}"),
            )));
        }
        Ok(Ok(()))
    }

    fn stderr_tail(
        &mut self,
        handle: Resource<ChildHandle>,
        max_bytes: u32,
    ) -> wasmtime::Result<String> {
        let pid = self.table.get(&handle)?.pid;
        let Some(entry) = self.children.get(&self.grants.plugin, pid) else {
            return Ok(String::new());
        };
        Ok(read_tail(
            &mut entry.stderr.lock().unwrap(),
            max_bytes.min(STDERR_TAIL as u32),
        ))
    }

    fn drop(&mut self, handle: Resource<ChildHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_resolves_names_and_refuses_the_rest() {
        let list = ProgramAllowlist::new(vec![
            "true".into(),
            "/bin/echo".into(),
            "qemu-system-*".into(),
        ]);
        let t = list.resolve("true").unwrap();
        assert!(t.ends_with("true"), "{}", t.display());
        assert!(list.resolve("/bin/echo").is_ok());
        let e = list.resolve("sh").unwrap_err();
        assert!(e.contains("not in the plugin's allowlist"), "{e}");
        assert!(e.contains("true, /bin/echo"), "{e}");
        let e = list.resolve("/tmp/../bin/sh").unwrap_err();
        assert!(e.contains(".."), "{e}");
        let e = list.resolve("no-such-program-xyz").unwrap_err();
        assert!(e.contains("not found"), "{e}");
        assert!(name_matches("qemu-system-*", "qemu-system-x86_64"));
        assert!(!name_matches("qemu-system-*", "qemu-system-"));
        assert!(!name_matches("qemu-img", "qemu-img2"));
    }

    #[test]
    fn a_childs_stderr_survives_in_an_unlinked_file_and_its_tail_is_readable() {
        let log = unlinked_file().unwrap();
        let mut cmd = base_command(
            Path::new("/bin/sh"),
            "sh",
            &[
                "-c".into(),
                "printf 'early\\nqemu: could not open disk\\n' >&2".into(),
            ],
        );
        cmd.stderr(Stdio::from(log.try_clone().unwrap()))
            .stdout(Stdio::null());
        assert!(cmd.status().unwrap().success());
        let mut log = log;
        assert_eq!(
            read_tail(&mut log, 1024),
            "early\nqemu: could not open disk\n"
        );
        assert_eq!(
            read_tail(&mut log, 24),
            "qemu: could not open disk\n"
                .chars()
                .skip(2)
                .collect::<String>()
        );
        let dir_entries: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!(".virtwasm-stderr-{}-", std::process::id()))
            })
            .collect();
        assert!(dir_entries.is_empty(), "the file has no name left to find");
    }

    #[test]
    fn a_lookalike_outside_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("true");
        std::fs::copy("/bin/true", &fake).unwrap();
        let list = ProgramAllowlist::new(vec!["true".into()]);
        let e = list.resolve(fake.to_str().unwrap()).unwrap_err();
        assert!(e.contains("not in the plugin's allowlist"), "{e}");
    }

    #[test]
    fn run_collects_output_and_enforces_the_timeout() {
        let out = run_to_completion(
            Path::new("/bin/sh"),
            "sh",
            &["-c".into(), "echo out; echo err >&2; exit 3".into()],
            vec![],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code, Some(3));
        let env = run_to_completion(
            Path::new("/usr/bin/env"),
            "env",
            &[],
            vec![],
            Duration::from_secs(5),
        )
        .unwrap();
        let env = String::from_utf8(env.stdout).unwrap();
        let mut lines: Vec<_> = env.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            vec!["LC_ALL=C".to_string(), format!("PATH={CHILD_PATH}")]
        );
        let e = run_to_completion(
            Path::new("/bin/sleep"),
            "sleep",
            &["5".into()],
            vec![],
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert_eq!(e.kind, WitKind::Timeout);
        assert!(e.message.contains("/bin/sleep"), "{}", e.message);
    }
}
