//! Save, restore and managed save.

use super::domain::lookup;
use super::{Args, Command, Failure, Outcome, arg, flag};
use crate::session::Session;

/// The commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "save",
        group: "Domain Management",
        help: "save a domain state to a file",
        opts: &[
            arg("domain", "domain name, id or uuid"),
            arg("file", "where to save the data"),
            flag("bypass-cache", "avoid file system cache when saving"),
            flag("running", "set domain to be running on restore"),
            flag("paused", "set domain to be paused on restore"),
            flag("verbose", "display the progress of save"),
        ],
        run: save,
    },
    Command {
        name: "restore",
        group: "Domain Management",
        help: "restore a domain from a saved state in a file",
        opts: &[
            arg("file", "the state to restore"),
            flag("bypass-cache", "avoid file system cache when restoring"),
            flag("running", "restore domain into running state"),
            flag("paused", "restore domain into paused state"),
        ],
        run: restore,
    },
    Command {
        name: "managedsave",
        group: "Domain Management",
        help: "managed save of a domain state",
        opts: &[
            arg("domain", "domain name, id or uuid"),
            flag("bypass-cache", "avoid file system cache when saving"),
            flag("running", "set domain to be running on next start"),
            flag("paused", "set domain to be paused on next start"),
            flag("verbose", "display the progress of save"),
        ],
        run: managedsave,
    },
    Command {
        name: "managedsave-remove",
        group: "Domain Management",
        help: "Remove managed save of a domain",
        opts: &[arg("domain", "domain name, id or uuid")],
        run: managedsave_remove,
    },
];

fn save(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let file = a.req("file");
    match sess.conn()?.save(&rec.def.uuid, std::path::Path::new(file)) {
        Ok(()) => {
            sess.extra(&format!("\nDomain '{}' saved to {file}\n", rec.def.name));
            Ok(())
        }
        Err(e) => Err(Failure(vec![
            format!("Failed to save domain '{}' to {file}", rec.def.name),
            e.message,
        ])),
    }
}

fn restore(sess: &mut Session, a: &Args) -> Outcome {
    let file = a.req("file");
    let paused = a.flag("paused");
    match sess.conn()?.restore(std::path::Path::new(file), paused) {
        Ok(_) => {
            sess.extra(&format!("Domain restored from {file}\n"));
            Ok(())
        }
        Err(e) => Err(Failure(vec![
            format!("Failed to restore domain from {file}"),
            e.message,
        ])),
    }
}

fn managedsave(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    match sess.conn()?.managed_save(&rec.def.uuid) {
        Ok(name) => {
            sess.extra(&format!("\nDomain '{name}' state saved by libvirt\n"));
            Ok(())
        }
        Err(e) => Err(Failure(vec![
            format!("Failed to save domain '{}' state", rec.def.name),
            e.message,
        ])),
    }
}

fn managedsave_remove(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let name = rec.def.name.clone();
    match sess.conn()?.managed_save_remove(&rec.def.uuid) {
        // virsh ends these two lines without a newline; its blank line after the command
        // completes them.
        Ok(true) => sess.extra(&format!("Removed managedsave image for domain '{name}'")),
        Ok(false) => sess.extra(&format!(
            "Domain '{name}' has no manage save image; removal skipped"
        )),
        Err(e) => {
            return Err(Failure(vec![
                format!("Failed to remove managed save image for domain '{name}'"),
                e.message,
            ]));
        }
    }
    Ok(())
}
