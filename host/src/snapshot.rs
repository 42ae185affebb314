//! Domain snapshots: the driver takes and reverts them; the host keeps their metadata (name,
//! time, captured state, parent, and the definition captured with them) in the domain record.

use crate::bindings::types::{DomainState, SnapshotDef};
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::state::SnapshotRecord;

/// The domain's snapshot named `name`.
fn find(rec: &crate::state::DomainRecord, name: &str) -> Result<SnapshotRecord> {
    rec.snapshots
        .iter()
        .find(|s| s.def.name == name)
        .cloned()
        .ok_or_else(|| not_found(name))
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!(
        "Domain snapshot not found: no domain snapshot with matching name '{name}'"
    ))
}

impl Connection {
    /// Takes a snapshot named `name` (the creation time in seconds when absent).
    pub fn snapshot_create(
        &self,
        key: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<SnapshotDef> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "snapshot-create")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let name = name.map(str::to_string).unwrap_or_else(|| now.to_string());
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "invalid argument: invalid snapshot name '{}'",
                name.escape_default()
            )));
        }
        if rec.snapshots.iter().any(|s| s.def.name == name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("operation failed: domain snapshot '{name}' already exists"),
            ));
        }
        let wanted = SnapshotDef {
            name,
            description: description.map(str::to_string),
            creation_time: now,
            state: rec.state(),
            parent: rec.current_snapshot.clone(),
        };
        let taken = self.plugin.hypervisor("snapshot-create", |g, s| {
            g.call_snapshot_create(s, &rec.as_ref(), &wanted)
        })?;
        let mut new = rec.clone();
        new.snapshots.push(SnapshotRecord {
            def: taken.clone(),
            domain: rec.live.clone().unwrap_or_else(|| rec.def.clone()),
        });
        new.current_snapshot = Some(taken.name.clone());
        self.replace_record(new)?;
        Ok(taken)
    }

    /// A domain's snapshots, oldest first.
    pub fn snapshots(&self, key: &str) -> Result<(Vec<SnapshotRecord>, Option<String>)> {
        let rec = self.domain(key)?;
        Ok((rec.snapshots, rec.current_snapshot))
    }

    /// Reverts a domain to snapshot `name`: its definition and the state it captured.
    pub fn snapshot_revert(&self, key: &str, name: &str) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "snapshot-revert")?;
        let snap = find(&rec, name)?;
        let runtime = self.plugin.hypervisor("snapshot-revert", |g, s| {
            g.call_snapshot_revert(s, &rec.as_ref(), &snap.def)
        })?;
        let mut new = rec.clone();
        new.def = snap.domain.clone();
        new.current_snapshot = Some(name.to_string());
        if !matches!(runtime.state, DomainState::Shutoff(_)) {
            let mut live = snap.domain;
            // A guest reverted inside its running QEMU still listens where it did.
            if let Some(current) = rec.live.as_ref() {
                crate::graphics::keep_display_ports(&mut live, current);
            }
            new.live = Some(live);
        }
        self.replace_record(new)?;
        self.apply(&rec.def.uuid, runtime)
    }

    /// Deletes snapshot `name`; its children take its parent.
    pub fn snapshot_delete(&self, key: &str, name: &str) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "snapshot-delete")?;
        let snap = find(&rec, name)?;
        self.plugin.hypervisor("snapshot-delete", |g, s| {
            g.call_snapshot_delete(s, &rec.as_ref(), &snap.def)
        })?;
        let mut new = rec;
        new.snapshots.retain(|s| s.def.name != name);
        for s in &mut new.snapshots {
            if s.def.parent.as_deref() == Some(name) {
                s.def.parent = snap.def.parent.clone();
            }
        }
        if new.current_snapshot.as_deref() == Some(name) {
            new.current_snapshot = snap.def.parent;
        }
        self.replace_record(new)
    }
}
