//! The dispatch layer: a validated [`Request`] becomes one host call, and its answer a JSON
//! value. It knows nothing of HTTP, so the daemon's HTTP front end, the in-process client
//! and a future libvirt-protocol front end all run the same code.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use virtwasm_host::{Connection, Error, Result, devices};

use crate::ops::{ObjectKind, Request};

fn json(value: impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::internal(format!("cannot encode answer: {e}")))
}

/// What a request may need from whoever runs it.
pub struct Context<'a> {
    /// Whether a client may name a path (save images), and whether it would create it:
    /// the in-process client allows any, the daemon only its images directories and never a
    /// file that exists already.
    pub files: &'a dyn Fn(&str, bool) -> Result<()>,
    /// Whether a client may make `path` a storage pool's directory: any in process; through
    /// the daemon a directory strictly below one clients may name (a pool at the images
    /// directory itself would hand its save images to vol-delete and vol-upload).
    pub pool_dirs: &'a dyn Fn(&str) -> Result<()>,
    /// Whether a guest's display may listen on an address (a VNC or SPICE server open to
    /// whoever reaches it): any in process; through the daemon those its `[displays]`
    /// section allows, loopback by default.
    pub displays: &'a dyn Fn(&str) -> Result<()>,
    /// Where long work reports progress (done, total); an error stops the work (a cancel).
    pub progress: &'a dyn Fn(u64, u64) -> Result<()>,
    /// Ask the driver for a running domain's true state before answering a read. In
    /// process, yes (nothing else watches); the daemon polls every running domain once a
    /// second anyway, so its reads skip the extra plugin call.
    pub refresh_on_read: bool,
}

impl Context<'static> {
    /// No restriction on paths, progress unheard: the in-process client's.
    pub fn local() -> Context<'static> {
        Context {
            files: &|_, _| Ok(()),
            pool_dirs: &|_| Ok(()),
            displays: &|_| Ok(()),
            progress: &|_, _| Ok(()),
            refresh_on_read: true,
        }
    }
}

/// A domain definition must ask only for what the front end allows: the host paths it names
/// (disks, kernel, character devices) must be ones clients may name, when the driver can
/// reach the host's files at all (through programs it runs or directories it is granted),
/// so a definition cannot make the daemon open /etc/shadow as a disk or truncate a file as a
/// serial log; and its displays must listen where displays may. XML that does not parse is
/// left for the verb to refuse with its position. A driver neither rule applies to (the test
/// driver) has its defines stay one parse.
fn definition_allowed(conn: &Connection, xml: &str, ctx: &Context) -> Result<()> {
    if !reaches_files(conn) && !conn.plugin().manifest.plugin.graphics_ports {
        return Ok(());
    }
    let Ok(parsed) = virtwasm_host::xml::parse_domain(xml) else {
        return Ok(());
    };
    paths_allowed(conn, || Ok(devices::host_paths(&parsed.def)), ctx.files)?;
    displays_allowed(conn, &parsed.def, ctx.displays)
}

/// Whether a driver can open host files at all: through programs it runs or directories it
/// is granted.
fn reaches_files(conn: &Connection) -> bool {
    let grants = conn.plugin().grants();
    grants.process || !grants.files.is_empty()
}

/// The addresses `def`'s VNC and SPICE displays listen on must be ones displays may, for a
/// driver whose guests really listen (`graphics-ports`); a display without one listens on
/// the host's default, loopback.
fn displays_allowed(
    conn: &Connection,
    def: &virtwasm_host::bindings::types::DomainDef,
    displays: &dyn Fn(&str) -> Result<()>,
) -> Result<()> {
    if !conn.plugin().manifest.plugin.graphics_ports {
        return Ok(());
    }
    for g in def
        .graphics
        .iter()
        .filter(|g| matches!(g.graphics_type.as_str(), "vnc" | "spice"))
    {
        let listen = g
            .listen
            .as_deref()
            .unwrap_or(virtwasm_host::graphics::DEFAULT_LISTEN);
        displays(listen).map_err(|e| {
            Error::new(
                e.kind,
                format!("{} display: {}", g.graphics_type, e.message),
            )
        })?;
    }
    Ok(())
}

/// Checks the paths `paths` lists, computing them (a parse, a lookup) only for a driver that
/// can open host files: one that runs programs or has directories. The test driver's paths
/// are make-believe, and its defines stay one parse.
fn paths_allowed(
    conn: &Connection,
    paths: impl FnOnce() -> Result<Vec<devices::HostPath>>,
    files: &dyn Fn(&str, bool) -> Result<()>,
) -> Result<()> {
    if !reaches_files(conn) {
        return Ok(());
    }
    for p in paths()? {
        files(&p.path, false)
            .map_err(|e| Error::new(e.kind, format!("{}: {}", p.what, e.message)))?;
        if p.image {
            backing_chain_allowed(&p.what, &p.path, files)?;
        }
    }
    Ok(())
}

/// How many backing files a disk's chain may have before the check stops following it.
const MAX_CHAIN: usize = 16;

/// The files a disk image's backing chain names must be ones clients may name too: QEMU
/// opens the whole chain, so a qcow2 whose header names /etc/shadow would hand it to the
/// guest. Each link is read with `qemu-img info` of that one file, which does not open its
/// backing file, so nothing outside is opened here either. A disk that is no image file (a
/// block device, a raw file) has no chain.
fn backing_chain_allowed(
    what: &str,
    path: &str,
    files: &dyn Fn(&str, bool) -> Result<()>,
) -> Result<()> {
    let mut current = path.to_string();
    for _ in 0..MAX_CHAIN {
        if !Path::new(&current).is_file() {
            return Ok(());
        }
        let out = std::process::Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(&current)
            .output()
            .map_err(|e| {
                Error::failed(format!(
                    "{what}: cannot read the backing chain of '{current}' (qemu-img: {e})"
                ))
            })?;
        if !out.status.success() {
            // Not an image qemu-img reads: the driver's start will say what is wrong with it.
            return Ok(());
        }
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let Some(backing) = info
            .get("full-backing-filename")
            .or_else(|| info.get("backing-filename"))
            .and_then(Value::as_str)
        else {
            return Ok(());
        };
        files(backing, false).map_err(|e| {
            Error::new(
                e.kind,
                format!(
                    "{what}: '{current}' is backed by '{backing}': {}",
                    e.message
                ),
            )
        })?;
        current = backing.to_string();
    }
    Err(Error::invalid(format!(
        "{what}: '{path}' has more than {MAX_CHAIN} backing files"
    )))
}

/// A pool whose storage driver will be given its target directory must name a directory
/// the front end lets clients name (a pool at /etc would hand /etc to the driver).
fn pool_target_allowed(
    conn: &Connection,
    def: &virtwasm_host::bindings::types::PoolDef,
    pool_dirs: &dyn Fn(&str) -> Result<()>,
) -> Result<()> {
    match conn.pool_driver(def)?.dir {
        Some(dir) => pool_dirs(&dir.to_string_lossy()).map_err(|e| {
            Error::new(
                e.kind,
                format!("storage pool '{}': {}", def.name, e.message),
            )
        }),
        None => Ok(()),
    }
}

/// Runs `req` on `conn`.
pub fn dispatch(conn: &Connection, req: Request, ctx: &Context) -> Result<Value> {
    let files = ctx.files;
    use Request as R;
    match req {
        R::NodeInfo => json(conn.node_info()?),
        R::Capabilities => json(conn.capabilities()?),
        R::DriverVersion => json(conn.driver_version()),
        R::ListPlugins => Err(Error::internal(
            "list-plugins is answered by the front end, which owns the registry",
        )),
        // Reads of state first ask the driver whether a guest changed by itself.
        R::ListDomains => {
            if ctx.refresh_on_read {
                conn.refresh_active();
            }
            json(conn.list_domains())
        }
        R::Domain { key } => {
            if ctx.refresh_on_read {
                conn.refresh(&key)?;
            }
            json(conn.domain(&key)?)
        }
        R::DomainInfo { key } => {
            if ctx.refresh_on_read {
                conn.refresh(&key)?;
            }
            json(conn.domain_info(&key)?)
        }
        R::DomainStats { key } => json(conn.domain_stats(&key)?),
        R::InterfaceAddresses { key, source } => json(conn.interface_addresses(&key, &source)?),
        R::DomainXml { key, inactive } => json(conn.domain_xml(&key, inactive)?),
        R::DefineXml { xml, validate } => {
            definition_allowed(conn, &xml, ctx)?;
            json(conn.define_xml(&xml, validate)?)
        }
        R::CreateXml {
            xml,
            validate,
            paused,
        } => {
            definition_allowed(conn, &xml, ctx)?;
            json(conn.create_xml(&xml, validate, paused)?)
        }
        R::Undefine {
            key,
            snapshots,
            managed_save,
        } => json(conn.undefine_with(&key, snapshots, managed_save)?),
        R::Start { key, paused } => {
            // Checked again at start: an image's backing file can change after the define,
            // and the daemon's rules with a restart.
            let def = conn.domain(&key)?.def;
            paths_allowed(conn, || Ok(devices::host_paths(&def)), files)?;
            displays_allowed(conn, &def, ctx.displays)?;
            json(conn.start(&key, paused)?)
        }
        R::Shutdown { key, modes } => json(conn.shutdown(&key, modes.unwrap_or_default())?),
        R::Reboot { key, modes } => json(conn.reboot(&key, modes.unwrap_or_default())?),
        R::Reset { key } => json(conn.reset(&key)?),
        R::Destroy { key, graceful } => json(conn.destroy(&key, graceful)?),
        R::Suspend { key } => json(conn.suspend(&key)?),
        R::Resume { key } => json(conn.resume(&key)?),
        R::SetAutostart { key, on } => json(conn.set_autostart(&key, on)?),
        R::VcpuCount { key } => json(conn.vcpu_count(&key)?),
        R::SetVcpus {
            key,
            count,
            scope,
            maximum,
        } => json(conn.set_vcpus(&key, count, scope, maximum)?),
        R::SetMemory { key, kib, scope } => json(conn.set_memory(&key, kib, scope)?),
        R::SetMaxMemory { key, kib, scope } => json(conn.set_max_memory(&key, kib, scope)?),
        R::AttachDevice { key, device, scope } => {
            paths_allowed(conn, || Ok(devices::device_paths(&device)), files)?;
            json(conn.attach_device(&key, device, scope)?)
        }
        R::DetachDevice {
            key,
            selector,
            scope,
        } => json(conn.detach_device(&key, &selector, scope)?),
        R::SnapshotCreate {
            key,
            name,
            description,
        } => json(conn.snapshot_create(&key, name.as_deref(), description.as_deref())?),
        R::Snapshots { key } => json(conn.snapshots(&key)?),
        R::SnapshotRevert { key, name } => json(conn.snapshot_revert(&key, &name)?),
        R::SnapshotDelete { key, name } => json(conn.snapshot_delete(&key, &name)?),
        R::Save { key, path } => {
            files(&path, true)?;
            json(conn.save(&key, Path::new(&path))?)
        }
        R::Restore { path, paused } => {
            files(&path, false)?;
            // The image's definition is input too: a crafted image must not name other files.
            let (xml, _) = virtwasm_host::savefile::read_header(Path::new(&path))?;
            definition_allowed(conn, &xml, ctx)?;
            // Restored only if it still holds what was checked (no swap in between).
            json(conn.restore_checked(Path::new(&path), paused, &xml)?)
        }
        R::ManagedSave { key } => json(conn.managed_save(&key)?),
        R::ManagedSaveRemove { key } => json(conn.managed_save_remove(&key)?),
        R::ListPools => json(conn.list_pools()?),
        R::Pool { key } => json(conn.pool(&key)?),
        R::PoolXml { key } => json(conn.pool_xml(&key)?),
        R::PoolDefineXml { xml, validate } => {
            let parsed = Connection::parse_pool_xml(&xml, validate)?;
            pool_target_allowed(conn, &parsed.def, ctx.pool_dirs)?;
            json(conn.pool_define(parsed.def, parsed.extras)?)
        }
        R::PoolDefine { def, extras } => {
            pool_target_allowed(conn, &def, ctx.pool_dirs)?;
            json(conn.pool_define(def, extras)?)
        }
        R::PoolCreate { def, extras, build } => {
            pool_target_allowed(conn, &def, ctx.pool_dirs)?;
            json(conn.pool_create_with(def, extras, build)?)
        }
        R::PoolBuild { key, overwrite } => json(conn.pool_build(&key, overwrite)?),
        R::PoolStart { key } => json(conn.pool_start(&key)?),
        R::PoolDestroy { key } => json(conn.pool_destroy(&key)?),
        R::PoolDelete { key } => json(conn.pool_delete(&key)?),
        R::PoolUndefine { key } => json(conn.pool_undefine(&key)?),
        R::PoolRefresh { key } => json(conn.pool_refresh(&key)?),
        R::PoolSetAutostart { key, on } => json(conn.pool_set_autostart(&key, on)?),
        R::ListVolumes { pool } => json(conn.list_volumes(&pool)?),
        R::Volume { key, pool } => json(conn.volume(&key, pool.as_deref())?),
        R::VolCreate { pool, vol } => json(conn.vol_create(&pool, vol)?),
        R::VolCreateXml {
            pool,
            xml,
            validate,
        } => json(conn.vol_create_xml(&pool, &xml, validate)?),
        R::VolClone { key, name, pool } => json(conn.vol_clone(&key, &name, pool.as_deref())?),
        R::VolDelete { key, pool } => json(conn.vol_delete(&key, pool.as_deref())?),
        R::VolResize {
            key,
            pool,
            capacity,
            allow_shrink,
        } => json(conn.vol_resize(&key, pool.as_deref(), capacity, allow_shrink)?),
        R::VolWipe { key, pool } => json(conn.vol_wipe(&key, pool.as_deref())?),
        R::VolInfo { key, pool } => json(conn.vol_info(&key, pool.as_deref())?),
        R::VolXml { key, pool } => json(conn.vol_xml(&key, pool.as_deref())?),
        R::ListNetworks => json(conn.list_networks()),
        R::Network { key } => json(conn.network(&key)?),
        R::NetworkXml { key, inactive } => json(conn.network_xml(&key, inactive)?),
        R::NetworkDefineXml { xml, validate } => json(conn.network_define_xml(&xml, validate)?),
        R::NetworkCreateXml { xml, validate } => json(conn.network_create_xml(&xml, validate)?),
        R::NetworkStart { key } => json(conn.network_start(&key)?),
        R::NetworkDestroy { key } => json(conn.network_destroy(&key)?),
        R::NetworkUndefine { key } => json(conn.network_undefine(&key)?),
        R::NetworkSetAutostart { key, on } => json(conn.network_set_autostart(&key, on)?),
        R::NetworkUpdate {
            key,
            command,
            section,
            xml,
            parent_index,
            live,
            config,
        } => {
            json(conn.network_update(&key, &command, &section, &xml, parent_index, live, config)?)
        }
        R::NetworkDhcpLeases { key } => json(conn.network_dhcp_leases(&key)?),
        R::Migrate {
            key,
            dest,
            offline,
            bandwidth_mib,
        } => json(crate::migrate::migrate(
            conn,
            &key,
            &dest,
            offline,
            bandwidth_mib,
            ctx,
        )?),
        R::MigratePrepare { xml, listen } => {
            definition_allowed(conn, &xml, ctx)?;
            let (name, uri) = conn.migrate_prepare(&xml, &listen)?;
            json(serde_json::json!({ "name": name, "uri": uri }))
        }
        R::MigrateFinish { key, success } => json(conn.migrate_finish(&key, success)?),
    }
}

/// The object a request acts on, by name, for access rules: a key given as a uuid or id is
/// resolved, so a rule on `web-*` cannot be dodged by naming the domain by its uuid. `None`
/// for operations on the host or on no existing object (define, create, list); those are
/// checked against the kind alone.
pub fn target_name(conn: &Connection, req: &Request) -> Result<Option<String>> {
    use Request as R;
    let kind = req.route().object;
    let key = match req {
        R::ListVolumes { pool } | R::VolCreate { pool, .. } | R::VolCreateXml { pool, .. } => {
            return Ok(Some(conn.pool(pool)?.record.def.name));
        }
        R::Volume { key, pool }
        | R::VolClone { key, pool, .. }
        | R::VolDelete { key, pool }
        | R::VolResize { key, pool, .. }
        | R::VolWipe { key, pool }
        | R::VolInfo { key, pool }
        | R::VolXml { key, pool } => {
            let (_, vol) = conn.volume(key, pool.as_deref())?;
            return Ok(Some(vol.name));
        }
        R::PoolDefine { def, .. } | R::PoolCreate { def, .. } => {
            return Ok(Some(def.name.clone()));
        }
        other => find_key(other),
    };
    let Some(key) = key else {
        return Ok(None);
    };
    Ok(Some(match kind {
        ObjectKind::Domain => conn.domain(key)?.def.name,
        ObjectKind::Pool => conn.pool(key)?.record.def.name,
        ObjectKind::Network => conn.network(key)?.def.name,
        ObjectKind::Volume | ObjectKind::Node => key.to_string(),
    }))
}

fn find_key(req: &Request) -> Option<&str> {
    use Request as R;
    match req {
        R::Domain { key }
        | R::DomainInfo { key }
        | R::DomainStats { key }
        | R::InterfaceAddresses { key, .. }
        | R::DomainXml { key, .. }
        | R::Undefine { key, .. }
        | R::Start { key, .. }
        | R::Shutdown { key, .. }
        | R::Reboot { key, .. }
        | R::Reset { key }
        | R::Destroy { key, .. }
        | R::Suspend { key }
        | R::Resume { key }
        | R::SetAutostart { key, .. }
        | R::VcpuCount { key }
        | R::SetVcpus { key, .. }
        | R::SetMemory { key, .. }
        | R::SetMaxMemory { key, .. }
        | R::AttachDevice { key, .. }
        | R::DetachDevice { key, .. }
        | R::SnapshotCreate { key, .. }
        | R::Snapshots { key }
        | R::SnapshotRevert { key, .. }
        | R::SnapshotDelete { key, .. }
        | R::Save { key, .. }
        | R::ManagedSave { key }
        | R::ManagedSaveRemove { key }
        | R::Pool { key }
        | R::PoolXml { key }
        | R::PoolBuild { key, .. }
        | R::PoolStart { key }
        | R::PoolDestroy { key }
        | R::PoolDelete { key }
        | R::PoolUndefine { key }
        | R::PoolRefresh { key }
        | R::PoolSetAutostart { key, .. }
        | R::Network { key }
        | R::NetworkXml { key, .. }
        | R::NetworkStart { key }
        | R::NetworkDestroy { key }
        | R::NetworkUndefine { key }
        | R::NetworkSetAutostart { key, .. }
        | R::NetworkUpdate { key, .. }
        | R::NetworkDhcpLeases { key }
        | R::Migrate { key, .. }
        | R::MigrateFinish { key, .. } => Some(key),
        _ => None,
    }
}
