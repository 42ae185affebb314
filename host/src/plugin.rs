//! A loaded plugin: its manifest, its compiled component, and the machinery that runs one
//! verb in a limited, sandboxed instance.
//!
//! Each call gets an instance of its own while it runs: an idle one that finished its last
//! call normally, or a new one from the pooling allocator (`InstancePre::instantiate`, a few
//! microseconds); see docs/adr/0003. Calls on different domains run in parallel, and a trap
//! poisons only the instance that trapped, which is dropped: the next call gets another.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::{hypervisor, network, storage, types, virtwasm};
use crate::capabilities::{Grants, HostState};
use crate::engine::{CacheState, EPOCH_TICK, Runtime};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{self, Manifest, World};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum PluginSource {
    /// Built from `plugins/` and compiled into the binary.
    Bundled,
    /// Loaded from a plugin directory.
    Directory(std::path::PathBuf),
}

/// WASI interfaces a plugin may import. Rust's standard library imports most of these even
/// when a plugin does no I/O; they carry no authority beyond the preopens and the captured
/// stdio the host sets up. `wasi:sockets` is never linked: plugins reach sockets only through
/// the `unix-socket` capability.
const WASI_ALLOWED: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// A counting semaphore: the manifest's cap on concurrent instances of one plugin.
#[derive(Debug)]
struct Slots {
    free: Mutex<u32>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap();
        while *free == 0 {
            free = self.cv.wait(free).unwrap();
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap() += 1;
        self.0.cv.notify_one();
    }
}

/// Numbers from loading a plugin, for `plugin-info` and the benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Cache hit, stored, or disabled.
    pub cache: CacheState,
    /// Time to get the compiled component (compile or cache load).
    pub compile: Duration,
    /// Time to link and pre-instantiate.
    pub link: Duration,
}

/// A plugin ready to serve calls.
pub struct Plugin {
    /// Its manifest, with paths expanded.
    pub manifest: Manifest,
    /// Where it came from.
    pub source: PluginSource,
    /// sha256 of its component, hex.
    pub sha256: String,
    /// How loading went.
    pub report: LoadReport,
    /// The interfaces it imports, as the component declares them.
    pub imports: Vec<String>,
    world: World,
    grants: Arc<Grants>,
    runtime: Arc<Runtime>,
    pre: InstancePre<HostState>,
    hypervisor: Option<hypervisor::GuestIndices>,
    storage: Option<storage::GuestIndices>,
    network: Option<network::GuestIndices>,
    slots: Slots,
    idle: Mutex<Vec<Warm>>,
    /// Verbs this plugin answered with the SDK's "does not support" default: a loaded
    /// component cannot change its mind, so later calls are answered without an instance
    /// (the host asks `poll` on every read; a driver without it must not pay for that).
    lacks: Mutex<std::collections::HashSet<String>>,
}

/// An instance that finished its last call normally, kept to serve the next one.
struct Warm {
    store: Store<HostState>,
    instance: wasmtime::component::Instance,
    uses: u32,
}

/// Calls one instance may serve before it is dropped.
const MAX_REUSE: u32 = 256;
/// Output (stdout and stderr) an instance may have buffered before it is dropped.
const MAX_OUTPUT_BEFORE_RETIRE: usize = 16 * 1024;

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.manifest.plugin.name)
            .field("source", &self.source)
            .finish()
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn load_err(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::PluginLoad, format!("plugin '{name}': {msg}"))
}

/// Splits `ns:pkg/iface@ver` into (`ns:pkg/iface`, `ver`).
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('@') {
        Some((base, v)) => (base, Some(v)),
        None => (name, None),
    }
}

impl Plugin {
    /// Loads a plugin: verifies the component's hash against the manifest's pin, compiles it
    /// (or loads it from the cache), checks every import against the grants, links only what
    /// is granted, and pre-instantiates it.
    pub fn load(
        runtime: Arc<Runtime>,
        manifest: Manifest,
        wasm: &[u8],
        sha256: Option<&str>,
        source: PluginSource,
    ) -> Result<Plugin> {
        let name = manifest.plugin.name.clone();
        let world = manifest.world()?;
        let sha256 = sha256
            .map(str::to_string)
            .unwrap_or_else(|| sha256_hex(wasm));
        if let Some(pin) = &manifest.plugin.sha256
            && !pin.eq_ignore_ascii_case(&sha256)
        {
            return Err(load_err(
                &name,
                format!("component sha256 is {sha256}, but the manifest pins {pin}"),
            ));
        }
        // Grants are created and opened by path: one still naming a `{variable}` (a manifest
        // loaded without `expand_paths`) would make a directory relative to the current one.
        if let Some(p) = manifest
            .capabilities
            .files
            .iter()
            .map(|f| f.host.as_path())
            .chain(manifest.capabilities.sockets.iter().map(|p| p.as_path()))
            .find(|p| !p.is_absolute())
        {
            return Err(load_err(
                &name,
                format!(
                    "granted path '{}' is not absolute (were the manifest's variables expanded?)",
                    p.display()
                ),
            ));
        }
        let t0 = Instant::now();
        let (component, cache) = runtime.compile(&name, wasm, &sha256)?;
        let compile = t0.elapsed();
        let t1 = Instant::now();
        let mut grants = Grants::from_manifest(&manifest);
        grants.prepare_files().map_err(|e| load_err(&name, e))?;
        let grants = Arc::new(grants);
        // The socket directories a plugin is granted are where its backends will listen
        // (QEMU's monitor): private to the host's user.
        for dir in &grants.socket_prefixes {
            std::fs::create_dir_all(dir)
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| {
                    load_err(
                        &name,
                        format!(
                            "cannot create its socket directory '{}': {e}",
                            dir.display()
                        ),
                    )
                })?;
        }
        let imports = check_imports(&runtime, &component, &grants, &name)?;
        let linker = build_linker(&runtime, &grants)
            .map_err(|e| load_err(&name, format!("linking: {e}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(&name, format!("cannot be linked: {e:#}")))?;
        let missing = |iface: &str| {
            load_err(
                &name,
                format!(
                    "declares world '{}' but does not export {}/{iface}@{} (is it built for another world or version?)",
                    world.name(),
                    manifest::WIT_PACKAGE,
                    manifest::compatible_range()
                ),
            )
        };
        let hv = if world.has_hypervisor() {
            Some(hypervisor::GuestIndices::new(&pre).map_err(|_| missing("hypervisor"))?)
        } else {
            None
        };
        let st = if world.has_storage() {
            Some(storage::GuestIndices::new(&pre).map_err(|_| missing("storage"))?)
        } else {
            None
        };
        let nw = if world.has_network() {
            Some(network::GuestIndices::new(&pre).map_err(|_| missing("network"))?)
        } else {
            None
        };
        let slots = Slots {
            free: Mutex::new(manifest.limits.instances),
            cv: Condvar::new(),
        };
        Ok(Plugin {
            report: LoadReport {
                cache,
                compile,
                link: t1.elapsed(),
            },
            manifest,
            source,
            sha256,
            imports,
            world,
            grants,
            runtime,
            pre,
            hypervisor: hv,
            storage: st,
            network: nw,
            slots,
            idle: Mutex::new(Vec::new()),
            lacks: Mutex::new(Default::default()),
        })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.plugin.name
    }

    /// The world it implements.
    pub fn world(&self) -> World {
        self.world
    }

    /// Its resolved grants.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Runs `verb` of the hypervisor interface in an instance of its own.
    pub fn hypervisor<R>(
        &self,
        verb: &str,
        f: impl FnOnce(
            &hypervisor::Guest,
            &mut Store<HostState>,
        ) -> wasmtime::Result<std::result::Result<R, types::Error>>,
    ) -> Result<R> {
        let idx = self
            .hypervisor
            .as_ref()
            .ok_or_else(|| self.not_served("hypervisor", verb))?;
        self.call(verb, |store, instance| {
            let guest = match store.data().exports.hypervisor.clone() {
                Some(g) => g,
                None => {
                    let g = idx.load(&mut *store, instance)?;
                    store.data_mut().exports.hypervisor = Some(g.clone());
                    g
                }
            };
            f(&guest, store)
        })
    }

    /// Runs `verb` of the storage interface in an instance of its own. With `pool_dir` (the
    /// host directory, and the path the plugin knows it by) the instance also gets a pool's
    /// target directory, read-write, and is used once.
    pub fn storage<R>(
        &self,
        verb: &str,
        pool_dir: Option<(&Path, &str)>,
        f: impl FnOnce(
            &storage::Guest,
            &mut Store<HostState>,
        ) -> wasmtime::Result<std::result::Result<R, types::Error>>,
    ) -> Result<R> {
        let idx = self
            .storage
            .as_ref()
            .ok_or_else(|| self.not_served("storage", verb))?;
        self.call_in(verb, pool_dir, |store, instance| {
            let guest = match store.data().exports.storage.clone() {
                Some(g) => g,
                None => {
                    let g = idx.load(&mut *store, instance)?;
                    store.data_mut().exports.storage = Some(g.clone());
                    g
                }
            };
            f(&guest, store)
        })
    }

    /// Runs `verb` of the network interface in an instance of its own.
    pub fn network<R>(
        &self,
        verb: &str,
        f: impl FnOnce(
            &network::Guest,
            &mut Store<HostState>,
        ) -> wasmtime::Result<std::result::Result<R, types::Error>>,
    ) -> Result<R> {
        let idx = self
            .network
            .as_ref()
            .ok_or_else(|| self.not_served("network", verb))?;
        self.call(verb, |store, instance| {
            let guest = match store.data().exports.network.clone() {
                Some(g) => g,
                None => {
                    let g = idx.load(&mut *store, instance)?;
                    store.data_mut().exports.network = Some(g.clone());
                    g
                }
            };
            f(&guest, store)
        })
    }

    /// Whether the plugin answered `verb` with the SDK's "not implemented" (so the host may
    /// answer in its place where it can, as for node info).
    pub fn lacks(&self, verb: &str) -> bool {
        self.lacks.lock().unwrap().contains(verb)
    }

    fn not_served(&self, iface: &str, verb: &str) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "this function is not supported by the connection driver: plugin '{}' serves no {iface} verbs ('{verb}')",
                self.name()
            ),
        )
    }

    /// Instantiates, runs `f`, and turns whatever went wrong into an [`Error`] that names the
    /// plugin, the verb and the cause.
    fn call<R>(
        &self,
        verb: &str,
        f: impl FnOnce(
            &mut Store<HostState>,
            &wasmtime::component::Instance,
        ) -> wasmtime::Result<std::result::Result<R, types::Error>>,
    ) -> Result<R> {
        self.call_in(verb, None, f)
    }

    /// [`Plugin::call`], in a fresh single-use instance that also holds `object_dir` when
    /// one is given (a reused instance would carry that grant into unrelated calls).
    fn call_in<R>(
        &self,
        verb: &str,
        object_dir: Option<(&Path, &str)>,
        f: impl FnOnce(
            &mut Store<HostState>,
            &wasmtime::component::Instance,
        ) -> wasmtime::Result<std::result::Result<R, types::Error>>,
    ) -> Result<R> {
        if self.lacks.lock().unwrap().contains(verb) {
            return Err(self.lacking(verb));
        }
        let _slot = self.slots.acquire();
        let budget = Duration::from_millis(self.manifest.limits.call_timeout_ms.into());
        let warm = match object_dir {
            Some(_) => None,
            None => self.idle.lock().unwrap().pop(),
        };
        let (mut store, instance, uses) = match warm {
            Some(w) => (w.store, Some(w.instance), w.uses),
            None => (self.new_store(object_dir)?, None, 0),
        };
        store.data_mut().begin_call(budget);
        store.set_epoch_deadline(ticks(budget));
        let instance = match instance {
            Some(i) => Ok(i),
            None => self.pre.instantiate(&mut store),
        };
        let outcome = instance.and_then(|inst| f(&mut store, &inst).map(|r| (r, inst)));
        let (outcome, healthy) = match outcome {
            Ok((r, inst)) => (Ok(r), Some(inst)),
            Err(trap) => (Err(trap), None),
        };
        let output = store.data().captured_output();
        if !output.is_empty() {
            tracing::debug!(plugin = %self.name(), verb, "plugin output: {}", output.trim_end());
        }
        let answer = match outcome {
            Ok(answer) => answer,
            Err(trap) => return Err(self.explain_trap(verb, trap, store.data(), budget)),
        };
        // An instance that returned normally may serve the next call; one that trapped was
        // dropped above (it is poisoned). Reuse is bounded so that whatever a guest leaks
        // (resources, buffered output) stays bounded too.
        if let Some(instance) = healthy
            && object_dir.is_none()
            && uses + 1 < MAX_REUSE
            && store.data().output_len() < MAX_OUTPUT_BEFORE_RETIRE
        {
            self.idle.lock().unwrap().push(Warm {
                store,
                instance,
                uses: uses + 1,
            });
        }
        match answer {
            Ok(r) => Ok(r),
            // The SDK's default answer for a verb a driver does not implement at all:
            // remembered, and said as libvirt says it.
            Err(e)
                if e.kind == types::ErrorKind::Unsupported
                    && e.message.starts_with("this driver does not implement '") =>
            {
                self.lacks.lock().unwrap().insert(verb.to_string());
                Err(self.lacking(verb))
            }
            // The SDK's `unsupported()`, which a driver may answer for some inputs only: said
            // as libvirt says it, but not remembered. A driver's own words pass.
            Err(e)
                if e.kind == types::ErrorKind::Unsupported
                    && e.message.starts_with("this driver does not support '") =>
            {
                Err(self.lacking(verb))
            }
            Err(e) => Err(Error::from(e)),
        }
    }

    /// The error for a verb the plugin does not implement, worded as libvirt's, with the API
    /// name users search its documentation for.
    fn lacking(&self, verb: &str) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            match libvirt_api(verb) {
                Some(api) => {
                    format!("this function is not supported by the connection driver: {api}")
                }
                None => format!(
                    "this function is not supported by the connection driver: plugin '{}' does not implement '{verb}'",
                    self.name()
                ),
            },
        )
    }

    /// Makes a fresh instance (never a reused one) and drops it: a health check after load,
    /// and what the benchmark measures as instantiation.
    pub fn probe(&self) -> Result<Duration> {
        let _slot = self.slots.acquire();
        let t = Instant::now();
        let mut store = self.new_store(None)?;
        store.data_mut().begin_call(Duration::from_millis(
            self.manifest.limits.call_timeout_ms.into(),
        ));
        store.set_epoch_deadline(ticks(Duration::from_millis(
            self.manifest.limits.call_timeout_ms.into(),
        )));
        self.pre.instantiate(&mut store).map_err(|e| {
            Error::new(
                ErrorKind::PluginCrashed,
                format!("plugin '{}' failed to instantiate: {e:#}", self.name()),
            )
        })?;
        Ok(t.elapsed())
    }

    /// A store for a new instance: the sandbox's WASI context, the memory limiter, and the
    /// epoch callback that enforces each call's budget of guest execution time.
    fn new_store(&self, object_dir: Option<(&Path, &str)>) -> Result<Store<HostState>> {
        let state = HostState::new(
            self.grants.clone(),
            self.runtime.children.clone(),
            self.runtime.taps.clone(),
            object_dir,
        )
        .map_err(|e| {
            Error::failed(match object_dir {
                Some((dir, _)) => format!(
                    "plugin '{}': cannot open '{}' for it: {e:#}",
                    self.name(),
                    dir.display()
                ),
                None => format!(
                    "plugin '{}': cannot prepare its sandbox: {e:#}",
                    self.name()
                ),
            })
        })?;
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            // The budget is for guest execution: time blocked in host capabilities (waiting
            // for a child, a socket) does not count against it.
            let s = ctx.data();
            let used = s.call_started.elapsed().saturating_sub(s.host_time);
            if used >= s.budget {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(ticks(s.budget - used)))
            }
        });
        Ok(store)
    }

    fn explain_trap(
        &self,
        verb: &str,
        err: wasmtime::Error,
        state: &HostState,
        budget: Duration,
    ) -> Error {
        let name = self.name();
        let msg = if let Some(asked) = state.limiter.refused_growth {
            format!(
                "plugin '{name}' ran out of memory in '{verb}': it asked for {} MiB, its limit is {} MiB",
                asked.div_ceil(1 << 20),
                state.limiter.memory_bytes >> 20
            )
        } else if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            let e = Error::new(
                ErrorKind::Timeout,
                format!(
                    "plugin '{name}' exceeded its time limit of {} ms in '{verb}' and was stopped",
                    budget.as_millis()
                ),
            );
            tracing::error!(plugin = name, verb, "{}", e.message);
            return e;
        } else if let Some(panic) = panic_message(&state.captured_output()) {
            format!("plugin '{name}' crashed in '{verb}': {panic}")
        } else {
            format!("plugin '{name}' crashed in '{verb}': {err:#}")
        };
        tracing::error!(plugin = name, verb, "{msg}");
        Error::new(ErrorKind::PluginCrashed, msg)
    }
}

/// The libvirt API behind a verb, for "not supported" messages worded as libvirt's.
fn libvirt_api(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "get-node-info" => "virNodeGetInfo",
        "capabilities" => "virConnectGetCapabilities",
        "start" => "virDomainCreateWithFlags",
        "shutdown" => "virDomainShutdownFlags",
        "reboot" => "virDomainReboot",
        "reset" => "virDomainReset",
        "destroy" => "virDomainDestroyFlags",
        "suspend" => "virDomainSuspend",
        "resume" => "virDomainResume",
        "info" => "virDomainGetInfo",
        "stats" => "virConnectGetAllDomainStats",
        "interface-addresses" => "virDomainInterfaceAddresses",
        "save" => "virDomainSaveFlags",
        "restore" => "virDomainRestoreFlags",
        "snapshot-create" => "virDomainSnapshotCreateXML",
        "snapshot-revert" => "virDomainRevertToSnapshot",
        "snapshot-delete" => "virDomainSnapshotDelete",
        "attach-device" => "virDomainAttachDeviceFlags",
        "detach-device" => "virDomainDetachDeviceFlags",
        "attach-device-legacy" => "virDomainAttachDevice",
        "detach-device-legacy" => "virDomainDetachDevice",
        "set-vcpus" => "virDomainSetVcpusFlags",
        "set-memory" => "virDomainSetMemoryFlags",
        "open-console" => "virDomainOpenConsole",
        "migrate-prepare" | "migrate-perform" | "migrate-finish" | "migrate-confirm" => {
            "virDomainMigrateToURI3"
        }
        "pool-build" => "virStoragePoolBuild",
        "pool-start" => "virStoragePoolCreate",
        "pool-stop" => "virStoragePoolDestroy",
        "pool-delete" => "virStoragePoolDelete",
        "pool-refresh" => "virStoragePoolRefresh",
        "get-pool-info" => "virStoragePoolGetInfo",
        "vol-create" => "virStorageVolCreateXML",
        "vol-clone" => "virStorageVolCreateXMLFrom",
        "vol-delete" => "virStorageVolDelete",
        "vol-resize" => "virStorageVolResize",
        "vol-wipe" => "virStorageVolWipe",
        "vol-info" => "virStorageVolGetInfo",
        "vol-upload" => "virStorageVolUpload",
        "vol-download" => "virStorageVolDownload",
        "net-start" => "virNetworkCreate",
        "net-stop" => "virNetworkDestroy",
        "net-dhcp-leases" => "virNetworkGetDHCPLeases",
        _ => return None,
    })
}

/// A plugin instance's exports, type-checked once per instance and kept in its store: the
/// check walks every verb's signature (the whole domain model), which cost more than the
/// call itself when it was repeated for each call.
#[derive(Default)]
pub struct LoadedExports {
    pub(crate) hypervisor: Option<hypervisor::Guest>,
    pub(crate) storage: Option<storage::Guest>,
    pub(crate) network: Option<network::Guest>,
}

/// Epoch ticks for a duration, rounded up, plus one so a budget is never cut short.
fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

/// The `panicked at ...` lines a Rust guest prints before it aborts.
fn panic_message(output: &str) -> Option<String> {
    let start = output.find("panicked at")?;
    let text = &output[start..];
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("note:"))
        .take(4)
        .collect();
    Some(lines.join(": ").replace(":: ", ": "))
}

/// Every import must be a granted virtwasm capability of a compatible version or an allowed
/// WASI interface. Returns the import names.
fn check_imports(
    runtime: &Runtime,
    component: &Component,
    grants: &Grants,
    name: &str,
) -> Result<Vec<String>> {
    let ty = component.component_type();
    let mut names = Vec::new();
    for (import, _) in ty.imports(runtime.engine()) {
        names.push(import.to_string());
        let (base, version) = split_version(import);
        if let Some(iface) = base.strip_prefix("virtwasm:plugin/") {
            let version = version.unwrap_or("?");
            if !manifest::semver_compatible(version, manifest::WIT_VERSION) {
                return Err(load_err(
                    name,
                    format!(
                        "built for {}@{version} (it imports {import}), but this host implements {}@{} (compatible: {})",
                        manifest::WIT_PACKAGE,
                        manifest::WIT_PACKAGE,
                        manifest::WIT_VERSION,
                        manifest::compatible_range()
                    ),
                ));
            }
            let granted = match iface {
                "types" | "log" => true,
                "process" => grants.process,
                "unix-socket" => grants.sockets,
                "netdev" => grants.bridges.is_some(),
                _ => false,
            };
            if !granted {
                let hint = match iface {
                    "process" => "grant it with [capabilities] process = { programs = [...] }",
                    "unix-socket" => "grant it with [capabilities] sockets = [\"/path/prefix\"]",
                    "netdev" => "grant it with [capabilities] netdev = { bridges = [\"br0\"] }",
                    _ => "this host has no such capability",
                };
                return Err(load_err(
                    name,
                    format!("imports {import}, which its manifest does not grant ({hint})"),
                ));
            }
        } else if base.starts_with("wasi:sockets/") {
            return Err(load_err(
                name,
                format!(
                    "imports {import}; plugins never get network sockets (use the unix-socket capability)"
                ),
            ));
        } else if !WASI_ALLOWED.contains(&base) {
            return Err(load_err(
                name,
                format!("imports {import}, which this host does not provide"),
            ));
        }
    }
    for (export, _) in ty.exports(runtime.engine()) {
        let (base, version) = split_version(export);
        if base.starts_with("virtwasm:plugin/") {
            let version = version.unwrap_or("?");
            if !manifest::semver_compatible(version, manifest::WIT_VERSION) {
                return Err(load_err(
                    name,
                    format!(
                        "built for {}@{version} (it exports {export}), but this host implements {}@{} (compatible: {})",
                        manifest::WIT_PACKAGE,
                        manifest::WIT_PACKAGE,
                        manifest::WIT_VERSION,
                        manifest::compatible_range()
                    ),
                ));
            }
        }
    }
    Ok(names)
}

/// A linker holding only what this plugin is granted.
fn build_linker(runtime: &Runtime, grants: &Grants) -> wasmtime::Result<Linker<HostState>> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
    use wasmtime_wasi::random::WasiRandom;
    type T = HostState;
    let mut linker = Linker::<T>::new(runtime.engine());
    let l = &mut linker;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    wasmtime_wasi_io_links(l)?;
    virtwasm::plugin::types::add_to_linker::<T, HasSelf<T>>(l, |s| s)?;
    virtwasm::plugin::log::add_to_linker::<T, HasSelf<T>>(l, |s| s)?;
    if grants.process {
        virtwasm::plugin::process::add_to_linker::<T, HasSelf<T>>(l, |s| s)?;
    }
    if grants.sockets {
        virtwasm::plugin::unix_socket::add_to_linker::<T, HasSelf<T>>(l, |s| s)?;
    }
    if grants.bridges.is_some() {
        virtwasm::plugin::netdev::add_to_linker::<T, HasSelf<T>>(l, |s| s)?;
    }
    Ok(linker)
}

fn wasmtime_wasi_io_links(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sync;
    struct HasIo;
    impl wasmtime::component::HasData for HasIo {
        type Data<'a> = &'a mut wasmtime::component::ResourceTable;
    }
    sync::io::error::add_to_linker::<HostState, HasIo>(l, |t| &mut t.table)?;
    sync::io::poll::add_to_linker::<HostState, HasIo>(l, |t| &mut t.table)?;
    sync::io::streams::add_to_linker::<HostState, HasIo>(l, |t| &mut t.table)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_lines_are_extracted() {
        let out = "\nthread '<unnamed>' panicked at src/lib.rs:97:9:\nboom in 'x'\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(out).unwrap(),
            "panicked at src/lib.rs:97:9: boom in 'x'"
        );
        assert!(panic_message("all fine").is_none());
    }

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks(Duration::from_millis(300)), 31);
        assert_eq!(ticks(Duration::from_millis(1)), 1);
    }
}
