//! Domain XML to the model: one function per element, each taking what the model holds
//! and leaving the rest to be kept as extras.

use super::vocab::*;
use crate::Error;
use crate::bindings::types::{
    Attribute, Chardev, ChardevKind, ChardevSourceType, Clock, Controller, Cpu, Disk, DiskDevice,
    DiskSourceType, DomainDef, Graphics, Input, Interface, LifecycleAction, Memballoon, Os, Rng,
    Video,
};
use crate::xml::order::feature_rank;
use crate::xml::reader::El;
use crate::xml::units::{ScaleError, bytes_to_kib, parse_scaled};
use crate::xml::values::{
    canonical_mac, canonical_uuid, i32_value, one_of, parse_enum, positive_u32, u32_value, yes_no,
};

/// Reads the domain, and tells whether any device has a per-device boot order.
pub(super) fn read_domain(root: &mut El<'_>) -> Result<(DomainDef, bool), Error> {
    let domain_type = read_required_attr(root, "type", |v| one_of(v, DOMAIN_TYPES, "domain type"))?;
    // A live domain's id: runtime state, not definition (libvirt ignores it on define too).
    root.attr("id");
    let name = read_name(root)?;
    let uuid = match root.child("uuid") {
        Some(el) => el.text_with(canonical_uuid)?,
        None => String::new(),
    };
    let title = root.child_text("title");
    let description = root.child_text("description");
    let memory_kib = read_memory(root, "memory")?.unwrap_or(0);
    let current_memory_kib = read_memory(root, "currentMemory")?.unwrap_or(0);
    let (vcpus, current_vcpus, vcpu_placement, cpuset) = read_vcpu(root)?;
    let os_el = root.child("os").ok_or_else(|| root.missing("os"))?;
    let os = read_os(os_el)?;
    let features = root
        .child("features")
        .map(read_features)
        .unwrap_or_default();
    let cpu = root.child("cpu").map(read_cpu).transpose()?;
    let clock = root.child("clock").map(read_clock).transpose()?;
    let on_poweroff = read_lifecycle(root, "on_poweroff")?;
    let on_reboot = read_lifecycle(root, "on_reboot")?;
    let on_crash = read_lifecycle(root, "on_crash")?;
    let mut def = DomainDef {
        domain_type,
        name,
        uuid,
        title,
        description,
        memory_kib,
        current_memory_kib,
        vcpus,
        current_vcpus,
        vcpu_placement,
        cpuset,
        os,
        features,
        clock,
        cpu,
        on_poweroff,
        on_reboot,
        on_crash,
        emulator: None,
        disks: Vec::new(),
        controllers: Vec::new(),
        interfaces: Vec::new(),
        chardevs: Vec::new(),
        inputs: Vec::new(),
        graphics: Vec::new(),
        videos: Vec::new(),
        memballoon: None,
        rngs: Vec::new(),
    };
    if let Some(devices) = root.child("devices") {
        read_devices(devices, &mut def)?;
    }
    let device_boot = has_device_boot(root);
    if !def.os.boot.is_empty() && device_boot {
        return Err(
            root.error("per-device boot elements cannot be used together with os/boot elements")
        );
    }
    // libvirt accepts the size from NUMA cells instead, which the model keeps as extras.
    let numa = root
        .el
        .elements()
        .any(|c| c.name == "cpu" && c.elements().any(|n| n.name == "numa"));
    if def.memory_kib == 0 && !numa {
        return Err(root.error(
            "missing memory size (expected <memory> with a non-zero size, or NUMA cells in <cpu>)",
        ));
    }
    Ok((def, device_boot))
}

/// Whether any device, modelled or not (NICs and host devices boot too), has `<boot order>`.
fn has_device_boot(root: &El<'_>) -> bool {
    let devices = root.el.elements().filter(|e| e.name == "devices");
    devices.flat_map(|d| d.elements()).any(|device| {
        device
            .elements()
            .any(|c| c.name == "boot" && c.attrs.iter().any(|a| a.name == "order"))
    })
}

/// Takes a required attribute and converts it, with the position of whichever is wrong.
fn read_required_attr<T>(
    el: &mut El<'_>,
    name: &str,
    convert: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, Error> {
    let attr = el.required_attr(name)?;
    convert(attr.value).map_err(|m| el.attr_error(&attr, &m))
}

/// `<name>`: required and non-empty.
pub(in crate::xml) fn read_name(root: &mut El<'_>) -> Result<String, Error> {
    let el = root.child("name").ok_or_else(|| root.missing("name"))?;
    let name = el.text();
    if name.trim().is_empty() {
        return Err(el.text_error("empty name (a name is required)"));
    }
    // Which characters a name may hold (it becomes a file name) is the object store's rule,
    // checked where names are stored, not here.
    Ok(name)
}

/// `<memory>`/`<currentMemory>` in KiB, whatever unit they were written in.
fn read_memory(root: &mut El<'_>, name: &str) -> Result<Option<u64>, Error> {
    let Some(mut el) = root.child(name) else {
        return Ok(None);
    };
    let unit = el.attr("unit");
    let text = el.text();
    let unit_value = unit.as_ref().map(|u| u.value);
    match parse_scaled(&text, unit_value, 1024) {
        Ok(bytes) => Ok(Some(bytes_to_kib(bytes))),
        Err(e) => {
            let message = e.message(&text, unit_value);
            match (&unit, e) {
                (Some(unit), ScaleError::Unit) => Err(el.attr_error(unit, &message)),
                _ => Err(el.text_error(&message)),
            }
        }
    }
}

type VcpuParts = (u32, Option<u32>, Option<String>, Option<String>);

fn read_vcpu(root: &mut El<'_>) -> Result<VcpuParts, Error> {
    let Some(mut el) = root.child("vcpu") else {
        return Ok((1, None, None, None));
    };
    let placement = el.attr_with("placement", |v| one_of(v, PLACEMENTS, "vcpu placement"))?;
    let cpuset = el.attr_string("cpuset");
    let current_attr = el.attr("current");
    let vcpus = el.text_with(positive_u32)?;
    let current = match &current_attr {
        None => None,
        Some(attr) => {
            let current = positive_u32(attr.value).map_err(|m| el.attr_error(attr, &m))?;
            if current > vcpus {
                return Err(el.attr_error(
                    attr,
                    &format!("current vCPUs ({current}) exceed the maximum ({vcpus})"),
                ));
            }
            // libvirt writes `current` only when some vCPUs are offline.
            (current < vcpus).then_some(current)
        }
    };
    Ok((vcpus, current, placement, cpuset))
}

fn read_os(mut os: El<'_>) -> Result<Os, Error> {
    let mut type_el = os.child("type").ok_or_else(|| os.missing("type"))?;
    let arch = type_el.attr_string("arch");
    let machine = type_el.attr_string("machine");
    let os_type = type_el.text_with(|v| one_of(v.trim(), OS_TYPES, "os type"))?;
    drop(type_el);
    let mut boot = Vec::new();
    for mut b in os.children("boot") {
        boot.push(read_required_attr(&mut b, "dev", |v| {
            parse_enum(v, BOOT_DEVICES, "boot device")
        })?);
    }
    Ok(Os {
        os_type,
        arch,
        machine,
        kernel: os.child_text("kernel"),
        initrd: os.child_text("initrd"),
        cmdline: os.child_text("cmdline"),
        boot,
        init: os.child_text("init"),
        init_args: os.children("initarg").iter().map(El::text).collect(),
    })
}

/// Simple on/off features (`<acpi/>`) go to the model; a feature with attributes or children
/// (`<hyperv>...</hyperv>`, `<apic eoi='on'/>`) is kept whole.
fn read_features(mut features: El<'_>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let parent = features.path.clone();
    for el in features.all_children() {
        let bare = el.el.attrs.is_empty() && el.el.children.is_empty();
        if bare {
            if !names.iter().any(|n| n == el.name()) {
                names.push(el.name().to_string());
            }
        } else {
            let path = format!("{parent}/{}", el.name());
            el.keep_whole(&parent, path);
        }
    }
    // libvirt writes features in its own order whatever order they were read in.
    names.sort_by_key(|n| feature_rank(n));
    names
}

fn read_cpu(mut cpu: El<'_>) -> Result<Cpu, Error> {
    let mode = cpu.attr_with("mode", |v| one_of(v, CPU_MODES, "cpu mode"))?;
    let match_ = cpu.attr_with("match", |v| one_of(v, CPU_MATCHES, "cpu match"))?;
    let model = cpu.child_text("model");
    let mut topology = cpu.child("topology");
    let mut count = |name: &str| match topology.as_mut() {
        Some(t) => t.attr_with(name, positive_u32),
        None => Ok(None),
    };
    Ok(Cpu {
        mode,
        match_,
        model,
        sockets: count("sockets")?,
        dies: count("dies")?,
        cores: count("cores")?,
        threads: count("threads")?,
    })
}

fn read_clock(mut clock: El<'_>) -> Result<Clock, Error> {
    Ok(Clock {
        offset: clock
            .attr_with("offset", |v| one_of(v, CLOCK_OFFSETS, "clock offset"))?
            .unwrap_or_else(|| "utc".to_string()),
        timezone: clock.attr_string("timezone"),
        adjustment: clock.attr_string("adjustment"),
        basis: clock.attr_string("basis"),
    })
}

fn read_lifecycle(root: &mut El<'_>, name: &str) -> Result<Option<LifecycleAction>, Error> {
    root.child(name)
        .map(|el| el.text_with(|v| parse_enum(v.trim(), LIFECYCLE, "lifecycle action")))
        .transpose()
}

fn read_devices(mut devices: El<'_>, def: &mut DomainDef) -> Result<(), Error> {
    let parent = devices.path.clone();
    def.emulator = devices.child_text("emulator");
    for el in devices.children("disk") {
        if let Some(kind) = unmodelled(&el, DISK_TYPES_UNMODELLED) {
            el.keep_whole(&parent, format!("{parent}/disk[@type='{kind}']"));
            continue;
        }
        def.disks.push(read_disk(el, def.disks.len())?);
    }
    for (i, el) in devices.children("controller").into_iter().enumerate() {
        def.controllers.push(read_controller(el, i)?);
    }
    for el in devices.children("interface") {
        if let Some(kind) = unmodelled(&el, INTERFACE_TYPES_UNMODELLED) {
            el.keep_whole(&parent, format!("{parent}/interface[@type='{kind}']"));
            continue;
        }
        def.interfaces
            .push(read_interface(el, def.interfaces.len())?);
    }
    for &(name, kind) in CHARDEV_KINDS {
        let mut index = 0;
        for el in devices.children(name) {
            if let Some(kind) = unmodelled(&el, CHARDEV_TYPES_UNMODELLED) {
                el.keep_whole(&parent, format!("{parent}/{name}[@type='{kind}']"));
                continue;
            }
            def.chardevs.push(read_chardev(el, kind, index)?);
            index += 1;
        }
    }
    for el in devices.children("input") {
        def.inputs.push(read_input(el)?);
    }
    for el in devices.children("graphics") {
        def.graphics.push(read_graphics(el)?);
    }
    for el in devices.children("video") {
        def.videos.push(read_video(el)?);
    }
    if let Some(mut balloon) = devices.child("memballoon") {
        let model = read_required_attr(&mut balloon, "model", |v| {
            one_of(v, MEMBALLOON_MODELS, "memballoon model")
        })?;
        def.memballoon = Some(Memballoon {
            model,
            address: read_address(&mut balloon),
        });
    }
    for el in devices.children("rng") {
        def.rngs.push(read_rng(el)?);
    }
    Ok(())
}

/// The `type` of a device when libvirt knows it but the model does not.
fn unmodelled<'a>(el: &El<'a>, unmodelled: &[&str]) -> Option<&'a str> {
    el.peek_attr("type").filter(|t| unmodelled.contains(t))
}

fn read_address(parent: &mut El<'_>) -> Vec<Attribute> {
    let Some(mut address) = parent.child("address") else {
        return Vec::new();
    };
    let names: Vec<String> = address.el.attrs.iter().map(|a| a.name.clone()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let value = address.attr_string(&name)?;
            Some(Attribute { name, value })
        })
        .collect()
}

fn read_disk(mut el: El<'_>, index: usize) -> Result<Disk, Error> {
    el.set_index(index);
    let source_type = el
        .attr_with("type", |v| {
            parse_enum(v, DISK_TYPES, "disk type")
                .map_err(|m| with_unmodelled(m, DISK_TYPES_UNMODELLED))
        })?
        .unwrap_or(DiskSourceType::File);
    let device = el
        .attr_with("device", |v| parse_enum(v, DISK_DEVICES, "disk device"))?
        .unwrap_or(DiskDevice::Disk);
    let (driver_name, format, cache, io) = match el.child("driver") {
        Some(mut driver) => (
            driver.attr_string("name"),
            driver.attr_string("type"),
            driver.attr_with("cache", |v| one_of(v, DISK_CACHES, "disk cache mode"))?,
            driver.attr_with("io", |v| one_of(v, DISK_IOS, "disk io mode"))?,
        ),
        None => (None, None, None, None),
    };
    let (mut source, mut source_pool, mut source_volume) = (None, None, None);
    if let Some(mut src) = el.child("source") {
        match source_type {
            DiskSourceType::Volume => {
                source_pool = src.attr_string("pool");
                source_volume = src.attr_string("volume");
            }
            _ => source = src.attr_string(disk_source_attr(source_type)),
        }
    }
    let mut target = el.child("target").ok_or_else(|| el.missing("target"))?;
    let target_dev = target.required_attr("dev")?.value.to_string();
    let target_bus = target.attr_with("bus", |v| one_of(v, DISK_BUSES, "disk bus"))?;
    drop(target);
    let readonly = el.child("readonly").is_some();
    let shareable = el.child("shareable").is_some();
    let boot_order = match el.child("boot") {
        Some(mut boot) => Some(read_required_attr(&mut boot, "order", positive_u32)?),
        None => None,
    };
    let address = read_address(&mut el);
    Ok(Disk {
        source_type,
        device,
        driver_name,
        format,
        cache,
        io,
        source,
        source_pool,
        source_volume,
        target_dev,
        target_bus,
        readonly,
        shareable,
        boot_order,
        address,
    })
}

/// Adds the libvirt values the model cannot hold to an "unknown value" message, so the
/// user sees the full list libvirt would accept.
fn with_unmodelled(message: String, extra: &[&str]) -> String {
    match message.strip_suffix(')') {
        Some(head) => format!("{head}, {})", extra.join(", ")),
        None => message,
    }
}

fn read_controller(mut el: El<'_>, _index: usize) -> Result<Controller, Error> {
    let controller_type = read_required_attr(&mut el, "type", |v| {
        one_of(v, CONTROLLER_TYPES, "controller type")
    })?;
    Ok(Controller {
        controller_type,
        index: el.attr_with("index", u32_value)?,
        model: el.attr_string("model"),
        address: read_address(&mut el),
    })
}

fn read_interface(mut el: El<'_>, index: usize) -> Result<Interface, Error> {
    el.set_index(index);
    let interface_type = read_required_attr(&mut el, "type", |v| {
        parse_enum(v, INTERFACE_TYPES, "interface type")
            .map_err(|m| with_unmodelled(m, INTERFACE_TYPES_UNMODELLED))
    })?;
    let source = match interface_source_attr(interface_type) {
        Some(attr) => el.child("source").and_then(|mut s| s.attr_string(attr)),
        None => None,
    };
    let mac = match el.child("mac") {
        Some(mut mac) => Some(read_required_attr(&mut mac, "address", |v| {
            canonical_mac(v, true)
        })?),
        None => None,
    };
    Ok(Interface {
        interface_type,
        source,
        mac,
        model: el.child("model").and_then(|mut m| m.attr_string("type")),
        target_dev: el.child("target").and_then(|mut t| t.attr_string("dev")),
        address: read_address(&mut el),
    })
}

fn read_chardev(mut el: El<'_>, kind: ChardevKind, index: usize) -> Result<Chardev, Error> {
    el.set_index(index);
    let source_type = el
        .attr_with("type", |v| {
            parse_enum(v, CHARDEV_TYPES, "character device type")
                .map_err(|m| with_unmodelled(m, CHARDEV_TYPES_UNMODELLED))
        })?
        .unwrap_or(ChardevSourceType::Pty);
    let (mut source_path, mut source_mode) = (None, None);
    let (takes_path, takes_mode) = chardev_source_attrs(source_type);
    if (takes_path || takes_mode)
        && let Some(mut src) = el.child("source")
    {
        if takes_mode {
            source_mode = src.attr_string("mode");
        }
        if takes_path {
            source_path = src.attr_string("path");
        }
    }
    let (target_type, target_port) = match el.child("target") {
        Some(mut target) => (
            target.attr_string("type"),
            target.attr_with("port", u32_value)?,
        ),
        None => (None, None),
    };
    Ok(Chardev {
        kind,
        source_type,
        source_path,
        source_mode,
        target_type,
        target_port,
    })
}

/// Which `<source>` attributes the model holds for a character device type: (path, mode).
fn chardev_source_attrs(kind: ChardevSourceType) -> (bool, bool) {
    use ChardevSourceType as T;
    match kind {
        T::Pty | T::File | T::Pipe | T::Dev => (true, false),
        T::Unix => (true, true),
        T::Tcp | T::Udp => (false, true),
        T::Null | T::Stdio | T::Vc | T::Spicevmc => (false, false),
    }
}

fn read_input(mut el: El<'_>) -> Result<Input, Error> {
    Ok(Input {
        input_type: read_required_attr(&mut el, "type", |v| one_of(v, INPUT_TYPES, "input type"))?,
        bus: el.attr_with("bus", |v| one_of(v, INPUT_BUSES, "input bus"))?,
    })
}

/// libvirt's graphics port rules: `-1` (or no port at all, for VNC) means "pick one", which
/// it records as autoport; the model keeps `-1` for that, as libvirt writes it for VNC.
fn read_graphics(mut el: El<'_>) -> Result<Graphics, Error> {
    let graphics_type = read_required_attr(&mut el, "type", |v| {
        one_of(v, GRAPHICS_TYPES, "graphics type")
    })?;
    let port = el.attr_with("port", i32_value)?;
    let autoport_attr = el.attr_with("autoport", yes_no)?;
    let (port, autoport) = match graphics_type.as_str() {
        "vnc" => {
            // A VNC server on a unix socket has no port to pick.
            let socket = el.peek_attr("socket").is_some();
            let autoport = autoport_attr.unwrap_or(!socket && matches!(port, None | Some(-1)));
            let automatic = matches!(port, None | Some(-1) | Some(0));
            (
                if autoport && automatic {
                    Some(-1)
                } else {
                    port
                },
                autoport,
            )
        }
        "spice" => {
            let autoport = autoport_attr.unwrap_or(port == Some(-1));
            (port.filter(|p| *p > 0), autoport)
        }
        _ => (port, autoport_attr.unwrap_or(false)),
    };
    let mut listen = el.attr_string("listen");
    let first_listen = el.el.elements().find(|c| c.name == "listen");
    let address_listen = first_listen.is_some_and(|l| {
        let attr = |n: &str| {
            l.attrs
                .iter()
                .find(|a| a.name == n)
                .map(|a| a.value.as_str())
        };
        attr("type") == Some("address")
            && (listen.is_none()
                || attr("address").is_none()
                || attr("address") == listen.as_deref())
    });
    if address_listen && let Some(mut child) = el.child("listen") {
        child.attr("type");
        let address = child.attr_string("address");
        listen = listen.or(address);
    }
    Ok(Graphics {
        graphics_type,
        port,
        autoport,
        listen,
    })
}

fn read_video(mut el: El<'_>) -> Result<Video, Error> {
    let Some(mut model) = el.child("model") else {
        return Ok(Video {
            model: "default".to_string(),
            vram: None,
            heads: None,
        });
    };
    Ok(Video {
        model: model
            .attr_with("type", |v| one_of(v, VIDEO_MODELS, "video model"))?
            .unwrap_or_else(|| "default".to_string()),
        vram: model.attr_with("vram", u32_value)?,
        heads: model.attr_with("heads", u32_value)?,
    })
}

fn read_rng(mut el: El<'_>) -> Result<Rng, Error> {
    let model = read_required_attr(&mut el, "model", |v| one_of(v, RNG_MODELS, "rng model"))?;
    let mut backend = el.child("backend").ok_or_else(|| el.missing("backend"))?;
    let backend_model = read_required_attr(&mut backend, "model", |v| {
        one_of(v, RNG_BACKENDS, "rng backend")
    })?;
    let text = backend.text();
    let backend_source = (!text.trim().is_empty()).then(|| text.trim().to_string());
    Ok(Rng {
        model,
        backend_model,
        backend_source,
    })
}
