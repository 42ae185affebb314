//! Storage pool, volume and network queries on a [`Connection`]. Their full lifecycle
//! (define, build, start, destroy, volume creation) arrives with the storage and network
//! issues; this is what `pool-list`, `pool-info`, `vol-list`, `net-list` and `net-info` need.

use crate::bindings::types::{PoolInfo, PoolState, VolumeDef};
use crate::connect::Connection;
use crate::error::{Error, Result};
use crate::state::{NetworkRecord, PoolRecord};

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

    fn fresh_pool_info(&self, record: &PoolRecord) -> Result<PoolInfo> {
        let active = record.info.is_some() || self.pool_active_by_default(record);
        if !active {
            return Ok(PoolInfo {
                state: PoolState::Inactive,
                capacity: 0,
                allocation: 0,
                available: 0,
            });
        }
        self.plugin
            .storage("get-pool-info", |g, s| g.call_get_pool_info(s, &record.def))
    }

    /// Pools a driver reports at open are active, as libvirt's test driver has them.
    fn pool_active_by_default(&self, record: &PoolRecord) -> bool {
        record.persistent && record.info.is_none()
    }

    /// One pool with its numbers.
    pub fn pool(&self, key: &str) -> Result<PoolStatus> {
        let record = self.pool_record(key)?;
        let info = self.fresh_pool_info(&record)?;
        Ok(PoolStatus { record, info })
    }

    /// A pool's volumes, sorted by name.
    pub fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeDef>> {
        let mut v = self.pool_record(pool)?.volumes;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
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
}
