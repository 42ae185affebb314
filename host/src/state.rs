//! Host-owned state of one driver connection: every definition and runtime record, the job
//! locks, and the event bus. Plugins never hold any of it; they receive what a verb needs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bindings::types::{
    DomainDef, DomainRef, DomainRuntime, DomainState, NetworkDef, PoolDef, PoolInfo, ShutoffReason,
    VolumeDef,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventBus;

/// One domain as the host keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DomainRecord {
    /// The persistent (or, for a transient domain, the only) definition.
    pub def: DomainDef,
    /// The definition the running instance was started from, while it runs.
    pub live: Option<DomainDef>,
    /// The id while it runs.
    pub id: Option<i32>,
    /// The driver's runtime record while it runs.
    pub runtime: Option<DomainRuntime>,
    /// Survives being stopped (defined), or vanishes then (created).
    pub persistent: bool,
    /// Started when the host starts.
    pub autostart: bool,
    /// Has a managed-save image.
    pub managed_save: bool,
    /// Why it last stopped (`domstate --reason` of an inactive domain).
    pub shutoff_reason: ShutoffReason,
    /// What its XML held beyond the model, written back by `dumpxml`.
    #[serde(default)]
    pub extras: crate::xml::Extras,
    /// Its snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<SnapshotRecord>,
    /// The name of the current snapshot.
    #[serde(default)]
    pub current_snapshot: Option<String>,
}

/// One snapshot's metadata: what the driver returned and the definition it captured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRecord {
    /// Name, time, state, parent.
    pub def: crate::bindings::types::SnapshotDef,
    /// The domain definition at the time of the snapshot.
    pub domain: DomainDef,
}

impl DomainRecord {
    /// A new inactive record for `def`.
    pub fn inactive(def: DomainDef, persistent: bool) -> DomainRecord {
        DomainRecord {
            def,
            live: None,
            id: None,
            runtime: None,
            persistent,
            autostart: false,
            managed_save: false,
            shutoff_reason: ShutoffReason::Unknown,
            extras: crate::xml::Extras::default(),
            snapshots: Vec::new(),
            current_snapshot: None,
        }
    }

    /// The current state; shut off (with the last reason) when it has no runtime record.
    pub fn state(&self) -> DomainState {
        self.runtime
            .as_ref()
            .map(|r| r.state)
            .unwrap_or(DomainState::Shutoff(self.shutoff_reason))
    }

    /// Whether it runs (in any state but shut off).
    pub fn is_active(&self) -> bool {
        self.runtime.is_some()
    }

    /// What a verb receives.
    pub fn as_ref(&self) -> DomainRef {
        DomainRef {
            def: self.live.clone().unwrap_or_else(|| self.def.clone()),
            id: self.id,
            runtime: self.runtime.clone(),
        }
    }
}

/// One storage pool.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolRecord {
    /// Its definition.
    pub def: PoolDef,
    /// Its numbers while active.
    pub info: Option<PoolInfo>,
    /// Its volumes while active.
    pub volumes: Vec<VolumeDef>,
    /// Defined, or only created.
    pub persistent: bool,
    /// Started with the host.
    pub autostart: bool,
    /// What its XML held beyond the model.
    #[serde(default)]
    pub extras: crate::xml::Extras,
}

/// One network.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkRecord {
    /// Its definition.
    pub def: NetworkDef,
    /// Up or down.
    pub active: bool,
    /// Defined, or only created.
    pub persistent: bool,
    /// Started with the host.
    pub autostart: bool,
    /// The persistent definition for the next start, when a change was made to it alone
    /// while the network runs (`net-update --config`).
    #[serde(default)]
    pub next: Option<NetworkDef>,
    /// What its XML held beyond the model.
    #[serde(default)]
    pub extras: crate::xml::Extras,
}

/// Every object of one driver connection, keyed by uuid.
#[derive(Debug, Default)]
pub struct Objects {
    /// Domains by uuid.
    pub domains: BTreeMap<String, DomainRecord>,
    /// Pools by uuid.
    pub pools: BTreeMap<String, PoolRecord>,
    /// Networks by uuid.
    pub networks: BTreeMap<String, NetworkRecord>,
    /// The id the next started domain gets.
    pub next_id: i32,
}

impl Objects {
    /// The uuid of the domain with this name.
    pub fn domain_by_name(&self, name: &str) -> Option<&DomainRecord> {
        self.domains.values().find(|d| d.def.name == name)
    }

    /// Takes the next domain id (ids start at 1, as libvirt's).
    pub fn take_id(&mut self) -> i32 {
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// A held job lock; released on drop.
pub struct JobGuard<'a> {
    locks: &'a JobLocks,
    key: String,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        self.locks.held.lock().unwrap().remove(&self.key);
        self.locks.cv.notify_all();
    }
}

/// Per-object job locks: one state-changing job at a time per domain, with a timeout and an
/// error that names the job holding the lock (libvirt's "cannot acquire state change lock"
/// says only that it is stuck).
#[derive(Debug, Default)]
pub struct JobLocks {
    held: Mutex<HashMap<String, (String, Instant)>>,
    cv: Condvar,
}

impl JobLocks {
    /// Takes the lock on `key` for `job`, waiting at most `timeout`.
    pub fn acquire(
        &self,
        key: &str,
        object: &str,
        job: &str,
        timeout: Duration,
    ) -> Result<JobGuard<'_>> {
        let deadline = Instant::now() + timeout;
        let mut held = self.held.lock().unwrap();
        while let Some((holder, since)) = held.get(key) {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "Timed out during operation: cannot acquire state change lock for '{object}' to run '{job}': held by job '{holder}' for {:.1} s",
                        since.elapsed().as_secs_f64()
                    ),
                ));
            }
            held = self.cv.wait_timeout(held, deadline - now).unwrap().0;
        }
        held.insert(key.to_string(), (job.to_string(), Instant::now()));
        Ok(JobGuard {
            locks: self,
            key: key.to_string(),
        })
    }
}

/// The state of one driver connection (shared by every connection to the same URI in a
/// process, as libvirt's test driver shares it).
#[derive(Debug, Default)]
pub struct DriverState {
    objects: Mutex<Objects>,
    /// Job locks.
    pub jobs: JobLocks,
    /// Event bus.
    pub events: EventBus,
    scratch: Mutex<Option<PathBuf>>,
}

impl Drop for DriverState {
    fn drop(&mut self) {
        if let Some(dir) = self.scratch.lock().unwrap().take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl DriverState {
    /// A private (0700) directory for files of a per-process driver (its managed-save
    /// images), created on first use and removed with the state.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let mut slot = self.scratch.lock().unwrap();
        if let Some(dir) = slot.as_ref() {
            return Ok(dir.clone());
        }
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let dir = base.join(format!("virtwasm-{}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    *slot = Some(dir.clone());
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("cannot create", &dir, e)),
            }
        }
        Err(Error::internal("cannot create a private scratch directory"))
    }

    /// Locks the object tables. Hold it briefly: never across a plugin call.
    pub fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_job_lock_times_out_naming_the_holder() {
        let locks = JobLocks::default();
        let _held = locks
            .acquire("u1", "vm1", "start", Duration::from_secs(1))
            .unwrap();
        let e = locks
            .acquire("u1", "vm1", "destroy", Duration::from_millis(30))
            .err()
            .unwrap();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(e.message.contains("held by job 'start'"), "{e}");
        assert!(e.message.contains("to run 'destroy'"), "{e}");
        assert!(
            locks
                .acquire("u2", "vm2", "start", Duration::from_millis(1))
                .is_ok(),
            "other objects are independent"
        );
    }

    #[test]
    fn a_released_lock_wakes_the_waiter() {
        let locks = std::sync::Arc::new(JobLocks::default());
        let guard = locks
            .acquire("u", "vm", "start", Duration::from_secs(1))
            .unwrap();
        let l2 = locks.clone();
        let waiter = std::thread::spawn(move || {
            l2.acquire("u", "vm", "stop", Duration::from_secs(5))
                .map(|_| ())
                .is_ok()
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(guard);
        assert!(waiter.join().unwrap());
    }
}
