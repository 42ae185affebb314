//! The daemon's operations: every long request is registered while it runs, so any client
//! can list it, watch its progress, wait for it, or cancel it where stopping is safe.
//! Finished operations stay listed for five minutes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use virtwasm_api::Permission;
use virtwasm_api::operation::{Operation, Progress, Status};
use virtwasm_api::ops::ObjectKind;
use virtwasm_host::{Error, ErrorKind, Result};

/// How long a finished operation stays listed.
const KEEP_FINISHED: Duration = Duration::from_secs(300);

/// One running (or finished) operation.
pub struct Entry {
    info: Mutex<Operation>,
    started: Instant,
    finished_at: Mutex<Option<Instant>>,
    cancel: AtomicBool,
    done: watch::Sender<bool>,
    /// What cancelling it needs: the operation's own permission on its object.
    pub guard: (ObjectKind, Permission),
    /// Who started it (`Identity::key`): only they and admins see it.
    pub owner: String,
}

impl Entry {
    /// The record as it stands.
    pub fn snapshot(&self) -> Operation {
        self.info.lock().unwrap().clone()
    }

    /// Reports progress; returns an error once a cancel was asked, which the work must
    /// pass up to stop.
    pub fn progress(&self, done: u64, total: u64, unit: &str) -> Result<()> {
        self.info.lock().unwrap().progress = Some(Progress {
            done,
            total,
            unit: unit.to_string(),
        });
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::OperationFailed,
                "operation cancelled by a client".to_string(),
            ));
        }
        Ok(())
    }

    /// Whether a cancel was asked.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Records the outcome and wakes the waiters.
    pub fn finish(&self, outcome: &Result<serde_json::Value>) {
        let mut info = self.info.lock().unwrap();
        info.elapsed_ms = Some(self.started.elapsed().as_millis() as u64);
        info.may_cancel = false;
        match outcome {
            Ok(v) => {
                info.status = Status::Success;
                info.result = Some(v.clone());
            }
            Err(e) if self.cancel.load(Ordering::SeqCst) => {
                info.status = Status::Cancelled;
                info.error = Some(e.clone());
            }
            Err(e) => {
                info.status = Status::Failure;
                info.error = Some(e.clone());
            }
        }
        drop(info);
        *self.finished_at.lock().unwrap() = Some(Instant::now());
        // send_replace: `send` drops the value when nobody is subscribed yet.
        self.done.send_replace(true);
    }

    /// Waits until it finishes or `timeout` passes.
    pub async fn wait(&self, timeout: Duration) -> Operation {
        let mut rx = self.done.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await;
        self.snapshot()
    }
}

/// Every operation of the daemon.
#[derive(Default)]
pub struct Operations {
    all: Mutex<HashMap<String, Arc<Entry>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Operations {
    /// Registers a new running operation.
    pub fn start(
        &self,
        op: &str,
        target: Option<String>,
        client: String,
        owner: String,
        may_cancel: bool,
        guard: (ObjectKind, Permission),
    ) -> Arc<Entry> {
        let (done, _) = watch::channel(false);
        let entry = Arc::new(Entry {
            info: Mutex::new(Operation {
                id: uuid::Uuid::new_v4().to_string(),
                op: op.to_string(),
                target,
                status: Status::Running,
                progress: None,
                may_cancel,
                client,
                created_ms: now_ms(),
                elapsed_ms: None,
                result: None,
                error: None,
            }),
            started: Instant::now(),
            finished_at: Mutex::new(None),
            cancel: AtomicBool::new(false),
            done,
            guard,
            owner,
        });
        let mut all = self.all.lock().unwrap();
        all.retain(|_, e| {
            e.finished_at
                .lock()
                .unwrap()
                .is_none_or(|t| t.elapsed() < KEEP_FINISHED)
        });
        all.insert(entry.snapshot().id, entry.clone());
        entry
    }

    /// The operations `owner` may see (every one for `None`, an admin), newest first.
    pub fn list(&self, owner: Option<&str>) -> Vec<Operation> {
        let mut v: Vec<Operation> = self
            .all
            .lock()
            .unwrap()
            .values()
            .filter(|e| owner.is_none_or(|o| e.owner == o))
            .map(|e| e.snapshot())
            .collect();
        v.sort_by_key(|o| std::cmp::Reverse(o.created_ms));
        v
    }

    /// One operation by id.
    pub fn get(&self, id: &str) -> Result<Arc<Entry>> {
        self.all
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no operation with id '{id}'")))
    }

    /// Asks an operation to stop.
    pub fn cancel(&self, entry: &Entry) -> Result<Operation> {
        let info = entry.snapshot();
        if info.status != Status::Running {
            return Err(Error::invalid_state(format!(
                "operation '{}' ({}) has already finished",
                info.id, info.op
            )));
        }
        if !info.may_cancel {
            return Err(Error::invalid_state(format!(
                "operation '{}' ({}) cannot be cancelled: the driver is running it and stopping it midway could leave the domain inconsistent",
                info.id, info.op
            )));
        }
        entry.cancel.store(true, Ordering::SeqCst);
        Ok(entry.snapshot())
    }
}
