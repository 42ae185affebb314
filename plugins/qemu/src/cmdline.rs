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
}

fn unsupported(what: String) -> virtwasm_sdk::types::Error {
    error(
        ErrorKind::Unsupported,
        format!("unsupported configuration: {what}"),
    )
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

fn disk_id(d: &Disk) -> String {
    format!("disk-{}", d.target_dev)
}

/// The device model for a disk on its bus.
fn disk_device(d: &Disk, index: usize) -> VerbResult<String> {
    let node = format!("fmt-{}", d.target_dev);
    let id = disk_id(d);
    let cd = d.device == DiskDevice::Cdrom;
    let bus = d.target_bus.as_deref().unwrap_or("virtio");
    Ok(match (bus, cd) {
        ("virtio", false) => format!("virtio-blk-pci,drive={node},id={id}"),
        ("ide", _) | ("sata", _) => {
            let model = if cd { "ide-cd" } else { "ide-hd" };
            // The pc machine's built-in IDE controller: two buses, two units each.
            format!(
                "{model},drive={node},id={id},bus=ide.{},unit={}",
                index / 2,
                index % 2
            )
        }
        ("scsi", _) => {
            return Err(unsupported(format!(
                "disk '{}' on bus 'scsi' (no SCSI controller model yet; use virtio, sata or ide)",
                d.target_dev
            )));
        }
        (other, _) => {
            return Err(unsupported(format!(
                "disk '{}' on bus '{other}'",
                d.target_dev
            )));
        }
    })
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
    let Some(path) = d.source.as_deref() else {
        return Err(unsupported(format!(
            "disk '{}' has no source (an empty cdrom drive is not supported yet)",
            d.target_dev
        )));
    };
    let driver = match d.source_type {
        DiskSourceType::File => "file",
        DiskSourceType::Block => "host_device",
        other => {
            return Err(unsupported(format!(
                "disk '{}' of source type {other:?} (file and block are supported)",
                d.target_dev
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
        Some("none") => file["cache"] = json!({ "direct": true, "no-flush": false }),
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

fn nic_model(model: Option<&str>) -> VerbResult<&'static str> {
    Ok(match model.unwrap_or("virtio") {
        "virtio" => "virtio-net-pci",
        "e1000" => "e1000",
        "e1000e" => "e1000e",
        "rtl8139" => "rtl8139",
        other => return Err(unsupported(format!("interface model '{other}'"))),
    })
}

/// The whole argument list (without the program).
pub fn build(def: &DomainDef, launch: &Launch) -> VerbResult<Vec<String>> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let accel = accel(&def.domain_type)?;
    let machine = def.os.machine.as_deref().unwrap_or("pc");
    push(&["-name", &format!("guest={},debug-threads=on", def.name)]);
    push(&["-S", "-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-machine", &format!("{machine},usb=off,dump-guest-core=off")]);
    push(&["-accel", accel]);
    // QEMU starts with the maximum, as libvirt does; the balloon takes the guest down to
    // currentMemory.
    let max_mib = def.memory_kib.div_ceil(1024).max(1);
    push(&["-m", &format!("size={max_mib}M")]);
    let current = def.current_vcpus.unwrap_or(def.vcpus).max(1);
    push(&[
        "-smp",
        &format!("{current},maxcpus={},sockets={},cores=1,threads=1", def.vcpus.max(current), def.vcpus.max(current)),
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
        &format!("socket,id=charmonitor,path={},server=on,wait=off", launch.monitor),
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
    ]);
    push(&["-rtc", "base=utc"]);
    if !def.features.iter().any(|f| f == "acpi") && machine != "microvm" {
        push(&["-no-acpi"]);
    }
    let mut ide_index = 0;
    for d in &def.disks {
        a.extend(blockdev(d)?);
        let bus = d.target_bus.as_deref().unwrap_or("virtio");
        let idx = if matches!(bus, "ide" | "sata") {
            ide_index += 1;
            ide_index - 1
        } else {
            0
        };
        let mut dev = disk_device(d, idx)?;
        if let Some(order) = d.boot_order {
            dev.push_str(&format!(",bootindex={order}"));
        }
        a.push("-device".into());
        a.push(dev);
    }
    for (i, n) in def.interfaces.iter().enumerate() {
        let netdev = match n.interface_type {
            InterfaceType::User => format!("user,id=net{i}"),
            other => {
                return Err(unsupported(format!(
                    "interface type {other:?} (user networking works now; bridge and network arrive with the host's netdev capability)"
                )));
            }
        };
        let mut dev = format!("{},netdev=net{i},id=net{i}", nic_model(n.model.as_deref())?);
        if let Some(mac) = &n.mac {
            dev.push_str(&format!(",mac={mac}"));
        }
        a.extend(["-netdev".into(), netdev, "-device".into(), dev]);
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
    let mut serial = 0;
    for (i, c) in serials.into_iter().enumerate() {
        let id = format!("charserial{serial}");
        let backend = match c.source_type {
            ChardevSourceType::Pty => format!("pty,id={id}"),
            ChardevSourceType::File => {
                let p = c.source_path.as_deref().ok_or_else(|| {
                    unsupported(format!("serial {i} of type file without a path"))
                })?;
                format!("file,id={id},path={p}")
            }
            ChardevSourceType::Unix => {
                let p = c
                    .source_path
                    .clone()
                    .unwrap_or_else(|| format!("{}/{}-serial{serial}.sock", launch.runtime_dir, def.uuid));
                let server = c.source_mode.as_deref() != Some("connect");
                if server {
                    format!("socket,id={id},path={p},server=on,wait=off")
                } else {
                    format!("socket,id={id},path={p}")
                }
            }
            ChardevSourceType::Null => format!("null,id={id}"),
            other => {
                return Err(unsupported(format!("serial of type {other:?}")));
            }
        };
        a.extend([
            "-chardev".into(),
            backend,
            "-serial".into(),
            format!("chardev:{id}"),
        ]);
        serial += 1;
    }
    if let Some(b) = &def.memballoon
        && b.model == "virtio"
    {
        a.extend(["-device".into(), "virtio-balloon-pci,id=balloon0".into()]);
    }
    Ok(a)
}
