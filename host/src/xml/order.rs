//! Where libvirt writes the elements and attributes the model does not cover.
//!
//! Extras are written back inside their parent; when libvirt has a fixed place for them
//! (`<metadata>` right after `<uuid>`, `<alias>` before `<address>`), they go there, so our
//! output diffs cleanly against `virsh dumpxml`. Names not listed here go after the modelled
//! children. The orders are those of libvirt's formatters (`src/conf/*_conf.c`, v9.x).

/// libvirt's order of the children of the element at `path` (list indices ignored).
pub(crate) fn child_order(path: &str) -> Option<&'static [&'static str]> {
    Some(match strip_indices(path).as_str() {
        "/domain" => DOMAIN,
        "/domain/os" => &[
            "type",
            "firmware",
            "loader",
            "nvram",
            "init",
            "initarg",
            "initenv",
            "initdir",
            "inituser",
            "initgroup",
            "kernel",
            "initrd",
            "cmdline",
            "dtb",
            "root",
            "acpi",
            "boot",
            "bootmenu",
            "smbios",
            "bios",
        ],
        "/domain/features" => FEATURES,
        "/domain/cpu" => &[
            "model",
            "vendor",
            "topology",
            "cache",
            "maxphysaddr",
            "feature",
            "numa",
        ],
        "/domain/devices" => DEVICES,
        "/domain/devices/disk" => DISK,
        "/domain/devices/interface" => INTERFACE,
        "/domain/devices/controller" => &[
            "model", "driver", "target", "master", "boot", "acpi", "alias", "address",
        ],
        "/domain/devices/serial"
        | "/domain/devices/parallel"
        | "/domain/devices/console"
        | "/domain/devices/channel" => &[
            "source", "protocol", "log", "target", "acpi", "alias", "address",
        ],
        "/domain/devices/input" => &["source", "driver", "acpi", "alias", "address"],
        "/domain/devices/video" => &["model", "driver", "acpi", "alias", "address"],
        "/domain/devices/memballoon" => &["stats", "acpi", "alias", "address", "driver"],
        "/domain/devices/rng" => &["rate", "backend", "acpi", "alias", "address"],
        "/network" => NETWORK,
        "/network/forward" => &["nat", "driver", "pf", "interface", "address"],
        "/network/ip" => &["tftp", "dhcp"],
        "/network/ip/dhcp" => &["range", "host", "bootp"],
        "/network/dns" => &["forwarder", "txt", "srv", "host"],
        "/pool" => &[
            "name",
            "uuid",
            "capacity",
            "allocation",
            "available",
            "features",
            "source",
            "target",
            "refresh",
        ],
        "/pool/source" => &[
            "host",
            "device",
            "dir",
            "adapter",
            "name",
            "initiator",
            "auth",
            "vendor",
            "product",
            "format",
            "protocol",
        ],
        "/pool/target" | "/volume/backingStore" => &["path", "format", "permissions"],
        "/volume" => &[
            "name",
            "key",
            "source",
            "capacity",
            "allocation",
            "physical",
            "target",
            "backingStore",
        ],
        "/volume/target" => &[
            "path",
            "format",
            "permissions",
            "timestamps",
            "encryption",
            "compat",
            "clusterSize",
            "nocow",
            "features",
        ],
        _ => return None,
    })
}

/// libvirt's order of the attributes of the element at `path` (list indices ignored).
pub(crate) fn attribute_order(path: &str) -> Option<&'static [&'static str]> {
    Some(match strip_indices(path).as_str() {
        "/domain" => &["type", "id"],
        "/domain/memory" | "/domain/currentMemory" => &["unit", "dumpCore"],
        "/domain/cpu" => &["mode", "match", "check", "migratable"],
        "/domain/devices/disk" => &["type", "device", "model", "rawio", "sgio", "snapshot"],
        "/domain/devices/disk/driver" => &[
            "name",
            "type",
            "cache",
            "error_policy",
            "rerror_policy",
            "io",
            "ioeventfd",
            "event_idx",
            "copy_on_read",
            "discard",
            "iothread",
            "detect_zeroes",
            "queues",
            "queue_size",
        ],
        "/domain/devices/disk/source" => &[
            "protocol",
            "name",
            "tls",
            "file",
            "dev",
            "dir",
            "pool",
            "volume",
            "mode",
            "startupPolicy",
            "index",
        ],
        "/domain/devices/controller" => &[
            "type",
            "index",
            "model",
            "ports",
            "vectors",
            "maxGrantFrames",
            "maxEventChannels",
        ],
        "/domain/devices/interface/source" => {
            &["network", "portgroup", "portid", "bridge", "dev", "mode"]
        }
        "/domain/devices/serial/source"
        | "/domain/devices/parallel/source"
        | "/domain/devices/console/source"
        | "/domain/devices/channel/source" => &["mode", "host", "service", "path", "append", "tls"],
        "/domain/devices/serial"
        | "/domain/devices/parallel"
        | "/domain/devices/console"
        | "/domain/devices/channel" => &["type", "tty"],
        "/domain/devices/video/model" => &[
            "type", "ram", "vram", "vram64", "vgamem", "heads", "primary", "blob",
        ],
        "/domain/devices/memballoon" => &["model", "autodeflate", "freePageReporting"],
        "/domain/devices/graphics" => &[
            "type",
            "socket",
            "port",
            "tlsPort",
            "autoport",
            "websocket",
            "listen",
            "keymap",
            "defaultMode",
            "sharePolicy",
            "powerControl",
            "passwd",
            "passwdValidTo",
            "connected",
        ],
        "/network/bridge" => &["name", "zone", "stp", "delay", "macTableManager"],
        "/network/forward" => &["dev", "mode", "managed"],
        "/network/ip" => &["family", "address", "netmask", "prefix", "localPtr"],
        "/network/ip/dhcp/host" => &["mac", "id", "name", "ip"],
        "/pool/source/host" => &["name", "port"],
        _ => return None,
    })
}

/// The position of `name` in an order, if libvirt gives it one.
pub(crate) fn rank(order: Option<&[&str]>, name: &str) -> Option<usize> {
    order?.iter().position(|n| *n == name)
}

fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0;
    for ch in path.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out
}

const DOMAIN: &[&str] = &[
    "name",
    "uuid",
    "genid",
    "title",
    "description",
    "metadata",
    "maxMemory",
    "memory",
    "currentMemory",
    "blkiotune",
    "memtune",
    "memoryBacking",
    "vcpu",
    "vcpus",
    "iothreads",
    "iothreadids",
    "defaultiothread",
    "cputune",
    "numatune",
    "resource",
    "sysinfo",
    "bootloader",
    "bootloader_args",
    "os",
    "idmap",
    "features",
    "cpu",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "on_lockfailure",
    "pm",
    "perf",
    "devices",
    "seclabel",
    "keywrap",
    "launchSecurity",
];

const FEATURES: &[&str] = &[
    "acpi",
    "apic",
    "pae",
    "hap",
    "viridian",
    "privnet",
    "hyperv",
    "kvm",
    "pvspinlock",
    "capabilities",
    "pmu",
    "vmport",
    "gic",
    "smm",
    "ioapic",
    "hpt",
    "vmcoreinfo",
    "htm",
    "nested-hv",
    "msrs",
    "ccf-assist",
    "xen",
    "cfpc",
    "sbbc",
    "ibs",
    "tcg",
    "async-teardown",
];

const DEVICES: &[&str] = &[
    "emulator",
    "disk",
    "controller",
    "lease",
    "filesystem",
    "interface",
    "smartcard",
    "serial",
    "parallel",
    "console",
    "channel",
    "input",
    "tpm",
    "graphics",
    "sound",
    "audio",
    "video",
    "hostdev",
    "redirdev",
    "redirfilter",
    "hub",
    "watchdog",
    "memballoon",
    "rng",
    "panic",
    "shmem",
    "memory",
    "iommu",
    "vsock",
    "crypto",
];

const DISK: &[&str] = &[
    "driver",
    "source",
    "backingStore",
    "backenddomain",
    "geometry",
    "blockio",
    "mirror",
    "target",
    "iotune",
    "readonly",
    "shareable",
    "transient",
    "serial",
    "wwn",
    "vendor",
    "product",
    "encryption",
    "boot",
    "acpi",
    "alias",
    "address",
];

const INTERFACE: &[&str] = &[
    "mac",
    "source",
    "virtualport",
    "ip",
    "route",
    "script",
    "target",
    "guest",
    "model",
    "driver",
    "backend",
    "filterref",
    "tune",
    "link",
    "mtu",
    "boot",
    "rom",
    "acpi",
    "alias",
    "address",
];

const NETWORK: &[&str] = &[
    "name",
    "uuid",
    "metadata",
    "forward",
    "bridge",
    "mtu",
    "mac",
    "domain",
    "dns",
    "vlan",
    "bandwidth",
    "port",
    "ip",
    "route",
    "virtualport",
    "portgroup",
];

/// libvirt's feature order, shared with the domain reader that sorts simple features.
pub(crate) fn feature_rank(name: &str) -> usize {
    FEATURES
        .iter()
        .position(|f| *f == name)
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_indices_do_not_change_the_order() {
        assert_eq!(
            strip_indices("/domain/devices/disk[12]/source"),
            "/domain/devices/disk/source"
        );
        assert_eq!(
            rank(child_order("/domain/devices/disk[2]"), "alias"),
            Some(19)
        );
        assert_eq!(rank(child_order("/domain"), "nonesuch"), None);
        assert_eq!(rank(child_order("/nonesuch"), "name"), None);
    }
}
