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

/// The taps this host made, by name: which plugin made each and the interface index it got.
/// A plugin may delete only a tap it made that still has that index, so a stale record (a
/// name the kernel has since given to another tap) or another plugin's tap is never touched.
/// Kept beside the child registry, one `NAME.tap` file each, so a restarted host knows them.
#[derive(Debug, Default)]
pub struct TapRegistry {
    dir: std::sync::OnceLock<std::path::PathBuf>,
    taps: std::sync::Mutex<std::collections::HashMap<String, TapRecord>>,
}

/// One tap the host made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct TapRecord {
    plugin: String,
    ifindex: i32,
}

impl TapRegistry {
    /// Keeps the registry in `dir` (created by the child registry), reading what an earlier
    /// host left there: a tap that is gone, or whose name now has another index, is dropped.
    /// Returns how many taps it found.
    pub fn persist_in(&self, dir: &Path) -> std::io::Result<usize> {
        let _ = self.dir.set(dir.to_path_buf());
        let mut found = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("tap") {
                continue;
            }
            let name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let rec: Option<TapRecord> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            match rec {
                Some(rec) if ifindex_of(&name) == Some(rec.ifindex) => {
                    self.taps.lock().unwrap().insert(name, rec);
                    found += 1;
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(found)
    }

    fn record(&self, name: &str, rec: TapRecord) {
        if let Some(dir) = self.dir.get() {
            let path = dir.join(format!("{name}.tap"));
            let body = serde_json::to_vec(&rec).unwrap_or_default();
            if let Err(e) = crate::engine::write_atomically_volatile(&path, &body) {
                tracing::warn!(file = %path.display(), "cannot record tap {name}: {e}");
            }
        }
        self.taps.lock().unwrap().insert(name.to_string(), rec);
    }

    /// Whether `plugin` made `name` and it is still that tap (same interface index).
    fn owned_by(&self, name: &str, plugin: &str) -> bool {
        self.taps
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|r| r.plugin == plugin && ifindex_of(name) == Some(r.ifindex))
    }

    fn forget(&self, name: &str) {
        self.taps.lock().unwrap().remove(name);
        if let Some(dir) = self.dir.get() {
            let _ = std::fs::remove_file(dir.join(format!("{name}.tap")));
        }
    }
}

/// The kernel's index of interface `name` (in this network namespace), if it exists.
fn ifindex_of(name: &str) -> Option<i32> {
    let sock = control_socket().ok()?;
    let mut req = ifreq(name).ok()?;
    // SAFETY: SIOCGIFINDEX reads and fills the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) } < 0 {
        return None;
    }
    // SAFETY: the kernel filled the index member.
    Some(unsafe { req.ifr_ifru.ifru_ifindex })
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
        let made = create_tap(&bridge).map_err(|e| wit_error(WitKind::OperationFailed, e));
        if let Ok(name) = &made {
            match ifindex_of(name) {
                Some(ifindex) => self.taps.record(
                    name,
                    TapRecord {
                        plugin: self.grants.plugin.clone(),
                        ifindex,
                    },
                ),
                None => tracing::warn!("tap {name} vanished right after it was made"),
            }
        }
        Ok(made)
    }

    fn delete_tap(&mut self, name: String) -> wasmtime::Result<Result<(), WitError>> {
        if !self.taps.owned_by(&name, &self.grants.plugin) {
            return Ok(Err(wit_error(
                WitKind::PermissionDenied,
                format!(
                    "'{name}' is not a tap device this host created for plugin '{}' (or it has been replaced since)",
                    self.grants.plugin
                ),
            )));
        }
        let deleted = delete_tap(&name).map_err(|e| wit_error(WitKind::OperationFailed, e));
        if deleted.is_ok() {
            self.taps.forget(&name);
        }
        Ok(deleted)
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
    fn the_registry_knows_only_taps_it_made_and_drops_stale_ones() {
        let reg = TapRegistry::default();
        let dir = tempfile::tempdir().unwrap();
        reg.persist_in(dir.path()).unwrap();
        // The loopback always exists: a stand-in for a live tap.
        let lo = ifindex_of("lo").expect("lo has an index");
        reg.record(
            "lo",
            TapRecord {
                plugin: "qemu".into(),
                ifindex: lo,
            },
        );
        assert!(reg.owned_by("lo", "qemu"));
        assert!(!reg.owned_by("lo", "other"), "another plugin's");
        assert!(!reg.owned_by("vwnet9", "qemu"), "never made");
        // A record whose index no longer matches is stale: not owned, and dropped on reload.
        reg.record(
            "lo",
            TapRecord {
                plugin: "qemu".into(),
                ifindex: lo + 1000,
            },
        );
        assert!(!reg.owned_by("lo", "qemu"));
        let again = TapRegistry::default();
        assert_eq!(again.persist_in(dir.path()).unwrap(), 0);
        assert!(
            !dir.path().join("lo.tap").exists(),
            "the stale record was removed"
        );
        reg.forget("lo");
        assert!(!reg.owned_by("lo", "qemu"));
    }

    #[test]
    fn only_vwnet_taps_can_be_deleted() {
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
