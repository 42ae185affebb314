//! The QEMU driver: `qemu:///system` and `qemu:///session` run real QEMU processes.
//!
//! It reaches the system only through the host: QEMU is spawned with the `process`
//! capability (the manifest allows `qemu-system-*` and `qemu-img` from PATH), its monitor
//! is spoken to with the `unix-socket` capability in the directory the manifest grants, and
//! everything it must remember about a running guest (QEMU's pid, the monitor's path) goes
//! back to the host as the runtime record, so a restarted host finds the guest again.
//!
//! Each verb connects to the monitor, does its work and returns; nothing is kept between
//! calls. Where QEMU refuses or dies, the error carries QEMU's own words (its stderr, or its
//! QMP error).

mod cmdline;
mod pci;
mod probe;
mod qmp;
mod scsi;

use serde_json::{Value, json};
use virtwasm_sdk::host::{netdev, process};
use virtwasm_sdk::types::*;
use virtwasm_sdk::{Hypervisor, Network, Storage, VerbResult, error, export_driver, log};

use qmp::Qmp;

/// The driver.
struct Qemu;

/// The emulator a definition without `<emulator>` runs, found in the host's PATH.
const DEFAULT_EMULATOR: &str = "qemu-system-x86_64";

/// What a running domain's record holds.
struct Running {
    pid: u32,
    monitor: String,
    /// The tap device the host made for each bridge interface, by the interface's MAC
    /// (deleted when QEMU ends, or when the interface is unplugged).
    taps: Vec<Tap>,
}

/// A tap the host made for a bridge interface.
#[derive(Clone)]
struct Tap {
    mac: String,
    name: String,
}

/// The value of attribute `name` among a device's `<address>` attributes.
fn attribute<'a>(attrs: &'a [Attribute], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

fn record(rt: &Option<DomainRuntime>) -> VerbResult<Running> {
    let data = rt
        .as_ref()
        .map(|r| r.driver_data.as_str())
        .unwrap_or_default();
    let v: Value = serde_json::from_str(data).map_err(|e| {
        error(
            ErrorKind::Internal,
            format!("the domain's runtime record is not the QEMU driver's ({e}): '{data}'"),
        )
    })?;
    let taps = v["taps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some(Tap {
                        mac: t["mac"].as_str()?.to_string(),
                        name: t["tap"].as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    match (v["pid"].as_u64(), v["monitor"].as_str()) {
        (Some(pid), Some(monitor)) => Ok(Running {
            pid: pid as u32,
            monitor: monitor.to_string(),
            taps,
        }),
        _ => Err(error(
            ErrorKind::Internal,
            format!("the domain's runtime record lacks pid or monitor: '{data}'"),
        )),
    }
}

fn runtime(state: DomainState, r: &Running) -> DomainRuntime {
    let data = if r.taps.is_empty() {
        json!({ "pid": r.pid, "monitor": r.monitor })
    } else {
        let taps: Vec<Value> = r
            .taps
            .iter()
            .map(|t| json!({ "mac": t.mac, "tap": t.name }))
            .collect();
        json!({ "pid": r.pid, "monitor": r.monitor, "taps": taps })
    };
    DomainRuntime {
        state,
        driver_data: data.to_string(),
    }
}

/// The record of a domain whose QEMU has ended, once what that QEMU held on the host (its
/// taps) is released.
fn ended(reason: ShutoffReason, r: &Running) -> DomainRuntime {
    release_taps(r.taps.iter().map(|t| &t.name));
    DomainRuntime {
        state: DomainState::Shutoff(reason),
        driver_data: String::new(),
    }
}

/// Deletes taps; one that cannot go (still held, already gone) is logged, never fatal: the
/// guest has stopped either way.
fn release_taps<S: AsRef<str>>(taps: impl IntoIterator<Item = S>) {
    for tap in taps {
        let tap = tap.as_ref();
        if let Err(e) = netdev::delete_tap(tap) {
            log::warn(&format!("cannot delete tap {tap}: {}", e.message));
        }
    }
}

/// One tap per bridge interface of `def` (`None` for other types), made by the host's
/// netdev capability; on failure the ones already made are deleted.
fn make_taps(def: &DomainDef) -> VerbResult<Vec<Option<String>>> {
    let mut made: Vec<Option<String>> = Vec::new();
    for n in &def.interfaces {
        if n.interface_type != InterfaceType::Bridge {
            made.push(None);
            continue;
        }
        let bridge = n.source.as_deref().unwrap_or_default();
        match netdev::create_tap(bridge) {
            Ok(tap) => made.push(Some(tap)),
            Err(e) => {
                release_taps(made.into_iter().flatten());
                return Err(error(
                    e.kind,
                    format!(
                        "cannot connect interface {} to bridge '{bridge}': {}",
                        nic_label(n),
                        e.message
                    ),
                ));
            }
        }
    }
    Ok(made)
}

/// How an interface is named in messages: its MAC when it has one.
fn nic_label(n: &virtwasm_sdk::types::Interface) -> String {
    n.mac.clone().unwrap_or_else(|| "(no MAC)".to_string())
}

/// Where this driver's sockets go: the directory the host granted (`{runtime_dir}/qemu`).
fn socket_dir() -> VerbResult<String> {
    std::env::var("VIRTWASM_SOCKET_DIR").map_err(|_| {
        error(
            ErrorKind::Internal,
            "the host gave no socket directory (the manifest grants sockets = [\"{runtime_dir}/qemu\"])",
        )
    })
}

/// The last meaningful line QEMU wrote on stderr: its own statement of why it failed.
fn qemu_said(child: &process::Child) -> String {
    let tail = child.stderr_tail(4096);
    let lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.last() {
        Some(l) => (*l).to_string(),
        None => "it printed nothing on stderr".into(),
    }
}

fn state_of(dom: &DomainRef) -> DomainState {
    dom.runtime
        .as_ref()
        .map(|r| r.state)
        .unwrap_or(DomainState::Shutoff(ShutoffReason::Unknown))
}

/// Connects to a running domain's monitor; if QEMU is gone, says so with its exit.
fn monitor(dom: &DomainRef) -> VerbResult<(Running, Qmp)> {
    let r = record(&dom.runtime)?;
    match Qmp::connect(&r.monitor, 2000) {
        Ok(q) => Ok((r, q)),
        Err(e) => {
            let why = match process::adopt(r.pid) {
                Ok(child) => match child.wait(0) {
                    Ok(Some(status)) => format!(
                        "QEMU (pid {}) has exited ({}): {}",
                        r.pid,
                        exit_text(&status),
                        qemu_said(&child)
                    ),
                    _ => format!(
                        "QEMU (pid {}) runs but its monitor does not answer: {}",
                        r.pid, e.message
                    ),
                },
                Err(_) => format!("QEMU (pid {}) is gone: {}", r.pid, e.message),
            };
            Err(error(ErrorKind::OperationFailed, why))
        }
    }
}

fn exit_text(s: &process::ExitStatus) -> String {
    match (s.code, s.signal) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// QEMU's run state as libvirt's state and reason.
fn from_status(status: &str, was: DomainState) -> DomainState {
    match status {
        "running" => match was {
            DomainState::Running(r) => DomainState::Running(r),
            _ => DomainState::Running(RunningReason::Unpaused),
        },
        "paused" | "prelaunch" | "suspended" => match was {
            DomainState::Paused(r) => DomainState::Paused(r),
            _ => DomainState::Paused(PausedReason::User),
        },
        "inmigrate" => DomainState::Paused(PausedReason::Migration),
        "postmigrate" => DomainState::Paused(PausedReason::Migration),
        "finish-migrate" | "save-vm" => DomainState::Paused(PausedReason::Save),
        "restore-vm" => DomainState::Paused(PausedReason::StartingUp),
        "io-error" => DomainState::Paused(PausedReason::Ioerror),
        "watchdog" => DomainState::Paused(PausedReason::Watchdog),
        // A guest that panicked, or an accelerator that gave up (KVM's internal error):
        // libvirt's crashed.
        "guest-panicked" => DomainState::Crashed(CrashedReason::Panicked),
        "internal-error" => DomainState::Crashed(CrashedReason::Unknown),
        "shutdown" => DomainState::Shutoff(ShutoffReason::Shutdown),
        _ => was,
    }
}

/// Carries out `<on_crash>` for a guest QEMU has stopped as panicked (`-action
/// panic=pause`), as libvirt's QEMU driver does: `destroy` (libvirt's default, also when the
/// definition says nothing) ends QEMU and the domain is shut off (crashed); `restart` resets
/// the guest and runs it again (booted, as libvirt's fake reboot reports); `preserve` keeps
/// it stopped, crashed (panicked), for inspection until destroyed.
fn crashed(dom: &DomainRef, r: &Running, q: &mut Qmp) -> VerbResult<DomainRuntime> {
    match dom.def.on_crash {
        Some(LifecycleAction::Preserve) => {
            Ok(runtime(DomainState::Crashed(CrashedReason::Panicked), r))
        }
        Some(LifecycleAction::Restart) => {
            log::warn(&format!(
                "guest {} panicked; restarting it (on_crash restart)",
                dom.def.name
            ));
            // The reset happens in QEMU's main loop after the command returns; `cont` is
            // refused until it has (the panicked state "needs a reset"), so wait for it.
            q.execute("system_reset", None)?;
            q.wait_event("RESET", 5000, |_| true)?;
            q.execute("cont", None)?;
            Ok(runtime(DomainState::Running(RunningReason::Booted), r))
        }
        _ => {
            log::warn(&format!(
                "guest {} panicked; ending its QEMU (pid {}, on_crash destroy)",
                dom.def.name, r.pid
            ));
            let _ = q.execute("quit", None);
            stop_process(r.pid, false)?;
            Ok(ended(ShutoffReason::Crashed, r))
        }
    }
}

/// libvirt's word for a lifecycle action, for messages.
fn lifecycle_word(a: LifecycleAction) -> &'static str {
    match a {
        LifecycleAction::Destroy => "destroy",
        LifecycleAction::Restart => "restart",
        LifecycleAction::RenameRestart => "rename-restart",
        LifecycleAction::Preserve => "preserve",
        LifecycleAction::CoredumpDestroy => "coredump-destroy",
        LifecycleAction::CoredumpRestart => "coredump-restart",
    }
}

/// Stops QEMU: SIGTERM, then (unless `graceful`) SIGKILL after 5 s; waits for it.
fn stop_process(pid: u32, graceful: bool) -> VerbResult<()> {
    let child = match process::adopt(pid) {
        Ok(c) => c,
        // Already gone (and reaped): nothing to stop.
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if child.wait(0)?.is_some() {
        return Ok(());
    }
    child.kill(15)?;
    if child.wait(5000)?.is_some() {
        return Ok(());
    }
    if graceful {
        return Err(error(
            ErrorKind::OperationFailed,
            format!("QEMU (pid {pid}) did not end within 5 s of SIGTERM (--graceful: not killed)"),
        ));
    }
    child.kill(9)?;
    child.wait(5000)?;
    Ok(())
}

impl Hypervisor for Qemu {
    fn open(path: String, _params: Vec<(String, String)>) -> VerbResult<InitialObjects> {
        match path.as_str() {
            "/system" | "/session" | "/embed" => Ok(InitialObjects {
                domains: vec![],
                pools: vec![],
                networks: vec![],
            }),
            other => Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "unexpected QEMU URI path '{other}', try qemu:///system or qemu:///session"
                ),
            )),
        }
    }

    fn capabilities() -> VerbResult<DriverCapabilities> {
        // The machine types the emulator itself reports (probed once per binary, cached); a
        // host without it has no guests to offer, as libvirt's capabilities then show.
        let guests = match probe::emulator(DEFAULT_EMULATOR) {
            Ok(e) => {
                let mut machines: Vec<String> = e
                    .machines
                    .iter()
                    .flat_map(|m| std::iter::once(m.name.clone()).chain(m.alias.clone()))
                    .collect();
                machines.sort();
                machines.dedup();
                vec![GuestCapability {
                    os_type: "hvm".into(),
                    arch: "x86_64".into(),
                    emulator: Some(DEFAULT_EMULATOR.into()),
                    machines,
                    domain_types: vec!["qemu".into(), "kvm".into()],
                }]
            }
            Err(e) => {
                log::warn(&format!("no x86_64 guests: {}", e.message));
                vec![]
            }
        };
        Ok(DriverCapabilities {
            host_arch: "x86_64".into(),
            guests,
            security_model: None,
            security_doi: None,
        })
    }

    fn fill_defaults(mut def: DomainDef) -> VerbResult<DomainDef> {
        cmdline::accel(&def.domain_type)?;
        if def.os.os_type != "hvm" {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "the QEMU driver runs os type 'hvm', not '{}'",
                    def.os.os_type
                ),
            ));
        }
        match def.os.arch.as_deref() {
            None => def.os.arch = Some("x86_64".into()),
            Some("x86_64") => {}
            Some(other) => {
                return Err(error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: guest architecture '{other}' (this driver runs x86_64)"
                    ),
                ));
            }
        }
        if def.os.machine.is_none() {
            def.os.machine = Some("pc".into());
        }
        // What a crash does is the driver's to carry out (poll); refuse what it cannot do
        // rather than do something else when the guest crashes.
        match def.on_crash {
            None
            | Some(LifecycleAction::Destroy)
            | Some(LifecycleAction::Restart)
            | Some(LifecycleAction::Preserve) => {}
            Some(other) => {
                return Err(error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: on_crash action '{}' (the QEMU driver takes no core dumps and renames nothing; use destroy, restart or preserve)",
                        lifecycle_word(other)
                    ),
                ));
            }
        }
        if def.emulator.is_none() {
            def.emulator = Some(DEFAULT_EMULATOR.into());
        }
        // libvirt gives every QEMU guest a virtio balloon unless told <memballoon model='none'/>.
        if def.memballoon.is_none() {
            def.memballoon = Some(Memballoon {
                model: "virtio".into(),
                address: vec![],
            });
        }
        // A SCSI disk's controller, as libvirt adds it; a SCSI controller's model.
        let missing = scsi::missing_controllers(&def)?;
        def.controllers.extend(missing);
        for c in def
            .controllers
            .iter_mut()
            .filter(|c| c.controller_type == "scsi" && c.model.is_none())
        {
            c.model = Some(scsi::DEFAULT_MODEL.into());
        }
        // The USB controllers its USB disks and input devices plug into, likewise.
        let missing = cmdline::missing_usb_controllers(&def)?;
        def.controllers.extend(missing);
        // Each USB disk's port, recorded as libvirt records USB addresses.
        cmdline::assign_usb_ports(&mut def)?;
        // Refuse at define what start would refuse, as libvirt validates a definition;
        // where each PCI device lands is then written into the definition, as libvirt does.
        let args = cmdline::build(
            &def,
            &cmdline::Launch {
                monitor: "/validate",
                runtime_dir: "/validate",
                taps: &[],
            },
        )?;
        pci::record_placements(&mut def, &args);
        // ... including a machine type or device model this emulator lacks (what it has is
        // probed once per binary and cached, so a define costs a stat and a small read).
        let program = def.emulator.as_deref().unwrap_or(DEFAULT_EMULATOR);
        let emulator = probe::emulator(program)?;
        let machine = def.os.machine.as_deref().unwrap_or("pc");
        if !emulator.has_machine(machine) {
            return Err(error(
                ErrorKind::Unsupported,
                format!(
                    "unsupported configuration: Emulator '{}' does not support machine type '{machine}'",
                    emulator.name()
                ),
            ));
        }
        for model in args
            .windows(2)
            .filter(|w| w[0] == "-device")
            .filter_map(|w| w[1].split(',').next())
        {
            if !emulator.has_device(model) {
                return Err(error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: Emulator '{}' does not support device model '{model}'",
                        emulator.name()
                    ),
                ));
            }
        }
        Ok(def)
    }

    fn start(dom: DomainRef, paused: bool) -> VerbResult<DomainRuntime> {
        let (child, r, mut q) = launch(&dom.def, false)?;
        go(&child, &r, &mut q, paused, RunningReason::Booted)
    }

    fn shutdown(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        // ACPI: the guest decides; the state changes when it has powered off (poll).
        q.execute("system_powerdown", None)?;
        Ok(runtime(state_of(&dom), &r))
    }

    fn reboot(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        q.execute("system_reset", None)?;
        Ok(runtime(state_of(&dom), &r))
    }

    fn reset(dom: DomainRef) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        q.execute("system_reset", None)?;
        Ok(runtime(state_of(&dom), &r))
    }

    fn destroy(dom: DomainRef, graceful: bool) -> VerbResult<DomainRuntime> {
        let r = record(&dom.runtime)?;
        stop_process(r.pid, graceful)?;
        Ok(ended(ShutoffReason::Destroyed, &r))
    }

    fn suspend(dom: DomainRef) -> VerbResult<DomainRuntime> {
        if !matches!(state_of(&dom), DomainState::Running(_)) {
            return Err(error(ErrorKind::InvalidState, "domain is not running"));
        }
        let (r, mut q) = monitor(&dom)?;
        q.execute("stop", None)?;
        Ok(runtime(DomainState::Paused(PausedReason::User), &r))
    }

    fn resume(dom: DomainRef) -> VerbResult<DomainRuntime> {
        if !matches!(state_of(&dom), DomainState::Paused(_)) {
            return Err(error(ErrorKind::InvalidState, "domain is not paused"));
        }
        let (r, mut q) = monitor(&dom)?;
        q.execute("cont", None)?;
        Ok(runtime(DomainState::Running(RunningReason::Unpaused), &r))
    }

    fn poll(dom: DomainRef) -> VerbResult<DomainRuntime> {
        let r = record(&dom.runtime)?;
        let was = state_of(&dom);
        let child = match process::adopt(r.pid) {
            Ok(c) => c,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Ok(ended(ShutoffReason::Unknown, &r));
            }
            Err(e) => return Err(e),
        };
        if let Some(status) = child.wait(0)? {
            // QEMU exits 0 when the guest powered off; anything else is a crash. A QEMU that
            // ended while no host watched it (found again after a restart) left no status.
            let reason = if status.code == Some(0) {
                ShutoffReason::Shutdown
            } else if status.code.is_none() && status.signal.is_none() {
                ShutoffReason::Unknown
            } else {
                log::warn(&format!(
                    "QEMU for {} ended ({}): {}",
                    dom.def.name,
                    exit_text(&status),
                    qemu_said(&child)
                ));
                ShutoffReason::Crashed
            };
            return Ok(ended(reason, &r));
        }
        let mut q = Qmp::connect(&r.monitor, 2000)?;
        let status = q.execute("query-status", None)?;
        let s = status["status"].as_str().unwrap_or("");
        if s == "guest-panicked" {
            // First the crash itself (announced as Crashed Panicked), then, at the next poll
            // (within a second under the daemon), what on_crash says: libvirt's order of
            // events, and a crash any watcher sees even when the domain is destroyed.
            if !matches!(was, DomainState::Crashed(_)) {
                return Ok(runtime(DomainState::Crashed(CrashedReason::Panicked), &r));
            }
            return crashed(&dom, &r, &mut q);
        }
        Ok(runtime(from_status(s, was), &r))
    }

    fn save(dom: DomainRef, path: String) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        // Paused first, so the image is one consistent moment; the migration stream goes
        // after the host's header (QEMU 7.2 has no file: URI; exec: appends).
        let was_running = matches!(state_of(&dom), DomainState::Running(_));
        q.execute("stop", None)?;
        if let Err(e) = migrate(&mut q, &format!("exec:cat >> {}", sh_quote(&path)), "save") {
            // The guest goes on as it was; the host removes the partial image.
            let _ = q.execute("migrate_cancel", None);
            if was_running {
                let _ = q.execute("cont", None);
            }
            return Err(e);
        }
        let _ = q.execute("quit", None);
        stop_process(r.pid, false)?;
        Ok(ended(ShutoffReason::Saved, &r))
    }

    fn restore(
        dom: DomainRef,
        path: String,
        offset: u64,
        paused: bool,
    ) -> VerbResult<DomainRuntime> {
        let (child, r, mut q) = launch(&dom.def, true)?;
        let source = format!("exec:tail -c +{} {}", offset + 1, sh_quote(&path));
        let result = (|| {
            migration_events(&mut q)?;
            q.execute("migrate-incoming", Some(json!({ "uri": source })))?;
            let done = q.wait_event("MIGRATION", 120_000, |e| {
                matches!(e["data"]["status"].as_str(), Some("completed" | "failed"))
            })?;
            match done.as_ref().and_then(|e| e["data"]["status"].as_str()) {
                Some("completed") => Ok(()),
                Some(_) => Err(error(
                    ErrorKind::OperationFailed,
                    format!(
                        "QEMU could not read the saved memory in {path}: {}",
                        qemu_said(&child)
                    ),
                )),
                None => Err(error(
                    ErrorKind::Timeout,
                    format!("QEMU did not finish reading {path} within 120 s"),
                )),
            }
        })();
        if let Err(e) = result {
            end_running(&child, &r);
            return Err(e);
        }
        go(&child, &r, &mut q, paused, RunningReason::Restored)
    }

    fn attach_device(dom: DomainRef, dev: Device) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        match &dev {
            Device::Disk(d) => {
                let bus = d.target_bus.as_deref().unwrap_or("virtio");
                let mut device = json!({
                    "drive": format!("fmt-{}", d.target_dev),
                    "id": format!("disk-{}", d.target_dev),
                });
                // A USB CD-ROM's stick, plugged before it.
                let mut stick = None;
                match (bus, d.device) {
                    ("virtio", DiskDevice::Disk) => {
                        device["driver"] = json!("virtio-blk-pci");
                        place_hotplug(&mut device, &d.address, &dom.def)?;
                    }
                    // A USB stick: plugged into a port of its controller's bus (the port
                    // fill-defaults gave it, which the live XML records).
                    ("usb", DiskDevice::Disk) => {
                        let (bus, port) = cmdline::usb_placement(&dom.def, d)?;
                        device["driver"] = json!("usb-storage");
                        device["bus"] = json!(bus);
                        device["removable"] = json!(false);
                        if let Some(p) = port {
                            device["port"] = json!(p.to_string());
                        }
                    }
                    // A USB CD-ROM: the stick, then the CD-ROM on its SCSI bus.
                    ("usb", DiskDevice::Cdrom) => {
                        let (bus, port) = cmdline::usb_placement(&dom.def, d)?;
                        let mut s = json!({
                            "driver": "usb-bot",
                            "bus": bus,
                            "id": cmdline::usb_stick_id(d),
                        });
                        if let Some(p) = port {
                            s["port"] = json!(p.to_string());
                        }
                        stick = Some(s);
                        device["driver"] = json!("scsi-cd");
                        device["bus"] = json!(format!("{}.0", cmdline::usb_stick_id(d)));
                        device["scsi-id"] = json!(0);
                        device["lun"] = json!(0);
                    }
                    // A disk joins a virtio-scsi bus as a new LUN, without a PCI slot.
                    ("scsi", DiskDevice::Disk | DiskDevice::Cdrom) => {
                        let spot = scsi::spot(d)?;
                        let model =
                            scsi::controller_model(&dom.def, spot.controller, &d.target_dev)?;
                        if model != "virtio-scsi" {
                            return Err(error(
                                ErrorKind::Unsupported,
                                format!(
                                    "unsupported configuration: hot-plugging onto a '{model}' SCSI controller (virtio-scsi takes hot-plugged disks)"
                                ),
                            ));
                        }
                        let dev = scsi::disk_device(d, spot, model)?;
                        let mut parts = dev.split(',');
                        device["driver"] = json!(parts.next().unwrap_or_default());
                        for kv in parts {
                            if let Some((k, v)) = kv.split_once('=') {
                                device[k] =
                                    v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n));
                            }
                        }
                    }
                    (bus, kind) => {
                        return Err(error(
                            ErrorKind::Unsupported,
                            format!(
                                "unsupported configuration: hot-plugging a {kind:?} on bus '{bus}' (virtio disks, USB disks and disks on a virtio-scsi controller hot-plug)"
                            ),
                        ));
                    }
                }
                if matches!(d.cache.as_deref(), Some("writethrough" | "directsync")) {
                    device["write-cache"] = json!("off");
                }
                let nodes = cmdline::blockdev_nodes(d)?;
                for node in &nodes {
                    q.execute("blockdev-add", Some(node.clone()))?;
                }
                let added = match &stick {
                    Some(s) => q.execute("device_add", Some(s.clone())).and_then(|_| {
                        q.execute("device_add", Some(device)).inspect_err(|_| {
                            let _ = q.execute(
                                "device_del",
                                Some(json!({ "id": cmdline::usb_stick_id(d) })),
                            );
                        })
                    }),
                    None => q.execute("device_add", Some(device)),
                };
                if let Err(e) = added {
                    for node in nodes.iter().rev() {
                        let _ = q.execute(
                            "blockdev-del",
                            Some(json!({ "node-name": node["node-name"] })),
                        );
                    }
                    return Err(e);
                }
            }
            Device::Interface(n)
                if matches!(
                    n.interface_type,
                    InterfaceType::User | InterfaceType::Bridge
                ) =>
            {
                let mac = n.mac.clone().ok_or_else(|| {
                    error(
                        ErrorKind::InvalidArgument,
                        "the interface has no MAC address",
                    )
                })?;
                // Named after the MAC, as at start: unique per domain, and what detach
                // finds it by.
                let mut all = dom.def.interfaces.clone();
                all.push(n.clone());
                let id = cmdline::nic_id(&all, all.len() - 1);
                let model = cmdline::nic_model(n.model.as_deref())?;
                let tap = if n.interface_type == InterfaceType::Bridge {
                    let def = DomainDef {
                        interfaces: vec![n.clone()],
                        ..dom.def.clone()
                    };
                    make_taps(&def)?.into_iter().flatten().next()
                } else {
                    None
                };
                let backend = match &tap {
                    Some(t) => json!({
                        "type": "tap", "id": id, "ifname": t, "script": "no", "downscript": "no"
                    }),
                    None => json!({ "type": "user", "id": id }),
                };
                let mut device = json!({ "driver": model, "netdev": id, "id": id, "mac": mac });
                place_hotplug(&mut device, &n.address, &dom.def)?;
                let plugged = q.execute("netdev_add", Some(backend)).and_then(|_| {
                    q.execute("device_add", Some(device)).inspect_err(|_| {
                        let _ = q.execute("netdev_del", Some(json!({ "id": id })));
                    })
                });
                if let Err(e) = plugged {
                    release_taps(tap);
                    return Err(e);
                }
                if let Some(name) = tap {
                    let mut r = r;
                    r.taps.push(Tap { mac, name });
                    return Ok(runtime(state_of(&dom), &r));
                }
            }
            other => {
                return Err(error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: hot-plugging {} devices of this kind (virtio disks and user-mode and bridge interfaces hot-plug)",
                        device_kind(other)
                    ),
                ));
            }
        }
        Ok(runtime(state_of(&dom), &r))
    }

    fn detach_device(dom: DomainRef, dev: Device) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        if let Device::Interface(n) = &dev {
            let mac = n.mac.clone().unwrap_or_default();
            // Its id as the command line or the hot-plug gave it: found by its place in the
            // running definition.
            let id = match dom
                .def
                .interfaces
                .iter()
                .position(|x| x.mac.is_some() && x.mac == n.mac)
            {
                Some(i) => cmdline::nic_id(&dom.def.interfaces, i),
                None => cmdline::nic_id(std::slice::from_ref(n), 0),
            };
            q.execute("device_del", Some(json!({ "id": id })))?;
            let gone = q.wait_event("DEVICE_DELETED", 20_000, |e| {
                e["data"]["device"].as_str() == Some(id.as_str())
            })?;
            if gone.is_none() {
                return Err(error(
                    ErrorKind::Timeout,
                    format!("the guest did not release interface {mac} within 20 s"),
                ));
            }
            // The device is gone: its tap goes too, even if QEMU refuses to drop the backend.
            let backend = q.execute("netdev_del", Some(json!({ "id": id })));
            // Its tap, if the host made one, goes too.
            let mut r = r;
            let (gone, kept): (Vec<Tap>, Vec<Tap>) = r
                .taps
                .drain(..)
                .partition(|t| t.mac.eq_ignore_ascii_case(&mac));
            r.taps = kept;
            release_taps(gone.into_iter().map(|t| t.name));
            backend?;
            return Ok(runtime(state_of(&dom), &r));
        }
        let Device::Disk(d) = &dev else {
            return Err(error(
                ErrorKind::Unsupported,
                format!(
                    "unsupported configuration: hot-unplugging {} devices (disks and interfaces hot-unplug)",
                    device_kind(&dev)
                ),
            ));
        };
        // A USB CD-ROM leaves with its stick.
        let id = if d.target_bus.as_deref() == Some("usb") && d.device == DiskDevice::Cdrom {
            cmdline::usb_stick_id(d)
        } else {
            format!("disk-{}", d.target_dev)
        };
        q.execute("device_del", Some(json!({ "id": id })))?;
        // The guest must let go first; QEMU says so with a DEVICE_DELETED naming the device
        // (another one names the backend path only).
        let gone = q.wait_event("DEVICE_DELETED", 20_000, |e| {
            e["data"]["device"].as_str() == Some(id.as_str())
        })?;
        if gone.is_none() {
            return Err(error(
                ErrorKind::Timeout,
                format!(
                    "the guest did not release disk {} within 20 s (is it in use?)",
                    d.target_dev
                ),
            ));
        }
        for node in [
            format!("fmt-{}", d.target_dev),
            format!("file-{}", d.target_dev),
        ] {
            q.execute("blockdev-del", Some(json!({ "node-name": node })))?;
        }
        Ok(runtime(state_of(&dom), &r))
    }

    fn migrate_prepare(dom: DomainRef, listen_address: String) -> VerbResult<MigrationTarget> {
        let (child, r, mut q) = launch(&dom.def, true)?;
        let ready = (|| {
            migration_events(&mut q)?;
            // A port QEMU can bind: the first free one of a small range (the destination
            // may run several incoming migrations).
            for port in 49152u32..49252 {
                let uri = format!("tcp:{listen_address}:{port}");
                match q.execute("migrate-incoming", Some(json!({ "uri": uri }))) {
                    Ok(_) => return Ok(uri),
                    Err(e) if e.message.contains("Address already in use") => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(error(
                ErrorKind::OperationFailed,
                format!(
                    "no free port in 49152-49251 on {listen_address} for the incoming migration"
                ),
            ))
        })();
        match ready {
            Ok(uri) => Ok(MigrationTarget {
                uri,
                runtime: runtime(DomainState::Paused(PausedReason::Migration), &r),
            }),
            Err(e) => {
                end_running(&child, &r);
                Err(e)
            }
        }
    }

    fn migrate_perform(
        dom: DomainRef,
        target_uri: String,
        bandwidth_mib: Option<u64>,
    ) -> VerbResult<()> {
        let (_, mut q) = monitor(&dom)?;
        start_migration(&mut q, &target_uri, bandwidth_mib)?;
        Ok(())
    }

    fn migrate_progress(dom: DomainRef) -> VerbResult<MigrationProgress> {
        let (_, mut q) = monitor(&dom)?;
        let m = q.execute("query-migrate", None)?;
        let ram = &m["ram"];
        Ok(MigrationProgress {
            status: m["status"].as_str().unwrap_or("none").to_string(),
            transferred_bytes: ram["transferred"].as_u64().unwrap_or(0),
            remaining_bytes: ram["remaining"].as_u64().unwrap_or(0),
            total_bytes: ram["total"].as_u64().unwrap_or(0),
            downtime_ms: m["downtime"].as_u64(),
            error: m["error-desc"].as_str().map(str::to_string),
        })
    }

    fn migrate_cancel(dom: DomainRef) -> VerbResult<()> {
        let (_, mut q) = monitor(&dom)?;
        q.execute("migrate_cancel", None)?;
        Ok(())
    }

    fn migrate_finish(dom: DomainRef, success: bool) -> VerbResult<DomainRuntime> {
        let r = record(&dom.runtime)?;
        if !success {
            stop_process(r.pid, false)?;
            return Ok(ended(ShutoffReason::Failed, &r));
        }
        let (r, mut q) = monitor(&dom)?;
        // The incoming stream ends with the guest paused; wait until QEMU has it all.
        let mut tries = 0;
        loop {
            let st = q.execute("query-status", None)?;
            if st["status"].as_str() != Some("inmigrate") {
                break;
            }
            tries += 1;
            if tries > 100 {
                return Err(error(
                    ErrorKind::Timeout,
                    "the incoming migration did not complete",
                ));
            }
            let _ = q.wait_event("MIGRATION", 100, |e| {
                e["data"]["status"].as_str() == Some("completed")
            })?;
        }
        q.execute("cont", None)?;
        Ok(runtime(DomainState::Running(RunningReason::Migrated), &r))
    }

    fn migrate_confirm(dom: DomainRef, success: bool) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        if success {
            let _ = q.execute("quit", None);
            stop_process(r.pid, false)?;
            return Ok(ended(ShutoffReason::Migrated, &r));
        }
        // Failed or cancelled: the guest goes on here.
        let st = q.execute("query-status", None)?;
        if st["status"].as_str() != Some("running") {
            q.execute("cont", None)?;
        }
        Ok(runtime(
            DomainState::Running(RunningReason::MigrationCanceled),
            &r,
        ))
    }

    fn snapshot_create(dom: DomainRef, snapshot: SnapshotDef) -> VerbResult<SnapshotDef> {
        snapshot_disks_check(&dom.def)?;
        if dom.runtime.is_some() {
            // Internal snapshot of a running guest: memory and every qcow2 disk at once.
            let (_, mut q) = monitor(&dom)?;
            hmp(&mut q, &format!("savevm {}", snapshot.name))?;
        } else {
            for d in &dom.def.disks {
                qemu_img(&["snapshot", "-c", &snapshot.name, disk_path(d)?])?;
            }
        }
        Ok(snapshot)
    }

    fn snapshot_revert(dom: DomainRef, snapshot: SnapshotDef) -> VerbResult<DomainRuntime> {
        snapshot_disks_check(&dom.def)?;
        if dom.runtime.is_none() {
            for d in &dom.def.disks {
                qemu_img(&["snapshot", "-a", &snapshot.name, disk_path(d)?])?;
            }
            return Ok(DomainRuntime {
                state: DomainState::Shutoff(ShutoffReason::FromSnapshot),
                driver_data: String::new(),
            });
        }
        let (r, mut q) = monitor(&dom)?;
        hmp(&mut q, &format!("loadvm {}", snapshot.name))?;
        // loadvm leaves the guest as the snapshot had it, paused or running.
        let state = match snapshot.state {
            DomainState::Paused(_) => {
                q.execute("stop", None)?;
                DomainState::Paused(PausedReason::FromSnapshot)
            }
            _ => {
                let st = q.execute("query-status", None)?;
                if st["status"].as_str() != Some("running") {
                    q.execute("cont", None)?;
                }
                DomainState::Running(RunningReason::FromSnapshot)
            }
        };
        Ok(runtime(state, &r))
    }

    fn snapshot_delete(dom: DomainRef, snapshot: SnapshotDef) -> VerbResult<()> {
        if dom.runtime.is_some() {
            let (_, mut q) = monitor(&dom)?;
            hmp(&mut q, &format!("delvm {}", snapshot.name))?;
        } else {
            for d in &dom.def.disks {
                qemu_img(&["snapshot", "-d", &snapshot.name, disk_path(d)?])?;
            }
        }
        Ok(())
    }

    fn set_vcpus(dom: DomainRef, count: u32) -> VerbResult<DomainRuntime> {
        // The host checks this too; a driver must not trust its caller for QEMU's limits.
        let max = dom.def.vcpus;
        if count > max {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "requested vcpus is greater than max allowable vcpus for the live domain: {count} > {max}"
                ),
            ));
        }
        let (r, mut q) = monitor(&dom)?;
        let slots = vcpu_slots(&mut q)?;
        let present: Vec<&VcpuSlot> = slots.iter().filter(|s| s.qom_path.is_some()).collect();
        let current = present.len() as u32;
        if count > current {
            // Fill the lowest free slots, as libvirt does, each a CPU device of the type QEMU
            // names at the place (socket, core, thread) it names.
            let free = slots.iter().filter(|s| s.qom_path.is_none());
            for (added, slot) in free.take((count - current) as usize).enumerate() {
                let mut args = slot.props.clone();
                args["driver"] = json!(slot.cpu_type);
                args["id"] = json!(format!("vcpu{}", slot.index));
                if let Err(e) = q.execute("device_add", Some(args)) {
                    // Those added stay (taking them out again is what TCG cannot survive):
                    // say how many, so the count the guest has is known.
                    return Err(error(
                        e.kind,
                        format!(
                            "{} (vCPU {}; the domain now has {} vCPUs)",
                            e.message,
                            slot.index,
                            current as usize + added
                        ),
                    ));
                }
            }
        } else if count < current {
            // Only CPUs added as devices can leave; the ones QEMU started with (`-smp`) are
            // part of the machine.
            let mut removable: Vec<&VcpuSlot> = present
                .iter()
                .copied()
                .filter(|s| s.device_id().is_some())
                .collect();
            let boot = current - removable.len() as u32;
            if count < boot {
                return Err(error(
                    ErrorKind::InvalidArgument,
                    format!(
                        "failed to find appropriate hotpluggable vcpus to reach the desired target vcpu count: the domain started with {boot} vCPUs, which cannot be unplugged (requested {count})"
                    ),
                ));
            }
            if dom.def.domain_type == "qemu" {
                // Seen with QEMU 7.2: once a vCPU has been unplugged from a TCG guest, QEMU's
                // heap is corrupt and the next system_reset or CPU hot-plug kills it
                // ("corrupted double-linked list"), taking the guest down. Refuse rather
                // than leave a guest that dies at its next reboot. Only TCG is refused: the
                // corruption is in TCG's per-CPU state (KVM could not be tried here).
                return Err(error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: removing vCPUs from a TCG guest (domain type 'qemu'): QEMU {} under TCG corrupts its memory when a vCPU is unplugged and dies at the guest's next reset; restart the domain with fewer vCPUs instead",
                        qemu_version(&mut q)
                    ),
                ));
            }
            removable.sort_by_key(|s| std::cmp::Reverse(s.index));
            for slot in removable.into_iter().take((current - count) as usize) {
                let id = slot.device_id().unwrap_or_default().to_string();
                q.execute("device_del", Some(json!({ "id": id })))?;
                // The guest must offline and eject the CPU first (ACPI). QEMU 7.2 announces
                // only the CPU's lapic child as DEVICE_DELETED, not the CPU itself, so the
                // events only wake the wait: the slot empty in query-hotpluggable-cpus is
                // what says the CPU is gone.
                let deadline = 20_000 / 250;
                let mut gone = false;
                for _ in 0..deadline {
                    if vcpu_slots(&mut q)?
                        .iter()
                        .any(|s| s.index == slot.index && s.qom_path.is_none())
                    {
                        gone = true;
                        break;
                    }
                    q.wait_event("DEVICE_DELETED", 250, |e| {
                        e["data"]["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with(&format!("/machine/peripheral/{id}")))
                    })?;
                }
                if !gone {
                    return Err(error(
                        ErrorKind::Timeout,
                        format!(
                            "the guest did not release vCPU {} ({id}) within 20 s (does it handle ACPI CPU hot-unplug?)",
                            slot.index
                        ),
                    ));
                }
            }
        }
        Ok(runtime(state_of(&dom), &r))
    }

    fn set_memory(dom: DomainRef, kib: u64) -> VerbResult<DomainRuntime> {
        let (r, mut q) = monitor(&dom)?;
        // The balloon: the guest gives memory back (or takes it) through its driver.
        q.execute("balloon", Some(json!({ "value": kib * 1024 })))
            .map_err(|e| error(ErrorKind::OperationFailed, format!("cannot set the balloon: {} (does the domain have <memballoon model='virtio'/>?)", e.message)))?;
        Ok(runtime(state_of(&dom), &r))
    }

    fn open_console(dom: DomainRef, device: Option<String>) -> VerbResult<ConsoleEndpoint> {
        // QEMU knows where each serial ended up (a pty it allocated, a socket it listens
        // on); the first serial is the console.
        let wanted = match device.as_deref() {
            None | Some("console0") | Some("serial0") => "charserial0".to_string(),
            Some(d) => match d.strip_prefix("serial") {
                Some(n) if n.parse::<u32>().is_ok() => format!("charserial{n}"),
                _ => {
                    return Err(error(
                        ErrorKind::InvalidArgument,
                        format!("no character device '{d}' (expected serialN or console0)"),
                    ));
                }
            },
        };
        let (_, mut q) = monitor(&dom)?;
        let devs = q.execute("query-chardev", None)?;
        let found = devs
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["label"].as_str() == Some(wanted.as_str()))
            .and_then(|c| c["filename"].as_str().map(str::to_string));
        match found {
            Some(f) if f.starts_with("pty:") => Ok(ConsoleEndpoint::Pty(f[4..].to_string())),
            Some(f) if f.starts_with("unix:") => {
                let path = f[5..].split(',').next().unwrap_or_default().to_string();
                Ok(ConsoleEndpoint::UnixSocket(path))
            }
            Some(f) => Err(error(
                ErrorKind::OperationFailed,
                format!(
                    "character device {wanted} is '{f}', not a pty or unix socket a console can attach to"
                ),
            )),
            None => Err(error(
                ErrorKind::OperationFailed,
                format!("the domain has no character device {wanted} (add <serial type='pty'/>)"),
            )),
        }
    }

    fn stats(dom: DomainRef) -> VerbResult<Vec<(String, StatValue)>> {
        // libvirt's domstats names, from QMP: the balloon, the vCPUs, each disk's counters.
        let (_, mut q) = monitor(&dom)?;
        let mut out = Vec::new();
        if let Ok(b) = q.execute("query-balloon", None)
            && let Some(actual) = b["actual"].as_u64()
        {
            out.push(("balloon.current".into(), StatValue::Unsigned(actual / 1024)));
            out.push((
                "balloon.maximum".into(),
                StatValue::Unsigned(dom.def.memory_kib),
            ));
        }
        let cpus = q.execute("query-cpus-fast", None)?;
        let n = cpus.as_array().map_or(0, Vec::len) as u64;
        out.push(("vcpu.current".into(), StatValue::Unsigned(n)));
        out.push((
            "vcpu.maximum".into(),
            StatValue::Unsigned(dom.def.vcpus.into()),
        ));
        let blocks = q.execute("query-blockstats", Some(json!({ "query-nodes": false })))?;
        let devs: Vec<&Value> = blocks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["qdev"].as_str().is_some_and(|d| d.contains("disk-")))
            .collect();
        out.push(("block.count".into(), StatValue::Unsigned(devs.len() as u64)));
        for (i, b) in devs.iter().enumerate() {
            let name = b["qdev"]
                .as_str()
                .and_then(|d| d.rsplit("disk-").next())
                .unwrap_or_default()
                .trim_end_matches("/virtio-backend")
                .to_string();
            let st = &b["stats"];
            out.push((format!("block.{i}.name"), StatValue::Text(name)));
            for (k, field) in [
                ("rd.reqs", "rd_operations"),
                ("rd.bytes", "rd_bytes"),
                ("wr.reqs", "wr_operations"),
                ("wr.bytes", "wr_bytes"),
                ("fl.reqs", "flush_operations"),
            ] {
                out.push((
                    format!("block.{i}.{k}"),
                    StatValue::Unsigned(st[field].as_u64().unwrap_or(0)),
                ));
            }
        }
        Ok(out)
    }

    fn info(dom: DomainRef) -> VerbResult<DomainInfo> {
        let state = state_of(&dom);
        Ok(DomainInfo {
            state,
            os_type: dom.def.os.os_type.clone(),
            max_memory_kib: dom.def.memory_kib,
            memory_kib: dom.def.current_memory_kib,
            vcpus: dom.def.current_vcpus.unwrap_or(dom.def.vcpus),
            // QMP has no per-guest CPU time; it arrives with the stats work (/proc of QEMU's
            // threads through a granted read).
            cpu_time_ns: 0,
            security_label: None,
            security_enforcing: false,
        })
    }
}

/// QEMU's version as `major.minor.micro`, for messages ("(version unknown)" if it does not
/// say).
fn qemu_version(q: &mut Qmp) -> String {
    match q.execute("query-version", None) {
        Ok(v) => {
            let n = &v["qemu"];
            format!("{}.{}.{}", n["major"], n["minor"], n["micro"])
        }
        Err(_) => "(version unknown)".into(),
    }
}

/// One place for a vCPU, as QMP `query-hotpluggable-cpus` reports it.
struct VcpuSlot {
    /// Its position among all slots ordered by socket, die, core and thread: the vCPU's
    /// number (`vcpuN`, the guest's cpuN for CPUs added in order).
    index: usize,
    /// The QOM type QEMU wants for a CPU there (`qemu64-x86_64-cpu`, ...).
    cpu_type: String,
    /// Where the CPU sits (`socket-id`, `core-id`, `thread-id`, ...), as `device_add`
    /// takes them.
    props: Value,
    /// Set when a CPU is present: `/machine/unattached/...` for those QEMU started with,
    /// `/machine/peripheral/ID` for those added as devices.
    qom_path: Option<String>,
}

impl VcpuSlot {
    /// The device id of a CPU added with `device_add`, which `device_del` takes.
    fn device_id(&self) -> Option<&str> {
        self.qom_path
            .as_deref()
            .and_then(|p| p.strip_prefix("/machine/peripheral/"))
    }
}

/// Every vCPU slot of the machine, in vCPU order.
fn vcpu_slots(q: &mut Qmp) -> VerbResult<Vec<VcpuSlot>> {
    let answer = q.execute("query-hotpluggable-cpus", None)?;
    let key = |props: &Value| {
        ["socket-id", "die-id", "cluster-id", "core-id", "thread-id"]
            .map(|k| props[k].as_u64().unwrap_or(0))
    };
    let mut slots: Vec<(Value, String, Option<String>)> = answer
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["props"].clone(),
                s["type"].as_str().unwrap_or_default().to_string(),
                s["qom-path"].as_str().map(str::to_string),
            )
        })
        .collect();
    slots.sort_by_key(|(props, _, _)| key(props));
    Ok(slots
        .into_iter()
        .enumerate()
        .map(|(index, (props, cpu_type, qom_path))| VcpuSlot {
            index,
            cpu_type,
            props,
            qom_path,
        })
        .collect())
}

/// A device's kind, for messages.
fn device_kind(d: &Device) -> &'static str {
    match d {
        Device::Disk(_) => "disk",
        Device::Interface(_) => "interface",
        Device::Chardev(_) => "character",
        Device::Controller(_) => "controller",
        Device::Input(_) => "input",
    }
}

/// Internal snapshots live in qcow2 images: every disk must be one.
fn snapshot_disks_check(def: &DomainDef) -> VerbResult<()> {
    if def.disks.is_empty() {
        return Err(error(
            ErrorKind::Unsupported,
            "unsupported configuration: internal snapshots are stored in a qcow2 disk and this domain has none",
        ));
    }
    for d in &def.disks {
        if d.format.as_deref() != Some("qcow2") {
            return Err(error(
                ErrorKind::Unsupported,
                format!(
                    "unsupported configuration: internal snapshot of disk '{}' in format '{}' (internal snapshots need qcow2)",
                    d.target_dev,
                    d.format.as_deref().unwrap_or("raw")
                ),
            ));
        }
    }
    Ok(())
}

fn disk_path(d: &Disk) -> VerbResult<&str> {
    d.source.as_deref().ok_or_else(|| {
        error(
            ErrorKind::InvalidArgument,
            format!("disk '{}' has no source", d.target_dev),
        )
    })
}

/// Runs `qemu-img` and says what it said when it fails.
fn qemu_img(args: &[&str]) -> VerbResult<()> {
    virtwasm_sdk::run_checked("qemu-img", args, 60_000).map(|_| ())
}

/// A human-monitor command (savevm and kin have no QMP form in QEMU 7.2); its output is
/// empty on success and QEMU's message otherwise.
fn hmp(q: &mut Qmp, command: &str) -> VerbResult<()> {
    // savevm and loadvm copy the guest's whole memory before answering.
    let out = q.execute_within(
        "human-monitor-command",
        Some(json!({ "command-line": command })),
        600_000,
    )?;
    let text = out.as_str().unwrap_or_default().trim().to_string();
    if text.is_empty() {
        return Ok(());
    }
    Err(error(
        ErrorKind::OperationFailed,
        format!("QEMU refused '{command}': {text}"),
    ))
}

/// Quotes `word` for the shell QEMU runs `exec:` migrations with.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Ends a QEMU this verb started and must not leave behind (it failed before the host
/// recorded it), and reaps it.
fn end(child: &process::Child) {
    let _ = child.kill(9);
    let _ = child.wait(2000);
}

/// The last step of a start or restore: a QEMU waiting on `-S` is left paused when asked,
/// else continued (running for `reason`); if it refuses, it is ended, taps and all.
fn go(
    child: &process::Child,
    r: &Running,
    q: &mut Qmp,
    paused: bool,
    reason: RunningReason,
) -> VerbResult<DomainRuntime> {
    if paused {
        return Ok(runtime(DomainState::Paused(PausedReason::User), r));
    }
    if let Err(e) = q.execute("cont", None) {
        end_running(child, r);
        return Err(e);
    }
    Ok(runtime(DomainState::Running(reason), r))
}

/// Puts a hot-plugged PCI device where its address says (the host had the driver fill one
/// in, as for a definition); without one, QEMU picks a free slot on the root bus.
fn place_hotplug(
    device: &mut serde_json::Value,
    address: &[Attribute],
    def: &DomainDef,
) -> VerbResult<()> {
    let machine = def.os.machine.as_deref().unwrap_or("pc");
    if let Some((bus, addr)) = pci::hotplug_placement(address, machine)? {
        device["bus"] = json!(bus);
        device["addr"] = json!(addr);
    }
    Ok(())
}

/// Ends a QEMU a verb must not leave behind, and releases what it held (its taps).
fn end_running(child: &process::Child, r: &Running) {
    end(child);
    release_taps(r.taps.iter().map(|t| &t.name));
}

/// Has QEMU report its migration's progress as MIGRATION events, which the waits read.
fn migration_events(q: &mut Qmp) -> VerbResult<()> {
    q.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [{ "capability": "events", "state": true }] })),
    )?;
    Ok(())
}

/// Starts an outgoing migration to `uri`, at most `bandwidth_mib` MiB/s. Without a cap it
/// is lifted: QEMU's default (128 MiB/s) is for shared networks, and 0 means "no limit" only
/// in newer QEMUs.
fn start_migration(q: &mut Qmp, uri: &str, bandwidth_mib: Option<u64>) -> VerbResult<()> {
    migration_events(q)?;
    let bytes = bandwidth_mib.map_or(u64::MAX / 2, |m| m.max(1) << 20);
    q.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": bytes })),
    )?;
    q.execute("migrate", Some(json!({ "uri": uri })))?;
    Ok(())
}

/// Runs an outgoing migration to `uri` (a save: to a file) and waits for it to finish.
fn migrate(q: &mut Qmp, uri: &str, what: &str) -> VerbResult<()> {
    // A save to a local file goes as fast as the disk takes it, as libvirt's does.
    start_migration(q, uri, None)?;
    let done = q.wait_event("MIGRATION", 600_000, |e| {
        matches!(
            e["data"]["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    })?;
    match done.as_ref().and_then(|e| e["data"]["status"].as_str()) {
        Some("completed") => Ok(()),
        Some(status) => {
            let info = q.execute("query-migrate", None).unwrap_or_default();
            let why = info["error-desc"].as_str().unwrap_or(status).to_string();
            // Leave the guest as it was.
            let _ = q.execute("cont", None);
            Err(error(
                ErrorKind::OperationFailed,
                format!("QEMU's {what} failed: {why}"),
            ))
        }
        None => {
            let _ = q.execute("migrate_cancel", None);
            Err(error(
                ErrorKind::Timeout,
                format!("QEMU's {what} did not finish within 10 minutes (cancelled)"),
            ))
        }
    }
}

/// Spawns QEMU for `def` (paused, `-S`), with `-incoming defer` when `incoming`, and
/// connects to its monitor; on failure, QEMU's own stderr says why.
fn launch(def: &DomainDef, incoming: bool) -> VerbResult<(process::Child, Running, Qmp)> {
    let dir = socket_dir()?;
    let monitor = format!("{dir}/{}.monitor", def.uuid);
    let taps = make_taps(def)?;
    let made: Vec<String> = taps.iter().flatten().cloned().collect();
    let recorded: Vec<Tap> = def
        .interfaces
        .iter()
        .zip(&taps)
        .filter_map(|(n, t)| {
            Some(Tap {
                mac: n.mac.clone().unwrap_or_default(),
                name: t.clone()?,
            })
        })
        .collect();
    let built = cmdline::build(
        def,
        &cmdline::Launch {
            monitor: &monitor,
            runtime_dir: &dir,
            taps: &taps,
        },
    );
    let mut args = match built {
        Ok(a) => a,
        Err(e) => {
            release_taps(&made);
            return Err(e);
        }
    };
    if incoming {
        args.extend(["-incoming".into(), "defer".into()]);
    }
    let program = def
        .emulator
        .clone()
        .unwrap_or_else(|| DEFAULT_EMULATOR.into());
    log::info(&format!(
        "starting {} with {program} {}",
        def.name,
        args.join(" ")
    ));
    let child = match process::spawn(&program, &args) {
        Ok(c) => c,
        Err(e) => {
            release_taps(&made);
            return Err(e);
        }
    };
    let r = Running {
        pid: child.pid(),
        monitor: monitor.clone(),
        taps: recorded,
    };
    match Qmp::connect(&monitor, 10_000) {
        Ok(q) => Ok((child, r, q)),
        Err(e) => {
            // QEMU refused its command line or died: its stderr says why.
            let status = child.wait(1000).ok().flatten();
            if status.is_none() {
                end(&child);
            }
            release_taps(&made);
            Err(error(
                ErrorKind::OperationFailed,
                format!(
                    "QEMU failed to start {}: {} ({})",
                    def.name,
                    qemu_said(&child),
                    match status {
                        Some(s) => exit_text(&s),
                        None => format!("no monitor: {}", e.message),
                    }
                ),
            ))
        }
    }
}

impl Storage for Qemu {}
impl Network for Qemu {}

export_driver!(Qemu);

#[cfg(test)]
mod tests {
    use virtwasm_sdk::types::*;

    /// `<address>` attributes from (name, value) pairs.
    pub fn attrs(pairs: &[(&str, &str)]) -> Vec<Attribute> {
        pairs
            .iter()
            .map(|(n, v)| Attribute {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect()
    }

    /// A file disk `/x.img` with target `dev` on `bus` at `address`.
    pub fn disk(dev: &str, bus: &str, address: &[(&str, &str)]) -> Disk {
        Disk {
            source_type: DiskSourceType::File,
            device: DiskDevice::Disk,
            driver_name: None,
            format: None,
            cache: None,
            io: None,
            source: Some("/x.img".into()),
            source_pool: None,
            source_volume: None,
            target_dev: dev.into(),
            target_bus: Some(bus.into()),
            readonly: false,
            shareable: false,
            boot_order: None,
            address: attrs(address),
        }
    }

    /// A definition with nothing in it but a name, for the unit tests of the command line's
    /// parts.
    pub fn empty_def() -> DomainDef {
        DomainDef {
            domain_type: "qemu".into(),
            name: "t".into(),
            uuid: "00000000-0000-0000-0000-000000000001".into(),
            title: None,
            description: None,
            memory_kib: 131072,
            current_memory_kib: 131072,
            vcpus: 1,
            current_vcpus: None,
            vcpu_placement: None,
            cpuset: None,
            os: Os {
                os_type: "hvm".into(),
                arch: None,
                machine: None,
                kernel: None,
                initrd: None,
                cmdline: None,
                boot: vec![],
                init: None,
                init_args: vec![],
            },
            features: vec![],
            clock: None,
            cpu: None,
            on_poweroff: None,
            on_reboot: None,
            on_crash: None,
            emulator: None,
            disks: vec![],
            controllers: vec![],
            interfaces: vec![],
            chardevs: vec![],
            inputs: vec![],
            graphics: vec![],
            videos: vec![],
            memballoon: None,
            rngs: vec![],
        }
    }
}
