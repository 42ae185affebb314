//! Ports for guest displays (VNC, SPICE) that ask for one automatically.
//!
//! libvirt picks an autoport display's port when the domain starts: the lowest from 5900
//! that none of its guests holds and that nothing on the host has bound. The host does the
//! same for drivers whose manifest says `graphics-ports = true`: the driver gets the
//! definition with the port in it, so its command line and the live XML
//! (`port='5901' autoport='yes'`, what `virsh vncdisplay` reads) name the same port. A driver
//! could not pick one itself: it has no view of the host's sockets.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::sync::Mutex;

use crate::bindings::types::DomainDef;
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};

/// The first port an automatic display gets (VNC's display :0), as in libvirt.
pub const FIRST_PORT: u16 = 5900;

/// Where a display without an address listens: loopback only, as libvirt's default
/// (`vnc_listen`, `spice_listen` in qemu.conf).
pub const DEFAULT_LISTEN: &str = "127.0.0.1";

/// Ports picked for displays of guests still starting. Process-wide: ports are the host's,
/// whichever connection starts the guest.
static STARTING: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Ports held for a starting guest's displays, released when the start has ended (the
/// guest's live definition names them from then on, or the start failed).
#[derive(Debug, Default)]
pub struct Reservation(Vec<u16>);

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut starting = STARTING.lock().unwrap();
        for p in &self.0 {
            starting.remove(p);
        }
    }
}

/// Whether graphics device `g` wants the host to pick its port.
fn automatic(g: &crate::bindings::types::Graphics) -> bool {
    matches!(g.graphics_type.as_str(), "vnc" | "spice") && g.autoport
}

/// Whether nothing on the host has `port` bound, on any address: a wildcard bind fails
/// while any address holds the port.
fn free(port: u16) -> bool {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => false,
        // No IPv6 here: IPv4's wildcard decides.
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok(),
    }
}

impl Connection {
    /// Whether this connection's driver has the host pick its displays' ports.
    pub(crate) fn picks_display_ports(&self) -> bool {
        self.plugin.manifest.plugin.graphics_ports
    }

    /// `def` with a port picked for each automatic display and the default address for each
    /// display without one, and the reservation that holds the ports until the start has
    /// ended. Any port `def` names for an automatic display (from a save image, a migration
    /// source) is picked anew: it was another host's, or another run's.
    pub(crate) fn with_display_ports(&self, def: DomainDef) -> Result<(DomainDef, Reservation)> {
        if !self.picks_display_ports() {
            return Ok((def, Reservation::default()));
        }
        let mut def = def;
        // The address it will listen on, as libvirt's live XML shows it (and `vncdisplay`
        // reads it).
        for g in def.graphics.iter_mut() {
            if matches!(g.graphics_type.as_str(), "vnc" | "spice") && g.listen.is_none() {
                g.listen = Some(DEFAULT_LISTEN.to_string());
            }
        }
        if !def.graphics.iter().any(automatic) {
            return Ok((def, Reservation::default()));
        }
        let mut held: BTreeSet<u16> = self
            .state
            .objects()
            .domains
            .values()
            .filter(|r| r.is_active() && r.def.uuid != def.uuid)
            .filter_map(|r| r.live.as_ref())
            .flat_map(|d| d.graphics.iter())
            .filter_map(|g| g.port.and_then(|p| u16::try_from(p).ok()))
            .collect();
        // Ports this definition fixes are not free for its automatic ones either.
        held.extend(
            def.graphics
                .iter()
                .filter(|g| !automatic(g))
                .filter_map(|g| g.port.and_then(|p| u16::try_from(p).ok())),
        );
        // Before the lock: on an early return the guard goes first, then the reservation,
        // whose drop takes the lock again.
        let mut reservation = Reservation::default();
        let mut starting = STARTING.lock().unwrap();
        for g in def.graphics.iter_mut().filter(|g| automatic(g)) {
            let port = (FIRST_PORT..=u16::MAX)
                .find(|p| !held.contains(p) && !starting.contains(p) && free(*p))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::OperationFailed,
                        format!(
                            "no free port for the {} display: every port from {FIRST_PORT} is in use",
                            g.graphics_type
                        ),
                    )
                })?;
            starting.insert(port);
            reservation.0.push(port);
            g.port = Some(i32::from(port));
        }
        Ok((def, reservation))
    }
}
