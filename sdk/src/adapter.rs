//! Forwards the generated component exports to the driver's [`Hypervisor`](crate::Hypervisor),
//! [`Storage`](crate::Storage) and [`Network`](crate::Network) implementations, so a driver
//! implements only the verbs it supports and the rest answer `unsupported`.

use crate::Adapter;
use crate::bindings::exports::virtwasm::plugin::{hypervisor, network, storage};
use crate::types::*;

impl<T: crate::Hypervisor> hypervisor::Guest for Adapter<T> {
    fn open(path: String, params: Vec<(String, String)>) -> Result<InitialObjects, Error> {
        T::open(path, params)
    }
    fn get_node_info() -> Result<NodeInfo, Error> {
        T::get_node_info()
    }
    fn capabilities() -> Result<DriverCapabilities, Error> {
        T::capabilities()
    }
    fn fill_defaults(def: DomainDef) -> Result<DomainDef, Error> {
        T::fill_defaults(def)
    }
    fn start(dom: DomainRef, paused: bool) -> Result<DomainRuntime, Error> {
        T::start(dom, paused)
    }
    fn shutdown(dom: DomainRef, modes: ShutdownModes) -> Result<DomainRuntime, Error> {
        T::shutdown(dom, modes)
    }
    fn reboot(dom: DomainRef, modes: ShutdownModes) -> Result<DomainRuntime, Error> {
        T::reboot(dom, modes)
    }
    fn reset(dom: DomainRef) -> Result<DomainRuntime, Error> {
        T::reset(dom)
    }
    fn destroy(dom: DomainRef, graceful: bool) -> Result<DomainRuntime, Error> {
        T::destroy(dom, graceful)
    }
    fn suspend(dom: DomainRef) -> Result<DomainRuntime, Error> {
        T::suspend(dom)
    }
    fn resume(dom: DomainRef) -> Result<DomainRuntime, Error> {
        T::resume(dom)
    }
    fn poll(dom: DomainRef) -> Result<DomainRuntime, Error> {
        T::poll(dom)
    }
    fn info(dom: DomainRef) -> Result<DomainInfo, Error> {
        T::info(dom)
    }
    fn stats(dom: DomainRef) -> Result<Vec<(String, StatValue)>, Error> {
        T::stats(dom)
    }
    fn save(dom: DomainRef, path: String) -> Result<DomainRuntime, Error> {
        T::save(dom, path)
    }
    fn restore(
        dom: DomainRef,
        path: String,
        offset: u64,
        paused: bool,
    ) -> Result<DomainRuntime, Error> {
        T::restore(dom, path, offset, paused)
    }
    fn snapshot_create(dom: DomainRef, snapshot: SnapshotDef) -> Result<SnapshotDef, Error> {
        T::snapshot_create(dom, snapshot)
    }
    fn snapshot_revert(dom: DomainRef, snapshot: SnapshotDef) -> Result<DomainRuntime, Error> {
        T::snapshot_revert(dom, snapshot)
    }
    fn snapshot_delete(dom: DomainRef, snapshot: SnapshotDef) -> Result<(), Error> {
        T::snapshot_delete(dom, snapshot)
    }
    fn attach_device(dom: DomainRef, dev: Device) -> Result<DomainRuntime, Error> {
        T::attach_device(dom, dev)
    }
    fn detach_device(dom: DomainRef, dev: Device) -> Result<DomainRuntime, Error> {
        T::detach_device(dom, dev)
    }
    fn set_vcpus(dom: DomainRef, count: u32) -> Result<DomainRuntime, Error> {
        T::set_vcpus(dom, count)
    }
    fn set_memory(dom: DomainRef, kib: u64) -> Result<DomainRuntime, Error> {
        T::set_memory(dom, kib)
    }
    fn open_console(dom: DomainRef, device: Option<String>) -> Result<ConsoleEndpoint, Error> {
        T::open_console(dom, device)
    }
    fn migrate_prepare(dom: DomainRef, listen_address: String) -> Result<MigrationTarget, Error> {
        T::migrate_prepare(dom, listen_address)
    }
    fn migrate_perform(
        dom: DomainRef,
        target_uri: String,
        bandwidth_mib: Option<u64>,
    ) -> Result<(), Error> {
        T::migrate_perform(dom, target_uri, bandwidth_mib)
    }
    fn migrate_progress(dom: DomainRef) -> Result<MigrationProgress, Error> {
        T::migrate_progress(dom)
    }
    fn migrate_cancel(dom: DomainRef) -> Result<(), Error> {
        T::migrate_cancel(dom)
    }
    fn migrate_finish(dom: DomainRef, success: bool) -> Result<DomainRuntime, Error> {
        T::migrate_finish(dom, success)
    }
    fn migrate_confirm(dom: DomainRef, success: bool) -> Result<DomainRuntime, Error> {
        T::migrate_confirm(dom, success)
    }
    fn interface_addresses(dom: DomainRef, source: String) -> Result<Vec<GuestInterface>, Error> {
        T::interface_addresses(dom, source)
    }
}

impl<T: crate::Storage> storage::Guest for Adapter<T> {
    fn pool_build(pool: PoolDef, overwrite: bool) -> Result<(), Error> {
        T::pool_build(pool, overwrite)
    }
    fn pool_start(pool: PoolDef) -> Result<PoolInfo, Error> {
        T::pool_start(pool)
    }
    fn pool_stop(pool: PoolDef) -> Result<(), Error> {
        T::pool_stop(pool)
    }
    fn pool_delete(pool: PoolDef) -> Result<(), Error> {
        T::pool_delete(pool)
    }
    fn pool_refresh(pool: PoolDef, known: Vec<VolumeDef>) -> Result<Vec<VolumeDef>, Error> {
        T::pool_refresh(pool, known)
    }
    fn get_pool_info(pool: PoolDef, volumes: Vec<VolumeDef>) -> Result<PoolInfo, Error> {
        T::get_pool_info(pool, volumes)
    }
    fn vol_create(pool: PoolDef, vol: VolumeDef) -> Result<VolumeDef, Error> {
        T::vol_create(pool, vol)
    }
    fn vol_clone(pool: PoolDef, source: VolumeDef, vol: VolumeDef) -> Result<VolumeDef, Error> {
        T::vol_clone(pool, source, vol)
    }
    fn vol_delete(pool: PoolDef, vol: VolumeDef) -> Result<(), Error> {
        T::vol_delete(pool, vol)
    }
    fn vol_resize(
        pool: PoolDef,
        vol: VolumeDef,
        capacity: u64,
        allow_shrink: bool,
    ) -> Result<VolumeDef, Error> {
        T::vol_resize(pool, vol, capacity, allow_shrink)
    }
    fn vol_wipe(pool: PoolDef, vol: VolumeDef) -> Result<(), Error> {
        T::vol_wipe(pool, vol)
    }
    fn vol_info(pool: PoolDef, vol: VolumeDef) -> Result<VolumeInfo, Error> {
        T::vol_info(pool, vol)
    }
    fn vol_data_path(pool: PoolDef, vol: VolumeDef, writable: bool) -> Result<String, Error> {
        T::vol_data_path(pool, vol, writable)
    }
}

impl<T: crate::Network> network::Guest for Adapter<T> {
    fn net_start(net: NetworkDef) -> Result<(), Error> {
        T::net_start(net)
    }
    fn net_stop(net: NetworkDef) -> Result<(), Error> {
        T::net_stop(net)
    }
    fn net_dhcp_leases(net: NetworkDef) -> Result<Vec<DhcpLease>, Error> {
        T::net_dhcp_leases(net)
    }
}
