//! A domain definition as a QEMU command line, in the modern style libvirt uses: `-machine`
//! with `-accel`, `-blockdev` with `-device`, `-netdev` with `-device`, `-chardev`, a QMP
//! monitor socket, `-S` (the host decides when the guest runs), `-nodefaults
//! -no-user-config`. Anything the driver cannot express is refused by name, never dropped.

use serde_json::json;
use virtwasm_sdk::types::*;
use virtwasm_sdk::{VerbResult, error};

/// What a start needs besides the definition.
pub struct Launch<'a> {
    /// The QMP socket path.
    pub monitor: &'a str,
    /// Directory for the domain's other sockets (unix consoles without a path).
    pub runtime_dir: &'a str,
    /// The tap made for each interface (by index) of type bridge; empty when only checking
    /// a definition.
    pub taps: &'a [Option<String>],
}

fn unsupported(what: String) -> virtwasm_sdk::types::Error {
    error(
        ErrorKind::Unsupported,
        format!("unsupported configuration: {what}"),
    )
}

/// A value inside a QEMU `key=value,...` option: a comma is written doubled, or QEMU would
/// take the rest for another key (a name or path with a comma must not add options).
fn opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// The accelerator for a domain type: `kvm` needs KVM, `qemu` is TCG.
pub fn accel(domain_type: &str) -> VerbResult<&'static str> {
    match domain_type {
        "qemu" => Ok("tcg"),
        "kvm" => Ok("kvm"),
        other => Err(error(
            ErrorKind::InvalidArgument,
            format!("the QEMU driver runs domain type 'qemu' (TCG) or 'kvm', not '{other}'"),
        )),
    }
}

/// The first TCP port of VNC's displays (`:0`).
const VNC_FIRST_PORT: i32 = 5900;

/// The listen address of a display: the definition's, or loopback as libvirt's default
/// (`vnc_listen`, `spice_listen`). Only an IP address: a name or anything else could add
/// options to QEMU's argument.
fn display_address(g: &Graphics) -> VerbResult<std::net::IpAddr> {
    let text = g.listen.as_deref().unwrap_or("127.0.0.1");
    text.parse().map_err(|_| {
        unsupported(format!(
            "{} listen address '{text}' (give an IPv4 or IPv6 address)",
            g.graphics_type
        ))
    })
}

/// `-vnc` and `-spice` for the definition's displays, and a VGA device when it has displays
/// but no video device (libvirt adds one then too). A display's port is the one the host
/// picked at start for an automatic one; `-1` remains only when a definition is checked,
/// and then QEMU would pick the first free display itself.
fn graphics(def: &DomainDef, a: &mut Vec<String>, slots: &mut crate::pci::Slots) -> VerbResult<()> {
    let mut seen: Vec<&str> = Vec::new();
    for g in &def.graphics {
        let kind = g.graphics_type.as_str();
        if !matches!(kind, "vnc" | "spice") {
            return Err(unsupported(format!(
                "graphics of type '{kind}' (the QEMU driver serves vnc and spice)"
            )));
        }
        if seen.contains(&kind) {
            return Err(unsupported(format!("a second {kind} display")));
        }
        seen.push(kind);
        let addr = display_address(g)?;
        let port = g.port.filter(|p| *p > 0);
        if let Some(p) = port
            && !(VNC_FIRST_PORT..=65535).contains(&p)
            && kind == "vnc"
        {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!("VNC port {p} is outside {VNC_FIRST_PORT}-65535 (displays :0 and up)"),
            ));
        }
        match kind {
            "vnc" => {
                let host = match addr {
                    std::net::IpAddr::V4(v4) => v4.to_string(),
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                };
                let display = match (port, g.autoport) {
                    (Some(p), _) => (p - VNC_FIRST_PORT).to_string(),
                    // Only while a definition is checked: a start has the host's port.
                    (None, true) => format!("0,to={}", 65535 - VNC_FIRST_PORT),
                    (None, false) => {
                        return Err(error(
                            ErrorKind::InvalidArgument,
                            "the vnc display has no port (set one, or autoport='yes')",
                        ));
                    }
                };
                a.extend(["-vnc".into(), format!("{host}:{display}")]);
            }
            _ => {
                let port = match (port, g.autoport) {
                    (Some(p), _) => format!("port={p},"),
                    // Only while a definition is checked: a start has the host's port.
                    (None, true) => String::new(),
                    (None, false) => {
                        return Err(error(
                            ErrorKind::InvalidArgument,
                            "the spice display has no port (set one, or autoport='yes')",
                        ));
                    }
                };
                // No password in the model: the display is open to whoever reaches the
                // address, as libvirt's without a passwd.
                a.extend([
                    "-spice".into(),
                    format!("{port}addr={addr},disable-ticketing=on"),
                ]);
            }
        }
    }
    if !def.graphics.is_empty() && def.videos.is_empty() {
        a.extend([
            "-device".into(),
            format!("VGA{}", slots.set_aside("the VGA device")?),
        ]);
    }
    Ok(())
}

fn disk_id(d: &Disk) -> String {
    format!("disk-{}", d.target_dev)
}

/// Refuses a target name that is not libvirt's letters, digits and `_` (`vda`, `sdaa`): it
/// names QEMU's block nodes and devices, where a comma would add options of its own.
pub fn check_target_dev(d: &Disk) -> VerbResult<()> {
    let ok = !d.target_dev.is_empty()
        && d.target_dev
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(error(
            ErrorKind::InvalidArgument,
            format!(
                "disk target '{}': expected letters, digits and '_' only (vda, sdb, hdc)",
                d.target_dev
            ),
        ))
    }
}

/// Whether a disk is a removable drive with no medium in it (a CD-ROM or floppy left
/// empty): a device with no block node behind it.
fn empty_drive(d: &Disk) -> bool {
    d.source.is_none() && matches!(d.device, DiskDevice::Cdrom | DiskDevice::Floppy)
}

/// Whether a disk's cache mode has the guest see no volatile write cache (each write
/// reaches the image before it completes): QEMU's `write-cache=off` on the device.
fn write_cache_off(d: &Disk) -> bool {
    matches!(d.cache.as_deref(), Some("writethrough" | "directsync")) && !empty_drive(d)
}

/// A floppy's unit on the floppy controller: its drive address's, or its name's (`fda` 0,
/// `fdb` 1), as libvirt assigns it.
fn floppy_unit(d: &Disk) -> VerbResult<u32> {
    let from_address = (crate::attribute(&d.address, "type") == Some("drive"))
        .then(|| crate::attribute(&d.address, "unit"))
        .flatten()
        .map(|v| v.parse::<u32>().ok());
    let unit = match from_address {
        Some(parsed) => parsed,
        None => match d.target_dev.as_str() {
            "fda" => Some(0),
            "fdb" => Some(1),
            _ => None,
        },
    };
    unit.filter(|u| *u < 2).ok_or_else(|| {
        unsupported(format!(
            "floppy '{}' (the floppy controller has units 0 and 1: fda and fdb)",
            d.target_dev
        ))
    })
}

/// The device model for a disk on its bus; `index` counts the IDE/SATA disks before it.
fn disk_device(
    def: &DomainDef,
    d: &Disk,
    index: usize,
    slots: &mut crate::pci::Slots,
) -> VerbResult<String> {
    let machine = def.os.machine.as_deref().unwrap_or("pc");
    check_target_dev(d)?;
    let id = disk_id(d);
    let drive = if empty_drive(d) {
        String::new()
    } else {
        format!("drive=fmt-{},", d.target_dev)
    };
    let cd = d.device == DiskDevice::Cdrom;
    let bus = d.target_bus.as_deref().unwrap_or("virtio");
    let misplaced = match d.device {
        DiskDevice::Lun => bus != "scsi",
        DiskDevice::Floppy => bus != "fdc",
        _ => bus == "fdc",
    };
    if misplaced {
        return Err(unsupported(format!(
            "disk '{}' of device '{}' on bus '{bus}'",
            d.target_dev,
            match d.device {
                DiskDevice::Lun => "lun",
                DiskDevice::Floppy => "floppy",
                DiskDevice::Cdrom => "cdrom",
                DiskDevice::Disk => "disk",
            }
        )));
    }
    Ok(match (bus, cd) {
        ("fdc", _) => format!("floppy,unit={},{drive}id={id}", floppy_unit(d)?),
        ("virtio", false) => format!(
            "virtio-blk-pci,{drive}id={id}{}",
            slots.place(&d.address, &format!("disk '{}'", d.target_dev))?
        ),
        ("ide", _) | ("sata", _) => {
            let model = if cd { "ide-cd" } else { "ide-hd" };
            if crate::pci::is_q35(machine) {
                // q35's built-in AHCI controller: six ports, one unit each.
                format!("{model},{drive}id={id},bus=ide.{index}")
            } else {
                // The pc machine's built-in IDE controller: two buses, two units each.
                format!(
                    "{model},{drive}id={id},bus=ide.{},unit={}",
                    index / 2,
                    index % 2
                )
            }
        }
        ("scsi", _) => {
            let spot = crate::scsi::spot(d)?;
            let model = crate::scsi::controller_model(def, spot.controller, &d.target_dev)?;
            let dev = crate::scsi::disk_device(d, spot, model)?;
            let (driver, place) = dev.split_once(',').unwrap_or((&dev, ""));
            format!("{driver},{drive}id={id},{place}")
        }
        // A USB stick; a USB CD-ROM is a SCSI CD-ROM on the stick's own bus (see
        // `usb_cdrom_stick`), since QEMU's usb-storage shows a -blockdev drive as a disk.
        ("usb", false) => {
            let (bus, port) = usb_placement(def, d)?;
            let port = port.map(|p| format!("port={p},")).unwrap_or_default();
            format!("usb-storage,bus={bus},{port}{drive}id={id},removable=off")
        }
        // Its stick, where the placement is checked, comes from `usb_cdrom_stick`.
        ("usb", true) => {
            format!(
                "scsi-cd,bus={}.0,channel=0,scsi-id=0,lun=0,{drive}id={id}",
                usb_stick_id(d)
            )
        }
        (other, _) => {
            return Err(unsupported(format!(
                "disk '{}' on bus '{other}'",
                d.target_dev
            )));
        }
    })
}

/// Where a USB disk plugs in: the bus of the USB controller its `<address type='usb'>`
/// names (controller 0 without one) and the port the address gives, if any: `fill_defaults`
/// gives every USB disk one ([`assign_usb_ports`]), as libvirt records USB addresses, so a
/// restore or a migration plugs each disk where the guest had it. The controller must be
/// one this driver builds.
pub fn usb_placement(def: &DomainDef, d: &Disk) -> VerbResult<(String, Option<u32>)> {
    let (index, port) = usb_address(d)?;
    let built = def.controllers.iter().any(|c| {
        c.controller_type == "usb"
            && c.index.unwrap_or(0) == index
            && usb_controller(c.model.as_deref()).is_some()
    });
    if !built {
        return Err(unsupported(format!(
            "disk '{}' on bus 'usb' needs USB controller {index}, which this guest does not have (controllers are made at start: add <controller type='usb' index='{index}'/> to the definition)",
            d.target_dev
        )));
    }
    Ok((usb_bus(index), port))
}

/// The USB stick a USB CD-ROM sits in (`usb-bot`, whose SCSI bus the `scsi-cd` joins): its
/// `-device` arguments, or `None` for a disk that is not a USB CD-ROM.
pub fn usb_cdrom_stick(def: &DomainDef, d: &Disk) -> VerbResult<Option<String>> {
    if d.target_bus.as_deref() != Some("usb") || d.device != DiskDevice::Cdrom {
        return Ok(None);
    }
    let (bus, port) = usb_placement(def, d)?;
    let port = port.map(|p| format!(",port={p}")).unwrap_or_default();
    Ok(Some(format!(
        "usb-bot,bus={bus}{port},id={}",
        usb_stick_id(d)
    )))
}

/// The QEMU id of the stick a USB CD-ROM sits in: unplugging it takes the CD-ROM along.
pub fn usb_stick_id(d: &Disk) -> String {
    format!("usbbot-{}", d.target_dev)
}

/// A USB disk's `<address type='usb' bus='N' port='P'/>`: controller `N` (0 without an
/// address) and port `P` if given. Ports behind a hub (`1.2`) are refused: no hub is built.
fn usb_address(d: &Disk) -> VerbResult<(u32, Option<u32>)> {
    let attr = |name: &str| crate::attribute(&d.address, name);
    let invalid = |what: String| error(ErrorKind::InvalidArgument, what);
    if let Some(t) = attr("type").filter(|t| *t != "usb") {
        return Err(invalid(format!(
            "disk '{}' on bus 'usb' has an address of type '{t}' (expected type 'usb' with bus and port)",
            d.target_dev
        )));
    }
    let index = match attr("bus") {
        None => 0,
        Some(b) => b.parse::<u32>().map_err(|_| {
            invalid(format!(
                "disk '{}': USB bus '{b}' is not a controller index (expected 0, 1, ...)",
                d.target_dev
            ))
        })?,
    };
    let port = match attr("port") {
        None | Some("") => None,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(invalid(format!(
                    "disk '{}': USB port '{p}' (expected a port number from 1; ports behind a USB hub are not built)",
                    d.target_dev
                )));
            }
        },
    };
    Ok((index, port))
}

/// The ports a USB controller of libvirt model `model` offers a USB 2 device (QEMU's
/// defaults: a UHCI has 2, an EHCI 6, an xHCI 4 USB 2 ports besides its USB 3 ones).
fn usb_ports(model: Option<&str>) -> u32 {
    match model.unwrap_or("piix3-uhci") {
        "ehci" | "ich9-ehci1" => 6,
        "nec-xhci" | "qemu-xhci" => 4,
        _ => 2,
    }
}

/// Gives every USB disk without a port the lowest free one on its controller, as libvirt
/// records USB addresses when a definition is parsed; refuses two disks on one port, and a
/// controller without a port left. USB input devices come first on the command line and
/// take the first ports of the first USB controller there, so those are not free.
pub fn assign_usb_ports(def: &mut DomainDef) -> VerbResult<()> {
    let first = def
        .controllers
        .iter()
        .find(|c| {
            c.controller_type == "usb"
                && usb_controller(c.model.as_deref()).is_some()
                && usb_companion_first_port(c.model.as_deref()).is_none()
        })
        .map(|c| c.index.unwrap_or(0));
    let inputs = def
        .inputs
        .iter()
        .filter(|i| i.bus.as_deref() == Some("usb"))
        .count() as u32;
    let mut taken: Vec<(u32, u32, String)> = Vec::new();
    if let Some(index) = first {
        taken.extend((1..=inputs).map(|p| (index, p, "a USB input device".to_string())));
    }
    let usb_disks = |def: &DomainDef| -> Vec<usize> {
        (0..def.disks.len())
            .filter(|i| def.disks[*i].target_bus.as_deref() == Some("usb"))
            .collect()
    };
    for i in usb_disks(def) {
        let d = &def.disks[i];
        if let (index, Some(port)) = usb_address(d)? {
            if let Some((_, _, who)) = taken.iter().find(|(c, p, _)| *c == index && *p == port) {
                return Err(error(
                    ErrorKind::InvalidArgument,
                    format!(
                        "disk '{}': port {port} of USB controller {index} is taken by {who}",
                        d.target_dev
                    ),
                ));
            }
            taken.push((index, port, format!("disk '{}'", d.target_dev)));
        }
    }
    for i in usb_disks(def) {
        let (index, port) = usb_address(&def.disks[i])?;
        if port.is_some() {
            continue;
        }
        let model = def
            .controllers
            .iter()
            .find(|c| {
                c.controller_type == "usb"
                    && c.index.unwrap_or(0) == index
                    && usb_companion_first_port(c.model.as_deref()).is_none()
            })
            .and_then(|c| c.model.clone());
        let ports = usb_ports(model.as_deref());
        let d = &mut def.disks[i];
        let port = (1..=ports)
            .find(|p| !taken.iter().any(|(c, t, _)| *c == index && t == p))
            .ok_or_else(|| {
                unsupported(format!(
                    "disk '{}': USB controller {index} has no free port left (its {ports} are taken; USB hubs are not built: add another USB controller, e.g. <controller type='usb' index='{}' model='qemu-xhci'/>)",
                    d.target_dev,
                    index + 1
                ))
            })?;
        taken.push((index, port, format!("disk '{}'", d.target_dev)));
        d.address = [
            ("type", "usb".to_string()),
            ("bus", index.to_string()),
            ("port", port.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| Attribute {
            name: name.into(),
            value,
        })
        .collect();
    }
    Ok(())
}

/// The USB controllers `def` lacks for its USB disks and input devices, as libvirt adds
/// them when a definition is parsed: one per controller index they use, of libvirt's
/// default model for the machine (the PIIX3 UHCI on pc; on q35 the USB 3 qemu-xhci, which
/// libvirt picks there when QEMU has it). A controller of model
/// `none` is the user's word that there is none: nothing is added for its index.
pub fn missing_usb_controllers(def: &DomainDef) -> VerbResult<Vec<Controller>> {
    let mut wanted: Vec<u32> = Vec::new();
    for d in def
        .disks
        .iter()
        .filter(|d| d.target_bus.as_deref() == Some("usb"))
    {
        wanted.push(usb_address(d)?.0);
    }
    if def.inputs.iter().any(|i| i.bus.as_deref() == Some("usb")) {
        wanted.push(0);
    }
    wanted.sort_unstable();
    wanted.dedup();
    let model = if crate::pci::is_q35(def.os.machine.as_deref().unwrap_or("pc")) {
        "qemu-xhci"
    } else {
        "piix3-uhci"
    };
    Ok(wanted
        .into_iter()
        .filter(|index| {
            !def.controllers
                .iter()
                .any(|c| c.controller_type == "usb" && c.index.unwrap_or(0) == *index)
        })
        .map(|index| Controller {
            controller_type: "usb".into(),
            index: Some(index),
            model: Some(model.into()),
            address: vec![],
        })
        .collect())
}

/// The QEMU bus of USB controller `index`: the controller's id (`usb`, `usb1`, ...) and `.0`.
pub fn usb_bus(index: u32) -> String {
    if index == 0 {
        "usb.0".to_string()
    } else {
        format!("usb{index}.0")
    }
}

/// `-blockdev` for a disk: the file (or block device) node, then the format node.
fn blockdev(d: &Disk) -> VerbResult<Vec<String>> {
    let nodes = blockdev_nodes(d)?;
    Ok(nodes
        .into_iter()
        .flat_map(|n| ["-blockdev".to_string(), n.to_string()])
        .collect())
}

/// A disk's two block nodes (file, then format), as `-blockdev` and QMP `blockdev-add` take
/// them.
pub fn blockdev_nodes(d: &Disk) -> VerbResult<Vec<serde_json::Value>> {
    check_target_dev(d)?;
    let Some(path) = d.source.as_deref() else {
        return Err(unsupported(format!(
            "disk '{}' has no source (only a cdrom may be left empty)",
            d.target_dev
        )));
    };
    let driver = match d.source_type {
        DiskSourceType::File => "file",
        DiskSourceType::Block => "host_device",
        other => {
            return Err(unsupported(format!(
                "disk '{}' of type '{}' (file and block are supported)",
                d.target_dev,
                disk_source_word(other)
            )));
        }
    };
    let ro = d.readonly || d.device == DiskDevice::Cdrom;
    let mut file = json!({
        "driver": driver,
        "filename": path,
        "node-name": format!("file-{}", d.target_dev),
        "read-only": ro,
    });
    match d.cache.as_deref() {
        None | Some("default") => {}
        Some("none" | "directsync") => file["cache"] = json!({ "direct": true, "no-flush": false }),
        // The device's write cache says the rest (write_cache_off).
        Some("writethrough") | Some("writeback") => {}
        Some("unsafe") => file["cache"] = json!({ "direct": false, "no-flush": true }),
        Some(other) => {
            return Err(unsupported(format!(
                "disk '{}' cache mode '{other}'",
                d.target_dev
            )));
        }
    }
    let format = d.format.as_deref().unwrap_or("raw");
    let fmt = json!({
        "driver": format,
        "file": format!("file-{}", d.target_dev),
        "node-name": format!("fmt-{}", d.target_dev),
        "read-only": ro,
    });
    Ok(vec![file, fmt])
}

/// The QEMU id of NIC `index` of `all` (its device and its backend): from its MAC, which
/// every NIC has once defaults are filled, so a cold-plugged and a hot-plugged one are found
/// alike when detached; by position for a NIC without one, or whose MAC another NIC of the
/// definition shares (libvirt allows that).
pub fn nic_id(all: &[Interface], index: usize) -> String {
    let mac = all.get(index).and_then(|n| n.mac.as_deref());
    match mac {
        Some(m) if all.iter().filter(|n| n.mac.as_deref() == Some(m)).count() == 1 => {
            format!("net-{}", m.replace(':', ""))
        }
        _ => format!("net{index}"),
    }
}

/// The QEMU device for a NIC model.
pub fn nic_model(model: Option<&str>) -> VerbResult<&'static str> {
    Ok(match model.unwrap_or("virtio") {
        "virtio" => "virtio-net-pci",
        "e1000" => "e1000",
        "e1000e" => "e1000e",
        "rtl8139" => "rtl8139",
        other => return Err(unsupported(format!("interface model '{other}'"))),
    })
}

fn disk_source_word(t: DiskSourceType) -> &'static str {
    match t {
        DiskSourceType::File => "file",
        DiskSourceType::Block => "block",
        DiskSourceType::Dir => "dir",
        DiskSourceType::Network => "network",
        DiskSourceType::Volume => "volume",
    }
}

fn interface_word(t: InterfaceType) -> &'static str {
    match t {
        InterfaceType::Network => "network",
        InterfaceType::Bridge => "bridge",
        InterfaceType::User => "user",
        InterfaceType::Ethernet => "ethernet",
        InterfaceType::Direct => "direct",
    }
}

fn chardev_word(t: ChardevSourceType) -> &'static str {
    match t {
        ChardevSourceType::Pty => "pty",
        ChardevSourceType::File => "file",
        ChardevSourceType::Unix => "unix",
        ChardevSourceType::Null => "null",
        ChardevSourceType::Stdio => "stdio",
        ChardevSourceType::Tcp => "tcp",
        ChardevSourceType::Udp => "udp",
        ChardevSourceType::Vc => "vc",
        ChardevSourceType::Pipe => "pipe",
        ChardevSourceType::Dev => "dev",
        ChardevSourceType::Spicevmc => "spicevmc",
    }
}

/// The QEMU device of a USB controller of libvirt model `model` (none: libvirt's default,
/// the PIIX3 UHCI); `None` for a model not built.
fn usb_controller(model: Option<&str>) -> Option<&'static str> {
    Some(match model.unwrap_or("piix3-uhci") {
        "piix3-uhci" => "piix3-usb-uhci",
        "piix4-uhci" => "piix4-usb-uhci",
        "vt82c686b-uhci" => "vt82c686b-usb-uhci",
        "ehci" => "usb-ehci",
        // The ICH9 USB2 set (virt-manager's USB2 default for years): the EHCI and its three
        // UHCI companions, which share its index.
        "ich9-ehci1" => "ich9-usb-ehci1",
        "ich9-uhci1" => "ich9-usb-uhci1",
        "ich9-uhci2" => "ich9-usb-uhci2",
        "ich9-uhci3" => "ich9-usb-uhci3",
        "nec-xhci" => "nec-usb-xhci",
        "qemu-xhci" => "qemu-xhci",
        _ => return None,
    })
}

/// The first port of the EHCI a UHCI companion of model `model` serves, by libvirt's
/// convention (the `<master startport>` libvirt writes for ich9-uhci1, 2 and 3), or `None`
/// for a controller that is not a companion.
fn usb_companion_first_port(model: Option<&str>) -> Option<u32> {
    match model? {
        "ich9-uhci1" => Some(0),
        "ich9-uhci2" => Some(2),
        "ich9-uhci3" => Some(4),
        _ => None,
    }
}

/// The QEMU id of USB controller `index` of model `model`: `usb` or `usbN` (its bus is that
/// and `.0`); a companion, which makes no bus, is named after its master's.
pub fn usb_controller_id(index: u32, model: Option<&str>) -> String {
    let master = if index == 0 {
        "usb".to_string()
    } else {
        format!("usb{index}")
    };
    match model.and_then(|m| m.strip_prefix("ich9-")) {
        Some(uhci) if usb_companion_first_port(model).is_some() => format!("{master}-{uhci}"),
        _ => master,
    }
}

/// Devices the definition models beyond disks, NICs and serials: each becomes its QEMU
/// device, or is refused by name (never silently left out).
fn other_devices(
    def: &DomainDef,
    machine: &str,
    slots: &mut crate::pci::Slots,
) -> VerbResult<Vec<String>> {
    let mut a = Vec::new();
    let mut usb = false;
    let mut companions = Vec::new();
    // An ICH9 USB2 set none of whose members has an address shares one root slot, as libvirt
    // places it: the EHCI at function 7, its companions at functions 0 to 2.
    let ich9_set = |index: u32| {
        def.controllers.iter().filter(move |x| {
            x.controller_type == "usb"
                && x.index.unwrap_or(0) == index
                && (x.model.as_deref() == Some("ich9-ehci1")
                    || usb_companion_first_port(x.model.as_deref()).is_some())
        })
    };
    let mut ich9_slots: Vec<(u32, u32)> = Vec::new();
    for c in def
        .controllers
        .iter()
        .filter(|c| c.controller_type == "usb" && c.model.as_deref() == Some("ich9-ehci1"))
    {
        let index = c.index.unwrap_or(0);
        if ich9_set(index).all(|x| x.address.is_empty())
            && !ich9_slots.iter().any(|(i, _)| *i == index)
        {
            ich9_slots.push((index, slots.take_root_slot("the ICH9 USB controllers")?));
        }
    }
    let ich9_slot = |index: u32| {
        ich9_slots
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, slot)| *slot)
    };
    for c in &def.controllers {
        let model = c.model.as_deref();
        let index = c.index.unwrap_or(0);
        match (c.controller_type.as_str(), model) {
            // The PCI topology and SCSI controllers come first, before what sits on them.
            _ if crate::pci::is_topology(c) || c.controller_type == "scsi" => {}
            // Built into the machine: IDE on pc, SATA (AHCI) on q35.
            ("ide", _) if !crate::pci::is_q35(machine) => {}
            ("sata", _) if crate::pci::is_q35(machine) => {}
            // The floppy controller: pc's own, or the one q35 gets with its first floppy
            // (libvirt writes it into every definition with a floppy).
            ("fdc", _) => {}
            ("usb", Some("none")) => {}
            ("usb", m) if usb_companion_first_port(m).is_some() => {
                // After its master, whose bus it joins: QEMU looks the bus up as it makes it.
                let has_master = def.controllers.iter().any(|x| {
                    x.controller_type == "usb"
                        && x.index.unwrap_or(0) == index
                        && x.model.as_deref() == Some("ich9-ehci1")
                });
                if !has_master {
                    return Err(unsupported(format!(
                        "USB companion controller '{}' (index {index}) without the ich9-ehci1 controller of the same index it serves",
                        m.unwrap_or_default()
                    )));
                }
                let first_port = usb_companion_first_port(m).unwrap_or_default();
                let place = match ich9_slot(index) {
                    Some(slot) => slots.root_function(slot, first_port / 2, first_port == 0),
                    None => slots.place(&c.address, "a USB companion controller")?,
                };
                companions.extend([
                    "-device".into(),
                    format!(
                        "{},masterbus={}.0,firstport={first_port},id={}{place}",
                        usb_controller(m).unwrap_or_default(),
                        usb_controller_id(index, None),
                        usb_controller_id(index, m),
                    ),
                ]);
            }
            ("usb", m) if usb_controller(m).is_some() => {
                let place = match ich9_slot(index).filter(|_| m == Some("ich9-ehci1")) {
                    Some(slot) => slots.root_function(slot, 7, false),
                    None => slots.place(&c.address, "the USB controller")?,
                };
                a.extend([
                    "-device".into(),
                    format!(
                        "{},id={}{place}",
                        usb_controller(m).unwrap_or_default(),
                        usb_controller_id(index, m),
                    ),
                ]);
                usb = true;
            }
            ("virtio-serial", _) => {
                a.extend([
                    "-device".into(),
                    format!(
                        "virtio-serial-pci,id=virtio-serial{index}{}",
                        slots.place(&c.address, "the virtio-serial controller")?
                    ),
                ]);
            }
            (t, m) => {
                return Err(unsupported(format!(
                    "controller type '{t}'{} (the QEMU driver does not build it yet)",
                    m.map(|m| format!(" model '{m}'")).unwrap_or_default()
                )));
            }
        }
    }
    a.extend(companions);
    for (i, v) in def.videos.iter().enumerate() {
        // The first display device is the VGA one; further ones are the secondary models
        // QEMU has (as libvirt chooses them).
        let dev = match (v.model.as_str(), i) {
            ("none", _) => continue,
            ("vga" | "default", 0) => "VGA",
            ("cirrus", 0) => "cirrus-vga",
            ("virtio", 0) => "virtio-vga",
            ("virtio", _) => "virtio-gpu-pci",
            ("qxl", 0) => "qxl-vga",
            ("qxl", _) => "qxl",
            ("bochs", _) => "bochs-display",
            (other, 0) => return Err(unsupported(format!("video model '{other}'"))),
            (other, _) => {
                return Err(unsupported(format!(
                    "a second video device of model '{other}'"
                )));
            }
        };
        a.extend([
            "-device".into(),
            format!("{dev}{}", slots.set_aside("a video device")?),
        ]);
    }
    for i in &def.inputs {
        let dev = match (i.input_type.as_str(), i.bus.as_deref()) {
            // The PS/2 keyboard and mouse come with the machine.
            ("mouse" | "keyboard", None | Some("ps2")) => continue,
            ("tablet", Some("usb")) | ("mouse", Some("usb")) | ("keyboard", Some("usb")) if usb => {
                match i.input_type.as_str() {
                    "tablet" => "usb-tablet",
                    "mouse" => "usb-mouse",
                    _ => "usb-kbd",
                }
            }
            ("tablet", Some("virtio")) => "virtio-tablet-pci",
            ("mouse", Some("virtio")) => "virtio-mouse-pci",
            ("keyboard", Some("virtio")) => "virtio-keyboard-pci",
            (t, b) => {
                return Err(unsupported(format!(
                    "input '{t}' on bus '{}'{}",
                    b.unwrap_or("ps2"),
                    if b == Some("usb") && !usb {
                        " without a USB controller"
                    } else {
                        ""
                    }
                )));
            }
        };
        let place = if dev.ends_with("-pci") {
            slots.set_aside("a virtio input device")?
        } else {
            String::new()
        };
        a.extend(["-device".into(), format!("{dev}{place}")]);
    }
    graphics(def, &mut a, slots)?;
    for (i, r) in def.rngs.iter().enumerate() {
        if r.model != "virtio" || r.backend_model != "random" {
            return Err(unsupported(format!(
                "rng model '{}' with backend '{}' (virtio with backend random is supported)",
                r.model, r.backend_model
            )));
        }
        let source = r.backend_source.as_deref().unwrap_or("/dev/urandom");
        a.extend([
            "-object".into(),
            format!("rng-random,id=objrng{i},filename={}", opt(source)),
            "-device".into(),
            format!(
                "virtio-rng-pci,rng=objrng{i},id=rng{i}{}",
                slots.set_aside("the rng device")?
            ),
        ]);
    }
    Ok(a)
}

/// How many PCI devices the definition has that the model gives no address field (video
/// devices, virtio input devices, the VGA a display without video gets, rng devices): the
/// root-bus slots [`crate::pci::Slots::set_aside_first`] keeps for them.
fn unaddressed_pci_devices(def: &DomainDef) -> usize {
    let videos = def.videos.iter().filter(|v| v.model != "none").count();
    let inputs = def
        .inputs
        .iter()
        .filter(|i| i.bus.as_deref() == Some("virtio"))
        .count();
    let vga = usize::from(!def.graphics.is_empty() && def.videos.is_empty());
    videos + inputs + vga + def.rngs.len()
}

/// Whether `machine` is one of QEMU's x86 PC machines (`pc`, `pc-i440fx-7.2`, `q35`,
/// `pc-q35-7.2`, ...), which have the ISA bus the pvpanic device sits on.
pub fn is_x86_pc_or_q35(machine: &str) -> bool {
    machine == "pc" || machine == "q35" || machine.starts_with("pc-")
}

/// The whole argument list (without the program).
pub fn build(def: &DomainDef, launch: &Launch) -> VerbResult<Vec<String>> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let accel = accel(&def.domain_type)?;
    let machine = def.os.machine.as_deref().unwrap_or("pc");
    push(&[
        "-name",
        &format!("guest={},debug-threads=on", opt(&def.name)),
    ]);
    push(&["-S", "-nodefaults", "-no-user-config", "-display", "none"]);
    push(&[
        "-machine",
        &format!("{},usb=off,dump-guest-core=off", opt(machine)),
    ]);
    push(&["-accel", accel]);
    // QEMU starts with the maximum, as libvirt does; the balloon takes the guest down to
    // currentMemory.
    let max_mib = def.memory_kib.div_ceil(1024).max(1);
    push(&["-m", &format!("size={max_mib}M")]);
    let current = def.current_vcpus.unwrap_or(def.vcpus).max(1);
    push(&[
        "-smp",
        &format!(
            "{current},maxcpus={},sockets={},cores=1,threads=1",
            def.vcpus.max(current),
            def.vcpus.max(current)
        ),
    ]);
    push(&["-uuid", &def.uuid]);
    if let Some(k) = &def.os.kernel {
        push(&["-kernel", k]);
    }
    if let Some(i) = &def.os.initrd {
        push(&["-initrd", i]);
    }
    if let Some(c) = &def.os.cmdline {
        push(&["-append", c]);
    }
    push(&[
        "-chardev",
        &format!(
            "socket,id=charmonitor,path={},server=on,wait=off",
            opt(launch.monitor)
        ),
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
    ]);
    push(&["-rtc", "base=utc"]);
    // A guest panic stops the guest (QEMU's run state guest-panicked) instead of QEMU's
    // default, which exits as if the guest had powered off: the driver then sees the crash
    // and carries out <on_crash> itself (destroy, restart or preserve), as libvirt does.
    push(&["-action", "panic=pause"]);
    // libvirt adds a pvpanic device only for <devices><panic model='isa'/>; the domain model
    // (wit/types.wit) has no panic device, so every pc and q35 guest gets the ISA one (port
    // 0x505, announced in ACPI as QEMU0001). Without it a panicking Linux guest reboots or
    // hangs and the host never learns it crashed.
    if is_x86_pc_or_q35(machine) {
        push(&["-device", "pvpanic"]);
    }
    if !def.features.iter().any(|f| f == "acpi") && machine != "microvm" {
        push(&["-no-acpi"]);
    }
    let mut slots = crate::pci::Slots::new(def, machine)?;
    slots.set_aside_first(unaddressed_pci_devices(def))?;
    a.extend(crate::pci::controllers(def, machine, &mut slots)?);
    // SCSI controllers before the disks on them.
    for c in def
        .controllers
        .iter()
        .filter(|c| c.controller_type == "scsi")
    {
        let index = c.index.unwrap_or(0);
        let dev = crate::scsi::controller_device(c.model.as_deref(), index)?;
        let place = slots.place(&c.address, &format!("SCSI controller {index}"))?;
        a.extend(["-device".into(), format!("{dev}{place}")]);
    }
    // pc has a floppy controller on its ISA bus; q35 gets one when a floppy needs it.
    if crate::pci::is_q35(machine) && def.disks.iter().any(|d| d.device == DiskDevice::Floppy) {
        a.extend(["-device".into(), "isa-fdc".into()]);
    }
    let mut ide_index = 0;
    let mut usb_disks = Vec::new();
    for d in &def.disks {
        if !empty_drive(d) {
            a.extend(blockdev(d)?);
        }
        let bus = d.target_bus.as_deref().unwrap_or("virtio");
        let idx = if matches!(bus, "ide" | "sata") {
            ide_index += 1;
            ide_index - 1
        } else {
            0
        };
        let mut dev = disk_device(def, d, idx, &mut slots)?;
        if write_cache_off(d) {
            dev.push_str(",write-cache=off");
        }
        if let Some(order) = d.boot_order {
            if d.device == DiskDevice::Floppy {
                // The floppy device has no bootindex: its controller's drive A or B does.
                let drive = if floppy_unit(d)? == 0 { "A" } else { "B" };
                a.extend([
                    "-global".into(),
                    format!("isa-fdc.bootindex{drive}={order}"),
                ]);
            } else {
                dev.push_str(&format!(",bootindex={order}"));
            }
        }
        if bus == "usb" {
            // Its controller is made with the other devices, below.
            if let Some(stick) = usb_cdrom_stick(def, d)? {
                usb_disks.extend(["-device".to_string(), stick]);
            }
            usb_disks.extend(["-device".to_string(), dev]);
        } else {
            a.push("-device".into());
            a.push(dev);
        }
    }
    for (i, n) in def.interfaces.iter().enumerate() {
        let id = nic_id(&def.interfaces, i);
        let netdev = match n.interface_type {
            InterfaceType::User => format!("user,id={id}"),
            InterfaceType::Bridge => {
                if n.source.as_deref().is_none_or(str::is_empty) {
                    return Err(error(
                        ErrorKind::InvalidArgument,
                        "an interface of type 'bridge' needs <source bridge='NAME'/>",
                    ));
                }
                // A tap the host made and enslaved; QEMU opens it by name (no scripts: the
                // host already did what they would).
                let tap = launch
                    .taps
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "vwnet0".to_string());
                format!("tap,id={id},ifname={},script=no,downscript=no", opt(&tap))
            }
            other => {
                return Err(unsupported(format!(
                    "interface type '{}' (user and bridge networking work now; network arrives with the network driver)",
                    interface_word(other)
                )));
            }
        };
        let mut dev = format!(
            "{},netdev={id},id={id}{}",
            nic_model(n.model.as_deref())?,
            slots.place(&n.address, &format!("interface {i}"))?
        );
        if let Some(mac) = &n.mac {
            dev.push_str(&format!(",mac={}", opt(mac)));
        }
        a.extend(["-netdev".into(), netdev, "-device".into(), dev]);
    }
    if let Some(c) = def
        .chardevs
        .iter()
        .find(|c| matches!(c.kind, ChardevKind::Channel | ChardevKind::Parallel))
    {
        return Err(unsupported(if c.kind == ChardevKind::Channel {
            "a <channel> (the domain model does not carry a channel's target name, such as org.qemu.guest_agent.0, yet; without the channel the guest runs with no agent)".to_string()
        } else {
            "a <parallel> port".to_string()
        }));
    }
    // A <console> is the first serial port seen from the console side, as libvirt treats
    // it: serials make the devices, and a lone console makes serial 0.
    let serials: Vec<&Chardev> = {
        let s: Vec<&Chardev> = def
            .chardevs
            .iter()
            .filter(|c| c.kind == ChardevKind::Serial)
            .collect();
        if s.is_empty() {
            def.chardevs
                .iter()
                .filter(|c| c.kind == ChardevKind::Console)
                .take(1)
                .collect()
        } else {
            s
        }
    };
    for (serial, c) in serials.into_iter().enumerate() {
        let id = format!("charserial{serial}");
        let backend = match c.source_type {
            ChardevSourceType::Pty => format!("pty,id={id}"),
            ChardevSourceType::File => {
                let p = c.source_path.as_deref().ok_or_else(|| {
                    unsupported(format!("serial {serial} of type file without a path"))
                })?;
                format!("file,id={id},path={}", opt(p))
            }
            ChardevSourceType::Unix => {
                let p = c.source_path.clone().unwrap_or_else(|| {
                    format!("{}/{}-serial{serial}.sock", launch.runtime_dir, def.uuid)
                });
                let server = c.source_mode.as_deref() != Some("connect");
                if server {
                    format!("socket,id={id},path={},server=on,wait=off", opt(&p))
                } else {
                    format!("socket,id={id},path={}", opt(&p))
                }
            }
            ChardevSourceType::Null => format!("null,id={id}"),
            other => {
                return Err(unsupported(format!(
                    "serial of type '{}' (pty, file, unix and null are supported)",
                    chardev_word(other)
                )));
            }
        };
        a.extend([
            "-chardev".into(),
            backend,
            "-serial".into(),
            format!("chardev:{id}"),
        ]);
    }
    if let Some(b) = &def.memballoon
        && b.model == "virtio"
    {
        a.extend([
            "-device".into(),
            format!(
                "virtio-balloon-pci,id=balloon0{}",
                slots.place(&b.address, "the memory balloon")?
            ),
        ]);
    }
    a.extend(other_devices(def, machine, &mut slots)?);
    a.extend(usb_disks);
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usb_disk(dev: &str, address: &[(&str, &str)]) -> Disk {
        crate::tests::disk(dev, "usb", address)
    }

    fn usb_controller_def(index: u32, model: &str) -> Controller {
        Controller {
            controller_type: "usb".into(),
            index: Some(index),
            model: Some(model.into()),
            address: vec![],
        }
    }

    fn argv(def: &DomainDef) -> VerbResult<Vec<String>> {
        build(
            def,
            &Launch {
                monitor: "/run/m.sock",
                runtime_dir: "/run",
                taps: &[],
            },
        )
    }

    #[test]
    fn usb_disks_plug_into_their_controllers_bus_after_it_exists() {
        let def = DomainDef {
            disks: vec![
                usb_disk("sda", &[]),
                usb_disk("sdb", &[("type", "usb"), ("bus", "1"), ("port", "2")]),
            ],
            controllers: vec![
                usb_controller_def(0, "piix3-uhci"),
                usb_controller_def(1, "qemu-xhci"),
            ],
            ..crate::tests::empty_def()
        };
        let a = argv(&def).unwrap();
        let at = |needle: &str| {
            a.iter()
                .position(|x| x.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in {a:?}"))
        };
        let sda = at("usb-storage,bus=usb.0,");
        let sdb = at("usb-storage,bus=usb1.0,port=2,");
        assert_eq!(
            a[sda],
            "usb-storage,bus=usb.0,drive=fmt-sda,id=disk-sda,removable=off"
        );
        assert_eq!(
            a[sdb],
            "usb-storage,bus=usb1.0,port=2,drive=fmt-sdb,id=disk-sdb,removable=off"
        );
        // QEMU makes devices in command-line order: each controller before its disks.
        assert!(at("piix3-usb-uhci,id=usb") < sda);
        assert!(at("qemu-xhci,id=usb1") < sdb);
    }

    #[test]
    fn usb_disks_without_a_controller_or_a_valid_address_are_refused_and_cdroms_sit_in_sticks() {
        let mut def = DomainDef {
            disks: vec![usb_disk("sda", &[])],
            ..crate::tests::empty_def()
        };
        let e = argv(&def).unwrap_err();
        assert!(
            e.message.contains("needs USB controller 0"),
            "{}",
            e.message
        );
        def.controllers = vec![usb_controller_def(0, "none")];
        assert!(argv(&def).is_err());
        def.controllers = vec![usb_controller_def(0, "ehci")];
        assert!(argv(&def).is_ok());
        def.disks = vec![usb_disk("sda", &[("type", "usb"), ("bus", "1")])];
        let e = argv(&def).unwrap_err();
        assert!(
            e.message.contains("needs USB controller 1"),
            "{}",
            e.message
        );
        def.disks = vec![usb_disk("sda", &[("type", "usb"), ("port", "1,x=y")])];
        let e = argv(&def).unwrap_err();
        assert!(e.message.contains("USB port '1,x=y'"), "{}", e.message);
        def.disks = vec![usb_disk("sda", &[("type", "drive"), ("unit", "0")])];
        let e = argv(&def).unwrap_err();
        assert!(
            e.message.contains("address of type 'drive'"),
            "{}",
            e.message
        );
        // A USB CD-ROM, even an empty one, is a SCSI CD-ROM in a stick of its own.
        let mut empty = usb_disk("sdc", &[("type", "usb"), ("port", "2")]);
        empty.device = DiskDevice::Cdrom;
        empty.source = None;
        def.disks = vec![empty];
        let a = argv(&def).unwrap();
        let stick = a
            .iter()
            .position(|x| x == "usb-bot,bus=usb.0,port=2,id=usbbot-sdc")
            .unwrap_or_else(|| panic!("{a:?}"));
        assert_eq!(
            a[stick + 2],
            "scsi-cd,bus=usbbot-sdc.0,channel=0,scsi-id=0,lun=0,id=disk-sdc"
        );
    }

    fn pci_address(slot: &str, function: &str, multifunction: bool) -> Vec<Attribute> {
        let mut a = vec![
            ("type", "pci"),
            ("domain", "0x0000"),
            ("bus", "0x00"),
            ("slot", slot),
            ("function", function),
        ];
        if multifunction {
            a.push(("multifunction", "on"));
        }
        crate::tests::attrs(&a)
    }

    #[test]
    fn the_ich9_usb2_set_is_an_ehci_with_its_uhci_companions_after_it() {
        // As virt-manager writes it: the companions first in the file, sharing index 0.
        let mut companions: Vec<Controller> = (1..=3)
            .map(|n| Controller {
                address: pci_address("0x05", &format!("0x{}", n - 1), n == 1),
                ..usb_controller_def(0, &format!("ich9-uhci{n}"))
            })
            .collect();
        let ehci = Controller {
            address: pci_address("0x05", "0x7", false),
            ..usb_controller_def(0, "ich9-ehci1")
        };
        let mut def = DomainDef {
            controllers: companions.iter().cloned().chain([ehci]).collect(),
            disks: vec![usb_disk("sda", &[])],
            ..crate::tests::empty_def()
        };
        let a = argv(&def).unwrap();
        let at = |needle: &str| {
            a.iter()
                .position(|x| x.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in {a:?}"))
        };
        assert_eq!(
            a[at("ich9-usb-ehci1")],
            "ich9-usb-ehci1,id=usb,bus=pci.0,addr=0x5.0x7"
        );
        assert_eq!(
            a[at("ich9-usb-uhci1")],
            "ich9-usb-uhci1,masterbus=usb.0,firstport=0,id=usb-uhci1,bus=pci.0,addr=0x5.0x0,multifunction=on"
        );
        assert!(a[at("ich9-usb-uhci3")].contains("firstport=4,id=usb-uhci3"));
        assert!(at("ich9-usb-ehci1") < at("ich9-usb-uhci1"));
        assert!(at("ich9-usb-uhci3") < at("usb-storage,bus=usb.0"));
        // Unaddressed, the set is placed, and each one's placement is what the definition
        // records.
        for c in &mut companions {
            c.address.clear();
        }
        def.controllers = companions
            .iter()
            .cloned()
            .chain([usb_controller_def(0, "ich9-ehci1")])
            .collect();
        let a = argv(&def).unwrap();
        crate::pci::record_placements(&mut def, &a);
        let slots: Vec<String> = def
            .controllers
            .iter()
            .map(|c| {
                crate::attribute(&c.address, "slot")
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        // One slot, as libvirt places the set: the EHCI at function 7, the companions at 0
        // (which says the slot has more) to 2.
        assert!(slots.iter().all(|s| *s == slots[0]), "{slots:?}");
        let functions: Vec<(String, bool)> = def
            .controllers
            .iter()
            .map(|c| {
                let get = |n: &str| crate::attribute(&c.address, n);
                (
                    get("function").unwrap_or_default().to_string(),
                    get("multifunction") == Some("on"),
                )
            })
            .collect();
        assert_eq!(
            functions,
            [
                ("0x0", true),
                ("0x1", false),
                ("0x2", false),
                ("0x7", false)
            ]
            .map(|(f, m)| (f.to_string(), m))
        );
        // A companion without its master has no bus to join.
        def.controllers = companions;
        let e = argv(&def).unwrap_err();
        assert!(
            e.message
                .contains("without the ich9-ehci1 controller of the same index"),
            "{}",
            e.message
        );
    }

    #[test]
    fn usb_disks_get_the_lowest_free_port_after_the_usb_input_devices() {
        let tablet = Input {
            input_type: "tablet".into(),
            bus: Some("usb".into()),
        };
        let mut def = DomainDef {
            controllers: vec![
                usb_controller_def(0, "ich9-uhci1"),
                usb_controller_def(0, "ich9-ehci1"),
                usb_controller_def(1, "piix3-uhci"),
            ],
            inputs: vec![tablet],
            disks: vec![
                usb_disk("sda", &[]),
                usb_disk("sdb", &[("type", "usb"), ("bus", "0"), ("port", "2")]),
                usb_disk("sdc", &[]),
                usb_disk("sdd", &[("type", "usb"), ("bus", "1")]),
            ],
            ..crate::tests::empty_def()
        };
        assign_usb_ports(&mut def).unwrap();
        let ports: Vec<(String, String)> = def
            .disks
            .iter()
            .map(|d| {
                let get = |n: &str| {
                    crate::attribute(&d.address, n)
                        .unwrap_or_default()
                        .to_string()
                };
                (get("bus"), get("port"))
            })
            .collect();
        // The tablet has port 1 of the first controller (the EHCI, not its companion).
        let want = [("0", "3"), ("0", "2"), ("0", "4"), ("1", "1")];
        assert_eq!(ports, want.map(|(b, p)| (b.to_string(), p.to_string())));
        // Recorded, they stay: assigning again changes nothing.
        let addresses = |def: &DomainDef| -> Vec<Vec<(String, String)>> {
            def.disks
                .iter()
                .map(|d| {
                    d.address
                        .iter()
                        .map(|a| (a.name.clone(), a.value.clone()))
                        .collect()
                })
                .collect()
        };
        let before = addresses(&def);
        assign_usb_ports(&mut def).unwrap();
        assert_eq!(addresses(&def), before);
        // A UHCI has two ports: a third disk there is refused, naming what to do.
        def.disks
            .push(usb_disk("sde", &[("type", "usb"), ("bus", "1")]));
        def.disks
            .push(usb_disk("sdf", &[("type", "usb"), ("bus", "1")]));
        let e = assign_usb_ports(&mut def).unwrap_err();
        assert!(
            e.message
                .contains("disk 'sdf': USB controller 1 has no free port left"),
            "{}",
            e.message
        );
        // Two disks on one port, or one on the tablet's, are refused.
        def.disks = vec![usb_disk("sda", &[("type", "usb"), ("port", "1")])];
        let e = assign_usb_ports(&mut def).unwrap_err();
        assert!(
            e.message
                .contains("port 1 of USB controller 0 is taken by a USB input device"),
            "{}",
            e.message
        );
        def.disks = vec![
            usb_disk("sda", &[("type", "usb"), ("port", "3")]),
            usb_disk("sdb", &[("type", "usb"), ("port", "3")]),
        ];
        let e = assign_usb_ports(&mut def).unwrap_err();
        assert!(e.message.contains("taken by disk 'sda'"), "{}", e.message);
        // No hubs are built: a port behind one is refused.
        def.disks = vec![usb_disk("sda", &[("type", "usb"), ("port", "1.2")])];
        let e = assign_usb_ports(&mut def).unwrap_err();
        assert!(e.message.contains("USB port '1.2'"), "{}", e.message);
    }

    #[test]
    fn missing_usb_controllers_are_added_with_the_machines_default_model() {
        let tablet = Input {
            input_type: "tablet".into(),
            bus: Some("usb".into()),
        };
        let mut def = DomainDef {
            disks: vec![usb_disk("sdb", &[("type", "usb"), ("bus", "2")])],
            inputs: vec![tablet],
            ..crate::tests::empty_def()
        };
        let added = |def: &DomainDef| -> Vec<(Option<u32>, Option<String>)> {
            missing_usb_controllers(def)
                .unwrap()
                .into_iter()
                .map(|c| (c.index, c.model))
                .collect()
        };
        let uhci = Some("piix3-uhci".to_string());
        assert_eq!(added(&def), [(Some(0), uhci.clone()), (Some(2), uhci)]);
        def.os.machine = Some("pc-q35-7.2".into());
        assert_eq!(added(&def)[0], (Some(0), Some("qemu-xhci".to_string())));
        // model='none' says there is no controller 0: nothing is added in its place.
        def.controllers = vec![usb_controller_def(0, "none")];
        assert_eq!(added(&def), [(Some(2), Some("qemu-xhci".to_string()))]);
        def.disks.clear();
        def.inputs.clear();
        def.controllers.clear();
        assert!(added(&def).is_empty());
    }
}
