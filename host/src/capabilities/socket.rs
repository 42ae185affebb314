//! The `unix-socket` capability: stream connections (QMP monitors and the like) under the
//! socket path prefixes a manifest grants, and nowhere else.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use crate::bindings::virtwasm::plugin::types::{Error as WitError, ErrorKind as WitKind};
use crate::bindings::virtwasm::plugin::unix_socket::{Host, HostConnection};
use crate::error::wit_error;

use super::HostState;

/// Largest single `recv`.
const MAX_RECV: u32 = 1024 * 1024;

/// The host side of a `connection` resource.
#[derive(Debug)]
pub struct SocketHandle {
    stream: UnixStream,
}

/// Lexical normalisation: drops `.`, resolves `..` against what precedes it. Used on both
/// the grant and the request, so `/run/x/../../etc` cannot pass as being under `/run/x`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether `path` may be connected to under `prefixes`, after resolving symlinks in its
/// directory (a symlinked directory under a granted prefix must not lead elsewhere).
pub fn allowed(path: &Path, prefixes: &[PathBuf]) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!("socket path '{}' must be absolute", path.display()));
    }
    let lexical = normalize(path);
    let under = |p: &Path| prefixes.iter().any(|pre| p.starts_with(pre));
    if !under(&lexical) {
        return Err(format!(
            "socket '{}' is outside the granted prefixes ({})",
            path.display(),
            if prefixes.is_empty() {
                "none granted".to_string()
            } else {
                prefixes
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
    // The last component must not be a symlink (connect would follow it), and the directory
    // must resolve under a granted prefix too.
    if std::fs::symlink_metadata(&lexical).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "socket '{}' is a symbolic link; connect to its target directly",
            path.display()
        ));
    }
    if let (Some(dir), Some(name)) = (lexical.parent(), lexical.file_name())
        && let Ok(real_dir) = std::fs::canonicalize(dir)
    {
        let real = real_dir.join(name);
        let real_prefixes: Vec<PathBuf> = prefixes
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect();
        if !real_prefixes.iter().any(|pre| real.starts_with(pre)) {
            return Err(format!(
                "socket '{}' resolves to '{}', outside the granted prefixes",
                path.display(),
                real.display()
            ));
        }
        return Ok(real);
    }
    Ok(lexical)
}

impl Host for HostState {
    fn connect(
        &mut self,
        path: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<SocketHandle>, WitError>> {
        let target = match allowed(Path::new(&path), &self.grants.socket_prefixes) {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(plugin = %self.grants.plugin, "denied: {why}");
                return Ok(Err(wit_error(
                    WitKind::PermissionDenied,
                    format!("plugin '{}': {why}", self.grants.plugin),
                )));
            }
        };
        let deadline =
            Instant::now() + Duration::from_millis(timeout_ms.min(super::MAX_HOST_WAIT_MS).into());
        let start = Instant::now();
        let result = loop {
            match UnixStream::connect(&target) {
                Ok(s) => break Ok(s),
                Err(e)
                    if Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    // A backend listens within tens of milliseconds of its spawn; a coarse
                    // retry would add its whole period to every start.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => break Err(e),
            }
        };
        self.host_time += start.elapsed();
        match result {
            Ok(stream) => Ok(Ok(self.table.push(SocketHandle { stream })?)),
            Err(e) => Ok(Err(wit_error(
                WitKind::OperationFailed,
                format!("connecting to '{}': {e}", target.display()),
            ))),
        }
    }
}

impl HostConnection for HostState {
    fn send(
        &mut self,
        conn: Resource<SocketHandle>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let start = Instant::now();
        let handle = self.table.get_mut(&conn)?;
        let r = handle
            .stream
            .write_all(&data)
            .map_err(|e| wit_error(WitKind::OperationFailed, format!("socket write: {e}")));
        self.host_time += start.elapsed();
        Ok(r)
    }

    fn recv(
        &mut self,
        conn: Resource<SocketHandle>,
        max_bytes: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let start = Instant::now();
        let handle = self.table.get_mut(&conn)?;
        let mut buf = vec![0u8; max_bytes.clamp(1, MAX_RECV) as usize];
        let _ = handle.stream.set_read_timeout(Some(Duration::from_millis(
            timeout_ms.clamp(1, super::MAX_HOST_WAIT_MS).into(),
        )));
        let r = match handle.stream.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(wit_error(
                    WitKind::Timeout,
                    format!("no data within {timeout_ms} ms"),
                ))
            }
            Err(e) => Err(wit_error(
                WitKind::OperationFailed,
                format!("socket read: {e}"),
            )),
        };
        self.host_time += start.elapsed();
        Ok(r)
    }

    fn drop(&mut self, conn: Resource<SocketHandle>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_enforced_lexically_and_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let granted = dir.path().join("granted");
        std::fs::create_dir(&granted).unwrap();
        let prefixes = vec![granted.clone()];
        assert!(allowed(&granted.join("qmp.sock"), &prefixes).is_ok());
        let e = allowed(&granted.join("../other.sock"), &prefixes).unwrap_err();
        assert!(e.contains("outside the granted prefixes"), "{e}");
        std::os::unix::fs::symlink("/etc", granted.join("link")).unwrap();
        let e = allowed(&granted.join("link/x.sock"), &prefixes).unwrap_err();
        assert!(e.contains("resolves to"), "{e}");
        // A symlink as the last component would be followed by connect: refused.
        std::os::unix::fs::symlink("/run/anything.sock", granted.join("q.sock")).unwrap();
        let e = allowed(&granted.join("q.sock"), &prefixes).unwrap_err();
        assert!(e.contains("is a symbolic link"), "{e}");
        let e = allowed(Path::new("/run/x.sock"), &[]).unwrap_err();
        assert!(e.contains("none granted"), "{e}");
    }
}
