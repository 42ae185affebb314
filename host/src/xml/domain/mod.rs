//! `<domain>`: libvirt's domain XML (`formatdomain.rst`) to and from [`DomainDef`].
//!
//! `read` builds the model from the tree, `write` writes it in libvirt's order, and `vocab`
//! holds the words libvirt accepts for each enumerated value.

mod read;
mod vocab;
mod write;

pub(super) use read::read_name;

use serde::{Deserialize, Serialize};

use super::values::{generate_mac, generate_uuid};
use super::{Extras, FormatOptions, ParseOptions, STRICT, parse_root};
use crate::Error;
use crate::bindings::types::{BootDevice, Clock, Disk, DiskDevice, DomainDef, LifecycleAction};
use read::read_domain;

/// A domain definition with everything in its XML that the model does not cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedDomain {
    /// The modelled part, what drivers see.
    pub def: DomainDef,
    /// The rest, written back by [`format_domain`].
    pub extras: Extras,
}

impl ParsedDomain {
    /// A domain with nothing beyond the model (one built by code rather than read).
    pub fn new(def: DomainDef) -> Self {
        ParsedDomain {
            def,
            extras: Extras::default(),
        }
    }

    /// Paths of the elements and attributes virtwasm does not interpret, for `--validate`.
    pub fn unknown_items(&self) -> Vec<String> {
        self.extras.unknown_items()
    }
}

// ------------------------------------------------------------------ public API

/// Reads a domain definition, filling libvirt's defaults; unknown content is kept in
/// [`ParsedDomain::extras`].
pub fn parse_domain(xml: &str) -> Result<ParsedDomain, Error> {
    parse_domain_with(xml, &ParseOptions::default())
}

/// Reads a domain definition and refuses anything outside the modelled subset, naming it.
pub fn parse_domain_strict(xml: &str) -> Result<ParsedDomain, Error> {
    parse_domain_with(xml, &STRICT)
}

/// Reads a domain definition with explicit options.
pub fn parse_domain_with(xml: &str, options: &ParseOptions) -> Result<ParsedDomain, Error> {
    let ((mut def, device_boot), extras) = parse_root(xml, "domain", options, read_domain)?;
    if options.fill_defaults {
        fill_defaults(&mut def, device_boot);
    }
    Ok(ParsedDomain { def, extras })
}

/// Fills what libvirt fills when a domain is defined, so that our `dumpxml` matches its:
/// a fresh uuid, current memory (at most the maximum), one vCPU with static placement, MACs
/// in 52:54:00, controller indexes, disk buses from the target name, lifecycle actions, a
/// UTC clock, and boot from disk for a full-virtualization guest that names no boot device.
pub fn fill_domain_defaults(d: &mut DomainDef) {
    let device_boot = d.disks.iter().any(|disk| disk.boot_order.is_some());
    fill_defaults(d, device_boot);
}

/// The defaults, knowing whether any device (modelled or not, a NIC's `<boot order>` is not)
/// has a boot order, which rules out the default `<os><boot>`.
fn fill_defaults(d: &mut DomainDef, device_boot: bool) {
    if d.uuid.is_empty() {
        d.uuid = generate_uuid();
    }
    if d.current_memory_kib == 0 || d.current_memory_kib > d.memory_kib {
        d.current_memory_kib = d.memory_kib;
    }
    if d.vcpus == 0 {
        d.vcpus = 1;
    }
    if d.current_vcpus.is_some_and(|c| c >= d.vcpus) {
        d.current_vcpus = None;
    }
    if d.vcpu_placement.is_none() {
        d.vcpu_placement = Some("static".to_string());
    }
    for iface in &mut d.interfaces {
        if iface.mac.is_none() {
            iface.mac = Some(generate_mac());
        }
    }
    // A controller without an index gets the lowest its type leaves free, as libvirt
    // numbers them (`<controller type='pci' model='pcie-root-port'/>` adds the next port).
    for i in 0..d.controllers.len() {
        if d.controllers[i].index.is_some() {
            continue;
        }
        let kind = d.controllers[i].controller_type.clone();
        let used: std::collections::BTreeSet<u32> = d
            .controllers
            .iter()
            .filter(|c| c.controller_type == kind)
            .filter_map(|c| c.index)
            .collect();
        d.controllers[i].index = (0..).find(|n| !used.contains(n));
    }
    for disk in &mut d.disks {
        if disk.target_bus.is_none() {
            disk.target_bus = Some(default_disk_bus(disk).to_string());
        }
    }
    d.on_poweroff.get_or_insert(LifecycleAction::Destroy);
    d.on_reboot.get_or_insert(LifecycleAction::Restart);
    d.on_crash.get_or_insert(LifecycleAction::Destroy);
    if d.clock.is_none() {
        d.clock = Some(Clock {
            offset: "utc".to_string(),
            timezone: None,
            adjustment: None,
            basis: None,
        });
    }
    if d.os.os_type == "hvm" && d.os.boot.is_empty() && !device_boot {
        d.os.boot.push(BootDevice::Hd);
    }
}

/// libvirt's rule (`virDomainDiskDefParseXML`): floppies sit on the floppy controller, other
/// disks on the bus their name implies.
fn default_disk_bus(disk: &Disk) -> &'static str {
    let dev = disk.target_dev.as_str();
    if disk.device == DiskDevice::Floppy || dev.starts_with("fd") {
        "fdc"
    } else if dev.starts_with("hd") {
        "ide"
    } else if dev.starts_with("sd") {
        "scsi"
    } else if dev.starts_with("vd") {
        "virtio"
    } else if dev.starts_with("xvd") {
        "xen"
    } else if dev.starts_with("ubd") {
        "uml"
    } else {
        "ide"
    }
}

/// Writes a domain as `virsh dumpxml` does.
pub fn format_domain(d: &ParsedDomain, options: &FormatOptions) -> String {
    write::write_domain(d, options)
}
