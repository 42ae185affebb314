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
        .list_networks()?
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

/// Network lifecycle commands.
pub static LIFECYCLE: &[Command] = &[
    Command {
        name: "net-update",
        group: "Networking",
        help: "update parts of an existing network's configuration",
        opts: &[
            arg("network", "network name or uuid"),
            arg(
                "command",
                "type of update (add-first, add-last (add), delete, or modify)",
            ),
            arg(
                "section",
                "which section of network configuration to update",
            ),
            arg(
                "xml",
                "name of file containing xml (or, if it starts with '<', the complete text of the xml element to add/modify, or to be matched for search)",
            ),
            super::value("parent-index", "which parent object to search through"),
            flag("config", "affect next network startup"),
            flag("live", "affect running network"),
            flag("current", "affect current state of network"),
        ],
        run: net_update,
    },
    Command {
        name: "net-dumpxml",
        group: "Networking",
        help: "network information in XML",
        opts: &[
            arg("network", "network name or uuid"),
            flag("inactive", "show inactive defined XML"),
        ],
        run: net_dumpxml,
    },
    Command {
        name: "net-define",
        group: "Networking",
        help: "define an inactive persistent virtual network or modify an existing persistent one from an XML file",
        opts: &[
            arg("file", "file containing an XML network description"),
            flag("validate", "validate the XML against the schema"),
        ],
        run: net_define,
    },
    Command {
        name: "net-create",
        group: "Networking",
        help: "create a network from an XML file",
        opts: &[
            arg("file", "file containing an XML network description"),
            flag("validate", "validate the XML against the schema"),
        ],
        run: net_create,
    },
    Command {
        name: "net-start",
        group: "Networking",
        help: "start a (previously defined) inactive network",
        opts: &[arg("network", "network name or uuid")],
        run: net_start,
    },
    Command {
        name: "net-destroy",
        group: "Networking",
        help: "destroy (stop) a network",
        opts: &[arg("network", "network name or uuid")],
        run: net_destroy,
    },
    Command {
        name: "net-undefine",
        group: "Networking",
        help: "undefine a persistent network",
        opts: &[arg("network", "network name or uuid")],
        run: net_undefine,
    },
    Command {
        name: "net-autostart",
        group: "Networking",
        help: "autostart a network",
        opts: &[
            arg("network", "network name or uuid"),
            flag("disable", "disable autostarting"),
        ],
        run: net_autostart,
    },
    Command {
        name: "net-dhcp-leases",
        group: "Networking",
        help: "print lease info for a given network",
        opts: &[
            arg("network", "network name or uuid"),
            super::value("mac", "MAC address"),
            flag("json", "print as JSON"),
        ],
        run: net_dhcp_leases,
    },
];

fn lookup(sess: &mut Session, key: &str) -> Result<String, Failure> {
    sess.conn()?
        .network(key)
        .map(|n| n.def.uuid)
        .map_err(|e| Failure(vec![format!("failed to get network '{key}'"), e.message]))
}

fn net_dumpxml(sess: &mut Session, a: &Args) -> Outcome {
    let uuid = lookup(sess, a.req("network"))?;
    let xml = sess.conn()?.network_xml(&uuid, a.flag("inactive"))?;
    sess.print(&xml);
    Ok(())
}

fn net_define(sess: &mut Session, a: &Args) -> Outcome {
    super::domain::object_from_file(
        sess,
        a,
        ("define", "network", "Network", "defined"),
        |c, xml, validate| c.network_define_xml(xml, validate).map(|d| d.name),
    )
}

fn net_create(sess: &mut Session, a: &Args) -> Outcome {
    super::domain::object_from_file(
        sess,
        a,
        ("create", "network", "Network", "created"),
        |c, xml, validate| c.network_create_xml(xml, validate).map(|d| d.name),
    )
}

fn net_verb(
    sess: &mut Session,
    a: &Args,
    what: &str,
    done: &str,
    f: impl FnOnce(&virtwasm_api::Client, &str) -> virtwasm_host::Result<String>,
) -> Outcome {
    let key = a.req("network");
    let uuid = lookup(sess, key)?;
    let name = f(sess.conn()?, &uuid)
        .map_err(|e| Failure(vec![format!("Failed to {what} network {key}"), e.message]))?;
    sess.extra(&format!("Network {name} {done}\n"));
    Ok(())
}

fn net_start(sess: &mut Session, a: &Args) -> Outcome {
    net_verb(sess, a, "start", "started", |c, k| c.network_start(k))
}

fn net_destroy(sess: &mut Session, a: &Args) -> Outcome {
    net_verb(sess, a, "destroy", "destroyed", |c, k| c.network_destroy(k))
}

fn net_undefine(sess: &mut Session, a: &Args) -> Outcome {
    net_verb(sess, a, "undefine", "has been undefined", |c, k| {
        c.network_undefine(k)
    })
}

fn net_autostart(sess: &mut Session, a: &Args) -> Outcome {
    let on = !a.flag("disable");
    let (what, done) = if on {
        ("mark as autostarted", "marked as autostarted")
    } else {
        ("unmark as autostarted", "unmarked as autostarted")
    };
    net_verb(sess, a, what, done, |c, k| c.network_set_autostart(k, on))
}

fn net_dhcp_leases(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("network");
    let uuid = lookup(sess, key)?;
    let leases = sess.conn()?.network_dhcp_leases(&uuid).map_err(|e| {
        Failure(vec![
            format!("Failed to get leases info for {key}"),
            e.message,
        ])
    })?;
    let leases: Vec<_> = leases
        .into_iter()
        .filter(|l| a.get("mac").is_none_or(|m| m.eq_ignore_ascii_case(&l.mac)))
        .collect();
    if a.flag("json") {
        return sess.print_json(&leases);
    }
    let mut t = Table::new(&[
        "Expiry Time",
        "MAC address",
        "Protocol",
        "IP address",
        "Hostname",
        "Client ID or DUID",
    ]);
    for l in &leases {
        let proto = if l.ip.contains(':') { "ipv6" } else { "ipv4" };
        t.row(vec![
            crate::commands::snapshot_time(l.expiry_time),
            l.mac.clone(),
            proto.into(),
            format!("{}/{}", l.ip, l.prefix),
            l.hostname.clone().unwrap_or_else(|| "-".into()),
            l.client_id.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let quiet = sess.settings.quiet;
    sess.print(&t.render(quiet));
    Ok(())
}

fn net_update(sess: &mut Session, a: &Args) -> Outcome {
    let key = a.req("network");
    let uuid = lookup(sess, key)?;
    let xml_arg = a.req("xml");
    let snippet = if xml_arg.trim_start().starts_with('<') {
        xml_arg.to_string()
    } else {
        super::domain::read_file(xml_arg)?
    };
    let index = match a.get("parent-index") {
        Some(i) => i.parse::<usize>().map_err(|_| {
            Failure::msg(format!(
                "Numeric value '{i}' for <parent-index> option is malformed or out of range"
            ))
        })?,
        None => 0,
    };
    const SECTIONS: &[&str] = &[
        "bridge",
        "domain",
        "ip",
        "ip-dhcp-host",
        "ip-dhcp-range",
        "forward",
        "forward-interface",
        "forward-pf",
        "portgroup",
        "dns-host",
        "dns-txt",
        "dns-srv",
    ];
    let section = a.req("section");
    if !SECTIONS.contains(&section) {
        return Err(Failure::msg(format!(
            "unrecognized section name '{section}'"
        )));
    }
    let conn = sess.conn()?;
    let active = conn.network(&uuid).map(|n| n.active).unwrap_or(false);
    let (live, config) = if a.flag("live") || a.flag("config") {
        (a.flag("live"), a.flag("config"))
    } else {
        (active, !active)
    };
    let name = conn
        .network_update(
            &uuid,
            a.req("command"),
            section,
            &snippet,
            index,
            live,
            config,
        )
        .map_err(|e| Failure(vec![format!("Failed to update network {key}"), e.message]))?;
    let what = match (live, config) {
        (true, true) => "live state and persistent config",
        (true, false) => "live state",
        _ => "persistent config",
    };
    // virsh ends this line without a newline; its blank line after the command ends it.
    sess.extra(&format!("Updated network {name} {what}"));
    Ok(())
}
