//! Snapshot commands.

use virtwasm_host::bindings::types::DomainState;

use super::domain::lookup;
use super::{Args, Command, Failure, Outcome, arg, flag, optional_arg, value};
use crate::session::Session;
use crate::table::Table;

const DOMAIN: super::Opt = arg("domain", "domain name, id or uuid");

/// The commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "snapshot-create-as",
        group: "Snapshot",
        help: "Create a snapshot from a set of args",
        opts: &[
            DOMAIN,
            optional_arg("name", "name of snapshot"),
            value("description", "description of snapshot"),
            flag("print-xml", "print XML document rather than create"),
            flag("atomic", "require atomic operation"),
        ],
        run: create_as,
    },
    Command {
        name: "snapshot-list",
        group: "Snapshot",
        help: "List snapshots for a domain",
        opts: &[
            DOMAIN,
            flag("parent", "add a column showing parent snapshot"),
            flag("roots", "list only snapshots without parents"),
            flag("name", "list snapshot names only"),
            flag("json", "print as JSON"),
        ],
        run: list,
    },
    Command {
        name: "snapshot-current",
        group: "Snapshot",
        help: "Get or set the current snapshot",
        opts: &[
            DOMAIN,
            flag("name", "list the name, rather than the full xml"),
        ],
        run: current,
    },
    Command {
        name: "snapshot-revert",
        group: "Snapshot",
        help: "Revert a domain to a snapshot",
        opts: &[
            DOMAIN,
            optional_arg("snapshotname", "snapshot name"),
            flag("current", "revert to current snapshot"),
            flag("running", "after reverting, change state to running"),
            flag("paused", "after reverting, change state to paused"),
        ],
        run: revert,
    },
    Command {
        name: "snapshot-delete",
        group: "Snapshot",
        help: "Delete a domain snapshot",
        opts: &[
            DOMAIN,
            optional_arg("snapshotname", "snapshot name"),
            flag("current", "delete current snapshot"),
            flag("children", "delete snapshot and all children"),
        ],
        run: delete,
    },
];

/// libvirt's snapshot state words (`shutoff`, not `shut off`).
fn state_word(s: &DomainState) -> &'static str {
    match s {
        DomainState::Running(_) | DomainState::Blocked(_) => "running",
        DomainState::Paused(_) => "paused",
        DomainState::Shutdown(_) => "shutdown",
        DomainState::Shutoff(_) => "shutoff",
        DomainState::Crashed(_) => "crashed",
        DomainState::Pmsuspended(_) => "pmsuspended",
        DomainState::Nostate(_) => "nostate",
    }
}

/// `YYYY-MM-DD HH:MM:SS +ZZZZ` in local time, as virsh prints creation times.
pub(crate) fn local_time(secs: i64) -> String {
    // SAFETY: localtime_r writes only into the tm we pass; time_t is i64 on Linux.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs;
    unsafe { libc::localtime_r(&t, &mut tm) };
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off / 3600,
        (off % 3600) / 60
    )
}

fn create_as(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let snap = sess
        .conn()?
        .snapshot_create(&rec.def.uuid, a.get("name"), a.get("description"))?;
    // virsh ends this line without a newline; its blank line after the command ends it.
    sess.extra(&format!("Domain snapshot {} created", snap.name));
    Ok(())
}

fn list(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let (snaps, _) = sess.conn()?.snapshots(&rec.def.uuid)?;
    let snaps: Vec<_> = snaps
        .into_iter()
        .filter(|s| !a.flag("roots") || s.def.parent.is_none())
        .collect();
    if a.flag("json") {
        let defs: Vec<_> = snaps.iter().map(|s| &s.def).collect();
        return sess.print_json(&defs);
    }
    if a.flag("name") {
        let text: String = snaps.iter().map(|s| format!("{}\n", s.def.name)).collect();
        sess.print(&text);
        return Ok(());
    }
    let mut header = vec!["Name", "Creation Time", "State"];
    if a.flag("parent") {
        header.push("Parent");
    }
    let mut t = Table::new(&header);
    for s in &snaps {
        let mut row = vec![
            s.def.name.clone(),
            local_time(s.def.creation_time),
            state_word(&s.def.state).into(),
        ];
        if a.flag("parent") {
            row.push(s.def.parent.clone().unwrap_or_default());
        }
        t.row(row);
    }
    let quiet = sess.settings.quiet;
    sess.print(&t.render(quiet));
    Ok(())
}

fn current(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let (snaps, current) = sess.conn()?.snapshots(&rec.def.uuid)?;
    let Some(name) = current else {
        return Err(Failure::msg(
            "Domain snapshot not found: the domain does not have a current snapshot".to_string(),
        ));
    };
    if a.flag("name") {
        sess.print(&name);
        return Ok(());
    }
    let snap = snaps
        .into_iter()
        .find(|s| s.def.name == name)
        .ok_or_else(|| Failure::msg("snapshot vanished"))?;
    let domain = virtwasm_host::xml::format_domain(
        &virtwasm_host::xml::ParsedDomain {
            def: snap.domain.clone(),
            extras: rec.extras,
        },
        &Default::default(),
    );
    let mut xml = String::from("<domainsnapshot>\n");
    xml.push_str(&format!("  <name>{}</name>\n", escape(&snap.def.name)));
    if let Some(d) = &snap.def.description {
        xml.push_str(&format!("  <description>{}</description>\n", escape(d)));
    }
    xml.push_str(&format!(
        "  <state>{}</state>\n",
        state_word(&snap.def.state)
    ));
    if let Some(p) = &snap.def.parent {
        xml.push_str(&format!(
            "  <parent>\n    <name>{}</name>\n  </parent>\n",
            escape(p)
        ));
    }
    xml.push_str(&format!(
        "  <creationTime>{}</creationTime>\n",
        snap.def.creation_time
    ));
    // Internal snapshots: memory too when the guest ran, and every disk.
    let memory = if matches!(snap.def.state, DomainState::Shutoff(_)) {
        "no"
    } else {
        "internal"
    };
    xml.push_str(&format!("  <memory snapshot='{memory}'/>\n"));
    if !snap.domain.disks.is_empty() {
        xml.push_str("  <disks>\n");
        for d in &snap.domain.disks {
            xml.push_str(&format!(
                "    <disk name='{}' snapshot='internal'/>\n",
                escape(&d.target_dev)
            ));
        }
        xml.push_str("  </disks>\n");
    }
    for line in domain.lines() {
        xml.push_str("  ");
        xml.push_str(line);
        xml.push('\n');
    }
    xml.push_str("</domainsnapshot>\n");
    sess.print(&xml);
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn snapshot_name(sess: &mut Session, a: &Args, uuid: &str) -> Result<String, Failure> {
    if let Some(n) = a.get("snapshotname") {
        return Ok(n.to_string());
    }
    if a.flag("current") {
        let (_, current) = sess.conn()?.snapshots(uuid)?;
        return current.ok_or_else(|| {
            Failure::msg("Domain snapshot not found: the domain does not have a current snapshot")
        });
    }
    Err(Failure::msg("--snapshotname or --current is required"))
}

fn revert(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let name = snapshot_name(sess, a, &rec.def.uuid)?;
    sess.conn()?.snapshot_revert(&rec.def.uuid, &name)?;
    sess.extra(&format!("Domain snapshot {name} reverted\n"));
    Ok(())
}

fn delete(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let name = snapshot_name(sess, a, &rec.def.uuid)?;
    sess.conn()?.snapshot_delete(&rec.def.uuid, &name)?;
    sess.extra(&format!("Domain snapshot {name} deleted\n"));
    Ok(())
}
