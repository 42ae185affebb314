//! Network commands.

use super::{Args, Command, Failure, Outcome, arg, flag};
use crate::session::Session;
use crate::table::Table;

/// The network commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "net-list",
        group: "Networking",
        help: "list networks",
        opts: &[
            flag("inactive", "list inactive networks"),
            flag("all", "list inactive & active networks"),
            flag("persistent", "list persistent networks"),
            flag("transient", "list transient networks"),
            flag("autostart", "list networks with autostart enabled"),
            flag("no-autostart", "list networks with autostart disabled"),
            flag("name", "list network names only"),
            flag("uuid", "list uuid's only"),
            flag("json", "print as JSON"),
        ],
        run: net_list,
    },
    Command {
        name: "net-info",
        group: "Networking",
        help: "network information",
        opts: &[
            arg("network", "network name or uuid"),
            flag("json", "print as JSON"),
        ],
        run: net_info,
    },
];

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn net_list(sess: &mut Session, a: &Args) -> Outcome {
    let nets: Vec<_> = sess
        .conn()?
        .list_networks()
        .into_iter()
        .filter(|n| {
            let shown = if a.flag("all") {
                true
            } else if a.flag("inactive") {
                !n.active
            } else {
                n.active
            };
            // Each filter flag, when given, keeps only the objects that have the property.
            let want = |flag: &str, has: bool| !a.flag(flag) || has;
            shown
                && want("persistent", n.persistent)
                && want("transient", !n.persistent)
                && want("autostart", n.autostart)
                && want("no-autostart", !n.autostart)
        })
        .collect();
    if a.flag("json") {
        return sess.print_json(&nets);
    }
    if a.flag("name") || a.flag("uuid") {
        let mut out = String::new();
        for n in &nets {
            let mut parts = Vec::new();
            if a.flag("uuid") {
                parts.push(n.def.uuid.clone());
            }
            if a.flag("name") {
                parts.push(n.def.name.clone());
            }
            out.push_str(&format!("{}\n", parts.join(" ")));
        }
        sess.print(&out);
        return Ok(());
    }
    let mut t = Table::new(&["Name", "State", "Autostart", "Persistent"]);
    for n in &nets {
        t.row(vec![
            n.def.name.clone(),
            if n.active { "active" } else { "inactive" }.into(),
            yes_no(n.autostart),
            yes_no(n.persistent),
        ]);
    }
    let quiet = sess.settings.quiet;
    sess.print(&t.render(quiet));
    Ok(())
}

fn net_info(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("network");
    let n = sess
        .conn()?
        .network(key)
        .map_err(|e| Failure(vec![format!("failed to get network '{key}'"), e.message]))?;
    if a.flag("json") {
        return sess.print_json(&n);
    }
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<15} {v}\n"));
    line("Name:", n.def.name.clone());
    line("UUID:", n.def.uuid.clone());
    line("Active:", yes_no(n.active));
    line("Persistent:", yes_no(n.persistent));
    line("Autostart:", yes_no(n.autostart));
    if let Some(b) = &n.def.bridge {
        line("Bridge:", b.clone());
    }
    sess.print(&out);
    Ok(())
}
