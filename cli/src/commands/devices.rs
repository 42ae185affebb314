//! Device hotplug and cold-plug commands.

use virtwasm_host::bindings::types::{
    Device, Disk, DiskDevice, DiskSourceType, Interface, InterfaceType,
};
use virtwasm_host::devices::DeviceSelector;
use virtwasm_host::tuning::Scope;

use super::domain::lookup;
use super::{Args, Command, Failure, Opt, Outcome, arg, flag, value};
use crate::session::Session;

const DOMAIN: Opt = arg("domain", "domain name, id or uuid");
const SCOPE: [Opt; 4] = [
    flag("persistent", "make live change persistent"),
    flag("config", "affect next boot"),
    flag("live", "affect running domain"),
    flag("current", "affect current domain"),
];

/// The commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "attach-disk",
        group: "Domain Management",
        help: "attach disk device",
        opts: &[
            DOMAIN,
            arg("source", "source of disk device or name of network disk"),
            arg("target", "target of disk device"),
            value("driver", "driver of disk device"),
            value("subdriver", "subdriver of disk device"),
            value("cache", "cache mode of disk device"),
            value("io", "io policy of disk device"),
            value("type", "target device type"),
            value("targetbus", "target bus of disk device"),
            value("mode", "mode of device reading and writing"),
            value("sourcetype", "type of source (block|file|network)"),
            SCOPE[0],
            SCOPE[1],
            SCOPE[2],
            SCOPE[3],
        ],
        run: attach_disk,
    },
    Command {
        name: "detach-disk",
        group: "Domain Management",
        help: "detach disk device",
        opts: &[
            DOMAIN,
            arg("target", "target of disk device"),
            SCOPE[0],
            SCOPE[1],
            SCOPE[2],
            SCOPE[3],
        ],
        run: detach_disk,
    },
    Command {
        name: "attach-interface",
        group: "Domain Management",
        help: "attach network interface",
        opts: &[
            DOMAIN,
            arg("type", "network interface type"),
            arg("source", "source of network interface"),
            value("target", "target network name"),
            value("mac", "MAC address"),
            value("model", "model type"),
            SCOPE[0],
            SCOPE[1],
            SCOPE[2],
            SCOPE[3],
        ],
        run: attach_interface,
    },
    Command {
        name: "detach-interface",
        group: "Domain Management",
        help: "detach network interface",
        opts: &[
            DOMAIN,
            arg("type", "network interface type"),
            value("mac", "MAC address"),
            SCOPE[0],
            SCOPE[1],
            SCOPE[2],
            SCOPE[3],
        ],
        run: detach_interface,
    },
    Command {
        name: "attach-device",
        group: "Domain Management",
        help: "attach device from an XML file",
        opts: &[
            DOMAIN,
            arg("file", "XML file"),
            SCOPE[0],
            SCOPE[1],
            SCOPE[2],
            SCOPE[3],
        ],
        run: attach_device,
    },
    Command {
        name: "detach-device",
        group: "Domain Management",
        help: "detach device from an XML file",
        opts: &[
            DOMAIN,
            arg("file", "XML file"),
            SCOPE[0],
            SCOPE[1],
            SCOPE[2],
            SCOPE[3],
        ],
        run: detach_device,
    },
];

/// `--live`, `--config`, `--current`, `--persistent`; `None` is virsh's flagless form.
fn scope(a: &Args, active: bool) -> Result<Option<Scope>, Failure> {
    if a.flag("current") && (a.flag("live") || a.flag("config")) {
        return Err(Failure::msg(
            "Options --current and --live are mutually exclusive",
        ));
    }
    if a.flag("current") {
        return Ok(Some(Scope::current(active)));
    }
    if a.flag("live") || a.flag("config") || a.flag("persistent") {
        let config = a.flag("config") || a.flag("persistent");
        let live = a.flag("live") || (a.flag("persistent") && active);
        return Ok(Some(Scope { live, config }));
    }
    Ok(None)
}

fn attach_disk(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let source = a.req("source").to_string();
    let source_type = match a.get("sourcetype") {
        Some("block") => DiskSourceType::Block,
        Some("network") => DiskSourceType::Network,
        Some("file") | None => {
            if source.starts_with("/dev/") {
                DiskSourceType::Block
            } else {
                DiskSourceType::File
            }
        }
        Some(other) => return Err(Failure::msg(format!("Unknown source type: '{other}'"))),
    };
    let device = match a.get("type") {
        Some("cdrom") => DiskDevice::Cdrom,
        Some("floppy") => DiskDevice::Floppy,
        Some("lun") => DiskDevice::Lun,
        Some("disk") | None => DiskDevice::Disk,
        Some(other) => return Err(Failure::msg(format!("Unknown disk type: '{other}'"))),
    };
    let disk = Disk {
        source_type,
        device,
        driver_name: a.get("driver").map(str::to_string),
        format: a.get("subdriver").map(str::to_string),
        cache: a.get("cache").map(str::to_string),
        io: a.get("io").map(str::to_string),
        source: Some(source),
        source_pool: None,
        source_volume: None,
        target_dev: a.req("target").to_string(),
        target_bus: a.get("targetbus").map(str::to_string),
        readonly: a.get("mode") == Some("readonly"),
        shareable: a.get("mode") == Some("shareable"),
        boot_order: None,
        address: vec![],
    };
    let scope = scope(a, rec.is_active())?;
    sess.conn()?
        .attach_device(&rec.def.uuid, Device::Disk(disk), scope)
        .map_err(|e| Failure(vec!["Failed to attach disk".into(), e.message]))?;
    sess.extra("Disk attached successfully\n");
    Ok(())
}

fn detach_disk(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let target = a.req("target");
    let scope = scope(a, rec.is_active())?;
    match sess.conn()?.detach_device(
        &rec.def.uuid,
        &DeviceSelector::Disk(target.to_string()),
        scope,
    ) {
        Ok(Some(_)) => {
            sess.extra("Disk detached successfully\n");
            Ok(())
        }
        Ok(None) => Err(Failure::msg(format!(
            "No disk found whose source path or target is {target}"
        ))),
        Err(e) => Err(Failure(vec!["Failed to detach disk".into(), e.message])),
    }
}

fn interface_type(text: &str) -> Result<InterfaceType, Failure> {
    Ok(match text {
        "network" => InterfaceType::Network,
        "bridge" => InterfaceType::Bridge,
        "user" => InterfaceType::User,
        "ethernet" => InterfaceType::Ethernet,
        "direct" => InterfaceType::Direct,
        other => {
            return Err(Failure::msg(format!(
                "No support for {other} in command 'attach-interface'"
            )));
        }
    })
}

fn attach_interface(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let iface = Interface {
        interface_type: interface_type(a.req("type"))?,
        source: Some(a.req("source").to_string()),
        mac: a.get("mac").map(|m| m.to_ascii_lowercase()),
        model: a.get("model").map(str::to_string),
        target_dev: a.get("target").map(str::to_string),
        address: vec![],
    };
    let scope = scope(a, rec.is_active())?;
    sess.conn()?
        .attach_device(&rec.def.uuid, Device::Interface(iface), scope)
        .map_err(|e| Failure(vec!["Failed to attach interface".into(), e.message]))?;
    sess.extra("Interface attached successfully\n");
    Ok(())
}

fn detach_interface(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let ty = interface_type(a.req("type"))?;
    let def = rec.live.clone().unwrap_or_else(|| rec.def.clone());
    let mac = match a.get("mac") {
        Some(m) => m.to_string(),
        None => {
            let of_type: Vec<_> = def
                .interfaces
                .iter()
                .filter(|i| i.interface_type == ty)
                .collect();
            match of_type.as_slice() {
                [one] => one.mac.clone().unwrap_or_default(),
                [] => {
                    return Err(Failure(vec![
                        format!("No interface found whose type is {}", a.req("type")),
                        "Failed to detach interface".into(),
                    ]));
                }
                _ => {
                    return Err(Failure(vec![
                        format!(
                            "Domain has {} interfaces. Please specify which one to detach using --mac",
                            of_type.len()
                        ),
                        "Failed to detach interface".into(),
                    ]));
                }
            }
        }
    };
    let scope = scope(a, rec.is_active())?;
    match sess.conn()?.detach_device(
        &rec.def.uuid,
        &DeviceSelector::InterfaceMac(mac.clone()),
        scope,
    ) {
        Ok(Some(_)) => {
            sess.extra("Interface detached successfully\n");
            Ok(())
        }
        Ok(None) => Err(Failure(vec![
            format!("No interface with MAC address {mac} was found"),
            "Failed to detach interface".into(),
        ])),
        Err(e) => Err(Failure(vec![
            "Failed to detach interface".into(),
            e.message,
        ])),
    }
}

/// Reads one device element through the shared XML layer (inside a minimal domain, so the
/// device is parsed exactly as it would be in a definition).
fn read_device(path: &str) -> Result<Device, Failure> {
    let text = super::domain::read_file(path)?;
    let wrapped = format!(
        "<domain type='kvm'><name>device</name><memory>1</memory><os><type>hvm</type></os><devices>{text}</devices></domain>"
    );
    let options = virtwasm_host::xml::ParseOptions {
        strict: false,
        fill_defaults: false,
    };
    let def = virtwasm_host::xml::parse_domain_with(&wrapped, &options)
        .map_err(|e| Failure::msg(format!("{path}: {}", e.message)))?
        .def;
    let mut found: Vec<Device> = Vec::new();
    found.extend(def.disks.into_iter().map(Device::Disk));
    found.extend(def.interfaces.into_iter().map(Device::Interface));
    found.extend(def.chardevs.into_iter().map(Device::Chardev));
    found.extend(def.controllers.into_iter().map(Device::Controller));
    found.extend(def.inputs.into_iter().map(Device::Input));
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Failure::msg(format!(
            "{path}: no device virtwasm can attach (disk, interface, serial/console, controller, input)"
        ))),
        n => Err(Failure::msg(format!(
            "{path}: {n} devices; attach them one file at a time"
        ))),
    }
}

fn attach_device(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let dev = read_device(a.req("file"))?;
    let scope = scope(a, rec.is_active())?;
    let file = a.req("file");
    sess.conn()?
        .attach_device(&rec.def.uuid, dev, scope)
        .map_err(|e| {
            Failure(vec![
                format!("Failed to attach device from {file}"),
                e.message,
            ])
        })?;
    sess.extra("Device attached successfully\n");
    Ok(())
}

fn detach_device(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let dev = read_device(a.req("file"))?;
    let scope = scope(a, rec.is_active())?;
    let file = a.req("file");
    match sess
        .conn()?
        .detach_device(&rec.def.uuid, &DeviceSelector::Exact(Box::new(dev)), scope)
    {
        Ok(Some(_)) => {
            sess.extra("Device detached successfully\n");
            Ok(())
        }
        Ok(None) => Err(Failure(vec![
            format!("Failed to detach device from {file}"),
            "operation failed: matching device was not found".into(),
        ])),
        Err(e) => Err(Failure(vec![
            format!("Failed to detach device from {file}"),
            e.message,
        ])),
    }
}
