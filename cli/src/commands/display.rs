//! Where a running guest's graphical display listens: virsh's `vncdisplay` and `domdisplay`,
//! read from the live definition (whose automatic ports the host filled in at start).

use virtwasm_host::bindings::types::Graphics;

use super::domain::lookup;
use super::{Args, Command, Failure, Outcome, arg, flag, value};
use crate::session::Session;

/// VNC's display `:0` is TCP port 5900.
const VNC_FIRST_PORT: i32 = 5900;

/// The commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "vncdisplay",
        group: "Domain Monitoring",
        help: "vnc display",
        opts: &[arg("domain", "domain name, id or uuid")],
        run: vncdisplay,
    },
    Command {
        name: "domdisplay",
        group: "Domain Monitoring",
        help: "domain display connection URI",
        opts: &[
            arg("domain", "domain name, id or uuid"),
            flag(
                "include-password",
                "includes the password into the connection URI if available",
            ),
            value(
                "type",
                "select particular graphical display (e.g. \"vnc\", \"spice\", \"rdp\", \"dbus\")",
            ),
            flag("all", "show all possible graphical displays"),
        ],
        run: domdisplay,
    },
];

/// The displays of a running domain; virsh's error for one that is not running.
fn displays(sess: &mut Session, key: &str) -> Result<Vec<Graphics>, Failure> {
    let rec = lookup(sess, key)?;
    if !rec.is_active() {
        return Err(Failure::msg("Domain is not running"));
    }
    Ok(rec.live.unwrap_or(rec.def).graphics)
}

/// Whether `listen` is a wildcard address (or absent): every address of the host.
fn wildcard(listen: Option<&str>) -> bool {
    listen.is_none_or(|l| {
        l.parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_unspecified())
    })
}

fn vncdisplay(sess: &mut Session, a: &Args) -> Outcome {
    let all = displays(sess, a.req("domain"))?;
    let vnc = all
        .iter()
        .find(|g| g.graphics_type == "vnc" && g.port.is_some_and(|p| p > 0))
        .ok_or_else(|| Failure::msg("Failed to get VNC port. Is this domain using VNC?"))?;
    let port = vnc.port.unwrap_or_default();
    // As virsh: IPv4's wildcard prints as nothing, any other address as written (IPv6's
    // wildcard too, unbracketed: `:::4`).
    let listen = vnc.listen.as_deref().filter(|l| *l != "0.0.0.0");
    sess.print(&format!(
        "{}:{}\n",
        listen.unwrap_or(""),
        port - VNC_FIRST_PORT
    ));
    Ok(())
}

/// A display's URI as virsh writes it: `vnc://HOST:DISPLAY`, `spice://HOST:PORT`, an IPv6
/// address in brackets, and for a wildcard address the host this connection reaches
/// (`server`: the connection URI's host), or `localhost`.
fn display_uri(g: &Graphics, server: Option<&str>) -> Option<String> {
    let port = g.port.filter(|p| *p > 0)?;
    let listen = if wildcard(g.listen.as_deref()) {
        server
    } else {
        g.listen.as_deref()
    };
    let host = match listen {
        None => "localhost".to_string(),
        Some(l) if l.contains(':') => format!("[{l}]"),
        Some(l) => l.to_string(),
    };
    let shown = if g.graphics_type == "vnc" {
        port - VNC_FIRST_PORT
    } else {
        port
    };
    Some(format!("{}://{host}:{shown}", g.graphics_type))
}

fn domdisplay(sess: &mut Session, a: &Args) -> Outcome {
    let all = displays(sess, a.req("domain"))?;
    let server = virtwasm_host::uri::ConnectUri::parse(&sess.settings.uri)
        .ok()
        .and_then(|u| u.host);
    let wanted = a.get("type");
    // virsh's order: VNC, then SPICE (then kinds this model has no ports for).
    let mut uris = ["vnc", "spice"]
        .iter()
        .filter(|t| wanted.is_none_or(|w| w == **t))
        .flat_map(|t| all.iter().filter(move |g| g.graphics_type == *t))
        .filter_map(|g| display_uri(g, server.as_deref()));
    let lines: Vec<String> = if a.flag("all") {
        uris.collect()
    } else {
        uris.next().into_iter().collect()
    };
    if lines.is_empty() {
        return Err(Failure::msg(match wanted {
            Some(t) => format!("No graphical display with type '{t}' found"),
            None => "No graphical display found".to_string(),
        }));
    }
    // As virsh: one URI is followed only by the command's blank line (so no blank line shows);
    // with --all each has its own line break, then the blank line.
    if a.flag("all") {
        for l in lines {
            sess.print(&format!("{l}\n"));
        }
    } else {
        sess.print(&lines[0]);
    }
    Ok(())
}
