//! Event, statistics and console commands.

use std::time::{Duration, Instant};

use virtwasm_host::bindings::types::DomainState;
use virtwasm_host::events::Event;

use super::domain::lookup;
use super::{Args, Command, Failure, Outcome, arg, flag, optional_arg, value};
use crate::session::Session;

/// The commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "event",
        group: "Domain Monitoring",
        help: "Domain Events",
        opts: &[
            optional_arg("domain", "filter by domain name, id or uuid"),
            value("event", "which event type to wait for"),
            flag("all", "wait for all events instead of just one type"),
            flag(
                "loop",
                "loop until timeout or interrupt, rather than one-shot",
            ),
            value("timeout", "timeout seconds"),
            flag("list", "list valid event types"),
            flag("timestamp", "show timestamp for each printed event"),
        ],
        run: event,
    },
    Command {
        name: "domstats",
        group: "Domain Monitoring",
        help: "get statistics about one or multiple domains",
        opts: &[
            optional_arg("domain", "list of domains to get stats for"),
            flag("state", "report domain state"),
            flag("json", "print as JSON"),
        ],
        run: domstats,
    },
    Command {
        name: "domifaddr",
        group: "Domain Monitoring",
        help: "Get network interfaces' addresses for a running domain",
        opts: &[
            arg("domain", "domain name, id or uuid"),
            value("interface", "network interface name"),
            flag("full", "always display names and MACs of interfaces"),
            value("source", "address source: 'lease', 'agent', or 'arp'"),
            flag("json", "print as JSON"),
        ],
        run: domifaddr,
    },
    Command {
        name: "console",
        group: "Domain Management",
        help: "connect to the guest console",
        opts: &[
            arg("domain", "domain name, id or uuid"),
            value("devname", "character device name"),
            flag(
                "force",
                "force console connection (disconnect already connected sessions)",
            ),
            flag("safe", "only connect if safe console handling is supported"),
        ],
        run: console,
    },
];

fn event(sess: &mut Session, a: &Args) -> Outcome {
    if a.flag("list") {
        sess.print("lifecycle\n");
        return Ok(());
    }
    if !a.flag("all") && a.get("event").is_none() {
        return Err(Failure::msg(
            "one of --list, --all, or --event <type> is required",
        ));
    }
    if let Some(e) = a.get("event").filter(|e| *e != "lifecycle") {
        return Err(Failure::msg(format!("unknown event type {e}")));
    }
    let timeout = match a.get("timeout") {
        Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
            Failure::msg(format!(
                "Numeric value '{t}' for <timeout> option is malformed or out of range"
            ))
        })?)),
        None => None,
    };
    let only = match a.get("domain") {
        Some(d) => Some(lookup(sess, d)?.def.uuid),
        None => None,
    };
    let rx = sess.conn()?.events()?;
    let started = Instant::now();
    let mut count = 0u32;
    loop {
        let wait = match timeout {
            Some(t) => match t.checked_sub(started.elapsed()) {
                Some(left) => left,
                None => break,
            },
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Event::Domain { name, uuid, event }) => {
                if only.as_ref().is_some_and(|u| *u != uuid) {
                    continue;
                }
                count += 1;
                let stamp = if a.flag("timestamp") {
                    format!("{}: ", super::snapshot_time(now_secs()))
                } else {
                    String::new()
                };
                sess.print(&format!(
                    "{stamp}event 'lifecycle' for domain '{name}': {}\n",
                    event.describe()
                ));
                sess.flush();
                if !a.flag("loop") {
                    break;
                }
            }
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if timeout.is_some() => {
                sess.print("event loop timed out\n");
                break;
            }
            Err(_) => {}
        }
    }
    sess.print(&format!("events received: {count}\n"));
    Ok(())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// libvirt's numbers for a state and its reason (`state.state`, `state.reason`).
fn state_numbers(s: &DomainState) -> (u32, u32) {
    // The reason enums list libvirt's reasons in libvirt's order, so their index is its code.
    match s {
        DomainState::Nostate(r) => (0, *r as u32),
        DomainState::Running(r) => (1, *r as u32),
        DomainState::Blocked(r) => (2, *r as u32),
        DomainState::Paused(r) => (3, *r as u32),
        DomainState::Shutdown(r) => (4, *r as u32),
        DomainState::Shutoff(r) => (5, *r as u32),
        DomainState::Crashed(r) => (6, *r as u32),
        DomainState::Pmsuspended(r) => (7, *r as u32),
    }
}

fn domstats(sess: &mut Session, a: &Args) -> Outcome {
    let records = match a.get("domain") {
        Some(d) => vec![lookup(sess, d)?],
        None => {
            let conn = sess.conn()?;
            conn.list_domains()?
                .iter()
                .filter_map(|s| conn.domain(&s.uuid).ok())
                .collect()
        }
    };
    let mut all = Vec::new();
    for rec in records {
        // The state group is the host's own knowledge; the driver adds its counters.
        let (state, reason) = state_numbers(&rec.state());
        let mut stats: Vec<(String, String)> = vec![
            ("state.state".into(), state.to_string()),
            ("state.reason".into(), reason.to_string()),
        ];
        if !a.flag("state")
            && let Ok(extra) = sess.conn()?.domain_stats(&rec.def.uuid)
        {
            stats.extend(extra);
        }
        all.push((rec.def.name.clone(), stats));
    }
    if a.flag("json") {
        let v: Vec<_> = all
            .iter()
            .map(|(name, stats)| serde_json::json!({"name": name, "stats": stats.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()}))
            .collect();
        return sess.print_json(&v);
    }
    let mut out = String::new();
    for (name, stats) in &all {
        out.push_str(&format!("Domain: '{name}'\n"));
        for (k, v) in stats {
            out.push_str(&format!("  {k}={v}\n"));
        }
        out.push('\n');
    }
    // virsh's blank line after the command already ends the last block.
    out.pop();
    sess.print(&out);
    Ok(())
}

fn console(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    crate::console::run(sess, &rec.def.uuid, &rec.def.name, a.get("devname"))
}

fn domifaddr(sess: &mut Session, a: &Args) -> Outcome {
    let source = a.get("source").unwrap_or("lease");
    if !["lease", "agent", "arp"].contains(&source) {
        return Err(Failure::msg(format!("Unknown data source '{source}'")));
    }
    let rec = lookup(sess, a.req("domain"))?;
    let ifaces = sess
        .conn()?
        .interface_addresses(&rec.def.uuid, source)
        .map_err(|e| {
            Failure(vec![
                "Failed to query for interfaces addresses".into(),
                e.message,
            ])
        })?;
    let ifaces: Vec<_> = ifaces
        .into_iter()
        .filter(|i| a.get("interface").is_none_or(|n| n == i.name))
        .collect();
    if a.flag("json") {
        return sess.print_json(&ifaces);
    }
    // virsh prints this table with fixed widths, not its table renderer.
    let mut out = format!(
        " {:<10} {:<17}    {:<12} {}\n{}\n",
        "Name",
        "MAC address",
        "Protocol",
        "Address",
        "-".repeat(79)
    );
    for i in &ifaces {
        for (n, addr) in i.addresses.iter().enumerate() {
            let (name, mac) = if n == 0 || a.flag("full") {
                (i.name.clone(), i.mac.clone().unwrap_or_else(|| "-".into()))
            } else {
                ("-".to_string(), "-".to_string())
            };
            out.push_str(&format!(
                " {:<10} {:<17}    {:<12} {}/{}\n",
                name, mac, addr.family, addr.address, addr.prefix
            ));
        }
    }
    sess.print(&out);
    Ok(())
}
