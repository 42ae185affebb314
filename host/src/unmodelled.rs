//! What a definition holds beyond the model, refused for drivers that build real guests.
//!
//! The XML layer keeps what the model does not cover (`Extras`), so a libvirt file survives
//! a round trip; but a driver sees only the model. For a make-believe driver that is
//! harmless. A driver that builds real guests would silently run one without those parts:
//! a sound card, a passed-through host device, a display's password. Its manifest says so
//! (`strict-devices`, `graphics-ports`), and such definitions are refused at define, naming
//! what the driver would leave out.

use crate::bindings::types::DomainDef;
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::xml::Extras;

/// Device elements that configure the host side only, and change nothing the guest sees on
/// their own (`<audio>`: a sound backend, used only by a sound device).
const HOST_SIDE_ONLY: &[&str] = &["/domain/devices/audio"];

impl Connection {
    /// Refuses `def` if its driver would leave out part of it: devices outside the model
    /// (`strict-devices`), and settings of a VNC or SPICE display the model does not carry
    /// (`graphics-ports`).
    pub(crate) fn check_unmodelled(&self, def: &DomainDef, extras: &Extras) -> Result<()> {
        let manifest = &self.plugin.manifest.plugin;
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
            left_out.extend(extras.unknown_items().into_iter().filter(|i| served(i)));
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
