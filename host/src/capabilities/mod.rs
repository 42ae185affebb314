//! The host capabilities a plugin may import, and the per-instance store data that carries
//! its grants. Every call re-checks the grant: a plugin holds no authority of its own.

pub mod log;
pub mod netdev;
pub mod process;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::manifest::{Access, Manifest};

/// What one plugin may do, resolved from its manifest once at load time.
#[derive(Debug)]
pub struct Grants {
    /// The plugin's name, for logs and errors.
    pub plugin: String,
    /// Program allowlist.
    pub programs: process::ProgramAllowlist,
    /// Socket path prefixes (lexically normalised).
    pub socket_prefixes: Vec<PathBuf>,
    /// Preopened directories: host path, guest path, access.
    pub files: Vec<(PathBuf, String, Access)>,
    /// Read-only grants left out at load because their directory does not exist (see
    /// [`Grants::prepare_files`]).
    pub skipped_files: Vec<PathBuf>,
    /// Linear-memory cap per instance, bytes.
    pub memory_bytes: usize,
    /// Whether `process` is linked.
    pub process: bool,
    /// Whether `unix-socket` is linked.
    pub sockets: bool,
    /// Bridge name globs taps may join; `netdev` is linked when this is `Some`.
    pub bridges: Option<Vec<String>>,
}

impl Grants {
    /// Resolves a manifest's grants.
    pub fn from_manifest(m: &Manifest) -> Grants {
        let programs = m
            .capabilities
            .process
            .as_ref()
            .map(|p| p.programs.clone())
            .unwrap_or_default();
        Grants {
            plugin: m.plugin.name.clone(),
            programs: process::ProgramAllowlist::new(programs),
            socket_prefixes: m
                .capabilities
                .sockets
                .iter()
                .map(|p| socket::normalize(p))
                .collect(),
            files: m
                .capabilities
                .files
                .iter()
                .map(|f| {
                    let guest = f
                        .guest
                        .clone()
                        .unwrap_or_else(|| f.host.to_string_lossy().into_owned());
                    (f.host.clone(), guest, f.access)
                })
                .collect(),
            skipped_files: Vec::new(),
            memory_bytes: m.limits.memory_mib as usize * 1024 * 1024,
            process: m.capabilities.process.is_some(),
            sockets: !m.capabilities.sockets.is_empty(),
            bridges: m.capabilities.netdev.as_ref().map(|n| n.bridges.clone()),
        }
    }
}

impl Grants {
    /// Readies the granted directories at load. A read-write grant is the plugin's own place
    /// (its cache, its state): a missing one is created, mode 0700 like the socket
    /// directories, since nothing but the host and its plugin belongs there; an existing one
    /// is left as it is (it may be an operator's). A read-only grant names something the
    /// host provides, which the host cannot invent: a missing one is left out of the
    /// preopens with a warning, so the plugin runs without it rather than failing every
    /// call on a preopen of nothing. Errors name the directory and the cause.
    pub fn prepare_files(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let mut skipped = Vec::new();
        for (host, _, access) in &self.files {
            if host.is_dir() {
                continue;
            }
            match access {
                Access::ReadWrite => {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(host)
                        .and_then(|()| {
                            std::fs::set_permissions(host, std::fs::Permissions::from_mode(0o700))
                        })
                        .map_err(|e| {
                            std::io::Error::new(
                                e.kind(),
                                format!(
                                    "cannot create its read-write directory '{}': {e}",
                                    host.display()
                                ),
                            )
                        })?;
                    tracing::info!(plugin = %self.plugin, "created its directory {}", host.display());
                }
                Access::ReadOnly => {
                    tracing::warn!(
                        plugin = %self.plugin,
                        "plugin '{}': its read-only directory '{}' does not exist; it runs without it",
                        self.plugin,
                        host.display()
                    );
                    skipped.push(host.clone());
                }
            }
        }
        self.files.retain(|(host, _, _)| !skipped.contains(host));
        self.skipped_files = skipped;
        Ok(())
    }
}

/// Caps one instance's linear memory and tables, and remembers a refused growth so a guest's
/// out-of-memory abort is reported as what it is rather than as a bare trap.
#[derive(Debug)]
pub struct Limiter {
    /// Maximum linear memory in bytes.
    pub memory_bytes: usize,
    /// The size a refused `memory.grow` asked for.
    pub refused_growth: Option<usize>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused_growth = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
    fn instances(&self) -> usize {
        32
    }
    fn tables(&self) -> usize {
        32
    }
    fn memories(&self) -> usize {
        8
    }
}

/// The data of one plugin instance's store.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) grants: Arc<Grants>,
    pub(crate) children: Arc<process::ChildRegistry>,
    pub(crate) taps: Arc<netdev::TapRegistry>,
    pub(crate) stderr: MemoryOutputPipe,
    /// Wall time this call spent blocked in host capabilities; the guest's CPU budget
    /// excludes it, so a plugin waiting for `qemu-img` is not killed as a runaway loop.
    pub(crate) host_time: std::time::Duration,
    /// When the current call began.
    pub(crate) call_started: std::time::Instant,
    /// The current call's budget of guest execution time.
    pub(crate) budget: std::time::Duration,
    /// Where the current call's output starts in the captured buffer.
    output_mark: usize,
    /// This instance's exports once type-checked (see [`crate::plugin::LoadedExports`]).
    pub(crate) exports: crate::plugin::LoadedExports,
}

/// The longest a single host-capability wait may last. Time blocked in the host does not count
/// against a call's guest budget, so without this cap a plugin could hold a domain's job lock
/// indefinitely by waiting; 30 minutes covers the slowest real operation (a large image copy).
pub const MAX_HOST_WAIT_MS: u32 = 30 * 60 * 1000;

/// How much of a plugin's stdout/stderr one call keeps (for panic messages).
const STDIO_CAPTURE: usize = 64 * 1024;

impl HostState {
    /// Fresh store data for one instance: WASI with no environment, arguments, stdin or
    /// sockets, stdout and stderr captured, and only the granted directories preopened.
    /// `object_dir` is one more directory (host path, the path the plugin knows it by),
    /// read-write, for this instance only: the target of the storage pool a storage driver's
    /// call is about.
    pub(crate) fn new(
        grants: Arc<Grants>,
        children: Arc<process::ChildRegistry>,
        taps: Arc<netdev::TapRegistry>,
        object_dir: Option<(&std::path::Path, &str)>,
    ) -> wasmtime::Result<HostState> {
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE);
        let mut b = WasiCtx::builder();
        b.stdout(stderr.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        // The one environment variable a plugin gets: where its granted socket directory is
        // (its manifest names it as {runtime_dir}/NAME, which only the host can resolve),
        // so a driver knows where to put the sockets it asks a backend to listen on.
        if let Some(dir) = grants.socket_prefixes.first() {
            b.env("VIRTWASM_SOCKET_DIR", dir.to_string_lossy());
        }
        for (host, guest, access) in &grants.files {
            let perms = match access {
                Access::ReadOnly => wasmtime_wasi::FsPerms::ReadOnly,
                Access::ReadWrite => wasmtime_wasi::FsPerms::ReadWrite,
            };
            // A grant removed since load (an operator's directory, or the plugin's own
            // deleted under it) fails this instance naming the directory, not as a bare errno.
            b.preopened_dir(host, guest, perms).map_err(|e| {
                wasmtime::format_err!(
                    "plugin '{}': cannot open its granted directory '{}': {e:#}",
                    grants.plugin,
                    host.display()
                )
            })?;
        }
        if let Some((host, guest)) = object_dir {
            b.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadWrite)?;
        }
        Ok(HostState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes: grants.memory_bytes,
                refused_growth: None,
            },
            grants,
            children,
            taps,
            stderr,
            host_time: std::time::Duration::ZERO,
            call_started: std::time::Instant::now(),
            budget: std::time::Duration::ZERO,
            output_mark: 0,
            exports: Default::default(),
        })
    }

    /// Starts a call: a fresh budget, and output counted from here.
    pub(crate) fn begin_call(&mut self, budget: std::time::Duration) {
        // A refused growth belongs to the call that asked; a reused instance starts clean.
        self.limiter.refused_growth = None;
        self.host_time = std::time::Duration::ZERO;
        self.call_started = std::time::Instant::now();
        self.budget = budget;
        self.output_mark = self.stderr.contents().len();
    }

    /// What the plugin wrote to stdout/stderr during the current call.
    pub(crate) fn captured_output(&self) -> String {
        let all = self.stderr.contents();
        String::from_utf8_lossy(&all[self.output_mark.min(all.len())..]).into_owned()
    }

    /// Bytes of output this instance has buffered over its life.
    pub(crate) fn output_len(&self) -> usize {
        self.stderr.contents().len()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::virtwasm::plugin::types::Host for HostState {}
