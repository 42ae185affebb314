//! # virtwasm-sdk: write virtwasm driver plugins
//!
//! A virtwasm driver is a WebAssembly component built for `wasm32-wasip2`. It is pure logic:
//! the host owns every definition and runtime record and hands a verb what it needs, and the
//! driver reaches the system only through the host capabilities its manifest grants
//! ([`host::process`], [`host::unix_socket`], files through WASI preopens).
//!
//! Implement [`Hypervisor`], [`Storage`] and [`Network`] for one type (every verb has a
//! default that answers `unsupported`, so implement only what your backend does), then call
//! [`export_driver!`]. This is `plugins/example/src/lib.rs` from the repository, a complete
//! driver that the build compiles and the test suite loads:
//!
//! ```ignore
//! use virtwasm_sdk::types::*;
//! use virtwasm_sdk::{Hypervisor, Network, Storage, VerbResult, error, export_driver, log};
//!
//! struct Example;
//!
//! fn now(state: DomainState) -> VerbResult<DomainRuntime> {
//!     Ok(DomainRuntime {
//!         state,
//!         driver_data: String::new(),
//!     })
//! }
//!
//! fn state_of(dom: &DomainRef) -> DomainState {
//!     dom.runtime
//!         .as_ref()
//!         .map(|r| r.state)
//!         .unwrap_or(DomainState::Shutoff(ShutoffReason::Unknown))
//! }
//!
//! impl Hypervisor for Example {
//!     fn open(_path: String, _params: Vec<(String, String)>) -> VerbResult<InitialObjects> {
//!         Ok(InitialObjects {
//!             domains: vec![],
//!             pools: vec![],
//!             networks: vec![],
//!         })
//!     }
//!
//!     fn start(dom: DomainRef, paused: bool) -> VerbResult<DomainRuntime> {
//!         log::info(&format!("starting {}", dom.def.name));
//!         now(if paused {
//!             DomainState::Paused(PausedReason::User)
//!         } else {
//!             DomainState::Running(RunningReason::Booted)
//!         })
//!     }
//!
//!     fn shutdown(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
//!         match state_of(&dom) {
//!             DomainState::Running(_) => now(DomainState::Shutoff(ShutoffReason::Shutdown)),
//!             _ => Err(error(ErrorKind::InvalidState, "domain is not running")),
//!         }
//!     }
//!
//!     fn destroy(_dom: DomainRef, _graceful: bool) -> VerbResult<DomainRuntime> {
//!         now(DomainState::Shutoff(ShutoffReason::Destroyed))
//!     }
//!
//!     fn suspend(dom: DomainRef) -> VerbResult<DomainRuntime> {
//!         match state_of(&dom) {
//!             DomainState::Running(_) => now(DomainState::Paused(PausedReason::User)),
//!             _ => Err(error(ErrorKind::InvalidState, "domain is not running")),
//!         }
//!     }
//!
//!     fn resume(dom: DomainRef) -> VerbResult<DomainRuntime> {
//!         match state_of(&dom) {
//!             DomainState::Paused(_) => now(DomainState::Running(RunningReason::Unpaused)),
//!             _ => Err(error(ErrorKind::InvalidState, "domain is not paused")),
//!         }
//!     }
//! }
//!
//! impl Storage for Example {}
//! impl Network for Example {}
//!
//! export_driver!(Example);
//! ```
//!
//! `plugins/test` (libvirt's `test:///default`) is a fuller one.
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and put the `.wasm` next to a
//! `plugin.toml` manifest in the host's plugin directory (see the repository's
//! `docs/plugins.md`).

#![allow(clippy::too_many_arguments)]

/// The bindings wit-bindgen generates from `wit/` (world `full-driver`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "full-driver",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "virtwasm_sdk::bindings",
    });
}

/// The shared model: definitions, states, errors (WIT interface `virtwasm:plugin/types`).
pub mod types {
    pub use crate::bindings::exports::virtwasm::plugin::hypervisor::{
        ConsoleEndpoint, DriverCapabilities, GuestCapability, GuestInterface, InterfaceAddress,
        MigrationProgress, MigrationTarget, StatValue,
    };
    pub use crate::bindings::virtwasm::plugin::types::*;
}

/// The host capabilities a plugin may import, each checked against its manifest.
pub mod host {
    pub use crate::bindings::virtwasm::plugin::log;
    pub use crate::bindings::virtwasm::plugin::netdev;
    pub use crate::bindings::virtwasm::plugin::process;
    pub use crate::bindings::virtwasm::plugin::unix_socket;
}

use types::*;

/// Runs `program` (through the host's `process` capability) to completion and returns its
/// stdout; an exit other than 0 is an `operation-failed` error carrying the program's own
/// stderr, as `PROGRAM ARGS: what it said`, so the user reads the real cause.
pub fn run_checked(program: &str, args: &[&str], timeout_ms: u32) -> VerbResult<Vec<u8>> {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = host::process::run(program, &owned, &[], timeout_ms)?;
    if out.status.code == Some(0) {
        return Ok(out.stdout);
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(error(
        ErrorKind::OperationFailed,
        format!("{program} {}: {said}", args.join(" ")),
    ))
}

/// Builds an [`Error`] of `kind` with `message`.
pub fn error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error {
        kind,
        message: message.into(),
    }
}

/// The answer of a verb the driver does not implement at all (the traits' defaults). The host
/// remembers it for the loaded plugin and answers later calls itself; a driver that refuses
/// only some inputs uses [`unsupported`] instead.
fn not_implemented(verb: &str) -> Error {
    error(
        ErrorKind::Unsupported,
        format!("this driver does not implement '{verb}'"),
    )
}

/// The error a verb returns when this driver does not support what it was asked.
pub fn unsupported(verb: &str) -> Error {
    error(
        ErrorKind::Unsupported,
        format!("this driver does not support '{verb}'"),
    )
}

/// Logging through the host's `log` capability, tagged by the host with the plugin's name.
pub mod log {
    use crate::bindings::virtwasm::plugin::log::{Level, log};
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Shorthand for a verb's result.
pub type VerbResult<T> = Result<T, Error>;

/// The hypervisor verbs (WIT interface `virtwasm:plugin/hypervisor`). Every method defaults to
/// `unsupported`; see the WIT file for what each one must do.
#[allow(unused_variables)]
pub trait Hypervisor {
    /// Connects to the backend; returns the objects the connection starts with.
    fn open(path: String, params: Vec<(String, String)>) -> VerbResult<InitialObjects> {
        Err(not_implemented("open"))
    }
    /// Host numbers behind `nodeinfo`.
    fn get_node_info() -> VerbResult<NodeInfo> {
        Err(not_implemented("node-info"))
    }
    /// What guests this driver runs.
    fn capabilities() -> VerbResult<DriverCapabilities> {
        Err(not_implemented("capabilities"))
    }
    /// Checks a definition and fills the driver's defaults. The default accepts it unchanged.
    fn fill_defaults(def: DomainDef) -> VerbResult<DomainDef> {
        Ok(def)
    }
    /// Starts an inactive domain.
    fn start(dom: DomainRef, paused: bool) -> VerbResult<DomainRuntime> {
        Err(not_implemented("start"))
    }
    /// Asks the guest to shut down.
    fn shutdown(dom: DomainRef, modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        Err(not_implemented("shutdown"))
    }
    /// Asks the guest to reboot.
    fn reboot(dom: DomainRef, modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        Err(not_implemented("reboot"))
    }
    /// Resets the virtual hardware.
    fn reset(dom: DomainRef) -> VerbResult<DomainRuntime> {
        Err(not_implemented("reset"))
    }
    /// Stops the domain at once.
    fn destroy(dom: DomainRef, graceful: bool) -> VerbResult<DomainRuntime> {
        Err(not_implemented("destroy"))
    }
    /// Pauses the virtual CPUs.
    fn suspend(dom: DomainRef) -> VerbResult<DomainRuntime> {
        Err(not_implemented("suspend"))
    }
    /// Resumes the virtual CPUs.
    fn resume(dom: DomainRef) -> VerbResult<DomainRuntime> {
        Err(not_implemented("resume"))
    }
    /// Refreshes the runtime record from the backend. The default trusts the host's record.
    fn poll(dom: DomainRef) -> VerbResult<DomainRuntime> {
        dom.runtime
            .ok_or_else(|| error(ErrorKind::InvalidState, "domain is not running"))
    }
    /// Numbers behind `dominfo`.
    fn info(dom: DomainRef) -> VerbResult<DomainInfo> {
        Err(not_implemented("info"))
    }
    /// Statistics behind `domstats`.
    fn stats(dom: DomainRef) -> VerbResult<Vec<(String, StatValue)>> {
        Err(not_implemented("stats"))
    }
    /// The guest's interfaces and addresses, from `source` (`lease`, `agent`, `arp`).
    fn interface_addresses(dom: DomainRef, source: String) -> VerbResult<Vec<GuestInterface>> {
        Err(not_implemented("interface-addresses"))
    }
    /// Saves memory to `path` and stops.
    fn save(dom: DomainRef, path: String) -> VerbResult<DomainRuntime> {
        Err(not_implemented("save"))
    }
    /// Starts from memory saved at `path`.
    fn restore(
        dom: DomainRef,
        path: String,
        offset: u64,
        paused: bool,
    ) -> VerbResult<DomainRuntime> {
        Err(not_implemented("restore"))
    }
    /// Takes a snapshot.
    fn snapshot_create(dom: DomainRef, snapshot: SnapshotDef) -> VerbResult<SnapshotDef> {
        Err(not_implemented("snapshot-create"))
    }
    /// Reverts to a snapshot.
    fn snapshot_revert(dom: DomainRef, snapshot: SnapshotDef) -> VerbResult<DomainRuntime> {
        Err(not_implemented("snapshot-revert"))
    }
    /// Deletes a snapshot's data.
    fn snapshot_delete(dom: DomainRef, snapshot: SnapshotDef) -> VerbResult<()> {
        Err(not_implemented("snapshot-delete"))
    }
    /// Hot-plugs a device.
    fn attach_device(dom: DomainRef, dev: Device) -> VerbResult<DomainRuntime> {
        Err(not_implemented("attach-device"))
    }
    /// Hot-unplugs a device.
    fn detach_device(dom: DomainRef, dev: Device) -> VerbResult<DomainRuntime> {
        Err(not_implemented("detach-device"))
    }
    /// Changes live vCPUs.
    fn set_vcpus(dom: DomainRef, count: u32) -> VerbResult<DomainRuntime> {
        Err(not_implemented("set-vcpus"))
    }
    /// Changes live memory.
    fn set_memory(dom: DomainRef, kib: u64) -> VerbResult<DomainRuntime> {
        Err(not_implemented("set-memory"))
    }
    /// Where the console is.
    fn open_console(dom: DomainRef, device: Option<String>) -> VerbResult<ConsoleEndpoint> {
        Err(not_implemented("open-console"))
    }
    /// Destination: prepares an incoming guest.
    fn migrate_prepare(dom: DomainRef, listen_address: String) -> VerbResult<MigrationTarget> {
        Err(not_implemented("migrate-prepare"))
    }
    /// Source: starts sending.
    fn migrate_perform(
        dom: DomainRef,
        target_uri: String,
        bandwidth_mib: Option<u64>,
    ) -> VerbResult<()> {
        Err(not_implemented("migrate-perform"))
    }
    /// Source: progress.
    fn migrate_progress(dom: DomainRef) -> VerbResult<MigrationProgress> {
        Err(not_implemented("migrate-progress"))
    }
    /// Source: cancels.
    fn migrate_cancel(dom: DomainRef) -> VerbResult<()> {
        Err(not_implemented("migrate-cancel"))
    }
    /// Destination: resumes or tears down.
    fn migrate_finish(dom: DomainRef, success: bool) -> VerbResult<DomainRuntime> {
        Err(not_implemented("migrate-finish"))
    }
    /// Source: stops or resumes.
    fn migrate_confirm(dom: DomainRef, success: bool) -> VerbResult<DomainRuntime> {
        Err(not_implemented("migrate-confirm"))
    }
}

/// The storage verbs (WIT interface `virtwasm:plugin/storage`), all `unsupported` by default.
#[allow(unused_variables)]
pub trait Storage {
    /// Creates the pool's underlying storage.
    fn pool_build(pool: PoolDef, overwrite: bool) -> VerbResult<()> {
        Err(not_implemented("pool-build"))
    }
    /// Activates a pool.
    fn pool_start(pool: PoolDef) -> VerbResult<PoolInfo> {
        Err(not_implemented("pool-start"))
    }
    /// Deactivates a pool.
    fn pool_stop(pool: PoolDef) -> VerbResult<()> {
        Err(not_implemented("pool-stop"))
    }
    /// Destroys the pool's storage.
    fn pool_delete(pool: PoolDef) -> VerbResult<()> {
        Err(not_implemented("pool-delete"))
    }
    /// Lists the backend's volumes.
    fn pool_refresh(pool: PoolDef, known: Vec<VolumeDef>) -> VerbResult<Vec<VolumeDef>> {
        Err(not_implemented("pool-refresh"))
    }
    /// Numbers behind `pool-info`.
    fn get_pool_info(pool: PoolDef, volumes: Vec<VolumeDef>) -> VerbResult<PoolInfo> {
        Err(not_implemented("pool-info"))
    }
    /// Creates a volume.
    fn vol_create(pool: PoolDef, vol: VolumeDef) -> VerbResult<VolumeDef> {
        Err(not_implemented("vol-create"))
    }
    /// Copies a volume.
    fn vol_clone(pool: PoolDef, source: VolumeDef, vol: VolumeDef) -> VerbResult<VolumeDef> {
        Err(not_implemented("vol-clone"))
    }
    /// Deletes a volume.
    fn vol_delete(pool: PoolDef, vol: VolumeDef) -> VerbResult<()> {
        Err(not_implemented("vol-delete"))
    }
    /// Resizes a volume.
    fn vol_resize(
        pool: PoolDef,
        vol: VolumeDef,
        capacity: u64,
        allow_shrink: bool,
    ) -> VerbResult<VolumeDef> {
        Err(not_implemented("vol-resize"))
    }
    /// Zeroes a volume.
    fn vol_wipe(pool: PoolDef, vol: VolumeDef) -> VerbResult<()> {
        Err(not_implemented("vol-wipe"))
    }
    /// Numbers behind `vol-info`.
    fn vol_info(pool: PoolDef, vol: VolumeDef) -> VerbResult<VolumeInfo> {
        Err(not_implemented("vol-info"))
    }
    /// Where the volume's bytes are, for the host to stream.
    fn vol_data_path(pool: PoolDef, vol: VolumeDef, writable: bool) -> VerbResult<String> {
        Err(not_implemented("vol-data-path"))
    }
}

/// The network verbs (WIT interface `virtwasm:plugin/network`), all `unsupported` by default.
#[allow(unused_variables)]
pub trait Network {
    /// Brings a network up.
    fn net_start(net: NetworkDef) -> VerbResult<()> {
        Err(not_implemented("net-start"))
    }
    /// Takes a network down.
    fn net_stop(net: NetworkDef) -> VerbResult<()> {
        Err(not_implemented("net-stop"))
    }
    /// Current DHCP leases.
    fn net_dhcp_leases(net: NetworkDef) -> VerbResult<Vec<DhcpLease>> {
        Err(not_implemented("net-dhcp-leases"))
    }
}

/// Connects a driver type to the component's exports. Use [`export_driver!`] instead.
#[doc(hidden)]
pub struct Adapter<T>(core::marker::PhantomData<T>);

mod adapter;

/// Exports `$driver` (which implements [`Hypervisor`], [`Storage`] and [`Network`]) as the
/// plugin's component exports.
#[macro_export]
macro_rules! export_driver {
    ($driver:ty) => {
        type __VirtwasmExportedDriver = $crate::Adapter<$driver>;
        $crate::bindings::export!(__VirtwasmExportedDriver with_types_in $crate::bindings);
    };
}
