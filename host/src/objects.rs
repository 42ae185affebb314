//! Storage pools, volumes and networks on a [`Connection`]: their definitions and
//! lifecycle. As for domains, the host keeps every record and checks the state machine; the
//! driver does the backend work (a directory, a bridge, dnsmasq).

use crate::bindings::types::{NetworkDef, PoolDef, PoolInfo, PoolState, VolumeDef, VolumeInfo};
use crate::connect::Connection;
use crate::domain::validate_object_name;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, ObjectEvent};
use crate::state::{NetworkRecord, PoolRecord};
use crate::xml::{self, FormatOptions, ParseOptions};

/// A volume's data, opened by [`Connection::vol_open`].
#[derive(Debug)]
pub struct VolumeData {
    /// The open file (read for a download, write for an upload).
    pub file: std::fs::File,
    /// Where it is.
    pub path: std::path::PathBuf,
    /// The volume's name.
    pub name: String,
    /// The volume's capacity, bytes.
    pub capacity: u64,
    /// The file's current length, bytes.
    pub len: u64,
}

/// Copies `src` to `dst` in 1 MiB chunks, telling `progress` the bytes done of `total`
/// after each; `to` names the destination in errors. Syncs the destination at the end.
pub fn copy_data(
    mut src: impl std::io::Read,
    mut dst: std::fs::File,
    to: &std::path::Path,
    total: u64,
    progress: &mut dyn FnMut(u64, u64) -> Result<()>,
) -> Result<u64> {
    use std::io::Write;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::failed(format!(
                    "cannot read data for '{}': {e}",
                    to.display()
                )));
            }
        };
        dst.write_all(&buf[..n])
            .map_err(|e| Error::io("cannot write", to, e))?;
        done += n as u64;
        progress(done, total)?;
    }
    dst.sync_all()
        .map_err(|e| Error::io("cannot sync", to, e))?;
    Ok(done)
}

/// A pool with its current numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    /// The record.
    pub record: PoolRecord,
    /// Fresh numbers from the driver when active.
    pub info: PoolInfo,
}

fn pool_not_found(key: &str) -> Error {
    Error::not_found(format!(
        "Storage pool not found: no storage pool with matching name '{key}'"
    ))
}

fn network_not_found(key: &str) -> Error {
    Error::not_found(format!(
        "Network not found: no network with matching name '{key}'"
    ))
}

fn vol_not_found(key: &str) -> Error {
    Error::not_found(format!(
        "Storage volume not found: no storage vol with matching path '{key}'"
    ))
}

const INACTIVE: PoolInfo = PoolInfo {
    state: PoolState::Inactive,
    capacity: 0,
    allocation: 0,
    available: 0,
};

impl Connection {
    fn pool_record(&self, key: &str) -> Result<PoolRecord> {
        let o = self.state.objects();
        let uuid = crate::domain::canonical_uuid(key);
        o.pools
            .values()
            .find(|p| p.def.name == key || Some(&p.def.uuid) == uuid.as_ref())
            .cloned()
            .ok_or_else(|| pool_not_found(key))
    }

    /// Takes `pool`'s job lock, then reads its record again under it.
    fn locked_pool(
        &self,
        key: &str,
        job: &str,
    ) -> Result<(crate::state::JobGuard<'_>, PoolRecord)> {
        let first = self.pool_record(key)?;
        let guard = self.state.jobs.acquire(
            &format!("pool:{}", first.def.uuid),
            &first.def.name,
            job,
            self.job_timeout,
        )?;
        let rec = self.pool_record(&first.def.uuid)?;
        Ok((guard, rec))
    }

    /// Takes `network`'s job lock, then reads its record again under it.
    fn locked_network(
        &self,
        key: &str,
        job: &str,
    ) -> Result<(crate::state::JobGuard<'_>, NetworkRecord)> {
        let first = self.network(key)?;
        let guard = self.state.jobs.acquire(
            &format!("net:{}", first.def.uuid),
            &first.def.name,
            job,
            self.job_timeout,
        )?;
        let rec = self.network(&first.def.uuid)?;
        Ok((guard, rec))
    }

    /// Stores a pool record, on disk first for a persistent driver.
    fn put_pool(&self, rec: PoolRecord) -> Result<()> {
        if let Some(store) = &self.store {
            store.save_pool(&rec)?;
        }
        self.state.objects().pools.insert(rec.def.uuid.clone(), rec);
        Ok(())
    }

    /// Forgets a pool entirely.
    fn drop_pool(&self, rec: &PoolRecord) -> Result<()> {
        if let Some(store) = &self.store {
            store.forget_pool(&rec.def.name, false)?;
        }
        self.state.objects().pools.remove(&rec.def.uuid);
        Ok(())
    }

    fn pool_event(&self, name: &str, event: ObjectEvent) {
        self.state.events.emit(Event::Pool {
            name: name.to_string(),
            event,
        });
    }

    fn fresh_pool_info(&self, record: &PoolRecord) -> Result<PoolInfo> {
        if record.info.is_none() {
            return Ok(INACTIVE);
        }
        self.pool_call(&record.def, "get-pool-info", |g, s| {
            g.call_get_pool_info(s, &record.def, &record.volumes)
        })
    }

    /// Every pool with its numbers, sorted by name.
    pub fn list_pools(&self) -> Result<Vec<PoolStatus>> {
        let records: Vec<PoolRecord> = self.state.objects().pools.values().cloned().collect();
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let info = self.fresh_pool_info(&record)?;
            out.push(PoolStatus { record, info });
        }
        out.sort_by(|a, b| a.record.def.name.cmp(&b.record.def.name));
        Ok(out)
    }

    /// One pool with its numbers.
    pub fn pool(&self, key: &str) -> Result<PoolStatus> {
        let record = self.pool_record(key)?;
        let info = self.fresh_pool_info(&record)?;
        Ok(PoolStatus { record, info })
    }

    /// A pool's libvirt XML.
    pub fn pool_xml(&self, key: &str) -> Result<String> {
        let p = self.pool(key)?;
        let parsed = xml::ParsedPool {
            def: p.record.def.clone(),
            capacity: p.info.capacity,
            allocation: p.info.allocation,
            available: p.info.available,
            extras: p.record.extras,
        };
        Ok(xml::format_pool(&parsed, &FormatOptions::default()))
    }

    /// Defines a persistent pool from XML.
    pub fn pool_define_xml(&self, text: &str, validate: bool) -> Result<PoolDef> {
        let parsed = Self::parse_pool_xml(text, validate)?;
        self.pool_define(parsed.def, parsed.extras)
    }

    /// Reads pool XML as `pool_define_xml` does (`validate` refuses what is not modelled),
    /// for a front end that checks the definition before defining it.
    pub fn parse_pool_xml(text: &str, validate: bool) -> Result<xml::ParsedPool> {
        xml::parse_pool_with(
            text,
            &ParseOptions {
                strict: validate,
                fill_defaults: true,
            },
        )
    }

    /// Defines a persistent pool.
    pub fn pool_define(&self, mut def: PoolDef, extras: xml::Extras) -> Result<PoolDef> {
        self.writable()?;
        validate_object_name("pool", &def.name)?;
        xml::fill_pool_defaults(&mut def);
        // A type nothing here serves is refused now, not at its first start.
        self.pool_driver(&def)?;
        let mut o = self.state.objects();
        if let Some(same) = o
            .pools
            .values()
            .find(|p| p.def.name == def.name && p.def.uuid != def.uuid)
        {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "operation failed: pool '{}' already exists with uuid {}",
                    def.name, same.def.uuid
                ),
            ));
        }
        if let Some(same) = o.pools.get(&def.uuid).filter(|p| p.def.name != def.name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "operation failed: pool '{}' is already defined with uuid {}",
                    same.def.name, def.uuid
                ),
            ));
        }
        let rec = match o.pools.get(&def.uuid) {
            Some(existing) => PoolRecord {
                def: def.clone(),
                persistent: true,
                extras,
                ..existing.clone()
            },
            None => PoolRecord {
                def: def.clone(),
                info: None,
                volumes: vec![],
                persistent: true,
                autostart: false,
                extras,
            },
        };
        if let Some(store) = &self.store {
            store.save_pool(&rec)?;
        }
        o.pools.insert(def.uuid.clone(), rec);
        drop(o);
        self.pool_event(&def.name, ObjectEvent::Defined);
        Ok(def)
    }

    /// Creates and starts a transient pool.
    pub fn pool_create(&self, def: PoolDef, extras: xml::Extras) -> Result<PoolDef> {
        self.pool_create_with(def, extras, false)
    }

    /// Creates a transient pool, builds it first when `build` (virsh's `--build`), and
    /// starts it; a failure at any step leaves no pool behind.
    pub fn pool_create_with(
        &self,
        mut def: PoolDef,
        extras: xml::Extras,
        build: bool,
    ) -> Result<PoolDef> {
        self.writable()?;
        validate_object_name("pool", &def.name)?;
        xml::fill_pool_defaults(&mut def);
        // A type nothing here serves is refused now, not at its first start.
        self.pool_driver(&def)?;
        if self
            .state
            .objects()
            .pools
            .values()
            .any(|p| p.def.name == def.name || p.def.uuid == def.uuid)
        {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("operation failed: pool '{}' already exists", def.name),
            ));
        }
        self.put_pool(PoolRecord {
            def: def.clone(),
            info: None,
            volumes: vec![],
            persistent: false,
            autostart: false,
            extras,
        })?;
        let started = if build {
            self.pool_build(&def.uuid, false)
                .and_then(|_| self.pool_start(&def.uuid))
        } else {
            self.pool_start(&def.uuid)
        };
        if let Err(e) = started {
            if let Ok(rec) = self.pool_record(&def.uuid) {
                let _ = self.drop_pool(&rec);
            }
            return Err(e);
        }
        Ok(def)
    }

    /// Builds a pool's underlying storage.
    pub fn pool_build(&self, key: &str, overwrite: bool) -> Result<String> {
        self.writable()?;
        let (_job, rec) = self.locked_pool(key, "pool-build")?;
        if rec.info.is_some() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is already active",
                rec.def.name
            )));
        }
        self.create_pool_dir(&rec.def)?;
        self.pool_call(&rec.def, "pool-build", |g, s| {
            g.call_pool_build(s, &rec.def, overwrite)
        })?;
        self.pool_event(&rec.def.name, ObjectEvent::Created);
        Ok(rec.def.name)
    }

    /// Starts a pool and reads its volumes.
    pub fn pool_start(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_pool(key, "pool-start")?;
        if rec.info.is_some() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is active",
                rec.def.name
            )));
        }
        let info = self.pool_call(&rec.def, "pool-start", |g, s| {
            g.call_pool_start(s, &rec.def)
        })?;
        let volumes = self.pool_call(&rec.def, "pool-refresh", |g, s| {
            g.call_pool_refresh(s, &rec.def, &rec.volumes)
        })?;
        rec.info = Some(info);
        rec.volumes = volumes;
        let name = rec.def.name.clone();
        self.put_pool(rec)?;
        self.pool_event(&name, ObjectEvent::Started);
        Ok(name)
    }

    /// Stops a pool; a transient one vanishes.
    pub fn pool_destroy(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_pool(key, "pool-destroy")?;
        if rec.info.is_none() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is not active",
                rec.def.name
            )));
        }
        self.pool_call(&rec.def, "pool-stop", |g, s| g.call_pool_stop(s, &rec.def))?;
        let name = rec.def.name.clone();
        if rec.persistent {
            rec.info = None;
            self.put_pool(rec)?;
        } else {
            self.drop_pool(&rec)?;
        }
        self.pool_event(&name, ObjectEvent::Stopped);
        Ok(name)
    }

    /// Deletes an inactive pool's underlying storage.
    pub fn pool_delete(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, rec) = self.locked_pool(key, "pool-delete")?;
        if rec.info.is_some() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is still active",
                rec.def.name
            )));
        }
        self.pool_call(&rec.def, "pool-delete", |g, s| {
            g.call_pool_delete(s, &rec.def)
        })?;
        self.remove_pool_dir(&rec.def)?;
        self.pool_event(&rec.def.name, ObjectEvent::Deleted);
        Ok(rec.def.name)
    }

    /// Removes a pool's definition (an active one stays, transient).
    pub fn pool_undefine(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_pool(key, "pool-undefine")?;
        let name = rec.def.name.clone();
        if rec.info.is_some() {
            rec.persistent = false;
            rec.autostart = false;
            // The definition goes; the status stays while the pool is active.
            if let Some(store) = &self.store {
                store.forget_pool(&rec.def.name, true)?;
            }
            self.put_pool(rec)?;
        } else {
            self.drop_pool(&rec)?;
        }
        self.pool_event(&name, ObjectEvent::Undefined);
        Ok(name)
    }

    /// Re-reads a pool's volumes from the driver.
    pub fn pool_refresh(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_pool(key, "pool-refresh")?;
        if rec.info.is_none() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is not active",
                rec.def.name
            )));
        }
        rec.volumes = self.pool_call(&rec.def, "pool-refresh", |g, s| {
            g.call_pool_refresh(s, &rec.def, &rec.volumes)
        })?;
        let name = rec.def.name.clone();
        self.put_pool(rec)?;
        Ok(name)
    }

    /// Sets whether a persistent pool starts with the host.
    pub fn pool_set_autostart(&self, key: &str, on: bool) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_pool(key, "pool-autostart")?;
        if !rec.persistent {
            return Err(Error::invalid_state(
                "Requested operation is not valid: cannot set autostart for transient pool",
            ));
        }
        rec.autostart = on;
        let name = rec.def.name.clone();
        self.put_pool(rec)?;
        Ok(name)
    }

    /// A pool's volumes, sorted by name.
    pub fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeDef>> {
        let rec = self.pool_record(pool)?;
        if rec.info.is_none() {
            return Err(Error::invalid_state(
                "Requested operation is not valid: storage pool is not active",
            ));
        }
        let mut v = rec.volumes;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Finds a volume by name in `pool`, or by path or key in any pool.
    pub fn volume(&self, key: &str, pool: Option<&str>) -> Result<(PoolRecord, VolumeDef)> {
        if let Some(pool) = pool {
            let rec = self.pool_record(pool)?;
            if let Some(v) = rec
                .volumes
                .iter()
                .find(|v| v.name == key || v.target_path.as_deref() == Some(key))
                .cloned()
            {
                return Ok((rec, v));
            }
            return Err(vol_not_found(key));
        }
        let o = self.state.objects();
        for rec in o.pools.values() {
            if let Some(v) = rec
                .volumes
                .iter()
                .find(|v| v.target_path.as_deref() == Some(key) || v.key.as_deref() == Some(key))
            {
                return Ok((rec.clone(), v.clone()));
            }
        }
        Err(vol_not_found(key))
    }

    /// Creates a volume in an active pool.
    pub fn vol_create(&self, pool: &str, vol: VolumeDef) -> Result<VolumeDef> {
        self.writable()?;
        validate_object_name("volume", &vol.name)?;
        let (_job, mut rec) = self.locked_pool(pool, "vol-create")?;
        if rec.info.is_none() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is not active",
                rec.def.name
            )));
        }
        if rec.volumes.iter().any(|v| v.name == vol.name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "operation failed: storage vol already exists".to_string(),
            ));
        }
        let made = self.pool_call(&rec.def, "vol-create", |g, s| {
            g.call_vol_create(s, &rec.def, &vol)
        })?;
        rec.volumes.push(made.clone());
        self.put_pool(rec)?;
        Ok(made)
    }

    /// Creates a volume from XML.
    pub fn vol_create_xml(&self, pool: &str, text: &str, validate: bool) -> Result<VolumeDef> {
        let parsed = xml::parse_volume_with(
            text,
            &ParseOptions {
                strict: validate,
                fill_defaults: true,
            },
        )?;
        self.vol_create(pool, parsed.def)
    }

    /// Copies volume `source` to a new volume `name` in the same pool.
    pub fn vol_clone(&self, source: &str, name: &str, pool: Option<&str>) -> Result<VolumeDef> {
        self.writable()?;
        validate_object_name("volume", name)?;
        let (found, src) = self.volume(source, pool)?;
        // Lock the pool, then read its record again: a concurrent volume change must not be lost.
        let (_job, mut rec) = self.locked_pool(&found.def.uuid, "vol-clone")?;
        if rec.volumes.iter().any(|v| v.name == name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "operation failed: storage vol already exists".to_string(),
            ));
        }
        let wanted = VolumeDef {
            name: name.to_string(),
            key: None,
            target_path: None,
            ..src.clone()
        };
        let made = self.pool_call(&rec.def, "vol-clone", |g, s| {
            g.call_vol_clone(s, &rec.def, &src, &wanted)
        })?;
        rec.volumes.push(made.clone());
        self.put_pool(rec)?;
        Ok(made)
    }

    /// Deletes a volume.
    pub fn vol_delete(&self, key: &str, pool: Option<&str>) -> Result<String> {
        self.writable()?;
        let (found, vol) = self.volume(key, pool)?;
        // Lock the pool, then read its record again: a concurrent volume change must not be lost.
        let (_job, mut rec) = self.locked_pool(&found.def.uuid, "vol-delete")?;
        self.pool_call(&rec.def, "vol-delete", |g, s| {
            g.call_vol_delete(s, &rec.def, &vol)
        })?;
        rec.volumes.retain(|v| v.name != vol.name);
        self.put_pool(rec)?;
        Ok(vol.name)
    }

    /// Changes a volume's capacity (bytes).
    pub fn vol_resize(
        &self,
        key: &str,
        pool: Option<&str>,
        capacity: u64,
        allow_shrink: bool,
    ) -> Result<VolumeDef> {
        self.writable()?;
        let (found, vol) = self.volume(key, pool)?;
        // Lock the pool, then read its record again: a concurrent volume change must not be lost.
        let (_job, mut rec) = self.locked_pool(&found.def.uuid, "vol-resize")?;
        let resized = self.pool_call(&rec.def, "vol-resize", |g, s| {
            g.call_vol_resize(s, &rec.def, &vol, capacity, allow_shrink)
        })?;
        if let Some(slot) = rec.volumes.iter_mut().find(|v| v.name == vol.name) {
            *slot = resized.clone();
        }
        self.put_pool(rec)?;
        Ok(resized)
    }

    /// Overwrites a volume's data with zeroes.
    pub fn vol_wipe(&self, key: &str, pool: Option<&str>) -> Result<String> {
        self.writable()?;
        let (rec, vol) = self.volume(key, pool)?;
        self.pool_call(&rec.def, "vol-wipe", |g, s| {
            g.call_vol_wipe(s, &rec.def, &vol)
        })?;
        Ok(vol.name)
    }

    /// Opens a volume's data for writing (`upload`) or reading, through the path its driver
    /// names, refusing a path that resolves outside the pool's directory. The caller moves
    /// the bytes: [`vol_transfer`](Self::vol_transfer) from a local file, the daemon from a
    /// request body.
    pub fn vol_open(&self, key: &str, pool: Option<&str>, upload: bool) -> Result<VolumeData> {
        if upload {
            self.writable()?;
        }
        let (rec, vol) = self.volume(key, pool)?;
        let verb = if upload { "vol-upload" } else { "vol-download" };
        let path = self.pool_call(&rec.def, verb, |g, s| {
            g.call_vol_data_path(s, &rec.def, &vol, upload)
        })?;
        // Resolve symlinks before the check: a link in a pool directory must not lead the
        // host (which may be root) to another file.
        let pool_dir = rec
            .def
            .target_path
            .as_deref()
            .and_then(|t| std::fs::canonicalize(t).ok());
        let real = std::fs::canonicalize(&path)
            .map_err(|e| Error::io("cannot resolve volume path", std::path::Path::new(&path), e))?;
        if pool_dir.as_ref().is_none_or(|dir| !real.starts_with(dir)) {
            return Err(Error::denied(format!(
                "plugin '{}' named '{}' for volume '{}', which resolves outside the pool's directory",
                self.pool_driver(&rec.def)?.plugin.name(),
                path,
                vol.name
            )));
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(!upload)
            .write(upload)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&real)
            .map_err(|e| Error::io("cannot open", &real, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", &real, e))?
            .len();
        Ok(VolumeData {
            file,
            path: real,
            name: vol.name,
            capacity: vol.capacity,
            len,
        })
    }

    /// Copies `file` into a volume (`upload`) or a volume into `file` (download), the host
    /// moving the bytes between the two paths itself. `progress` hears the bytes copied so
    /// far after each chunk; an error from it stops the copy (a cancel).
    pub fn vol_transfer(
        &self,
        key: &str,
        pool: Option<&str>,
        file: &std::path::Path,
        upload: bool,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<u64> {
        let vol = self.vol_open(key, pool, upload)?;
        if upload {
            let src = std::fs::File::open(file).map_err(|e| Error::io("cannot open", file, e))?;
            let total = src.metadata().map(|m| m.len()).unwrap_or(0);
            copy_data(src, vol.file, &vol.path, total, progress)
        } else {
            let dst = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(file)
                .map_err(|e| Error::io("cannot open", file, e))?;
            copy_data(vol.file, dst, file, vol.len, progress)
        }
    }

    /// Numbers behind `vol-info`.
    pub fn vol_info(&self, key: &str, pool: Option<&str>) -> Result<(VolumeDef, VolumeInfo)> {
        let (rec, vol) = self.volume(key, pool)?;
        let info = self.pool_call(&rec.def, "vol-info", |g, s| {
            g.call_vol_info(s, &rec.def, &vol)
        })?;
        Ok((vol, info))
    }

    /// A volume's libvirt XML.
    pub fn vol_xml(&self, key: &str, pool: Option<&str>) -> Result<String> {
        let (vol, info) = self.vol_info(key, pool)?;
        let mut parsed = xml::ParsedVolume::new(VolumeDef {
            allocation: Some(info.allocation),
            ..vol
        });
        parsed.volume_type = Some(info.volume_type);
        Ok(xml::format_volume(&parsed, &FormatOptions::default()))
    }

    /// Every network, sorted by name.
    pub fn list_networks(&self) -> Vec<NetworkRecord> {
        let mut v: Vec<NetworkRecord> = self.state.objects().networks.values().cloned().collect();
        v.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        v
    }

    /// One network by name or uuid.
    pub fn network(&self, key: &str) -> Result<NetworkRecord> {
        let o = self.state.objects();
        let uuid = crate::domain::canonical_uuid(key);
        o.networks
            .values()
            .find(|n| n.def.name == key || Some(&n.def.uuid) == uuid.as_ref())
            .cloned()
            .ok_or_else(|| network_not_found(key))
    }

    /// Stores a network record, on disk first for a persistent driver.
    fn put_network(&self, rec: NetworkRecord) -> Result<()> {
        if let Some(store) = &self.store {
            store.save_network(&rec)?;
        }
        self.state
            .objects()
            .networks
            .insert(rec.def.uuid.clone(), rec);
        Ok(())
    }

    /// Forgets a network entirely.
    fn drop_network(&self, rec: &NetworkRecord) -> Result<()> {
        if let Some(store) = &self.store {
            store.forget_network(&rec.def.name, false)?;
        }
        self.state.objects().networks.remove(&rec.def.uuid);
        Ok(())
    }

    fn network_event(&self, name: &str, event: ObjectEvent) {
        self.state.events.emit(Event::Network {
            name: name.to_string(),
            event,
        });
    }

    /// A network's libvirt XML.
    pub fn network_xml(&self, key: &str, inactive: bool) -> Result<String> {
        let rec = self.network(key)?;
        let def = if inactive {
            rec.next.unwrap_or(rec.def)
        } else {
            rec.def
        };
        Ok(xml::format_network(
            &xml::ParsedNetwork {
                def,
                extras: rec.extras,
            },
            &FormatOptions::default(),
        ))
    }

    /// Defines a persistent network from XML.
    pub fn network_define_xml(&self, text: &str, validate: bool) -> Result<NetworkDef> {
        let parsed = xml::parse_network_with(
            text,
            &ParseOptions {
                strict: validate,
                fill_defaults: true,
            },
        )?;
        self.network_define(parsed.def, parsed.extras, true)
    }

    /// Creates and starts a transient network from XML.
    pub fn network_create_xml(&self, text: &str, validate: bool) -> Result<NetworkDef> {
        let parsed = xml::parse_network_with(
            text,
            &ParseOptions {
                strict: validate,
                fill_defaults: true,
            },
        )?;
        if self
            .state
            .objects()
            .networks
            .values()
            .any(|n| n.def.name == parsed.def.name)
        {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "operation failed: network '{}' already exists",
                    parsed.def.name
                ),
            ));
        }
        let def = self.network_define(parsed.def, parsed.extras, false)?;
        if let Err(e) = self.network_start(&def.uuid) {
            if let Ok(rec) = self.network(&def.uuid) {
                let _ = self.drop_network(&rec);
            }
            return Err(e);
        }
        Ok(def)
    }

    fn network_define(
        &self,
        def: NetworkDef,
        extras: xml::Extras,
        persistent: bool,
    ) -> Result<NetworkDef> {
        self.writable()?;
        validate_object_name("network", &def.name)?;
        let mut o = self.state.objects();
        if let Some(same) = o
            .networks
            .values()
            .find(|n| n.def.name == def.name && n.def.uuid != def.uuid)
        {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "operation failed: network '{}' already exists with uuid {}",
                    def.name, same.def.uuid
                ),
            ));
        }
        let rec = match o.networks.get(&def.uuid) {
            // Redefining a running network changes what its next start uses, not what runs.
            Some(existing) if existing.active => NetworkRecord {
                next: Some(def.clone()),
                persistent: persistent || existing.persistent,
                extras,
                ..existing.clone()
            },
            Some(existing) => NetworkRecord {
                def: def.clone(),
                persistent: persistent || existing.persistent,
                extras,
                ..existing.clone()
            },
            None => NetworkRecord {
                def: def.clone(),
                active: false,
                persistent,
                autostart: false,
                extras,
                next: None,
            },
        };
        if let Some(store) = &self.store {
            store.save_network(&rec)?;
        }
        o.networks.insert(def.uuid.clone(), rec);
        drop(o);
        if persistent {
            self.network_event(&def.name, ObjectEvent::Defined);
        }
        Ok(def)
    }

    /// Brings a network up.
    pub fn network_start(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_network(key, "net-start")?;
        if rec.active {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: Network '{}' is already running",
                rec.def.name
            )));
        }
        self.plugin
            .network("net-start", |g, s| g.call_net_start(s, &rec.def))?;
        rec.active = true;
        let name = rec.def.name.clone();
        self.put_network(rec)?;
        self.network_event(&name, ObjectEvent::Started);
        Ok(name)
    }

    /// Takes a network down; a transient one vanishes. The driver decides whether stopping
    /// an inactive network is an error (libvirt's test driver accepts it).
    pub fn network_destroy(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_network(key, "net-destroy")?;
        self.plugin
            .network("net-stop", |g, s| g.call_net_stop(s, &rec.def))?;
        let name = rec.def.name.clone();
        if rec.persistent {
            rec.active = false;
            // A stopped network's definition is the persistent one.
            if let Some(next) = rec.next.take() {
                rec.def = next;
            }
            self.put_network(rec)?;
        } else {
            self.drop_network(&rec)?;
        }
        self.network_event(&name, ObjectEvent::Stopped);
        Ok(name)
    }

    /// Removes a network's definition (an active one stays, transient).
    pub fn network_undefine(&self, key: &str) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_network(key, "net-undefine")?;
        let name = rec.def.name.clone();
        if rec.active {
            rec.persistent = false;
            rec.autostart = false;
            if let Some(store) = &self.store {
                store.forget_network(&rec.def.name, true)?;
            }
            self.put_network(rec)?;
        } else {
            self.drop_network(&rec)?;
        }
        self.network_event(&name, ObjectEvent::Undefined);
        Ok(name)
    }

    /// Sets whether a persistent network starts with the host.
    pub fn network_set_autostart(&self, key: &str, on: bool) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_network(key, "net-autostart")?;
        if !rec.persistent {
            return Err(Error::invalid_state(
                "Requested operation is not valid: cannot set autostart for transient network",
            ));
        }
        rec.autostart = on;
        let name = rec.def.name.clone();
        self.put_network(rec)?;
        Ok(name)
    }

    /// Changes one part of a network's definition in place (`virsh net-update`): `command`
    /// is `add`, `add-first`, `add-last`, `delete` or `modify`; `section` is `ip-dhcp-host`,
    /// `ip-dhcp-range` or `dns-host`; `snippet` is that element's XML.
    /// `live` and `config` choose the running definition, the persistent one, or both.
    #[allow(clippy::too_many_arguments)]
    pub fn network_update(
        &self,
        key: &str,
        command: &str,
        section: &str,
        snippet: &str,
        parent_index: usize,
        live: bool,
        config: bool,
    ) -> Result<String> {
        self.writable()?;
        let (_job, mut rec) = self.locked_network(key, "net-update")?;
        let mut next = rec.next.clone().unwrap_or_else(|| rec.def.clone());
        if live && rec.active {
            Self::update_network_def(&mut rec.def, command, section, snippet, parent_index)?;
        }
        if config || !rec.active {
            Self::update_network_def(&mut next, command, section, snippet, parent_index)?;
        }
        // The running definition and the next start's stay one until they differ.
        if rec.active {
            rec.next = (next != rec.def).then_some(next);
        } else {
            rec.def = next;
            rec.next = None;
        }
        let name = rec.def.name.clone();
        self.put_network(rec)?;
        Ok(name)
    }

    fn update_network_def(
        def: &mut NetworkDef,
        command: &str,
        section: &str,
        snippet: &str,
        parent_index: usize,
    ) -> Result<()> {
        use crate::bindings::types::DhcpHost;
        let network = def.name.clone();
        let invalid =
            |m: String| Error::invalid_state(format!("Requested operation is not valid: {m}"));
        let quoted = snippet.trim();
        match section {
            "ip-dhcp-host" | "ip-dhcp-range" => {
                let attrs = element_attributes(
                    quoted,
                    if section == "ip-dhcp-host" {
                        "host"
                    } else {
                        "range"
                    },
                )?;
                let ip = def.ips.get_mut(parent_index).ok_or_else(|| {
                    Error::invalid(format!("invalid argument: couldn't update dhcp host entry - no <ip> element found at index {parent_index} in network '{network}'"))
                })?;
                if section == "ip-dhcp-host" {
                    let host = DhcpHost {
                        mac: attrs.get("mac").cloned(),
                        name: attrs.get("name").cloned(),
                        ip: attrs.get("ip").cloned().unwrap_or_default(),
                    };
                    let matches = |h: &DhcpHost| {
                        (host.mac.is_some() && h.mac == host.mac)
                            || (host.name.is_some() && h.name == host.name)
                            || (!host.ip.is_empty() && h.ip == host.ip)
                    };
                    match command {
                        "add" | "add-last" | "add-first" => {
                            if host.ip.is_empty() {
                                return Err(Error::invalid(format!(
                                    "invalid argument: missing IP address in network '{network}' dhcp host"
                                )));
                            }
                            if ip.dhcp_hosts.iter().any(matches) {
                                return Err(invalid(format!(
                                    "there is an existing dhcp host entry in network '{network}' that matches \"{quoted}\""
                                )));
                            }
                            if command == "add-first" {
                                ip.dhcp_hosts.insert(0, host)
                            } else {
                                ip.dhcp_hosts.push(host)
                            }
                        }
                        "delete" => {
                            let before = ip.dhcp_hosts.len();
                            ip.dhcp_hosts.retain(|h| !matches(h));
                            if ip.dhcp_hosts.len() == before {
                                return Err(invalid(format!(
                                    "couldn't locate a matching dhcp host entry in network '{network}'"
                                )));
                            }
                        }
                        "modify" => {
                            let slot = ip
                                .dhcp_hosts
                                .iter_mut()
                                .find(|h| (host.mac.is_some() && h.mac == host.mac) || (host.name.is_some() && h.name == host.name))
                                .ok_or_else(|| invalid(format!("couldn't locate an existing dhcp host entry with \"mac='{}'\" in network '{network}'", host.mac.clone().unwrap_or_default())))?;
                            *slot = host;
                        }
                        other => {
                            return Err(Error::invalid(format!(
                                "invalid argument: unrecognized command '{other}'"
                            )));
                        }
                    }
                } else {
                    let (Some(start), Some(end)) =
                        (attrs.get("start").cloned(), attrs.get("end").cloned())
                    else {
                        return Err(Error::invalid(format!(
                            "invalid argument: missing 'start' or 'end' attribute in dhcp range for network '{network}'"
                        )));
                    };
                    let range = (start, end);
                    match command {
                        "add" | "add-last" | "add-first" => {
                            if ip.dhcp_ranges.contains(&range) {
                                return Err(invalid(format!(
                                    "there is an existing dhcp range entry in network '{network}' that matches \"{quoted}\""
                                )));
                            }
                            if command == "add-first" {
                                ip.dhcp_ranges.insert(0, range)
                            } else {
                                ip.dhcp_ranges.push(range)
                            }
                        }
                        "delete" => {
                            let before = ip.dhcp_ranges.len();
                            ip.dhcp_ranges.retain(|r| *r != range);
                            if ip.dhcp_ranges.len() == before {
                                return Err(invalid(format!(
                                    "couldn't locate a matching dhcp range entry in network '{network}'"
                                )));
                            }
                        }
                        other => {
                            return Err(Error::invalid(format!(
                                "invalid argument: dhcp ranges cannot be '{other}'ed"
                            )));
                        }
                    }
                }
            }
            "dns-host" => {
                let wrapped = format!("<network><name>u</name><dns>{quoted}</dns></network>");
                let parsed = xml::parse_network_with(
                    &wrapped,
                    &ParseOptions {
                        strict: true,
                        fill_defaults: false,
                    },
                )?;
                let host =
                    parsed.def.dns_hosts.first().cloned().ok_or_else(|| {
                        Error::invalid("invalid argument: no <host> element given")
                    })?;
                match command {
                    "add" | "add-last" | "add-first" => {
                        if def.dns_hosts.iter().any(|h| h.0 == host.0) {
                            return Err(invalid(format!(
                                "there is already at least one DNS HOST record with a matching field in network {network}"
                            )));
                        }
                        if command == "add-first" {
                            def.dns_hosts.insert(0, host)
                        } else {
                            def.dns_hosts.push(host)
                        }
                    }
                    "delete" => {
                        let before = def.dns_hosts.len();
                        def.dns_hosts.retain(|h| h.0 != host.0);
                        if def.dns_hosts.len() == before {
                            return Err(invalid(format!(
                                "couldn't locate a matching DNS HOST record in network {network}"
                            )));
                        }
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "invalid argument: DNS hosts cannot be '{other}'ed"
                        )));
                    }
                }
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "this function is not supported by the connection driver: can't update '{other}' section of network '{network}'"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A network's DHCP leases.
    pub fn network_dhcp_leases(&self, key: &str) -> Result<Vec<crate::bindings::types::DhcpLease>> {
        let rec = self.network(key)?;
        self.plugin.network("net-dhcp-leases", |g, s| {
            g.call_net_dhcp_leases(s, &rec.def)
        })
    }
}

/// The attributes of a single `<name .../>` element given as text (`net-update`'s snippets).
fn element_attributes(text: &str, name: &str) -> Result<std::collections::HashMap<String, String>> {
    use quick_xml::events::Event as XmlEvent;
    let mut reader = quick_xml::Reader::from_str(text);
    loop {
        match reader.read_event() {
            Ok(XmlEvent::Empty(e)) | Ok(XmlEvent::Start(e)) => {
                if e.name().as_ref() != name {
                    return Err(Error::invalid(format!(
                        "invalid argument: expected a <{name}> element, got <{}>",
                        e.name().as_ref()
                    )));
                }
                let mut out = std::collections::HashMap::new();
                for a in e.attributes() {
                    let a = a.map_err(|err| {
                        Error::invalid(format!("invalid argument: <{name}>: {err}"))
                    })?;
                    let v = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|err| {
                            Error::invalid(format!("invalid argument: <{name}>: {err}"))
                        })?;
                    out.insert(a.key.as_ref().to_string(), v.into_owned());
                }
                return Ok(out);
            }
            Ok(XmlEvent::Eof) => {
                return Err(Error::invalid(format!(
                    "invalid argument: no <{name}> element given"
                )));
            }
            Ok(_) => {}
            Err(err) => {
                return Err(Error::invalid(format!(
                    "invalid argument: malformed XML: {err}"
                )));
            }
        }
    }
}
