//! The words libvirt accepts for the domain's enumerated values (`src/conf/domain_conf.c`).

use crate::bindings::types::{
    BootDevice, ChardevKind, ChardevSourceType, DiskDevice, DiskSourceType, InterfaceType,
    LifecycleAction,
};

/// libvirt's hypervisor types (`virDomainVirtType`).
pub(super) const DOMAIN_TYPES: &[&str] = &[
    "none",
    "qemu",
    "kqemu",
    "kvm",
    "xen",
    "lxc",
    "uml",
    "openvz",
    "test",
    "vmware",
    "hyperv",
    "vbox",
    "phyp",
    "parallels",
    "bhyve",
    "vz",
    "hvf",
];
pub(super) const OS_TYPES: &[&str] = &["hvm", "xen", "linux", "exe", "uml", "xenpvh"];
pub(super) const PLACEMENTS: &[&str] = &["static", "auto"];
pub(super) const CLOCK_OFFSETS: &[&str] = &["utc", "localtime", "timezone", "variable", "absolute"];
pub(super) const CPU_MODES: &[&str] = &["custom", "host-model", "host-passthrough", "maximum"];
pub(super) const CPU_MATCHES: &[&str] = &["minimum", "exact", "strict"];

pub(super) const LIFECYCLE: &[(&str, LifecycleAction)] = &[
    ("destroy", LifecycleAction::Destroy),
    ("restart", LifecycleAction::Restart),
    ("rename-restart", LifecycleAction::RenameRestart),
    ("preserve", LifecycleAction::Preserve),
    ("coredump-destroy", LifecycleAction::CoredumpDestroy),
    ("coredump-restart", LifecycleAction::CoredumpRestart),
];
pub(super) const BOOT_DEVICES: &[(&str, BootDevice)] = &[
    ("fd", BootDevice::Fd),
    ("cdrom", BootDevice::Cdrom),
    ("hd", BootDevice::Hd),
    ("network", BootDevice::Network),
];

pub(super) const DISK_TYPES: &[(&str, DiskSourceType)] = &[
    ("file", DiskSourceType::File),
    ("block", DiskSourceType::Block),
    ("dir", DiskSourceType::Dir),
    ("network", DiskSourceType::Network),
    ("volume", DiskSourceType::Volume),
];
/// Valid in libvirt but outside the model: such a disk is kept whole as an extra.
pub(super) const DISK_TYPES_UNMODELLED: &[&str] = &["nvme", "vhostuser"];
pub(super) const DISK_DEVICES: &[(&str, DiskDevice)] = &[
    ("disk", DiskDevice::Disk),
    ("cdrom", DiskDevice::Cdrom),
    ("floppy", DiskDevice::Floppy),
    ("lun", DiskDevice::Lun),
];
pub(super) const DISK_BUSES: &[&str] = &[
    "ide", "fdc", "scsi", "virtio", "xen", "usb", "uml", "sata", "sd",
];
pub(super) const DISK_CACHES: &[&str] = &[
    "default",
    "none",
    "writethrough",
    "writeback",
    "directsync",
    "unsafe",
];
pub(super) const DISK_IOS: &[&str] = &["native", "threads", "io_uring"];

pub(super) const INTERFACE_TYPES: &[(&str, InterfaceType)] = &[
    ("network", InterfaceType::Network),
    ("bridge", InterfaceType::Bridge),
    ("user", InterfaceType::User),
    ("ethernet", InterfaceType::Ethernet),
    ("direct", InterfaceType::Direct),
];
pub(super) const INTERFACE_TYPES_UNMODELLED: &[&str] = &[
    "vhostuser",
    "server",
    "client",
    "mcast",
    "internal",
    "hostdev",
    "udp",
    "vdpa",
    "null",
    "vds",
];

pub(super) const CHARDEV_KINDS: &[(&str, ChardevKind)] = &[
    ("serial", ChardevKind::Serial),
    ("parallel", ChardevKind::Parallel),
    ("console", ChardevKind::Console),
    ("channel", ChardevKind::Channel),
];
pub(super) const CHARDEV_TYPES: &[(&str, ChardevSourceType)] = &[
    ("null", ChardevSourceType::Null),
    ("vc", ChardevSourceType::Vc),
    ("pty", ChardevSourceType::Pty),
    ("dev", ChardevSourceType::Dev),
    ("file", ChardevSourceType::File),
    ("pipe", ChardevSourceType::Pipe),
    ("stdio", ChardevSourceType::Stdio),
    ("udp", ChardevSourceType::Udp),
    ("tcp", ChardevSourceType::Tcp),
    ("unix", ChardevSourceType::Unix),
    ("spicevmc", ChardevSourceType::Spicevmc),
];
pub(super) const CHARDEV_TYPES_UNMODELLED: &[&str] = &["spiceport", "nmdm", "qemu-vdagent", "dbus"];

pub(super) const CONTROLLER_TYPES: &[&str] = &[
    "ide",
    "fdc",
    "scsi",
    "sata",
    "virtio-serial",
    "ccid",
    "usb",
    "pci",
    "xenbus",
    "isa",
];
pub(super) const INPUT_TYPES: &[&str] = &["mouse", "tablet", "keyboard", "passthrough", "evdev"];
pub(super) const INPUT_BUSES: &[&str] = &["ps2", "usb", "xen", "parallels", "virtio", "none"];
pub(super) const GRAPHICS_TYPES: &[&str] = &[
    "sdl",
    "vnc",
    "rdp",
    "desktop",
    "spice",
    "egl-headless",
    "dbus",
];
pub(super) const VIDEO_MODELS: &[&str] = &[
    "default",
    "vga",
    "cirrus",
    "vmvga",
    "xen",
    "vbox",
    "qxl",
    "parallels",
    "virtio",
    "gop",
    "none",
    "bochs",
    "ramfb",
];
pub(super) const MEMBALLOON_MODELS: &[&str] = &[
    "virtio",
    "xen",
    "none",
    "virtio-transitional",
    "virtio-non-transitional",
];
pub(super) const RNG_MODELS: &[&str] =
    &["virtio", "virtio-transitional", "virtio-non-transitional"];
pub(super) const RNG_BACKENDS: &[&str] = &["random", "egd", "builtin"];

pub(super) fn disk_source_attr(kind: DiskSourceType) -> &'static str {
    match kind {
        DiskSourceType::File => "file",
        DiskSourceType::Block => "dev",
        DiskSourceType::Dir => "dir",
        DiskSourceType::Network => "name",
        DiskSourceType::Volume => "volume",
    }
}

pub(super) fn interface_source_attr(kind: InterfaceType) -> Option<&'static str> {
    match kind {
        InterfaceType::Network => Some("network"),
        InterfaceType::Bridge => Some("bridge"),
        InterfaceType::Direct => Some("dev"),
        InterfaceType::User | InterfaceType::Ethernet => None,
    }
}
