//! The event bus: lifecycle events of domains, pools and networks, as libvirt names them.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

/// libvirt's domain lifecycle event types (`virDomainEventType`) with their details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainEvent {
    /// Defined: `Added` or `Updated`.
    Defined(&'static str),
    /// Undefined: `Removed`.
    Undefined(&'static str),
    /// Started: `Booted`, `Migrated`, `Restored`, `Snapshot`, `Wakeup`.
    Started(&'static str),
    /// Suspended: `Paused`, ...
    Suspended(&'static str),
    /// Resumed: `Unpaused`, ...
    Resumed(&'static str),
    /// Stopped: `Shutdown`, `Destroyed`, `Crashed`, `Migrated`, `Saved`, `Failed`, `Snapshot`.
    Stopped(&'static str),
    /// Shutdown: `Finished`, `Guest`, `Host`.
    Shutdown(&'static str),
    /// PMSuspended: `Memory`, `Disk`.
    PmSuspended(&'static str),
    /// Crashed: `Panicked`.
    Crashed(&'static str),
}

impl DomainEvent {
    /// virsh's words: `Started Booted`.
    pub fn describe(&self) -> String {
        let (kind, detail) = match self {
            DomainEvent::Defined(d) => ("Defined", d),
            DomainEvent::Undefined(d) => ("Undefined", d),
            DomainEvent::Started(d) => ("Started", d),
            DomainEvent::Suspended(d) => ("Suspended", d),
            DomainEvent::Resumed(d) => ("Resumed", d),
            DomainEvent::Stopped(d) => ("Stopped", d),
            DomainEvent::Shutdown(d) => ("Shutdown", d),
            DomainEvent::PmSuspended(d) => ("PMSuspended", d),
            DomainEvent::Crashed(d) => ("Crashed", d),
        };
        format!("{kind} {detail}")
    }
}

/// Pool and network lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectEvent {
    /// Defined.
    Defined,
    /// Undefined.
    Undefined,
    /// Started.
    Started,
    /// Stopped.
    Stopped,
    /// Created (storage: built).
    Created,
    /// Deleted.
    Deleted,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "object", rename_all = "kebab-case")]
pub enum Event {
    /// A domain's lifecycle changed.
    Domain {
        /// Domain name.
        name: String,
        /// Domain uuid.
        uuid: String,
        /// What happened.
        event: DomainEvent,
    },
    /// A storage pool's lifecycle changed.
    Pool {
        /// Pool name.
        name: String,
        /// What happened.
        event: ObjectEvent,
    },
    /// A network's lifecycle changed.
    Network {
        /// Network name.
        name: String,
        /// What happened.
        event: ObjectEvent,
    },
}

/// Fan-out of events to every subscriber.
#[derive(Debug, Default)]
pub struct EventBus {
    subscribers: Mutex<Vec<Sender<Event>>>,
}

impl EventBus {
    /// A new receiver of every event emitted from now on.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = channel();
        self.subscribers.lock().unwrap().push(tx);
        rx
    }

    /// Sends `event` to every subscriber still listening.
    pub fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        self.subscribers
            .lock()
            .unwrap()
            .retain(|s| s.send(event.clone()).is_ok());
    }
}
