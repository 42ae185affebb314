//! Storage pool and volume commands.

use virtwasm_host::bindings::types::PoolState;

use super::{Args, Command, Failure, Outcome, arg, flag};
use crate::session::Session;
use crate::table::Table;

/// The storage commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "pool-list",
        group: "Storage Pool",
        help: "list pools",
        opts: &[
            flag("inactive", "list inactive pools"),
            flag("all", "list inactive & active pools"),
            flag("persistent", "list persistent pools"),
            flag("transient", "list transient pools"),
            flag("autostart", "list pools with autostart enabled"),
            flag("no-autostart", "list pools with autostart disabled"),
            flag("details", "display extended details for pools"),
            flag("name", "list pool names only"),
            flag("uuid", "list pool UUIDs only"),
            flag("json", "print as JSON"),
        ],
        run: pool_list,
    },
    Command {
        name: "pool-info",
        group: "Storage Pool",
        help: "storage pool information",
        opts: &[
            arg("pool", "pool name or uuid"),
            flag("bytes", "Reture pool info in bytes"),
            flag("json", "print as JSON"),
        ],
        run: pool_info,
    },
    Command {
        name: "vol-list",
        group: "Storage Volume",
        help: "list vols",
        opts: &[
            arg("pool", "pool name or uuid"),
            flag("details", "display extended details for volumes"),
            flag("json", "print as JSON"),
        ],
        run: vol_list,
    },
];

/// virsh's `vshPrettyCapacity`: the largest binary unit under 1024, two decimals.
pub fn pretty(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

fn state_word(s: PoolState) -> &'static str {
    match s {
        PoolState::Inactive => "inactive",
        PoolState::Building => "building",
        PoolState::Running => "running",
        PoolState::Degraded => "degraded",
        PoolState::Inaccessible => "inaccessible",
    }
}

fn pool_list(sess: &mut Session, a: &Args) -> Outcome {
    let pools = sess.conn()?.list_pools()?;
    let pools: Vec<_> = pools
        .into_iter()
        .filter(|p| {
            let active = p.info.state != PoolState::Inactive;
            let shown = if a.flag("all") {
                true
            } else if a.flag("inactive") {
                !active
            } else {
                active
            };
            // Each filter flag, when given, keeps only the objects that have the property.
            let want = |flag: &str, has: bool| !a.flag(flag) || has;
            shown
                && want("persistent", p.record.persistent)
                && want("transient", !p.record.persistent)
                && want("autostart", p.record.autostart)
                && want("no-autostart", !p.record.autostart)
        })
        .collect();
    if a.flag("json") {
        let v: Vec<_> = pools
            .iter()
            .map(|p| serde_json::json!({
                "name": p.record.def.name, "uuid": p.record.def.uuid, "state": state_word(p.info.state),
                "autostart": p.record.autostart, "persistent": p.record.persistent,
                "capacity": p.info.capacity, "allocation": p.info.allocation, "available": p.info.available,
            }))
            .collect();
        return sess.print_json(&v);
    }
    if a.flag("name") || a.flag("uuid") {
        let mut out = String::new();
        for p in &pools {
            let mut parts = Vec::new();
            if a.flag("uuid") {
                parts.push(p.record.def.uuid.clone());
            }
            if a.flag("name") {
                parts.push(p.record.def.name.clone());
            }
            out.push_str(&format!("{}\n", parts.join(" ")));
        }
        sess.print(&out);
        return Ok(());
    }
    let autostart = |p: &virtwasm_host::objects::PoolStatus| {
        if p.record.autostart { "yes" } else { "no" }.to_string()
    };
    let table = if a.flag("details") {
        let mut t = Table::new(&[
            "Name",
            "State",
            "Autostart",
            "Persistent",
            "Capacity",
            "Allocation",
            "Available",
        ]);
        for p in &pools {
            let active = p.info.state != PoolState::Inactive;
            let size = |v: u64| if active { pretty(v) } else { "-".into() };
            t.row(vec![
                p.record.def.name.clone(),
                state_word(p.info.state).into(),
                autostart(p),
                if p.record.persistent { "yes" } else { "no" }.into(),
                size(p.info.capacity),
                size(p.info.allocation),
                size(p.info.available),
            ]);
        }
        t
    } else {
        let mut t = Table::new(&["Name", "State", "Autostart"]);
        for p in &pools {
            let active = p.info.state != PoolState::Inactive;
            t.row(vec![
                p.record.def.name.clone(),
                if active { "active" } else { "inactive" }.into(),
                autostart(p),
            ]);
        }
        t
    };
    let quiet = sess.settings.quiet;
    sess.print(&table.render(quiet));
    Ok(())
}

fn pool_info(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("pool");
    let p = sess
        .conn()?
        .pool(key)
        .map_err(|e| Failure(vec![format!("failed to get pool '{key}'"), e.message]))?;
    if a.flag("json") {
        return sess.print_json(&p);
    }
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<15} {v}\n"));
    line("Name:", p.record.def.name.clone());
    line("UUID:", p.record.def.uuid.clone());
    line("State:", state_word(p.info.state).into());
    line(
        "Persistent:",
        if p.record.persistent { "yes" } else { "no" }.into(),
    );
    line(
        "Autostart:",
        if p.record.autostart { "yes" } else { "no" }.into(),
    );
    if p.info.state != PoolState::Inactive {
        let size = |v: u64| {
            if a.flag("bytes") {
                format!("{v}")
            } else {
                pretty(v)
            }
        };
        line("Capacity:", size(p.info.capacity));
        line("Allocation:", size(p.info.allocation));
        line("Available:", size(p.info.available));
    }
    sess.print(&out);
    Ok(())
}

fn vol_list(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("pool");
    let conn = sess.conn()?;
    conn.pool(key)
        .map_err(|e| Failure(vec![format!("failed to get pool '{key}'"), e.message]))?;
    let vols = conn
        .list_volumes(key)
        .map_err(|e| Failure(vec!["Failed to list volumes".into(), e.message]))?;
    if a.flag("json") {
        return sess.print_json(&vols);
    }
    let quiet = sess.settings.quiet;
    let table = if a.flag("details") {
        let mut t = Table::new(&["Name", "Path", "Type", "Capacity", "Allocation"]);
        for v in &vols {
            t.row(vec![
                v.name.clone(),
                v.target_path.clone().unwrap_or_default(),
                "file".into(),
                pretty(v.capacity),
                pretty(v.allocation.unwrap_or(0)),
            ]);
        }
        t
    } else {
        let mut t = Table::new(&["Name", "Path"]);
        for v in &vols {
            t.row(vec![
                v.name.clone(),
                v.target_path.clone().unwrap_or_default(),
            ]);
        }
        t
    };
    sess.print(&table.render(quiet));
    Ok(())
}

/// Pool, volume lifecycle commands.
pub static LIFECYCLE: &[Command] = &[
    Command {
        name: "pool-dumpxml",
        group: "Storage Pool",
        help: "pool information in XML",
        opts: &[
            arg("pool", "pool name or uuid"),
            flag("inactive", "show inactive defined XML"),
        ],
        run: pool_dumpxml,
    },
    Command {
        name: "pool-define",
        group: "Storage Pool",
        help: "define an inactive persistent storage pool or modify an existing persistent one from an XML file",
        opts: &[
            arg("file", "file containing an XML pool description"),
            flag("validate", "validate the XML against the schema"),
        ],
        run: pool_define,
    },
    Command {
        name: "pool-create",
        group: "Storage Pool",
        help: "create a pool from an XML file",
        opts: &[
            arg("file", "file containing an XML pool description"),
            flag("build", "build the pool as normal"),
            flag("validate", "validate the XML against the schema"),
        ],
        run: pool_create,
    },
    Command {
        name: "pool-define-as",
        group: "Storage Pool",
        help: "define a pool from a set of args",
        opts: POOL_AS_OPTS,
        run: pool_define_as,
    },
    Command {
        name: "pool-create-as",
        group: "Storage Pool",
        help: "create a pool from a set of args",
        opts: POOL_AS_OPTS,
        run: pool_create_as,
    },
    Command {
        name: "pool-build",
        group: "Storage Pool",
        help: "build a pool",
        opts: &[
            arg("pool", "pool name or uuid"),
            flag("overwrite", "overwrite any existing data"),
            flag("no-overwrite", "do not overwrite any existing data"),
        ],
        run: pool_build,
    },
    Command {
        name: "pool-start",
        group: "Storage Pool",
        help: "start a (previously defined) inactive pool",
        opts: &[
            arg("pool", "pool name or uuid"),
            flag("build", "build the pool as normal"),
        ],
        run: pool_start,
    },
    Command {
        name: "pool-destroy",
        group: "Storage Pool",
        help: "destroy (stop) a pool",
        opts: &[arg("pool", "pool name or uuid")],
        run: pool_destroy,
    },
    Command {
        name: "pool-delete",
        group: "Storage Pool",
        help: "delete a pool",
        opts: &[arg("pool", "pool name or uuid")],
        run: pool_delete,
    },
    Command {
        name: "pool-undefine",
        group: "Storage Pool",
        help: "undefine an inactive pool",
        opts: &[arg("pool", "pool name or uuid")],
        run: pool_undefine,
    },
    Command {
        name: "pool-refresh",
        group: "Storage Pool",
        help: "refresh a pool",
        opts: &[arg("pool", "pool name or uuid")],
        run: pool_refresh,
    },
    Command {
        name: "pool-autostart",
        group: "Storage Pool",
        help: "autostart a pool",
        opts: &[
            arg("pool", "pool name or uuid"),
            flag("disable", "disable autostarting"),
        ],
        run: pool_autostart,
    },
    Command {
        name: "vol-create-as",
        group: "Storage Volume",
        help: "create a volume from a set of args",
        opts: &[
            arg("pool", "pool name"),
            arg("name", "name of the volume"),
            arg(
                "capacity",
                "size of the vol, as scaled integer (default bytes)",
            ),
            value(
                "allocation",
                "initial allocation size, as scaled integer (default bytes)",
            ),
            value("format", "file format type raw,bochs,qcow,qcow2,qed,vmdk"),
            value("backing-vol", "the backing volume if taking a snapshot"),
            value(
                "backing-vol-format",
                "format of backing volume if taking a snapshot",
            ),
            flag(
                "prealloc-metadata",
                "preallocate metadata (for qcow2 instead of full allocation)",
            ),
            flag("print-xml", "print XML document, but don't define/create"),
        ],
        run: vol_create_as,
    },
    Command {
        name: "vol-create",
        group: "Storage Volume",
        help: "create a vol from an XML file",
        opts: &[
            arg("pool", "pool name"),
            arg("file", "file containing an XML vol description"),
            flag(
                "prealloc-metadata",
                "preallocate metadata (for qcow2 instead of full allocation)",
            ),
            flag("validate", "validate the XML against the schema"),
        ],
        run: vol_create,
    },
    Command {
        name: "vol-clone",
        group: "Storage Volume",
        help: "clone a volume.",
        opts: &[
            arg("vol", "orig vol name or key"),
            arg("newname", "clone name"),
            value("pool", "pool name or uuid"),
            flag(
                "prealloc-metadata",
                "preallocate metadata (for qcow2 instead of full allocation)",
            ),
            flag("reflink", "use btrfs COW lightweight copy"),
        ],
        run: vol_clone,
    },
    Command {
        name: "vol-delete",
        group: "Storage Volume",
        help: "delete a vol",
        opts: &[
            arg("vol", "vol name, key or path"),
            value("pool", "pool name or uuid"),
            flag(
                "delete-snapshots",
                "delete snapshots associated with volume (must be supported by storage driver)",
            ),
        ],
        run: vol_delete,
    },
    Command {
        name: "vol-info",
        group: "Storage Volume",
        help: "storage vol information",
        opts: &[
            arg("vol", "vol name, key or path"),
            value("pool", "pool name or uuid"),
            flag(
                "bytes",
                "sizes are represented in bytes rather than pretty units",
            ),
            flag(
                "physical",
                "return the physical size of the volume in allocation field",
            ),
            flag("json", "print as JSON"),
        ],
        run: vol_info,
    },
    Command {
        name: "vol-dumpxml",
        group: "Storage Volume",
        help: "vol information in XML",
        opts: &[
            arg("vol", "vol name, key or path"),
            value("pool", "pool name or uuid"),
        ],
        run: vol_dumpxml,
    },
    Command {
        name: "vol-resize",
        group: "Storage Volume",
        help: "resize a vol",
        opts: &[
            arg("vol", "vol name, key or path"),
            arg(
                "capacity",
                "new capacity for the vol, as scaled integer (default bytes)",
            ),
            value("pool", "pool name or uuid"),
            flag(
                "allocate",
                "allocate the new capacity, rather than leaving it sparse",
            ),
            flag(
                "delta",
                "use capacity as a delta to current size, rather than the new size",
            ),
            flag("shrink", "allow the resize to shrink the volume"),
        ],
        run: vol_resize,
    },
    Command {
        name: "vol-wipe",
        group: "Storage Volume",
        help: "wipe a vol",
        opts: &[
            arg("vol", "vol name, key or path"),
            value("pool", "pool name or uuid"),
            value("algorithm", "perform selected wiping algorithm"),
        ],
        run: vol_wipe,
    },
    Command {
        name: "vol-upload",
        group: "Storage Volume",
        help: "upload file contents to a volume",
        opts: &[
            arg("vol", "vol name, key or path"),
            arg("file", "file"),
            value("pool", "pool name or uuid"),
            value("offset", "volume offset to upload to"),
            value("length", "amount of data to upload"),
            flag("sparse", "preserve sparseness of volume"),
        ],
        run: vol_upload,
    },
    Command {
        name: "vol-download",
        group: "Storage Volume",
        help: "download volume contents to a file",
        opts: &[
            arg("vol", "vol name, key or path"),
            arg("file", "file"),
            value("pool", "pool name or uuid"),
            value("offset", "volume offset to download from"),
            value("length", "amount of data to download"),
            flag("sparse", "preserve sparseness of volume"),
        ],
        run: vol_download,
    },
    Command {
        name: "vol-path",
        group: "Storage Volume",
        help: "returns the volume path for a given volume name or key",
        opts: &[
            arg("vol", "vol name or key"),
            value("pool", "pool name or uuid"),
        ],
        run: vol_path,
    },
];

const POOL_AS_OPTS: &[super::Opt] = &[
    arg("name", "name of the pool"),
    arg("type", "type of the pool"),
    super::optional_arg("source-host", "source-host for underlying storage"),
    super::optional_arg("source-path", "source path for underlying storage"),
    super::optional_arg("source-dev", "source device for underlying storage"),
    super::optional_arg("source-name", "source name for underlying storage"),
    super::optional_arg("target", "target for underlying storage"),
    value("source-format", "format for underlying storage"),
    flag("print-xml", "print XML document, but don't define/create"),
    flag("build", "build the pool as normal"),
];

use super::value;

fn pool_failure<'a>(what: &str, key: &'a str) -> impl FnOnce(virtwasm_host::Error) -> Failure + 'a {
    let what = what.to_string();
    move |e| match e.kind {
        virtwasm_host::ErrorKind::NotFound if e.message.starts_with("Storage pool not found") => {
            Failure(vec![format!("failed to get pool '{key}'"), e.message])
        }
        _ => Failure(vec![format!("Failed to {what} pool {key}"), e.message]),
    }
}

fn pool_dumpxml(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("pool");
    let xml = sess
        .conn()?
        .pool_xml(key)
        .map_err(|e| Failure(vec![format!("failed to get pool '{key}'"), e.message]))?;
    sess.print(&xml);
    Ok(())
}

fn pool_define(sess: &mut Session, a: &Args) -> Outcome {
    super::domain::object_from_file(
        sess,
        a,
        ("define", "pool", "Pool", "defined"),
        |c, xml, validate| c.pool_define_xml(xml, validate).map(|d| d.name),
    )
}

fn pool_create(sess: &mut Session, a: &Args) -> Outcome {
    let file = a.req("file");
    let text = super::domain::read_file(file)?;
    let fail = |e: virtwasm_host::Error| {
        Failure(vec![
            format!("Failed to create pool from {file}"),
            e.message,
        ])
    };
    let parsed = virtwasm_host::xml::parse_pool_with(
        &text,
        &virtwasm_host::xml::ParseOptions {
            strict: a.flag("validate"),
            fill_defaults: true,
        },
    )
    .map_err(fail)?;
    let def = sess
        .conn()?
        .pool_create(parsed.def, parsed.extras, a.flag("build"))
        .map_err(fail)?;
    sess.extra(&format!("Pool {} created from {file}\n", def.name));
    Ok(())
}

fn pool_def_from_args(a: &Args) -> Result<virtwasm_host::bindings::types::PoolDef, Failure> {
    use virtwasm_host::bindings::types::{PoolDef, PoolType};
    let ty = match a.req("type") {
        "dir" => PoolType::Dir,
        "fs" => PoolType::Fs,
        "netfs" => PoolType::Netfs,
        "logical" => PoolType::Logical,
        "disk" => PoolType::Disk,
        "iscsi" => PoolType::Iscsi,
        "scsi" => PoolType::Scsi,
        "mpath" => PoolType::Mpath,
        "rbd" => PoolType::Rbd,
        "sheepdog" => PoolType::Sheepdog,
        "gluster" => PoolType::Gluster,
        "zfs" => PoolType::Zfs,
        other => {
            return Err(Failure::msg(format!(
                "unknown storage pool type '{other}' (expected dir, fs, netfs, logical, disk, iscsi, scsi, mpath, rbd, sheepdog, gluster, zfs)"
            )));
        }
    };
    Ok(PoolDef {
        pool_type: ty,
        name: a.req("name").to_string(),
        uuid: String::new(),
        source_hosts: a
            .get("source-host")
            .map(|h| vec![h.to_string()])
            .unwrap_or_default(),
        source_devices: a
            .get("source-dev")
            .map(|d| vec![d.to_string()])
            .unwrap_or_default(),
        source_dir: a.get("source-path").map(str::to_string),
        source_name: a.get("source-name").map(str::to_string),
        source_format: a.get("source-format").map(str::to_string),
        target_path: a.get("target").map(str::to_string),
        target_permissions: None,
    })
}

fn pool_define_as(sess: &mut Session, a: &Args) -> Outcome {
    let def = pool_def_from_args(a)?;
    let name = def.name.clone();
    let def = sess
        .conn()?
        .pool_define(def, Default::default())
        .map_err(|e| Failure(vec![format!("Failed to define pool {name}"), e.message]))?;
    sess.extra(&format!("Pool {} defined\n", def.name));
    Ok(())
}

fn pool_create_as(sess: &mut Session, a: &Args) -> Outcome {
    let def = pool_def_from_args(a)?;
    let name = def.name.clone();
    let def = sess
        .conn()?
        .pool_create(def, Default::default(), a.flag("build"))
        .map_err(|e| Failure(vec![format!("Failed to create pool {name}"), e.message]))?;
    sess.extra(&format!("Pool {} created\n", def.name));
    Ok(())
}

fn pool_verb(
    sess: &mut Session,
    a: &Args,
    what: &str,
    done: &str,
    f: impl FnOnce(&virtwasm_api::Client, &str) -> virtwasm_host::Result<String>,
) -> Outcome {
    let key = a.req("pool");
    let name = f(sess.conn()?, key).map_err(pool_failure(what, key))?;
    sess.extra(&format!("Pool {name} {done}\n"));
    Ok(())
}

fn pool_build(sess: &mut Session, a: &Args) -> Outcome {
    let overwrite = a.flag("overwrite");
    pool_verb(sess, a, "build", "built", |c, k| c.pool_build(k, overwrite))
}

fn pool_start(sess: &mut Session, a: &Args) -> Outcome {
    if a.flag("build") {
        let key = a.req("pool");
        sess.conn()?
            .pool_build(key, false)
            .map_err(pool_failure("build", key))?;
    }
    pool_verb(sess, a, "start", "started", |c, k| c.pool_start(k))
}

fn pool_destroy(sess: &mut Session, a: &Args) -> Outcome {
    pool_verb(sess, a, "destroy", "destroyed", |c, k| c.pool_destroy(k))
}

fn pool_delete(sess: &mut Session, a: &Args) -> Outcome {
    pool_verb(sess, a, "delete", "deleted", |c, k| c.pool_delete(k))
}

fn pool_undefine(sess: &mut Session, a: &Args) -> Outcome {
    pool_verb(sess, a, "undefine", "has been undefined", |c, k| {
        c.pool_undefine(k)
    })
}

fn pool_refresh(sess: &mut Session, a: &Args) -> Outcome {
    pool_verb(sess, a, "refresh", "refreshed", |c, k| c.pool_refresh(k))
}

fn pool_autostart(sess: &mut Session, a: &Args) -> Outcome {
    let on = !a.flag("disable");
    let done = if on {
        "marked as autostarted"
    } else {
        "unmarked as autostarted"
    };
    let what = if on {
        "mark as autostarted"
    } else {
        "unmark as autostarted"
    };
    pool_verb(sess, a, what, done, |c, k| c.pool_set_autostart(k, on))
}

/// A size with an optional unit suffix, in bytes (virsh's scaled integers, default bytes).
fn bytes(text: &str, what: &str) -> Result<u64, Failure> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let bad = || Failure::msg(format!("Malformed size {text}"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale = if unit.is_empty() {
        1
    } else {
        virtwasm_host::xml::unit_scale(unit).ok_or_else(bad)?
    };
    let _ = what;
    n.checked_mul(scale).ok_or_else(bad)
}

fn vol_create_as(sess: &mut Session, a: &Args) -> Outcome {
    use virtwasm_host::bindings::types::VolumeDef;
    let pool = a.req("pool");
    let name = a.req("name").to_string();
    sess.conn()?
        .pool(pool)
        .map_err(|e| Failure(vec![format!("failed to get pool '{pool}'"), e.message]))?;
    let capacity = bytes(a.req("capacity"), "capacity")?;
    let allocation = a
        .get("allocation")
        .map(|s| bytes(s, "allocation"))
        .transpose()?;
    let vol = VolumeDef {
        name: name.clone(),
        key: None,
        capacity,
        allocation,
        target_path: None,
        format: a.get("format").map(str::to_string),
        target_permissions: None,
        backing_path: a.get("backing-vol").map(str::to_string),
        backing_format: a.get("backing-vol-format").map(str::to_string),
    };
    sess.conn()?
        .vol_create(pool, vol)
        .map_err(|e| Failure(vec![format!("Failed to create vol {name}"), e.message]))?;
    sess.extra(&format!("Vol {name} created\n"));
    Ok(())
}

fn vol_create(sess: &mut Session, a: &Args) -> Outcome {
    let file = a.req("file");
    let text = super::domain::read_file(file)?;
    let vol = sess
        .conn()?
        .vol_create_xml(a.req("pool"), &text, a.flag("validate"))
        .map_err(|e| Failure(vec![format!("Failed to create vol from {file}"), e.message]))?;
    sess.extra(&format!("Vol {} created from {file}\n", vol.name));
    Ok(())
}

/// virsh's words for a volume that cannot be found: a missing pool is named as such, and
/// without --pool it suggests giving one.
fn vol_lookup_failure<'a>(
    key: &'a str,
    pool: Option<&'a str>,
) -> impl FnOnce(virtwasm_host::Error) -> Failure + 'a {
    move |e| {
        if let (Some(p), true) = (pool, e.message.starts_with("Storage pool not found")) {
            return Failure(vec![format!("failed to get pool '{p}'"), e.message]);
        }
        match pool {
            Some(_) => Failure(vec![format!("failed to get vol '{key}'"), e.message]),
            None => Failure(vec![
                format!("failed to get vol '{key}', specifying --pool might help"),
                e.message,
            ]),
        }
    }
}

fn vol_clone(sess: &mut Session, a: &Args) -> Outcome {
    let (src, new) = (a.req("vol"), a.req("newname"));
    let pool = a.get("pool");
    let conn = sess.conn()?;
    conn.volume(src, pool)
        .map_err(vol_lookup_failure(src, pool))?;
    conn.vol_clone(src, new, pool)
        .map_err(|e| Failure(vec![format!("Failed to clone vol from {src}"), e.message]))?;
    sess.extra(&format!("Vol {new} cloned from {src}\n"));
    Ok(())
}

fn vol_delete(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("vol");
    let pool = a.get("pool");
    let conn = sess.conn()?;
    conn.volume(key, pool)
        .map_err(vol_lookup_failure(key, a.get("pool")))?;
    let name = conn
        .vol_delete(key, pool)
        .map_err(|e| Failure(vec![format!("Failed to delete vol {key}"), e.message]))?;
    sess.extra(&format!("Vol {name} deleted\n"));
    Ok(())
}

fn vol_info(sess: &mut Session, a: &Args) -> Outcome {
    use virtwasm_host::bindings::types::VolumeType;
    let key = a.req("vol");
    let (vol, info) = sess
        .conn()?
        .vol_info(key, a.get("pool"))
        .map_err(vol_lookup_failure(key, a.get("pool")))?;
    if a.flag("json") {
        return sess.print_json(&serde_json::json!({"name": vol.name, "path": vol.target_path, "capacity": info.capacity, "allocation": info.allocation}));
    }
    let ty = match info.volume_type {
        VolumeType::File => "file",
        VolumeType::Block => "block",
        VolumeType::Dir => "dir",
        VolumeType::Network => "network",
        VolumeType::Netdir => "netdir",
        VolumeType::Ploop => "ploop",
    };
    let size = |v: u64| {
        if a.flag("bytes") {
            format!("{v} bytes")
        } else {
            pretty(v)
        }
    };
    sess.print(&format!(
        "{:<15} {}\n{:<15} {}\n{:<15} {}\n{:<15} {}\n",
        "Name:",
        vol.name,
        "Type:",
        ty,
        "Capacity:",
        size(info.capacity),
        "Allocation:",
        size(info.allocation)
    ));
    Ok(())
}

fn vol_dumpxml(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("vol");
    let xml = sess
        .conn()?
        .vol_xml(key, a.get("pool"))
        .map_err(vol_lookup_failure(key, a.get("pool")))?;
    sess.print(&xml);
    Ok(())
}

fn vol_path(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("vol");
    let (_, vol) = sess
        .conn()?
        .volume(key, a.get("pool"))
        .map_err(vol_lookup_failure(key, a.get("pool")))?;
    sess.print(&format!("{}\n", vol.target_path.unwrap_or_default()));
    Ok(())
}

fn vol_resize(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("vol");
    let text = a.req("capacity");
    let conn = sess.conn()?;
    let (_, vol) = conn
        .volume(key, a.get("pool"))
        .map_err(vol_lookup_failure(key, a.get("pool")))?;
    let mut capacity = bytes(text, "capacity")?;
    if a.flag("delta") {
        capacity = vol.capacity.saturating_add(capacity);
    }
    let fail = |e: virtwasm_host::Error| {
        Failure(vec![
            format!("Failed to change size of volume '{key}' to {text}"),
            e.message,
        ])
    };
    conn.vol_resize(key, a.get("pool"), capacity, a.flag("shrink"))
        .map_err(fail)?;
    sess.extra(&format!(
        "Size of volume '{key}' successfully changed to {text}\n"
    ));
    Ok(())
}

fn vol_wipe(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("vol");
    let conn = sess.conn()?;
    conn.volume(key, a.get("pool"))
        .map_err(vol_lookup_failure(key, a.get("pool")))?;
    conn.vol_wipe(key, a.get("pool"))
        .map_err(|e| Failure(vec![format!("Failed to wipe vol {key}"), e.message]))?;
    sess.extra(&format!("Vol {key} wiped\n"));
    Ok(())
}

fn vol_upload(sess: &mut Session, a: &Args) -> Outcome {
    vol_transfer(sess, a, true)
}

fn vol_download(sess: &mut Session, a: &Args) -> Outcome {
    vol_transfer(sess, a, false)
}

/// `vol-upload` and `vol-download`: the same lookup and transfer, in
/// either direction, with virsh's wording for each.
fn vol_transfer(sess: &mut Session, a: &Args, upload: bool) -> Outcome {
    let key = a.req("vol");
    let conn = sess.conn()?;
    let (_, vol) = conn
        .volume(key, a.get("pool"))
        .map_err(vol_lookup_failure(key, a.get("pool")))?;
    let file = std::path::Path::new(a.req("file"));
    let mut bar = crate::progress::Bar::bytes(if upload { "uploading" } else { "downloading" });
    conn.vol_transfer(key, a.get("pool"), file, upload, &mut |done, total| {
        bar.update(done, total);
        Ok(())
    })
    .map_err(|e| {
        let what = if upload {
            format!("cannot upload to volume {}", vol.name)
        } else {
            format!("cannot download from volume {}", vol.name)
        };
        Failure(vec![what, e.message])
    })?;
    bar.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn capacities_print_as_virsh_does() {
        assert_eq!(super::pretty(0), "0.00 B");
        assert_eq!(super::pretty(1023), "1023.00 B");
        assert_eq!(super::pretty(1536), "1.50 KiB");
        assert_eq!(super::pretty(100 * 1024 * 1024 * 1024), "100.00 GiB");
    }
}
