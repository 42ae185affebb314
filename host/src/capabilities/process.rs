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
    ExitStatus as WitExitStatus, Host, HostChild, Output, ProgramIdentity,
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
        self.resolve_named(requested).map(|(_, real)| real)
    }

    /// [`ProgramAllowlist::resolve`], also returning the path the name was found as before
    /// symlinks were followed (the absolute path as given, or the match in [`CHILD_PATH`]):
    /// `(found, real)`.
    pub fn resolve_named(&self, requested: &str) -> Result<(PathBuf, PathBuf), String> {
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
        let not_listed = || {
            format!(
                "program '{requested}' is not in the plugin's allowlist ({})",
                listed()
            )
        };
        let path = if requested.contains('/') {
            if !requested.starts_with('/') || requested.split('/').any(|c| c == "..") {
                return Err(format!(
                    "program '{requested}' must be an absolute path without '..'"
                ));
            }
            PathBuf::from(requested)
        } else {
            // Missing is the cause only for a name the allowlist grants; any other name is
            // refused by the allowlist alone, so a plugin cannot probe what is installed.
            find_in_path(requested).ok_or_else(|| {
                if self
                    .entries
                    .iter()
                    .any(|e| !e.starts_with('/') && name_matches(e, requested))
                {
                    format!("program '{requested}' was not found in {CHILD_PATH}")
                } else {
                    not_listed()
                }
            })?
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let in_search_path = path
            .parent()
            .map(|dir| CHILD_PATH.split(':').any(|d| Path::new(d) == dir))
            .unwrap_or(false);
        let real = match std::fs::canonicalize(&path) {
            Ok(real) => real,
            // A path an entry names that does not resolve (a granted program this host
            // lacks): that is the cause. Any other path is refused by the allowlist alone,
            // so a plugin learns nothing of what exists outside it.
            Err(e)
                if self.entries.iter().any(|entry| {
                    Path::new(entry) == path || (in_search_path && name_matches(entry, name))
                }) =>
            {
                return Err(format!("program '{}': {e}", path.display()));
            }
            Err(_) => return Err(not_listed()),
        };
        for entry in &self.entries {
            if entry.starts_with('/') {
                let same = Path::new(entry) == path
                    || std::fs::canonicalize(entry)
                        .map(|e| e == real)
                        .unwrap_or(false);
                if same {
                    return Ok((path, real));
                }
            } else if in_search_path && name_matches(entry, name) {
                return Ok((path, real));
            }
        }
        Err(not_listed())
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
    pid: u32,
    /// The kernel's start time of the process (`/proc/PID/stat` field 22): with the pid,
    /// what identifies it, so a recycled pid is never taken for it.
    start_time: u64,
    /// The process handle, when this host started it; `None` for a child a previous host
    /// started and this one found again (it can be signalled, not reaped).
    child: Mutex<Option<Child>>,
    status: Mutex<Option<WitExitStatus>>,
    /// When the host first saw it ended: an ended child is kept a while (a driver reads its
    /// last stderr lines after waiting for it), then forgotten with its open stderr file.
    ended: Mutex<Option<std::time::Instant>>,
    /// The child's stderr: a private file (in the registry's directory when it persists, so
    /// a later host can still read QEMU's last words), which the child can write after the
    /// host exits (a pipe would kill it with SIGPIPE).
    stderr: Mutex<std::fs::File>,
    /// Its record and stderr files in the registry's directory, removed once it has ended
    /// (the open stderr stays readable).
    files: Option<(PathBuf, PathBuf)>,
}

impl ChildEntry {
    fn try_status(&self) -> std::io::Result<Option<WitExitStatus>> {
        let mut status = self.status.lock().unwrap();
        if status.is_none() {
            let mut child = self.child.lock().unwrap();
            *status = match child.as_mut() {
                Some(c) => c.try_wait()?.map(wit_status),
                // Not ours to reap: gone is all we can know, not how it ended.
                None if start_time_of(self.pid) != Some(self.start_time) => Some(WitExitStatus {
                    code: None,
                    signal: None,
                }),
                None => None,
            };
            if status.is_some() {
                *self.ended.lock().unwrap() = Some(std::time::Instant::now());
                if let Some((record, stderr)) = &self.files {
                    let _ = std::fs::remove_file(record);
                    let _ = std::fs::remove_file(stderr);
                }
            }
        }
        Ok(*status)
    }
}

/// A process's start time in clock ticks since boot, or `None` when it is gone (or a
/// zombie nobody reaped yet, which is gone for our purposes).
fn start_time_of(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// What the registry writes per child, so a later host can find it again.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ChildFile {
    pid: u32,
    plugin: String,
    program: String,
    start_time: u64,
}

/// Every long-lived child the host started, by pid. It outlives plugin instances: the host,
/// not the plugin, owns QEMU and its kin.
#[derive(Debug, Default)]
pub struct ChildRegistry {
    children: Mutex<HashMap<u32, Arc<ChildEntry>>>,
    /// Where each child's record (`PID.json`) and stderr (`PID.stderr`) live, when the
    /// registry persists (the daemon's, the CLI's): a restarted host reads them back.
    dir: std::sync::OnceLock<PathBuf>,
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

    /// Keeps the registry in `dir` from now on, and takes back the children an earlier
    /// host recorded there: each must still be the same process (pid and start time) and
    /// run the program recorded for it. Records of children that are gone are removed.
    /// Returns how many were taken back.
    pub fn persist_in(&self, dir: &Path) -> std::io::Result<usize> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let _ = self.dir.set(dir.to_path_buf());
        let mut found = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let rec: Option<ChildFile> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(rec) = rec else {
                tracing::warn!(file = %path.display(), "ignoring an unreadable child record");
                continue;
            };
            let alive = start_time_of(rec.pid) == Some(rec.start_time)
                && std::fs::read_link(format!("/proc/{}/exe", rec.pid)).is_ok_and(|exe| {
                    // An upgraded package replaced the binary under the running process:
                    // the kernel then names it "PATH (deleted)". Still the same child.
                    let exe = exe.to_string_lossy();
                    exe.strip_suffix(" (deleted)").unwrap_or(&exe) == rec.program
                });
            let err_path = dir.join(format!("{}.stderr", rec.pid));
            if !alive {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(&err_path);
                continue;
            }
            if self.children.lock().unwrap().contains_key(&rec.pid) {
                continue;
            }
            let stderr = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(&err_path)
                .or_else(|_| unlinked_file())?;
            tracing::info!(plugin = %rec.plugin, pid = rec.pid, "found again {}", rec.program);
            self.children.lock().unwrap().insert(
                rec.pid,
                Arc::new(ChildEntry {
                    plugin: rec.plugin,
                    program: rec.program,
                    pid: rec.pid,
                    start_time: rec.start_time,
                    child: Mutex::new(None),
                    status: Mutex::new(None),
                    ended: Mutex::new(None),
                    stderr: Mutex::new(stderr),
                    files: Some((path.clone(), err_path.clone())),
                }),
            );
            found += 1;
        }
        Ok(found)
    }

    /// A file for a new child's stderr: in the registry's directory when it persists.
    fn stderr_file(&self) -> std::io::Result<(std::fs::File, Option<PathBuf>)> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(dir) = self.dir.get() else {
            return Ok((unlinked_file()?, None));
        };
        for attempt in 0..100u32 {
            let path = dir.join(format!(".new-{}-{attempt}.stderr", std::process::id()));
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => return Ok((f, Some(path))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free name for a stderr file"))
    }

    /// Records a new child (its file first, then the table).
    fn add(&self, mut entry: ChildEntry, stderr_path: Option<PathBuf>) {
        // Forget children that ended a while ago, so a long-lived daemon does not keep an
        // open stderr file per guest it ever started.
        self.children.lock().unwrap().retain(|_, e| {
            e.ended
                .lock()
                .unwrap()
                .is_none_or(|t| t.elapsed() < std::time::Duration::from_secs(600))
        });
        if let Some(dir) = self.dir.get() {
            let pid = entry.pid;
            if let Some(tmp) = stderr_path {
                let _ = std::fs::rename(&tmp, dir.join(format!("{pid}.stderr")));
            }
            let rec = ChildFile {
                pid,
                plugin: entry.plugin.clone(),
                program: entry.program.clone(),
                start_time: entry.start_time,
            };
            let path = dir.join(format!("{pid}.json"));
            let body = serde_json::to_vec(&rec).unwrap_or_default();
            if let Err(e) = crate::engine::write_atomically_volatile(&path, &body) {
                tracing::warn!(file = %path.display(), "cannot record child {pid}: {e}");
            }
            entry.files = Some((path, dir.join(format!("{pid}.stderr"))));
        }
        self.children
            .lock()
            .unwrap()
            .insert(entry.pid, Arc::new(entry));
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
        let (log, log_path) = match self.children.stderr_file() {
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
            // What /proc/PID/exe will name: the resolved program.
            program: std::fs::canonicalize(&path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            pid,
            start_time: start_time_of(pid).unwrap_or(0),
            child: Mutex::new(Some(child)),
            status: Mutex::new(None),
            ended: Mutex::new(None),
            stderr: Mutex::new(log),
            files: None,
        };
        self.children.add(entry, log_path);
        Ok(Ok(self.table.push(ChildHandle { pid })?))
    }

    fn identify(&mut self, program: String) -> wasmtime::Result<Result<ProgramIdentity, WitError>> {
        use std::os::unix::fs::MetadataExt;
        let (found, real) = match self.grants.programs.resolve_named(&program) {
            Ok(p) => p,
            Err(why) => return Ok(Err(self.denied(why))),
        };
        let meta = match std::fs::metadata(&real) {
            Ok(m) => m,
            Err(e) => {
                return Ok(Err(wit_error(
                    WitKind::OperationFailed,
                    format!("cannot read the identity of '{}': {e}", real.display()),
                )));
            }
        };
        Ok(Ok(ProgramIdentity {
            path: found.to_string_lossy().into_owned(),
            resolved: real.to_string_lossy().into_owned(),
            size: meta.size(),
            mtime_seconds: meta.mtime(),
            // Always within 0..1e9 for a regular file's timestamp.
            mtime_nanoseconds: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            inode: meta.ino(),
            device: meta.dev(),
        }))
    }

    fn adopt(&mut self, pid: u32) -> wasmtime::Result<Result<Resource<ChildHandle>, WitError>> {
        if self.children.get(&self.grants.plugin, pid).is_none() {
            // A process that no longer exists is simply gone (a guest that died while no
            // host watched it): the driver can record that. A live one that is not this
            // plugin's stays out of reach.
            if start_time_of(pid).is_none() {
                return Ok(Err(wit_error(
                    WitKind::NotFound,
                    format!("process {pid} is gone"),
                )));
            }
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
                    Ok(Some(s)) => return Ok(Some(s)),
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
        // Whether a program is installed is said only of one the allowlist grants.
        let e = list.resolve("no-such-program-xyz").unwrap_err();
        assert!(e.contains("not in the plugin's allowlist"), "{e}");
        assert!(!e.contains("not found"), "{e}");
        let e = list.resolve("qemu-system-nosucharch").unwrap_err();
        assert!(
            e.starts_with("program 'qemu-system-nosucharch' was not found in /usr/local/sbin:"),
            "{e}"
        );
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
