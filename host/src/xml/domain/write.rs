//! The model to domain XML, in `virsh dumpxml`'s element order.

use super::ParsedDomain;
use super::vocab::*;
use crate::bindings::types::{
    Attribute, Chardev, ChardevSourceType, Controller, Cpu, Disk, DiskSourceType, DomainDef,
    Graphics, Interface, Os,
};
use crate::xml::FormatOptions;
use crate::xml::values::enum_name;
use crate::xml::writer::{Attrs, Writer};

pub(super) fn write_domain(d: &ParsedDomain, options: &FormatOptions) -> String {
    let def = &d.def;
    let mut w = Writer::new(&d.extras);
    let id = options.id.filter(|_| !options.inactive);
    w.open(
        "/domain",
        "domain",
        Attrs::new().add("type", &def.domain_type).opt("id", id),
    );
    w.text("/domain/name", "name", Attrs::new(), &def.name);
    if !def.uuid.is_empty() {
        w.text("/domain/uuid", "uuid", Attrs::new(), &def.uuid);
    }
    if let Some(title) = &def.title {
        w.text("/domain/title", "title", Attrs::new(), title);
    }
    if let Some(description) = &def.description {
        w.text(
            "/domain/description",
            "description",
            Attrs::new(),
            description,
        );
    }
    let kib = || Attrs::new().add("unit", "KiB");
    w.text(
        "/domain/memory",
        "memory",
        kib(),
        &def.memory_kib.to_string(),
    );
    w.text(
        "/domain/currentMemory",
        "currentMemory",
        kib(),
        &def.current_memory_kib.to_string(),
    );
    let vcpu = Attrs::new()
        .opt("placement", def.vcpu_placement.as_ref())
        .opt("cpuset", def.cpuset.as_ref())
        .opt("current", def.current_vcpus);
    w.text("/domain/vcpu", "vcpu", vcpu, &def.vcpus.to_string());
    write_os(&mut w, &def.os);
    write_features(&mut w, &def.features);
    if let Some(cpu) = &def.cpu {
        write_cpu(&mut w, cpu);
    }
    if let Some(clock) = &def.clock {
        let attrs = Attrs::new()
            .add("offset", &clock.offset)
            .opt("timezone", clock.timezone.as_ref())
            .opt("adjustment", clock.adjustment.as_ref())
            .opt("basis", clock.basis.as_ref());
        w.leaf("/domain/clock", "clock", attrs);
    }
    for (name, action) in [
        ("on_poweroff", def.on_poweroff),
        ("on_reboot", def.on_reboot),
        ("on_crash", def.on_crash),
    ] {
        if let Some(action) = action {
            let path = format!("/domain/{name}");
            w.text(&path, name, Attrs::new(), enum_name(LIFECYCLE, &action));
        }
    }
    write_devices(&mut w, def, options);
    w.close();
    w.finish()
}

fn write_os(w: &mut Writer<'_>, os: &Os) {
    w.open("/domain/os", "os", Attrs::new());
    let type_attrs = Attrs::new()
        .opt("arch", os.arch.as_ref())
        .opt("machine", os.machine.as_ref());
    w.text("/domain/os/type", "type", type_attrs, &os.os_type);
    if let Some(init) = &os.init {
        w.text("/domain/os/init", "init", Attrs::new(), init);
    }
    for (i, arg) in os.init_args.iter().enumerate() {
        w.text(
            &format!("/domain/os/initarg[{}]", i + 1),
            "initarg",
            Attrs::new(),
            arg,
        );
    }
    for (name, value) in [
        ("kernel", &os.kernel),
        ("initrd", &os.initrd),
        ("cmdline", &os.cmdline),
    ] {
        if let Some(value) = value {
            w.text(&format!("/domain/os/{name}"), name, Attrs::new(), value);
        }
    }
    for (i, dev) in os.boot.iter().enumerate() {
        let path = format!("/domain/os/boot[{}]", i + 1);
        w.leaf(
            &path,
            "boot",
            Attrs::new().add("dev", enum_name(BOOT_DEVICES, dev)),
        );
    }
    w.close();
}

fn write_features(w: &mut Writer<'_>, features: &[String]) {
    let path = "/domain/features";
    if features.is_empty() && !w.has_extras(path) {
        return;
    }
    w.open(path, "features", Attrs::new());
    for feature in features {
        w.leaf(&format!("{path}/{feature}"), feature, Attrs::new());
    }
    w.close();
}

fn write_cpu(w: &mut Writer<'_>, cpu: &Cpu) {
    let attrs = Attrs::new()
        .opt("mode", cpu.mode.as_ref())
        .opt("match", cpu.match_.as_ref());
    w.open("/domain/cpu", "cpu", attrs);
    if let Some(model) = &cpu.model {
        w.text("/domain/cpu/model", "model", Attrs::new(), model);
    }
    let topology = Attrs::new()
        .opt("sockets", cpu.sockets)
        .opt("dies", cpu.dies)
        .opt("cores", cpu.cores)
        .opt("threads", cpu.threads);
    let any = [cpu.sockets, cpu.dies, cpu.cores, cpu.threads]
        .iter()
        .any(Option::is_some);
    if any || w.has_extras("/domain/cpu/topology") {
        w.leaf("/domain/cpu/topology", "topology", topology);
    }
    w.close();
}

fn write_devices(w: &mut Writer<'_>, def: &DomainDef, options: &FormatOptions) {
    let path = "/domain/devices";
    w.open_never_empty(path, "devices", Attrs::new());
    if let Some(emulator) = &def.emulator {
        w.text(
            "/domain/devices/emulator",
            "emulator",
            Attrs::new(),
            emulator,
        );
    }
    for (i, disk) in def.disks.iter().enumerate() {
        write_disk(w, disk, &format!("{path}/disk[{}]", i + 1));
    }
    for (i, controller) in def.controllers.iter().enumerate() {
        write_controller(w, controller, &format!("{path}/controller[{}]", i + 1));
    }
    for (i, iface) in def.interfaces.iter().enumerate() {
        write_interface(w, iface, &format!("{path}/interface[{}]", i + 1));
    }
    for &(name, kind) in CHARDEV_KINDS {
        let of_kind = def.chardevs.iter().filter(|c| c.kind == kind);
        for (i, chardev) in of_kind.enumerate() {
            write_chardev(
                w,
                chardev,
                name,
                &format!("{path}/{name}[{}]", i + 1),
                options,
            );
        }
    }
    for (i, input) in def.inputs.iter().enumerate() {
        let attrs = Attrs::new()
            .add("type", &input.input_type)
            .opt("bus", input.bus.as_ref());
        w.leaf(&format!("{path}/input[{}]", i + 1), "input", attrs);
    }
    for (i, graphics) in def.graphics.iter().enumerate() {
        write_graphics(w, graphics, &format!("{path}/graphics[{}]", i + 1), options);
    }
    for (i, video) in def.videos.iter().enumerate() {
        let video_path = format!("{path}/video[{}]", i + 1);
        w.open(&video_path, "video", Attrs::new());
        let model = Attrs::new()
            .add("type", &video.model)
            .opt("vram", video.vram)
            .opt("heads", video.heads);
        w.leaf(&format!("{video_path}/model"), "model", model);
        w.close();
    }
    if let Some(balloon) = &def.memballoon {
        let balloon_path = format!("{path}/memballoon");
        w.open(
            &balloon_path,
            "memballoon",
            Attrs::new().add("model", &balloon.model),
        );
        write_address(w, &balloon_path, &balloon.address);
        w.close();
    }
    for (i, rng) in def.rngs.iter().enumerate() {
        let rng_path = format!("{path}/rng[{}]", i + 1);
        w.open(&rng_path, "rng", Attrs::new().add("model", &rng.model));
        let backend_path = format!("{rng_path}/backend");
        let attrs = Attrs::new().add("model", &rng.backend_model);
        match &rng.backend_source {
            Some(source) => w.text(&backend_path, "backend", attrs, source),
            None => w.leaf(&backend_path, "backend", attrs),
        }
        w.close();
    }
    w.close();
}

/// Writes `<address>` when the device has one (its attributes verbatim) or extras for it.
fn write_address(w: &mut Writer<'_>, parent: &str, address: &[Attribute]) {
    let path = format!("{parent}/address");
    if address.is_empty() && !w.has_extras(&path) {
        return;
    }
    let attrs = address
        .iter()
        .fold(Attrs::new(), |a, attr| a.add(&attr.name, &attr.value));
    w.leaf(&path, "address", attrs);
}

/// Writes an element holding only optional attributes, skipping it when it would be empty.
fn optional_leaf(w: &mut Writer<'_>, path: &str, name: &str, attrs: Attrs, any: bool) {
    if any || w.has_extras(path) {
        w.leaf(path, name, attrs);
    }
}

fn write_disk(w: &mut Writer<'_>, disk: &Disk, path: &str) {
    let attrs = Attrs::new()
        .add("type", enum_name(DISK_TYPES, &disk.source_type))
        .add("device", enum_name(DISK_DEVICES, &disk.device));
    w.open(path, "disk", attrs);
    let driver = Attrs::new()
        .opt("name", disk.driver_name.as_ref())
        .opt("type", disk.format.as_ref())
        .opt("cache", disk.cache.as_ref())
        .opt("io", disk.io.as_ref());
    let any_driver = disk.driver_name.is_some()
        || disk.format.is_some()
        || disk.cache.is_some()
        || disk.io.is_some();
    optional_leaf(w, &format!("{path}/driver"), "driver", driver, any_driver);
    let source = match disk.source_type {
        DiskSourceType::Volume => Attrs::new()
            .opt("pool", disk.source_pool.as_ref())
            .opt("volume", disk.source_volume.as_ref()),
        kind => Attrs::new().opt(disk_source_attr(kind), disk.source.as_ref()),
    };
    let any_source =
        disk.source.is_some() || disk.source_pool.is_some() || disk.source_volume.is_some();
    optional_leaf(w, &format!("{path}/source"), "source", source, any_source);
    let target = Attrs::new()
        .add("dev", &disk.target_dev)
        .opt("bus", disk.target_bus.as_ref());
    w.leaf(&format!("{path}/target"), "target", target);
    if disk.readonly {
        w.leaf(&format!("{path}/readonly"), "readonly", Attrs::new());
    }
    if disk.shareable {
        w.leaf(&format!("{path}/shareable"), "shareable", Attrs::new());
    }
    if let Some(order) = disk.boot_order {
        w.leaf(
            &format!("{path}/boot"),
            "boot",
            Attrs::new().add("order", order),
        );
    }
    write_address(w, path, &disk.address);
    w.close();
}

fn write_controller(w: &mut Writer<'_>, controller: &Controller, path: &str) {
    let attrs = Attrs::new()
        .add("type", &controller.controller_type)
        .opt("index", controller.index)
        .opt("model", controller.model.as_ref());
    w.open(path, "controller", attrs);
    write_address(w, path, &controller.address);
    w.close();
}

fn write_interface(w: &mut Writer<'_>, iface: &Interface, path: &str) {
    let kind = enum_name(INTERFACE_TYPES, &iface.interface_type);
    w.open(path, "interface", Attrs::new().add("type", kind));
    let mac = Attrs::new().opt("address", iface.mac.as_ref());
    optional_leaf(w, &format!("{path}/mac"), "mac", mac, iface.mac.is_some());
    let source = match interface_source_attr(iface.interface_type) {
        Some(attr) => Attrs::new().opt(attr, iface.source.as_ref()),
        None => Attrs::new(),
    };
    let any_source =
        iface.source.is_some() && interface_source_attr(iface.interface_type).is_some();
    optional_leaf(w, &format!("{path}/source"), "source", source, any_source);
    let target = Attrs::new().opt("dev", iface.target_dev.as_ref());
    optional_leaf(
        w,
        &format!("{path}/target"),
        "target",
        target,
        iface.target_dev.is_some(),
    );
    let model = Attrs::new().opt("type", iface.model.as_ref());
    optional_leaf(
        w,
        &format!("{path}/model"),
        "model",
        model,
        iface.model.is_some(),
    );
    write_address(w, path, &iface.address);
    w.close();
}

fn write_chardev(
    w: &mut Writer<'_>,
    chardev: &Chardev,
    name: &str,
    path: &str,
    options: &FormatOptions,
) {
    let kind = enum_name(CHARDEV_TYPES, &chardev.source_type);
    w.open(path, name, Attrs::new().add("type", kind));
    // A pty's path is allocated at start-up: not part of the persistent definition.
    let live_only = chardev.source_type == ChardevSourceType::Pty && options.inactive;
    let source_path = chardev.source_path.as_ref().filter(|_| !live_only);
    let source = Attrs::new()
        .opt("mode", chardev.source_mode.as_ref())
        .opt("path", source_path);
    let any_source = source_path.is_some() || chardev.source_mode.is_some();
    optional_leaf(w, &format!("{path}/source"), "source", source, any_source);
    let target = Attrs::new()
        .opt("type", chardev.target_type.as_ref())
        .opt("port", chardev.target_port);
    let any_target = chardev.target_type.is_some() || chardev.target_port.is_some();
    optional_leaf(w, &format!("{path}/target"), "target", target, any_target);
    w.close();
}

fn write_graphics(w: &mut Writer<'_>, g: &Graphics, path: &str, options: &FormatOptions) {
    let mut attrs = Attrs::new().add("type", &g.graphics_type);
    match g.graphics_type.as_str() {
        "vnc" if g.port.is_none() && !g.autoport && w.has_extra_attr(path, "socket") => {}
        "vnc" => {
            let port = match g.port {
                Some(p) if g.autoport && options.inactive && p > 0 => Some(-1),
                Some(p) if p != 0 => Some(p),
                _ if g.autoport => Some(-1),
                _ => None,
            };
            attrs = attrs
                .opt("port", port)
                .add("autoport", if g.autoport { "yes" } else { "no" });
        }
        "spice" => {
            let port = g
                .port
                .filter(|p| *p > 0 && !(g.autoport && options.inactive));
            attrs = attrs
                .opt("port", port)
                .add("autoport", if g.autoport { "yes" } else { "no" });
        }
        _ => {
            attrs = attrs
                .opt("port", g.port)
                .opt("autoport", g.autoport.then_some("yes"));
        }
    }
    attrs = attrs.opt("listen", g.listen.as_ref());
    w.open(path, "graphics", attrs);
    let listen_path = format!("{path}/listen");
    if g.listen.is_some() || w.has_extras(&listen_path) {
        let listen_attrs = Attrs::new()
            .add("type", "address")
            .opt("address", g.listen.as_ref());
        w.leaf(&listen_path, "listen", listen_attrs);
    }
    w.close();
}
