//! Storage pools, volumes and networks on a [`Connection`]: their definitions and
//! lifecycle. As for domains, the host keeps every record and checks the state machine; the
//! driver does the backend work (a directory, a bridge, dnsmasq).

use crate::bindings::types::{NetworkDef, PoolDef, PoolInfo, PoolState, VolumeDef, VolumeInfo};
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, ObjectEvent};
use crate::state::{NetworkRecord, PoolRecord};
use crate::xml::{self, FormatOptions, ParseOptions};

/// A pool with its current numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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

fn validate_object_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('.')
        || name.chars().any(char::is_control)
        || name.len() > 200
    {
        return Err(Error::invalid(format!(
            "invalid {kind} name '{}': names are 1 to 200 bytes without '/', control characters or a leading '.'",
            name.escape_default()
        )));
    }
    Ok(())
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
        self.plugin.storage("get-pool-info", |g, s| {
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
        let parsed = xml::parse_pool_with(
            text,
            &ParseOptions {
                strict: validate,
                fill_defaults: true,
            },
        )?;
        self.pool_define(parsed.def, parsed.extras)
    }

    /// Defines a persistent pool.
    pub fn pool_define(&self, mut def: PoolDef, extras: xml::Extras) -> Result<PoolDef> {
        self.writable()?;
        validate_object_name("pool", &def.name)?;
        xml::fill_pool_defaults(&mut def);
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
    pub fn pool_create(&self, mut def: PoolDef, extras: xml::Extras) -> Result<PoolDef> {
        self.writable()?;
        validate_object_name("pool", &def.name)?;
        xml::fill_pool_defaults(&mut def);
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
        if let Err(e) = self.pool_start(&def.uuid) {
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
        let rec = self.pool_record(key)?;
        if rec.info.is_some() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is already active",
                rec.def.name
            )));
        }
        self.plugin.storage("pool-build", |g, s| {
            g.call_pool_build(s, &rec.def, overwrite)
        })?;
        self.pool_event(&rec.def.name, ObjectEvent::Created);
        Ok(rec.def.name)
    }

    /// Starts a pool and reads its volumes.
    pub fn pool_start(&self, key: &str) -> Result<String> {
        self.writable()?;
        let mut rec = self.pool_record(key)?;
        if rec.info.is_some() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is active",
                rec.def.name
            )));
        }
        let info = self
            .plugin
            .storage("pool-start", |g, s| g.call_pool_start(s, &rec.def))?;
        let volumes = self.plugin.storage("pool-refresh", |g, s| {
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
        let mut rec = self.pool_record(key)?;
        if rec.info.is_none() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is not active",
                rec.def.name
            )));
        }
        self.plugin
            .storage("pool-stop", |g, s| g.call_pool_stop(s, &rec.def))?;
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
        let rec = self.pool_record(key)?;
        if rec.info.is_some() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is still active",
                rec.def.name
            )));
        }
        self.plugin
            .storage("pool-delete", |g, s| g.call_pool_delete(s, &rec.def))?;
        self.pool_event(&rec.def.name, ObjectEvent::Deleted);
        Ok(rec.def.name)
    }

    /// Removes a pool's definition (an active one stays, transient).
    pub fn pool_undefine(&self, key: &str) -> Result<String> {
        self.writable()?;
        let mut rec = self.pool_record(key)?;
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
        let mut rec = self.pool_record(key)?;
        if rec.info.is_none() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: storage pool '{}' is not active",
                rec.def.name
            )));
        }
        rec.volumes = self.plugin.storage("pool-refresh", |g, s| {
            g.call_pool_refresh(s, &rec.def, &rec.volumes)
        })?;
        let name = rec.def.name.clone();
        self.put_pool(rec)?;
        Ok(name)
    }

    /// Sets whether a persistent pool starts with the host.
    pub fn pool_set_autostart(&self, key: &str, on: bool) -> Result<String> {
        self.writable()?;
        let mut rec = self.pool_record(key)?;
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
        let mut rec = self.pool_record(pool)?;
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
        let made = self
            .plugin
            .storage("vol-create", |g, s| g.call_vol_create(s, &rec.def, &vol))?;
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
        let (mut rec, src) = self.volume(source, pool)?;
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
        let made = self.plugin.storage("vol-clone", |g, s| {
            g.call_vol_clone(s, &rec.def, &src, &wanted)
        })?;
        rec.volumes.push(made.clone());
        self.put_pool(rec)?;
        Ok(made)
    }

    /// Deletes a volume.
    pub fn vol_delete(&self, key: &str, pool: Option<&str>) -> Result<String> {
        self.writable()?;
        let (mut rec, vol) = self.volume(key, pool)?;
        self.plugin
            .storage("vol-delete", |g, s| g.call_vol_delete(s, &rec.def, &vol))?;
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
        let (mut rec, vol) = self.volume(key, pool)?;
        let resized = self.plugin.storage("vol-resize", |g, s| {
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
        self.plugin
            .storage("vol-wipe", |g, s| g.call_vol_wipe(s, &rec.def, &vol))?;
        Ok(vol.name)
    }

    /// Numbers behind `vol-info`.
    pub fn vol_info(&self, key: &str, pool: Option<&str>) -> Result<(VolumeDef, VolumeInfo)> {
        let (rec, vol) = self.volume(key, pool)?;
        let info = self
            .plugin
            .storage("vol-info", |g, s| g.call_vol_info(s, &rec.def, &vol))?;
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
    pub fn network_xml(&self, key: &str) -> Result<String> {
        let rec = self.network(key)?;
        Ok(xml::format_network(
            &xml::ParsedNetwork {
                def: rec.def,
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
        let mut rec = self.network(key)?;
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
        let mut rec = self.network(key)?;
        self.plugin
            .network("net-stop", |g, s| g.call_net_stop(s, &rec.def))?;
        let name = rec.def.name.clone();
        if rec.persistent {
            rec.active = false;
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
        let mut rec = self.network(key)?;
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
        let mut rec = self.network(key)?;
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

    /// A network's DHCP leases.
    pub fn network_dhcp_leases(&self, key: &str) -> Result<Vec<crate::bindings::types::DhcpLease>> {
        let rec = self.network(key)?;
        self.plugin.network("net-dhcp-leases", |g, s| {
            g.call_net_dhcp_leases(s, &rec.def)
        })
    }
}
