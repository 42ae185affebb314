//! `edit`, `capabilities`, `domcapabilities` and `migrate`.

use super::domain::lookup;
use super::{Args, Command, Failure, Outcome, arg, flag, optional_arg};
use crate::session::Session;

/// The commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "edit",
        group: "Domain Management",
        help: "edit XML configuration for a domain",
        opts: &[
            arg("domain", "domain name, id or uuid"),
            flag(
                "skip-validate",
                "skip validation of the XML against the schema",
            ),
        ],
        run: edit,
    },
    Command {
        name: "capabilities",
        group: "Host and Hypervisor",
        help: "capabilities",
        opts: &[flag("xpath", "print the result of the XPATH expression")],
        run: capabilities,
    },
    Command {
        name: "domcapabilities",
        group: "Host and Hypervisor",
        help: "domain capabilities",
        opts: &[
            optional_arg("virttype", "virtualization type (/domain/@type)"),
            super::value(
                "emulatorbin",
                "path to emulator binary (/domain/devices/emulator)",
            ),
            super::value("arch", "domain architecture (/domain/os/type/@arch)"),
            super::value("machine", "machine type (/domain/os/type/@machine)"),
        ],
        run: domcapabilities,
    },
    Command {
        name: "migrate",
        group: "Domain Management",
        help: "migrate domain to another host",
        opts: &[
            arg("domain", "domain name, id or uuid"),
            arg("desturi", "connection URI of the destination host"),
            flag("live", "live migration"),
            flag("p2p", "peer-2-peer migration"),
            flag("offline", "offline migration"),
            flag("persistent", "persist VM on destination"),
            flag("undefinesource", "undefine VM on source"),
            flag("verbose", "display the progress of migration"),
            super::value("bandwidth", "migration bandwidth limit in MiB/s"),
        ],
        run: migrate,
    },
];

/// Runs `$VISUAL`/`$EDITOR` (default `vi`) on `path` through the shell, as virsh does. The
/// path goes in as `$1`, never pasted into the command line: a domain name is data.
fn run_editor(path: &std::path::Path) -> Result<(), Failure> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .map_err(|e| Failure::msg(format!("cannot run the editor '{editor}': {e}")))?;
    if !status.success() {
        let code = status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "signal".into());
        return Err(Failure::msg(format!(
            "internal error: Child process (sh -c '{editor} {}') unexpected exit status {code}",
            path.display()
        )));
    }
    Ok(())
}

/// A new 0600 file in a fresh 0700 directory: nobody else can read the XML or plant a
/// symlink where it is written.
fn private_file(name: &str) -> Result<(std::path::PathBuf, std::path::PathBuf), Failure> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("virtwasm-edit-{}-{attempt}", std::process::id()));
        if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_err() {
            continue;
        }
        // The domain name only names the file, inside our own directory.
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{safe}.xml"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Failure::msg(format!("cannot create '{}': {e}", path.display())))?;
        return Ok((dir, path));
    }
    Err(Failure::msg("cannot create a private temporary directory"))
}

fn edit(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let original = sess.conn()?.domain_xml(&rec.def.uuid, true)?;
    let (dir, path) = private_file(&rec.def.name)?;
    std::fs::write(&path, &original)
        .map_err(|e| Failure::msg(format!("cannot write '{}': {e}", path.display())))?;
    run_editor(&path)?;
    let edited = std::fs::read_to_string(&path)
        .map_err(|e| Failure::msg(format!("cannot read '{}': {e}", path.display())))?;
    if edited == original {
        let _ = std::fs::remove_dir_all(&dir);
        sess.extra(&format!(
            "Domain '{}' XML configuration not changed.\n",
            rec.def.name
        ));
        return Ok(());
    }
    match sess.conn()?.define_xml(&edited, false) {
        Ok((def, _)) => {
            let _ = std::fs::remove_dir_all(&dir);
            sess.extra(&format!(
                "Domain '{}' XML configuration edited.\n",
                def.name
            ));
            Ok(())
        }
        // The edit is kept, so the work is not lost: fix it and `define` it.
        Err(e) => Err(Failure(vec![
            e.message,
            format!("the edited XML is kept in {}", path.display()),
        ])),
    }
}

fn capabilities(sess: &mut Session, _a: &Args) -> Outcome {
    let conn = sess.conn()?;
    let caps = conn.capabilities()?;
    let node = conn.node_info()?;
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('\'', "&apos;")
    };
    let mut x = String::from("<capabilities>\n\n  <host>\n    <cpu>\n");
    x.push_str(&format!("      <arch>{}</arch>\n", esc(&caps.host_arch)));
    x.push_str(&format!(
        "      <topology sockets='{}' dies='1' cores='{}' threads='{}'/>\n    </cpu>\n",
        node.sockets, node.cores, node.threads
    ));
    if let Some(model) = caps.security_model.as_ref().filter(|m| !m.is_empty()) {
        x.push_str(&format!(
            "    <secmodel>\n      <model>{}</model>\n      <doi>{}</doi>\n    </secmodel>\n",
            esc(model),
            esc(caps.security_doi.as_deref().unwrap_or(""))
        ));
    }
    x.push_str("  </host>\n\n");
    for g in &caps.guests {
        x.push_str(&format!(
            "  <guest>\n    <os_type>{}</os_type>\n    <arch name='{}'>\n",
            esc(&g.os_type),
            esc(&g.arch)
        ));
        if let Some(e) = &g.emulator {
            x.push_str(&format!("      <emulator>{}</emulator>\n", esc(e)));
        }
        for m in &g.machines {
            x.push_str(&format!("      <machine>{}</machine>\n", esc(m)));
        }
        for t in &g.domain_types {
            x.push_str(&format!("      <domain type='{}'/>\n", esc(t)));
        }
        x.push_str("    </arch>\n  </guest>\n\n");
    }
    x.push_str("</capabilities>\n");
    sess.print(&x);
    Ok(())
}

fn domcapabilities(_sess: &mut Session, _a: &Args) -> Outcome {
    // No driver reports per-emulator domain capabilities yet (the QEMU plugin will).
    Err(Failure(vec![
        "failed to get emulator capabilities".into(),
        "this function is not supported by the connection driver: virConnectGetDomainCapabilities"
            .into(),
    ]))
}

fn migrate(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let dest = a.req("desturi");
    // Always peer to peer: the source's host talks to the destination's daemon itself, so
    // --p2p and --live (a running domain migrates live) are accepted for virsh's scripts.
    let bandwidth = match a.get("bandwidth") {
        None => None,
        Some(b) => Some(b.parse::<u64>().map_err(|_| {
            Failure::msg(format!(
                "Numeric value '{b}' for <bandwidth> option is malformed or out of range"
            ))
        })?),
    };
    sess.conn()?
        .migrate(&rec.def.uuid, dest, a.flag("offline"), bandwidth)
        .map_err(|e| {
            Failure(vec![
                format!("Failed to migrate domain '{}' to {dest}", rec.def.name),
                e.message,
            ])
        })?;
    if a.flag("verbose") {
        sess.extra("Migration: [100 %]\n");
    }
    Ok(())
}
