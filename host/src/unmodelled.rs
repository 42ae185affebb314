//! What a definition holds beyond the model, refused for drivers that build real guests.
//!
//! The XML layer keeps what the model does not cover (`Extras`), so a libvirt file survives
//! a round trip; but a driver sees only the model. For a make-believe driver that is
//! harmless. A driver that builds real guests would silently run one without those parts:
//! a sound card, a passed-through host device, a disk's encryption or I/O limits, a NIC's
//! filter, a display's password. Its manifest says so
//! (`strict-devices`, `graphics-ports`), and such definitions are refused at define, naming
//! what the driver would leave out.

use crate::bindings::types::DomainDef;
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::xml::Extras;

/// Device elements that configure the host side only, and change nothing the guest sees on
/// their own (`<audio>`: a sound backend, used only by a sound device).
const HOST_SIDE_ONLY: &[&str] = &["/domain/devices/audio"];

/// Settings inside a modelled device that change what the guest sees or may do, by the
/// device's kind: `(kind, the path below the device)`. Others a driver leaves to its
/// defaults (an address of a device the model gives none, a controller's chip name, a
/// disk's discard mode), which the guest runs with as well.
const SIGNIFICANT: &[(&str, &str)] = &[
    // A LUKS image run without its key: the guest writes over the ciphertext.
    ("disk", "/encryption"),
    ("disk", "/source/encryption"),
    ("disk", "/source/auth"),
    ("disk", "/auth"),
    // Limits a tenant is held to.
    ("disk", "/iotune"),
    // What the guest identifies the disk by (udev's by-id links, multipath).
    ("disk", "/serial"),
    ("disk", "/wwn"),
    ("disk", "/vendor"),
    ("disk", "/product"),
    ("disk", "/geometry"),
    ("disk", "/blockio"),
    // Writes that must not reach the image.
    ("disk", "/transient"),
    ("disk", "/driver/@error_policy"),
    ("disk", "/driver/@rerror_policy"),
    // A NIC's filters, limits, link state, VLAN, MTU and addresses.
    ("interface", "/filterref"),
    ("interface", "/bandwidth"),
    ("interface", "/link"),
    ("interface", "/vlan"),
    ("interface", "/virtualport"),
    ("interface", "/mtu"),
    ("interface", "/ip"),
    ("interface", "/route"),
    ("interface", "/port"),
    // A console's log, kept for audit.
    ("serial", "/log"),
    ("console", "/log"),
];

/// Whether `item` (an extras path) is a [`SIGNIFICANT`] setting of a modelled device.
fn significant(item: &str) -> bool {
    let Some(rest) = item.strip_prefix("/domain/devices/") else {
        return false;
    };
    let Some((kind, after)) = rest.split_once('[') else {
        return false;
    };
    let Some((_, below)) = after.split_once(']') else {
        return false;
    };
    SIGNIFICANT
        .iter()
        .any(|(k, p)| *k == kind && (below == *p || below.starts_with(&format!("{p}/"))))
}

impl Connection {
    /// Refuses `def` if its driver would leave out part of it: devices outside the model
    /// (`strict-devices`), and settings of a VNC or SPICE display the model does not carry
    /// (`graphics-ports`).
    pub(crate) fn check_unmodelled(&self, def: &DomainDef, extras: &Extras) -> Result<()> {
        let manifest = &self.plugin.manifest.plugin;
        if !manifest.strict_devices && !self.picks_display_ports() {
            return Ok(());
        }
        let unknown = extras.unknown_items();
        let mut left_out: Vec<String> = Vec::new();
        if manifest.strict_devices {
            left_out.extend(
                extras
                    .elements
                    .iter()
                    .filter(|e| e.parent == "/domain/devices")
                    .filter(|e| !HOST_SIDE_ONLY.contains(&e.path.as_str()))
                    .map(|e| e.path.clone()),
            );
            left_out.extend(unknown.iter().filter(|i| significant(i)).cloned());
        }
        if self.picks_display_ports() {
            // Only displays the driver serves: it refuses other kinds by their type.
            let served = |item: &str| {
                item.strip_prefix("/domain/devices/graphics[")
                    .and_then(|rest| rest.split(']').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| def.graphics.get(n.checked_sub(1)?))
                    .is_some_and(|g| matches!(g.graphics_type.as_str(), "vnc" | "spice"))
            };
            left_out.extend(unknown.iter().filter(|i| served(i)).cloned());
        }
        if left_out.is_empty() {
            return Ok(());
        }
        left_out.sort();
        left_out.dedup();
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "unsupported configuration: the {} driver does not build {} yet, and would run the guest without it (remove it to run without)",
                self.plugin.name(),
                left_out.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::significant;

    #[test]
    fn settings_that_change_the_guest_are_significant_and_placement_is_not() {
        for item in [
            "/domain/devices/disk[1]/encryption",
            "/domain/devices/disk[2]/source/encryption/secret",
            "/domain/devices/disk[1]/iotune",
            "/domain/devices/disk[1]/driver/@error_policy",
            "/domain/devices/interface[3]/filterref",
            "/domain/devices/serial[1]/log",
        ] {
            assert!(significant(item), "{item}");
        }
        for item in [
            "/domain/devices/rng[1]/address",
            "/domain/devices/controller[2]/model",
            "/domain/devices/controller[2]/target",
            "/domain/devices/disk[1]/driver/@discard",
            "/domain/devices/disk[1]/iotuned",
            "/domain/devices/interface[1]/alias",
            "/domain/devices/sound",
            "/domain/os/@firmware",
        ] {
            assert!(!significant(item), "{item}");
        }
    }
}
