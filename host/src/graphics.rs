//! Ports for guest displays (VNC, SPICE) that ask for one automatically.
//!
//! libvirt picks an autoport display's port when the domain starts: the lowest from 5900
//! that none of its guests holds and that nothing on the host has bound. The host does the
//! same for drivers whose manifest says `graphics-ports = true`: the driver gets the
//! definition with the port in it, so its command line and the live XML
//! (`port='5901' autoport='yes'`, what `virsh vncdisplay` reads) name the same port. A driver
//! could not pick one itself: it has no view of the host's sockets.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
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
        // Also while unwinding: a poisoned set is still the right set.
        let mut starting = STARTING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in &self.0 {
            starting.remove(p);
        }
    }
}

/// Whether graphics device `g` wants the host to pick its port.
fn automatic(g: &crate::bindings::types::Graphics) -> bool {
    matches!(g.graphics_type.as_str(), "vnc" | "spice") && g.autoport
}

/// Whether nothing on the host has `port` bound, on any address: a wildcard bind (IPv4, and
/// IPv6 on its own where the host has it) fails while any address holds the port. The
/// sockets are bound only, never listening, so no client can reach them meanwhile; with
/// SO_REUSEADDR, as QEMU binds, a connection lingering in TIME_WAIT does not count.
fn free(port: u16) -> bool {
    use socket2::{Domain, Socket, Type};
    let bindable = |domain: Domain, addr: std::net::SocketAddr| -> Option<bool> {
        // No such address family here: nothing can hold the port in it.
        let socket = Socket::new(domain, Type::STREAM, None).ok()?;
        let _ = socket.set_reuse_address(true);
        if domain == Domain::IPV6 {
            let _ = socket.set_only_v6(true);
        }
        Some(match socket.bind(&addr.into()) {
            Ok(()) => true,
            Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
        })
    };
    bindable(Domain::IPV4, (Ipv4Addr::UNSPECIFIED, port).into()).unwrap_or(true)
        && bindable(Domain::IPV6, (Ipv6Addr::UNSPECIFIED, port).into()).unwrap_or(true)
}

/// `def` keeping the address and port of each display `current` has of the same kind at
/// the same place: what a guest that runs on (a snapshot reverted inside the same QEMU)
/// still listens on.
pub(crate) fn keep_display_ports(def: &mut DomainDef, current: &DomainDef) {
    for (g, c) in def.graphics.iter_mut().zip(&current.graphics) {
        if g.graphics_type == c.graphics_type {
            g.port = c.port;
            g.listen = c.listen.clone();
        }
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
        if def.graphics.is_empty() {
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
        let mut starting = STARTING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A fixed port another guest is starting on: QEMU would fail later, less clearly.
        for port in def
            .graphics
            .iter()
            .filter(|g| !automatic(g))
            .filter_map(|g| g.port.and_then(|p| u16::try_from(p).ok()))
        {
            if starting.contains(&port) {
                return Err(Error::new(
                    ErrorKind::OperationFailed,
                    format!("display port {port} is being taken by another guest that is starting"),
                ));
            }
            starting.insert(port);
            reservation.0.push(port);
        }
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
