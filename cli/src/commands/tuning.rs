//! vCPU, memory and device listing commands.

use virtwasm_host::tuning::Scope;

use super::domain::lookup;
use super::{Args, Command, Failure, Outcome, arg, flag, int_arg};
use crate::session::Session;
use crate::table::Table;

const DOMAIN: super::Opt = arg("domain", "domain name, id or uuid");

/// The commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "vcpucount",
        group: "Domain Management",
        help: "domain vcpu counts",
        opts: &[
            DOMAIN,
            flag("maximum", "get maximum count of vcpus"),
            flag("active", "get number of currently active vcpus"),
            flag("live", "get value from running domain"),
            flag("config", "get value to be used on next boot"),
            flag("current", "get value according to current domain state"),
        ],
        run: vcpucount,
    },
    Command {
        name: "setvcpus",
        group: "Domain Management",
        help: "change number of virtual CPUs",
        opts: &[
            DOMAIN,
            int_arg("count", "number of virtual CPUs"),
            flag("maximum", "set maximum limit on next boot"),
            flag("config", "affect next boot"),
            flag("live", "affect running domain"),
            flag("current", "affect current domain"),
        ],
        run: setvcpus,
    },
    Command {
        name: "setmem",
        group: "Domain Management",
        help: "change memory allocation",
        opts: &[
            DOMAIN,
            int_arg("size", "new memory size, as scaled integer (default KiB)"),
            flag("config", "affect next boot"),
            flag("live", "affect running domain"),
            flag("current", "affect current domain"),
        ],
        run: setmem,
    },
    Command {
        name: "setmaxmem",
        group: "Domain Management",
        help: "change maximum memory limit",
        opts: &[
            DOMAIN,
            int_arg(
                "size",
                "new maximum memory size, as scaled integer (default KiB)",
            ),
            flag("config", "affect next boot"),
            flag("live", "affect running domain"),
            flag("current", "affect current domain"),
        ],
        run: setmaxmem,
    },
    Command {
        name: "domblklist",
        group: "Domain Monitoring",
        help: "list all domain blocks",
        opts: &[
            DOMAIN,
            flag("inactive", "get inactive rather than running configuration"),
            flag("details", "additionally display the type and device value"),
            flag("json", "print as JSON"),
        ],
        run: domblklist,
    },
    Command {
        name: "domiflist",
        group: "Domain Monitoring",
        help: "list all domain virtual interfaces",
        opts: &[
            DOMAIN,
            flag("inactive", "get inactive rather than running configuration"),
            flag("json", "print as JSON"),
        ],
        run: domiflist,
    },
];

/// `--live`/`--config`/`--current` as virsh reads them; `None` means "current".
fn scope(a: &Args) -> Result<Option<Scope>, Failure> {
    if a.flag("current") && (a.flag("live") || a.flag("config")) {
        let other = if a.flag("live") { "--live" } else { "--config" };
        return Err(Failure::msg(format!(
            "Options --current and {other} are mutually exclusive"
        )));
    }
    if a.flag("live") || a.flag("config") {
        return Ok(Some(Scope {
            live: a.flag("live"),
            config: a.flag("config"),
        }));
    }
    Ok(None)
}

/// A size with an optional unit suffix, in KiB (virsh's scaled integers, default KiB).
fn kib(text: &str, what: &str) -> Result<u64, Failure> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let bad = || {
        Failure::msg(format!(
            "Scaled numeric value '{text}' for <{what}> option is malformed or out of range"
        ))
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale = if unit.is_empty() {
        1024
    } else {
        virtwasm_host::xml::unit_scale(unit).ok_or_else(bad)?
    };
    n.checked_mul(scale)
        .map(|b| b.div_ceil(1024))
        .ok_or_else(bad)
}

fn vcpucount(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let c = sess.conn()?.vcpu_count(&rec.def.uuid)?;
    let mut out = String::new();
    let mut row = |which: &str, scope: &str, n: u32| {
        out.push_str(&format!("{which:<12} {scope:<12} {n:3}\n"))
    };
    let want_max = !a.flag("active") || a.flag("maximum");
    let want_cur = !a.flag("maximum") || a.flag("active");
    let want_config = !a.flag("live") || a.flag("config");
    let want_live = !a.flag("config") || a.flag("live");
    if want_max && want_config {
        row("maximum", "config", c.config.0);
    }
    if let (true, true, Some(live)) = (want_max, want_live, c.live) {
        row("maximum", "live", live.0);
    }
    if want_cur && want_config {
        row("current", "config", c.config.1);
    }
    if let (true, true, Some(live)) = (want_cur, want_live, c.live) {
        row("current", "live", live.1);
    }
    sess.print(&out);
    Ok(())
}

fn setvcpus(sess: &mut Session, a: &Args) -> Outcome {
    let count: u32 = a.req("count").parse().map_err(|_| {
        Failure::msg(format!(
            "Numeric value '{}' for <count> option is malformed or out of range",
            a.req("count")
        ))
    })?;
    if count == 0 {
        return Err(Failure::msg("Can't set 0 processors for a VM"));
    }
    // Without flags virsh calls the legacy live-only API (except for --maximum).
    let live_only = Some(Scope {
        live: true,
        config: false,
    });
    let scope = scope(a)?.or(if a.flag("current") || a.flag("maximum") {
        None
    } else {
        live_only
    });
    let rec = lookup(sess, a.req("domain"))?;
    sess.conn()?
        .set_vcpus(&rec.def.uuid, count, scope, a.flag("maximum"))?;
    Ok(())
}

fn setmem(sess: &mut Session, a: &Args) -> Outcome {
    let size = kib(a.req("size"), "size")?;
    // Without flags virsh calls the legacy live-only API, so an inactive domain is refused.
    let scope = scope(a)?.or(if a.flag("current") {
        None
    } else {
        Some(Scope {
            live: true,
            config: false,
        })
    });
    let rec = lookup(sess, a.req("domain"))?;
    sess.conn()?.set_memory(&rec.def.uuid, size, scope)?;
    Ok(())
}

fn setmaxmem(sess: &mut Session, a: &Args) -> Outcome {
    let size = kib(a.req("size"), "size")?;
    let scope = scope(a)?;
    let rec = lookup(sess, a.req("domain"))?;
    sess.conn()?
        .set_max_memory(&rec.def.uuid, size, scope)
        .map_err(|e| Failure(vec!["Unable to change MaxMemorySize".into(), e.message]))
}

fn shown_def(
    rec: &virtwasm_host::state::DomainRecord,
    inactive: bool,
) -> virtwasm_host::bindings::types::DomainDef {
    if inactive {
        rec.def.clone()
    } else {
        rec.live.clone().unwrap_or_else(|| rec.def.clone())
    }
}

fn domblklist(sess: &mut Session, a: &Args) -> Outcome {
    use virtwasm_host::bindings::types::{DiskDevice, DiskSourceType};
    let rec = lookup(sess, a.req("domain"))?;
    let def = shown_def(&rec, a.flag("inactive"));
    if a.flag("json") {
        return sess.print_json(&def.disks);
    }
    let source = |d: &virtwasm_host::bindings::types::Disk| match (
        &d.source,
        &d.source_pool,
        &d.source_volume,
    ) {
        (Some(s), _, _) => s.clone(),
        (None, Some(p), Some(v)) => format!("{p}/{v}"),
        _ => "-".into(),
    };
    let t = if a.flag("details") {
        let mut t = Table::new(&["Type", "Device", "Target", "Source"]);
        for d in &def.disks {
            let ty = match d.source_type {
                DiskSourceType::File => "file",
                DiskSourceType::Block => "block",
                DiskSourceType::Dir => "dir",
                DiskSourceType::Network => "network",
                DiskSourceType::Volume => "volume",
            };
            let dev = match d.device {
                DiskDevice::Disk => "disk",
                DiskDevice::Cdrom => "cdrom",
                DiskDevice::Floppy => "floppy",
                DiskDevice::Lun => "lun",
            };
            t.row(vec![ty.into(), dev.into(), d.target_dev.clone(), source(d)]);
        }
        t
    } else {
        let mut t = Table::new(&["Target", "Source"]);
        for d in &def.disks {
            t.row(vec![d.target_dev.clone(), source(d)]);
        }
        t
    };
    let quiet = sess.settings.quiet;
    sess.print(&t.render(quiet));
    Ok(())
}

fn domiflist(sess: &mut Session, a: &Args) -> Outcome {
    use virtwasm_host::bindings::types::InterfaceType;
    let rec = lookup(sess, a.req("domain"))?;
    let def = shown_def(&rec, a.flag("inactive"));
    if a.flag("json") {
        return sess.print_json(&def.interfaces);
    }
    let mut t = Table::new(&["Interface", "Type", "Source", "Model", "MAC"]);
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    for i in &def.interfaces {
        let ty = match i.interface_type {
            InterfaceType::Network => "network",
            InterfaceType::Bridge => "bridge",
            InterfaceType::User => "user",
            InterfaceType::Ethernet => "ethernet",
            InterfaceType::Direct => "direct",
        };
        t.row(vec![
            dash(&i.target_dev),
            ty.into(),
            dash(&i.source),
            dash(&i.model),
            dash(&i.mac),
        ]);
    }
    let quiet = sess.settings.quiet;
    sess.print(&t.render(quiet));
    Ok(())
}
