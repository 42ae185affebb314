//! The wasmtime engine, tuned once for the whole host, and the compiled-component cache.
//!
//! Choices, and why:
//! - Pooling allocator: instances are made per call, so instantiation must cost microseconds
//!   (12–32 µs measured here against ~40 µs on demand). Totals are sized at 2–4× the
//!   component instances because one component holds several core instances and tables.
//! - Epoch interruption with a 10 ms ticker: a runaway guest is stopped within ~10–15 ms of
//!   its budget, at a fraction of fuel metering's cost.
//! - Our own on-disk cache of precompiled components (not wasmtime's `cache` feature, which
//!   pulls in zstd-sys): a warm load is an mmap (0.15–0.3 ms) against a 60–300 ms compile.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capabilities::process::ChildRegistry;
use crate::error::{Error, ErrorKind, Result};

/// How often the epoch advances; a plugin's time budget is counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest linear memory any plugin may have (its manifest sets a lower cap).
pub const MAX_PLUGIN_MEMORY: usize = 1 << 30;

/// Where a compiled component came from on this load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "detail")]
pub enum CacheState {
    /// Loaded precompiled from the cache.
    Hit,
    /// Compiled now and stored in the cache.
    Stored,
    /// Compiled now; the cache is off (the reason says why).
    Disabled(String),
}

/// The engine every plugin runs on, plus what all plugins share.
pub struct Runtime {
    engine: Engine,
    cache: std::result::Result<PathBuf, String>,
    pub(crate) children: Arc<ChildRegistry>,
    pub(crate) taps: Arc<crate::capabilities::netdev::TapRegistry>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache)
            .finish()
    }
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker. `cache_dir` holds precompiled
    /// components; `None` turns the cache off.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(1024)
            .total_memories(512)
            .total_tables(1024)
            .total_stacks(256)
            .max_memory_size(MAX_PLUGIN_MEMORY);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).or_else(|e| {
            // Some hosts refuse the pool's up-front address-space reservation (ulimit -v):
            // fall back to on-demand allocation rather than refusing to run.
            tracing::warn!("pooling allocator unavailable ({e}); allocating instances on demand");
            let mut config = Config::new();
            config.epoch_interruption(true).max_wasm_stack(1 << 20);
            Engine::new(&config)
        });
        let engine =
            engine.map_err(|e| Error::internal(format!("cannot create the wasm engine: {e}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("virtwasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the epoch ticker: {e}")))?;
        let cache = match cache_dir {
            None => Err("disabled by configuration".to_string()),
            Some(dir) => prepare_cache_dir(&dir),
        };
        Ok(Runtime {
            engine,
            cache,
            children: Arc::new(ChildRegistry::default()),
            taps: Arc::new(Default::default()),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The cache directory, or why there is none.
    pub fn cache_dir(&self) -> std::result::Result<&Path, &str> {
        self.cache.as_deref().map_err(|s| s.as_str())
    }

    /// The long-lived children plugins have spawned.
    pub fn children(&self) -> &Arc<ChildRegistry> {
        &self.children
    }

    /// The tap devices plugins have had the host make.
    pub fn taps(&self) -> &Arc<crate::capabilities::netdev::TapRegistry> {
        &self.taps
    }

    fn cache_key(&self, sha256: &str) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{sha256}-{:016x}.cwasm", h.finish())
    }

    /// Compiles `wasm` (whose sha256 is `sha256`), or loads it precompiled from the cache.
    pub fn compile(
        &self,
        name: &str,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<(Component, CacheState)> {
        let dir = match &self.cache {
            Ok(dir) => dir,
            Err(why) => {
                return Ok((
                    self.compile_fresh(name, wasm)?,
                    CacheState::Disabled(why.clone()),
                ));
            }
        };
        let path = dir.join(self.cache_key(sha256));
        sweep_stale_temps(dir);
        if path.exists() {
            // SAFETY: the file is in a 0700 directory owned by this user that only this host
            // writes, named by the sha256 of the wasm it was compiled from and the engine's
            // compatibility hash; wasmtime also rejects artifacts of another engine config.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, CacheState::Hit)),
                Err(e) => tracing::warn!("ignoring unusable cache entry {}: {e}", path.display()),
            }
        }
        let component = self.compile_fresh(name, wasm)?;
        match component.serialize() {
            Ok(bytes) => match write_atomically(&path, &bytes) {
                Ok(()) => Ok((component, CacheState::Stored)),
                Err(e) => Ok((
                    component,
                    CacheState::Disabled(format!("cannot write {}: {e}", path.display())),
                )),
            },
            Err(e) => Ok((
                component,
                CacheState::Disabled(format!("cannot serialize: {e}")),
            )),
        }
    }

    fn compile_fresh(&self, name: &str, wasm: &[u8]) -> Result<Component> {
        Component::new(&self.engine, wasm).map_err(|e| {
            Error::new(
                ErrorKind::PluginLoad,
                format!("plugin '{name}' is not a valid WebAssembly component: {e}"),
            )
        })
    }
}

/// Creates the cache directory 0700, and refuses one that others could write: its files are
/// executable code the host maps without recompiling.
fn prepare_cache_dir(dir: &Path) -> std::result::Result<PathBuf, String> {
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(format!("cannot create {}: {e}", dir.display()));
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(format!(
            "{} is owned by uid {}, not by this user ({uid})",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by others (mode {:o}); precompiled plugins are code, so it must not be",
            dir.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(dir.to_path_buf())
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one:
/// a temporary file in the same directory, fsync, rename, fsync of the directory. Once the
/// rename is done the new version is the file, so a failed directory fsync is logged rather
/// than reported as a failed write (which would leave callers believing the old one stands).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file(path, bytes, true)
}

/// Writes `bytes` to `path` atomically (temporary file, rename) without flushing to disk: for
/// runtime state (status files, child records), which must survive the daemon's death, where
/// the page cache holds it, but not a power loss, after which there is no process left to
/// describe (a record that comes back names a pid whose start time no longer matches). Its
/// fsyncs sat between a QEMU's spawn and its first monitor answer on every start.
pub fn write_atomically_volatile(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file(path, bytes, false)
}

/// The one way files are replaced: a temporary file in the same directory, renamed over
/// `path`; with `durable`, the file and then the directory are flushed too.
fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    let written = tmp
        .1
        .write_all(bytes)
        .and_then(|_| if durable { tmp.1.sync_all() } else { Ok(()) })
        .and_then(|_| std::fs::rename(&tmp.0, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp.0);
        return Err(e);
    }
    if durable && let Err(e) = sync_dir(dir) {
        tracing::warn!(
            "{} was replaced, but syncing {} failed: {e}",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Flushes a directory's entries (a rename, a removal) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes temporary files (`.NAME.tmp-PID-N`) left in `dir` by writers that were killed
/// mid-write. A file whose writer still runs is left alone.
pub fn sweep_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-"))
            .map(|(_, r)| r)
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = pid == std::process::id() as i32 || unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let base = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    for attempt in 0..100u32 {
        let name = format!(".{base}.tmp-{}-{attempt}", std::process::id());
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a temporary file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_dir_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_cache_dir(&open).unwrap_err();
        assert!(e.contains("writable by others"), "{e}");
        let fresh = dir.path().join("a/b");
        assert_eq!(prepare_cache_dir(&fresh).unwrap(), fresh);
        assert_eq!(
            std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn stale_temporary_files_of_dead_writers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".vm.xml.tmp-999999999-0");
        let mine = dir
            .path()
            .join(format!(".vm.xml.tmp-{}-0", std::process::id()));
        let other = dir.path().join(".hidden-but-not-ours");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        sweep_stale_temps(dir.path());
        assert!(!dead.exists(), "a dead writer's temp file is removed");
        assert!(mine.exists(), "a live writer's temp file stays");
        assert!(other.exists(), "files that are not temp files stay");
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_atomically(&p, b"old").unwrap();
        write_atomically(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files remain");
    }
}
