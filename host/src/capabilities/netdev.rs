//! The `netdev` capability: tap devices for guests' NICs, enslaved to bridges the manifest
//! grants. The host names the taps `vwnetN` (libvirt's `vnetN` with a prefix of its own, so
//! libvirt's taps on the same host are never touched) and deletes only taps of that name, so
//! a plugin reaches nothing else of the host's network.
//!
//! Written against the kernel's ioctls (TUNSETIFF, TUNSETPERSIST, SIOCBRADDIF and the
//! interface flag/MTU calls) with `libc`: five calls did not justify a netlink stack.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::bindings::virtwasm::plugin::netdev::Host;
use crate::bindings::virtwasm::plugin::types::{Error as WitError, ErrorKind as WitKind};
use crate::error::wit_error;

use super::HostState;

/// The names the host gives taps; the kernel fills in the lowest free number.
const TAP_TEMPLATE: &str = "vwnet%d";
/// `SIOCBRADDIF` from `linux/sockios.h` (not in every libc release).
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

/// Whether `bridge` matches one of the manifest's patterns: `*`, a name, or `prefix*`.
pub fn bridge_granted(bridge: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => bridge.starts_with(prefix),
        None => p == bridge,
    })
}

/// Whether `name` is a tap this capability may delete: `vwnet` and digits, and a tun device.
fn is_our_tap(name: &str) -> bool {
    name.strip_prefix("vwnet")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && Path::new("/sys/class/net")
            .join(name)
            .join("tun_flags")
            .exists()
}

/// An `ifreq` naming `name`.
fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return Err(format!("'{name}' is not a valid interface name"));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn last_error(what: &str, name: &str) -> String {
    format!("{what} '{name}': {}", std::io::Error::last_os_error())
}

/// An AF_INET datagram socket, the handle the interface ioctls go through.
fn control_socket() -> Result<OwnedFd, String> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "cannot open a control socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `/dev/net/tun` and attaches it to a tap (`name` may be a `%d` template).
fn open_tap(name: &str) -> Result<(OwnedFd, String), String> {
    // SAFETY: open(2) of a fixed path; the descriptor is owned below.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "cannot open /dev/net/tun: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and fills the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(last_error("cannot attach to tap", name));
    }
    // SAFETY: the kernel wrote a NUL-terminated name into ifr_name.
    let real = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok((fd, real))
}

fn set_persist(fd: &OwnedFd, on: bool, name: &str) -> Result<(), String> {
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, on as libc::c_ulong) } < 0 {
        return Err(last_error("cannot set persistence of tap", name));
    }
    Ok(())
}

/// Creates a persistent tap, gives it the bridge's MTU, enslaves it and sets it up.
pub fn create_tap(bridge: &str) -> Result<String, String> {
    if !Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .exists()
    {
        return Err(format!("'{bridge}' is not a bridge on this host"));
    }
    let (fd, name) = open_tap(TAP_TEMPLATE)?;
    set_persist(&fd, true, &name)?;
    drop(fd);
    let configured = (|| {
        let sock = control_socket()?;
        let mut req = ifreq(bridge)?;
        // SAFETY: the interface ioctls read and fill the ifreq we own.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) < 0 {
                return Err(last_error("cannot read the MTU of bridge", bridge));
            }
            let mtu = req.ifr_ifru.ifru_mtu;
            let mut tap = ifreq(&name)?;
            tap.ifr_ifru.ifru_mtu = mtu;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut tap) < 0 {
                return Err(last_error("cannot set the MTU of tap", &name));
            }
            let mut tap = ifreq(&name)?;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut tap) < 0 {
                return Err(last_error("cannot find tap", &name));
            }
            let index = tap.ifr_ifru.ifru_ifindex;
            let mut br = ifreq(bridge)?;
            br.ifr_ifru.ifru_ifindex = index;
            if libc::ioctl(sock.as_raw_fd(), SIOCBRADDIF, &mut br) < 0 {
                return Err(format!(
                    "cannot add tap '{name}' to bridge '{bridge}': {}",
                    std::io::Error::last_os_error()
                ));
            }
            let mut flags = ifreq(&name)?;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut flags) < 0 {
                return Err(last_error("cannot read the flags of tap", &name));
            }
            flags.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut flags) < 0 {
                return Err(last_error("cannot set up tap", &name));
            }
        }
        Ok(())
    })();
    if let Err(e) = configured {
        let _ = delete_tap(&name);
        return Err(e);
    }
    Ok(name)
}

/// Deletes a persistent tap (it fails while a process, such as QEMU, still holds it).
pub fn delete_tap(name: &str) -> Result<(), String> {
    if !is_our_tap(name) {
        return Err(format!(
            "'{name}' is not a tap device this host created (vwnetN)"
        ));
    }
    let (fd, real) = open_tap(name)?;
    set_persist(&fd, false, &real)
}

impl Host for HostState {
    fn create_tap(&mut self, bridge: String) -> wasmtime::Result<Result<String, WitError>> {
        let patterns = self.grants.bridges.as_deref().unwrap_or_default();
        if !bridge_granted(&bridge, patterns) {
            let why = format!(
                "plugin '{}' may not attach taps to bridge '{bridge}' (its manifest grants: {})",
                self.grants.plugin,
                if patterns.is_empty() {
                    "none".to_string()
                } else {
                    patterns.join(", ")
                }
            );
            tracing::warn!(plugin = %self.grants.plugin, "denied: {why}");
            return Ok(Err(wit_error(WitKind::PermissionDenied, why)));
        }
        Ok(create_tap(&bridge).map_err(|e| wit_error(WitKind::OperationFailed, e)))
    }

    fn delete_tap(&mut self, name: String) -> wasmtime::Result<Result<(), WitError>> {
        Ok(delete_tap(&name).map_err(|e| wit_error(WitKind::OperationFailed, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_are_granted_by_name_or_prefix() {
        let grants = vec!["br0".to_string(), "virbr*".to_string()];
        assert!(bridge_granted("br0", &grants));
        assert!(bridge_granted("virbr12", &grants));
        assert!(!bridge_granted("br01", &grants));
        assert!(!bridge_granted("eth0", &grants));
        assert!(bridge_granted("anything", &["*".to_string()]));
        assert!(!bridge_granted("br0", &[]));
    }

    #[test]
    fn only_vnet_taps_can_be_deleted() {
        for name in [
            "lo",
            "eth0",
            "vnet0",
            "vwnet",
            "vwnetx",
            "vwnet1/../lo",
            "../lo",
        ] {
            let e = delete_tap(name).unwrap_err();
            assert!(
                e.contains("is not a tap device this host created"),
                "{name}: {e}"
            );
        }
    }
}
