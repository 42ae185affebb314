//! Adding and removing devices: live through the driver (hotplug), in the persistent
//! definition by the host, or both, as `virsh attach-device`/`detach-device` do.

use crate::bindings::types::{Device, DomainDef};
use crate::connect::Connection;
use crate::error::{Error, Result};
use crate::tuning::Scope;

/// Entropy sources a definition may name without a grant: they are only read, and every
/// guest needs one.
const ENTROPY_SOURCES: &[&str] = &["/dev/urandom", "/dev/random", "/dev/hwrng"];

/// The host paths a domain definition makes its driver open, each with what names it: disk
/// sources, the direct-boot kernel and initrd, character devices' files and sockets, and RNG
/// sources other than the kernel's entropy devices. A front end serving untrusted clients
/// checks them against the directories it lets clients name.
pub fn host_paths(def: &DomainDef) -> Vec<HostPath> {
    let mut out = Vec::new();
    if let Some(k) = &def.os.kernel {
        out.push(HostPath::file("<os><kernel>", k));
    }
    if let Some(i) = &def.os.initrd {
        out.push(HostPath::file("<os><initrd>", i));
    }
    for d in &def.disks {
        out.extend(device_paths(&Device::Disk(d.clone())));
    }
    for c in &def.chardevs {
        out.extend(device_paths(&Device::Chardev(c.clone())));
    }
    for r in &def.rngs {
        if let Some(src) = &r.backend_source
            && !ENTROPY_SOURCES.contains(&src.as_str())
        {
            out.push(HostPath::file("<rng><backend>", src));
        }
    }
    out
}

/// A host path a definition names, and what names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    /// What names it, for messages: `disk 'vda'`, `<os><kernel>`, `serial device`.
    pub what: String,
    /// The path.
    pub path: String,
    /// A disk's source: an image whose backing files the backend opens too.
    pub image: bool,
}

impl HostPath {
    fn file(what: &str, path: &str) -> HostPath {
        HostPath {
            what: what.to_string(),
            path: path.to_string(),
            image: false,
        }
    }
}

/// The host paths one device makes its driver open (see [`host_paths`]).
pub fn device_paths(dev: &Device) -> Vec<HostPath> {
    use crate::bindings::types::{ChardevSourceType as C, DiskSourceType as D};
    match dev {
        Device::Disk(d) => match (d.source_type, &d.source) {
            (D::File | D::Block | D::Dir, Some(path)) => vec![HostPath {
                what: format!("disk '{}'", d.target_dev),
                path: path.clone(),
                image: true,
            }],
            _ => vec![],
        },
        Device::Chardev(c) => match (c.source_type, &c.source_path) {
            (C::File | C::Unix | C::Pipe | C::Dev, Some(path)) => {
                use crate::bindings::types::ChardevKind as K;
                let kind = match c.kind {
                    K::Serial => "serial",
                    K::Console => "console",
                    K::Parallel => "parallel",
                    K::Channel => "channel",
                };
                vec![HostPath::file(&format!("{kind} device"), path)]
            }
            _ => vec![],
        },
        _ => vec![],
    }
}

/// Which device to remove.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceSelector {
    /// A disk by target (`vdb`) or source path.
    Disk(String),
    /// An interface by MAC address.
    InterfaceMac(String),
    /// The one device equal to this description.
    Exact(Box<Device>),
}

fn add(def: &mut DomainDef, dev: &Device) -> Result<()> {
    match dev {
        Device::Disk(d) => {
            if def.disks.iter().any(|x| x.target_dev == d.target_dev) {
                return Err(Error::failed(format!(
                    "operation failed: target {} already exists",
                    d.target_dev
                )));
            }
            def.disks.push(d.clone());
        }
        Device::Interface(i) => {
            if let Some(mac) = &i.mac
                && def.interfaces.iter().any(|x| x.mac.as_ref() == Some(mac))
            {
                return Err(Error::failed(format!(
                    "operation failed: interface with MAC {mac} already exists"
                )));
            }
            def.interfaces.push(i.clone());
        }
        Device::Chardev(c) => def.chardevs.push(c.clone()),
        Device::Controller(c) => def.controllers.push(c.clone()),
        Device::Input(i) => def.inputs.push(i.clone()),
    }
    Ok(())
}

/// `dev` with libvirt's generic defaults filled, as a definition's devices get them: the
/// device is filled inside a minimal definition by the same function the XML layer uses.
fn with_defaults(dev: Device) -> Device {
    let minimal =
        "<domain type='kvm'><name>d</name><memory>1</memory><os><type>hvm</type></os></domain>";
    let Ok(mut probe) = crate::xml::parse_domain(minimal).map(|p| p.def) else {
        return dev;
    };
    match dev {
        Device::Disk(d) => {
            probe.disks.push(d);
            crate::xml::fill_domain_defaults(&mut probe);
            Device::Disk(probe.disks.remove(0))
        }
        Device::Interface(i) => {
            probe.interfaces.push(i);
            crate::xml::fill_domain_defaults(&mut probe);
            Device::Interface(probe.interfaces.remove(0))
        }
        other => other,
    }
}

/// The device of `def` that `dev` added: the disk with its target, the NIC with its MAC (as
/// a driver filled it in); other kinds as given.
fn added(def: &DomainDef, dev: &Device) -> Option<Device> {
    match dev {
        Device::Disk(d) => def
            .disks
            .iter()
            .find(|x| x.target_dev == d.target_dev)
            .cloned()
            .map(Device::Disk),
        Device::Interface(i) => def
            .interfaces
            .iter()
            .find(|x| x.mac.is_some() && x.mac == i.mac)
            .cloned()
            .map(Device::Interface),
        _ => None,
    }
}

/// Removes the selected device from `def`, returning it.
fn remove(def: &mut DomainDef, sel: &DeviceSelector) -> Option<Device> {
    match sel {
        DeviceSelector::Disk(key) => {
            let i = def
                .disks
                .iter()
                .position(|d| &d.target_dev == key || d.source.as_ref() == Some(key))?;
            Some(Device::Disk(def.disks.remove(i)))
        }
        DeviceSelector::InterfaceMac(mac) => {
            let i = def.interfaces.iter().position(|x| {
                x.mac
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            })?;
            Some(Device::Interface(def.interfaces.remove(i)))
        }
        DeviceSelector::Exact(dev) => match dev.as_ref() {
            Device::Disk(d) => remove(def, &DeviceSelector::Disk(d.target_dev.clone())),
            Device::Interface(i) => match &i.mac {
                Some(mac) => remove(def, &DeviceSelector::InterfaceMac(mac.clone())),
                None => {
                    let i = def.interfaces.iter().position(|x| x == i)?;
                    Some(Device::Interface(def.interfaces.remove(i)))
                }
            },
            Device::Chardev(c) => {
                let i = def.chardevs.iter().position(|x| x == c)?;
                Some(Device::Chardev(def.chardevs.remove(i)))
            }
            Device::Controller(c) => {
                let i = def.controllers.iter().position(|x| x == c)?;
                Some(Device::Controller(def.controllers.remove(i)))
            }
            Device::Input(x) => {
                let i = def.inputs.iter().position(|y| y == x)?;
                Some(Device::Input(def.inputs.remove(i)))
            }
        },
    }
}

impl Connection {
    /// `def` with a device added, filled in by the driver as a definition is; the driver
    /// may not rename it or give it another uuid.
    fn refilled(&self, def: &DomainDef) -> Result<DomainDef> {
        let filled = self
            .plugin
            .hypervisor("fill-defaults", |g, s| g.call_fill_defaults(s, def))?;
        if filled.name != def.name || filled.uuid != def.uuid {
            return Err(Error::internal(format!(
                "internal error: plugin '{}' changed the domain's name or uuid while filling defaults",
                self.plugin.name()
            )));
        }
        Ok(filled)
    }

    /// Adds `dev`. `scope` `None` is virsh's flagless form: the running domain only.
    pub fn attach_device(&self, key: &str, dev: Device, scope: Option<Scope>) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "attach-device")?;
        let verb = if scope.is_some() {
            "attach-device"
        } else {
            "attach-device-legacy"
        };
        let scope = scope.unwrap_or(Scope {
            live: true,
            config: false,
        });
        // The same defaults a definition gets (bus from the target name, a generated MAC),
        // filled once so the live and persistent copies describe the same device.
        let dev = with_defaults(dev);
        let mut new = rec.clone();
        if scope.config {
            if !rec.persistent {
                return Err(Error::invalid_state(
                    "Requested operation is not valid: cannot modify device on transient domain",
                ));
            }
            add(&mut new.def, &dev)?;
            new.def = self.refilled(&new.def)?;
        }
        if scope.live {
            if !rec.is_active() {
                return Err(Error::invalid_state(
                    "Requested operation is not valid: domain is not running",
                ));
            }
            let mut live = rec.live.clone().unwrap_or_else(|| rec.def.clone());
            add(&mut live, &dev)?;
            // The driver fills the device into the running definition as into a new one (a
            // PCI address where the running guest has room): what it plugs and what the live
            // XML records, for a restore or a migration to rebuild, are then the same.
            let live = self.refilled(&live)?;
            let dev = added(&live, &dev).unwrap_or(dev);
            let runtime = self
                .plugin
                .hypervisor(verb, |g, s| g.call_attach_device(s, &rec.as_ref(), &dev))?;
            new.live = Some(live);
            new.runtime = Some(runtime);
        }
        self.replace_record(new)
    }

    /// Removes the selected device; returns it. `None` scope as for [`Connection::attach_device`].
    pub fn detach_device(
        &self,
        key: &str,
        sel: &DeviceSelector,
        scope: Option<Scope>,
    ) -> Result<Option<Device>> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "detach-device")?;
        let verb = if scope.is_some() {
            "detach-device"
        } else {
            "detach-device-legacy"
        };
        let scope = scope.unwrap_or(Scope {
            live: true,
            config: false,
        });
        let mut new = rec.clone();
        let mut found = None;
        if scope.config {
            found = remove(&mut new.def, sel);
            if found.is_none() {
                return Ok(None);
            }
        }
        if scope.live {
            if !rec.is_active() {
                return Err(Error::invalid_state(
                    "Requested operation is not valid: domain is not running",
                ));
            }
            let mut live = rec.live.clone().unwrap_or_else(|| rec.def.clone());
            let Some(dev) = remove(&mut live, sel) else {
                return Ok(None);
            };
            let runtime = self
                .plugin
                .hypervisor(verb, |g, s| g.call_detach_device(s, &rec.as_ref(), &dev))?;
            new.live = Some(live);
            new.runtime = Some(runtime);
            found = Some(dev);
        }
        self.replace_record(new)?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::types::*;

    fn disk(target: &str) -> Disk {
        Disk {
            source_type: DiskSourceType::File,
            device: DiskDevice::Disk,
            driver_name: None,
            format: None,
            cache: None,
            io: None,
            source: Some(format!("/img/{target}.qcow2")),
            source_pool: None,
            source_volume: None,
            target_dev: target.into(),
            target_bus: Some("virtio".into()),
            readonly: false,
            shareable: false,
            boot_order: None,
            address: vec![],
        }
    }

    #[test]
    fn devices_are_added_once_and_removed_by_target_or_source() {
        let mut def = crate::xml::parse_domain("<domain type='kvm'><name>v</name><memory>1024</memory><os><type>hvm</type></os></domain>").unwrap().def;
        add(&mut def, &Device::Disk(disk("vdb"))).unwrap();
        let e = add(&mut def, &Device::Disk(disk("vdb"))).unwrap_err();
        assert_eq!(e.message, "operation failed: target vdb already exists");
        add(&mut def, &Device::Disk(disk("vdc"))).unwrap();
        assert!(remove(&mut def, &DeviceSelector::Disk("/img/vdc.qcow2".into())).is_some());
        assert!(remove(&mut def, &DeviceSelector::Disk("vdz".into())).is_none());
        assert_eq!(def.disks.len(), 1);
    }
}
