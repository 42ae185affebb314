//! The event bus: lifecycle events of domains, pools and networks, as libvirt names them.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

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

/// libvirt's detail words, so an event read back from JSON (from a daemon) keeps the
/// `&'static str` details the host's own events carry.
const DETAILS: &[&str] = &[
    "Added",
    "Updated",
    "Renamed",
    "FromSnapshot",
    "Removed",
    "Booted",
    "Migrated",
    "Restored",
    "Snapshot",
    "Wakeup",
    "Paused",
    "IOError",
    "Watchdog",
    "APIError",
    "PostCopy",
    "PostCopyFailed",
    "Unpaused",
    "Shutdown",
    "Destroyed",
    "Crashed",
    "Saved",
    "Failed",
    "Finished",
    "Guest",
    "Host",
    "Memory",
    "Disk",
    "Panicked",
    "Crashloaded",
];

/// [`DomainEvent`] as it arrives in JSON, before its detail is matched to libvirt's words.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DomainEventWire {
    Defined(String),
    Undefined(String),
    Started(String),
    Suspended(String),
    Resumed(String),
    Stopped(String),
    Shutdown(String),
    PmSuspended(String),
    Crashed(String),
}

// By hand: a derived impl would borrow the details from the input (`'de: 'static`).
impl<'de> serde::Deserialize<'de> for DomainEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = <DomainEventWire as serde::Deserialize>::deserialize(d)?;
        use DomainEventWire as W;
        let known = |d: String| {
            DETAILS
                .iter()
                .find(|k| **k == d)
                .copied()
                .ok_or_else(|| serde::de::Error::custom(format!("unknown event detail '{d}'")))
        };
        Ok(match w {
            W::Defined(d) => DomainEvent::Defined(known(d)?),
            W::Undefined(d) => DomainEvent::Undefined(known(d)?),
            W::Started(d) => DomainEvent::Started(known(d)?),
            W::Suspended(d) => DomainEvent::Suspended(known(d)?),
            W::Resumed(d) => DomainEvent::Resumed(known(d)?),
            W::Stopped(d) => DomainEvent::Stopped(known(d)?),
            W::Shutdown(d) => DomainEvent::Shutdown(known(d)?),
            W::PmSuspended(d) => DomainEvent::PmSuspended(known(d)?),
            W::Crashed(d) => DomainEvent::Crashed(known(d)?),
        })
    }
}

/// Pool and network lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Events a subscriber may fall behind by before it is dropped.
pub const SUBSCRIBER_BACKLOG: usize = 1024;

/// Fan-out of events to every subscriber.
#[derive(Debug, Default)]
pub struct EventBus {
    subscribers: Mutex<Vec<SyncSender<Event>>>,
}

impl EventBus {
    /// A new receiver of every event emitted from now on. A receiver that falls
    /// [`SUBSCRIBER_BACKLOG`] events behind is dropped: it reads what was queued, then sees
    /// the channel closed (a client that stops reading must not make the daemon hoard its
    /// events without bound).
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = sync_channel(SUBSCRIBER_BACKLOG);
        self.subscribers.lock().unwrap().push(tx);
        rx
    }

    /// Sends `event` to every subscriber still listening and keeping up.
    pub fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        self.subscribers
            .lock()
            .unwrap()
            .retain(|s| match s.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Disconnected(_)) => false,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(
                        "an event subscriber fell {SUBSCRIBER_BACKLOG} events behind and was dropped"
                    );
                    false
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(name: &str) -> Event {
        Event::Pool {
            name: name.into(),
            event: ObjectEvent::Started,
        }
    }

    #[test]
    fn a_subscriber_that_stops_reading_is_dropped_and_the_others_keep_theirs() {
        let bus = EventBus::default();
        let stalled = bus.subscribe();
        let reader = bus.subscribe();
        for i in 0..SUBSCRIBER_BACKLOG + 10 {
            bus.emit(started(&format!("p{i}")));
            assert_eq!(reader.recv().unwrap(), started(&format!("p{i}")));
        }
        assert_eq!(
            bus.subscribers.lock().unwrap().len(),
            1,
            "only the reader is left"
        );
        // The stalled one gets what was queued before it fell behind, then the end.
        let got: Vec<Event> = stalled.try_iter().collect();
        assert_eq!(got.len(), SUBSCRIBER_BACKLOG);
        assert_eq!(got[0], started("p0"));
        assert!(matches!(
            stalled.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Disconnected)
        ));
    }
}
