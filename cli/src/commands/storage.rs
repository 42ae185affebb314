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
    let vols = sess
        .conn()?
        .list_volumes(key)
        .map_err(|e| Failure(vec![format!("failed to get pool '{key}'"), e.message]))?;
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
