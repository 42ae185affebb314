//! Domain commands: listing, information and the lifecycle verbs.

use virtwasm_host::bindings::types::{DomainState, ShutdownModes};
use virtwasm_host::domain::{DomainSummary, reason_name, state_name};

use super::{Args, Command, Failure, Outcome, arg, flag, value};
use crate::session::Session;
use crate::table::Table;

const DOMAIN: super::Opt = arg("domain", "domain name, id or uuid");

/// The domain commands.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "list",
        group: "Domain Monitoring",
        help: "list domains",
        opts: &[
            flag("inactive", "list inactive domains"),
            flag("all", "list inactive & active domains"),
            flag("transient", "list transient domains"),
            flag("persistent", "list persistent domains"),
            flag("with-snapshot", "list domains with existing snapshot"),
            flag("without-snapshot", "list domains without a snapshot"),
            flag("state-running", "list domains in running state"),
            flag("state-paused", "list domains in paused state"),
            flag("state-shutoff", "list domains in shutoff state"),
            flag("state-other", "list domains in other states"),
            flag("autostart", "list domains with autostart enabled"),
            flag("no-autostart", "list domains with autostart disabled"),
            flag("with-managed-save", "list domains with managed save state"),
            flag("without-managed-save", "list domains without managed save"),
            flag("uuid", "list uuid's only"),
            flag("name", "list domain names only"),
            flag("id", "list domain IDs only"),
            flag("table", "list table (default)"),
            flag(
                "managed-save",
                "mark inactive domains with managed save state",
            ),
            flag("title", "show domain title"),
            flag(
                "json",
                "print name, id, uuid, state and reason, memory and vCPUs as JSON",
            ),
        ],
        run: list,
    },
    Command {
        name: "dominfo",
        group: "Domain Monitoring",
        help: "domain information",
        opts: &[DOMAIN, flag("json", "print as JSON")],
        run: dominfo,
    },
    Command {
        name: "domstate",
        group: "Domain Monitoring",
        help: "domain state",
        opts: &[DOMAIN, flag("reason", "also print reason for the state")],
        run: domstate,
    },
    Command {
        name: "domid",
        group: "Domain Monitoring",
        help: "convert a domain name or UUID to domain id",
        opts: &[arg("domain", "domain name or uuid")],
        run: domid,
    },
    Command {
        name: "domname",
        group: "Domain Monitoring",
        help: "convert a domain id or UUID to domain name",
        opts: &[arg("domain", "domain id or uuid")],
        run: domname,
    },
    Command {
        name: "domuuid",
        group: "Domain Monitoring",
        help: "convert a domain name or id to domain UUID",
        opts: &[arg("domain", "domain id or name")],
        run: domuuid,
    },
    Command {
        name: "define",
        group: "Domain Management",
        help: "define (but don't start) a domain from an XML file",
        opts: &[
            arg("file", "file containing an XML domain description"),
            flag("validate", "validate the XML against the schema"),
        ],
        run: define,
    },
    Command {
        name: "create",
        group: "Domain Management",
        help: "create a domain from an XML file",
        opts: &[
            arg("file", "file containing an XML domain description"),
            flag("paused", "leave the guest paused after creation"),
            flag("validate", "validate the XML against the schema"),
        ],
        run: create,
    },
    Command {
        name: "dumpxml",
        group: "Domain Management",
        help: "domain information in XML",
        opts: &[
            DOMAIN,
            flag("inactive", "show inactive defined XML"),
            flag(
                "security-info",
                "include security sensitive information in XML dump",
            ),
            flag("update-cpu", "update guest CPU according to host CPU"),
            flag("migratable", "provide XML suitable for migrations"),
            value("xpath", "xpath expression to filter the XML document"),
            flag("wrap", "wrap xpath results in an common root element"),
        ],
        run: dumpxml,
    },
    Command {
        name: "undefine",
        group: "Domain Management",
        help: "undefine a domain",
        opts: &[
            DOMAIN,
            flag("managed-save", "remove domain managed state file"),
            flag(
                "snapshots-metadata",
                "remove all domain snapshot metadata (vm must be inactive)",
            ),
            flag(
                "remove-all-storage",
                "remove all associated storage volumes (use with caution)",
            ),
            flag("nvram", "remove nvram file"),
            flag("keep-nvram", "keep nvram file"),
        ],
        run: undefine,
    },
    Command {
        name: "start",
        group: "Domain Management",
        help: "start a (previously defined) inactive domain",
        opts: &[
            DOMAIN,
            flag("paused", "leave the guest paused after start"),
            flag("console", "attach to console after creation"),
            flag(
                "autodestroy",
                "automatically destroy the guest when virsh disconnects",
            ),
            flag("bypass-cache", "avoid file system cache when loading"),
            flag(
                "force-boot",
                "force fresh boot by discarding any managed save",
            ),
        ],
        run: start,
    },
    Command {
        name: "shutdown",
        group: "Domain Management",
        help: "gracefully shutdown a domain",
        opts: &[
            DOMAIN,
            value("mode", "shutdown mode: acpi|agent|initctl|signal|paravirt"),
        ],
        run: shutdown,
    },
    Command {
        name: "reboot",
        group: "Domain Management",
        help: "reboot a domain",
        opts: &[
            DOMAIN,
            value("mode", "shutdown mode: acpi|agent|initctl|signal|paravirt"),
        ],
        run: reboot,
    },
    Command {
        name: "reset",
        group: "Domain Management",
        help: "reset a domain",
        opts: &[DOMAIN],
        run: reset,
    },
    Command {
        name: "destroy",
        group: "Domain Management",
        help: "destroy (stop) a domain",
        opts: &[DOMAIN, flag("graceful", "terminate gracefully")],
        run: destroy,
    },
    Command {
        name: "suspend",
        group: "Domain Management",
        help: "suspend a domain",
        opts: &[DOMAIN],
        run: suspend,
    },
    Command {
        name: "resume",
        group: "Domain Management",
        help: "resume a domain",
        opts: &[DOMAIN],
        run: resume,
    },
    Command {
        name: "autostart",
        group: "Domain Management",
        help: "autostart a domain",
        opts: &[DOMAIN, flag("disable", "disable autostarting")],
        run: autostart,
    },
];

fn shown_state(s: &DomainSummary, managed_save_flag: bool) -> String {
    if managed_save_flag && s.managed_save && matches!(s.state, DomainState::Shutoff(_)) {
        "saved".into()
    } else {
        state_name(&s.state).to_string()
    }
}

fn list(sess: &mut Session, a: &Args) -> Outcome {
    if a.flag("table") && (a.flag("name") || a.flag("uuid") || a.flag("id")) {
        let other = if a.flag("name") {
            "--name"
        } else if a.flag("uuid") {
            "--uuid"
        } else {
            "--id"
        };
        return Err(Failure::msg(format!(
            "Options --table and {other} are mutually exclusive"
        )));
    }
    let conn = sess.conn()?;
    let all = conn.list_domains()?;
    let wanted_states_early = [
        "state-running",
        "state-paused",
        "state-shutoff",
        "state-other",
    ]
    .iter()
    .any(|f| a.flag(f));
    // A state filter picks from every domain, as in virsh.
    let active_only = !a.flag("all") && !a.flag("inactive") && !wanted_states_early;
    let wanted_states = [
        "state-running",
        "state-paused",
        "state-shutoff",
        "state-other",
    ]
    .iter()
    .any(|f| a.flag(f));
    let rows: Vec<DomainSummary> = all
        .into_iter()
        .filter(|d| {
            let active = d.id.is_some();
            if active_only && !active
                || (a.flag("inactive") || a.flag("state-shutoff")) && !a.flag("all") && active
            {
                return false;
            }
            if a.flag("transient") && d.persistent || a.flag("persistent") && !d.persistent {
                return false;
            }
            if a.flag("autostart") && !d.autostart || a.flag("no-autostart") && d.autostart {
                return false;
            }
            if a.flag("with-managed-save") && !d.managed_save
                || a.flag("without-managed-save") && d.managed_save
            {
                return false;
            }
            if a.flag("with-snapshot") {
                return false;
            }
            if wanted_states {
                let s = &d.state;
                let ok = a.flag("state-running") && matches!(s, DomainState::Running(_))
                    || a.flag("state-paused") && matches!(s, DomainState::Paused(_))
                    || a.flag("state-shutoff") && matches!(s, DomainState::Shutoff(_))
                    || a.flag("state-other")
                        && !matches!(
                            s,
                            DomainState::Running(_)
                                | DomainState::Paused(_)
                                | DomainState::Shutoff(_)
                        );
                if !ok {
                    return false;
                }
            }
            true
        })
        .collect();
    if a.flag("json") {
        let json: Vec<_> = rows
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name, "id": d.id, "uuid": d.uuid,
                    "state": state_name(&d.state), "reason": reason_name(&d.state),
                    "persistent": d.persistent, "autostart": d.autostart, "managed_save": d.managed_save,
                    "title": d.title, "memory_kib": d.memory_kib, "current_memory_kib": d.current_memory_kib, "vcpus": d.vcpus,
                })
            })
            .collect();
        return sess.print_json(&json);
    }
    let quiet = sess.settings.quiet;
    if a.flag("name") || a.flag("uuid") || a.flag("id") {
        let mut out = String::new();
        for d in &rows {
            if a.flag("id") && d.id.is_none() {
                continue;
            }
            let mut parts = Vec::new();
            if a.flag("id") {
                parts.push(d.id.map(|i| i.to_string()).unwrap_or_default());
            }
            if a.flag("uuid") {
                parts.push(d.uuid.clone());
            }
            if a.flag("name") {
                parts.push(d.name.clone());
            }
            out.push_str(&parts.join(" "));
            out.push('\n');
        }
        sess.print(&out);
        return Ok(());
    }
    let mut header = vec!["Id", "Name", "State"];
    if a.flag("title") {
        header.push("Title");
    }
    let mut t = Table::new(&header);
    for d in &rows {
        let mut row = vec![
            d.id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            d.name.clone(),
            shown_state(d, a.flag("managed-save")),
        ];
        if a.flag("title") {
            row.push(d.title.clone().unwrap_or_default());
        }
        t.row(row);
    }
    sess.print(&t.render(quiet));
    Ok(())
}

/// Resolves `<domain>` as virsh does, with its lookup error.
pub(crate) fn lookup(
    sess: &mut Session,
    key: &str,
) -> Result<virtwasm_host::state::DomainRecord, Failure> {
    sess.conn()?.domain(key).map_err(|e| match e.kind {
        virtwasm_host::ErrorKind::NotFound => Failure::msg(format!("failed to get domain '{key}'")),
        _ => Failure::from(e),
    })
}

fn dominfo(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let conn = sess.conn()?;
    let info = conn.domain_info(&rec.def.uuid)?;
    let caps = conn.capabilities().ok();
    let def = rec.live.as_ref().unwrap_or(&rec.def);
    if a.flag("json") {
        let v = serde_json::json!({
            "id": rec.id, "name": def.name, "uuid": def.uuid, "os_type": info.os_type,
            "state": state_name(&info.state), "reason": reason_name(&info.state), "vcpus": info.vcpus,
            "cpu_time_ns": info.cpu_time_ns, "max_memory_kib": info.max_memory_kib, "memory_kib": info.memory_kib,
            "persistent": rec.persistent, "autostart": rec.autostart, "managed_save": rec.managed_save,
            "security_model": caps.as_ref().and_then(|c| c.security_model.clone()),
            "security_label": info.security_label,
        });
        return sess.print_json(&v);
    }
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<15} {v}\n"));
    line(
        "Id:",
        rec.id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
    );
    line("Name:", def.name.clone());
    line("UUID:", def.uuid.clone());
    line("OS Type:", info.os_type.clone());
    line("State:", state_name(&info.state).into());
    line("CPU(s):", info.vcpus.to_string());
    if info.cpu_time_ns != 0 {
        line(
            "CPU time:",
            format!("{:.1}s", info.cpu_time_ns as f64 / 1e9),
        );
    }
    line(
        "Max memory:",
        if info.max_memory_kib == u64::MAX {
            "no limit".into()
        } else {
            format!("{} KiB", info.max_memory_kib)
        },
    );
    line("Used memory:", format!("{} KiB", info.memory_kib));
    line(
        "Persistent:",
        if rec.persistent { "yes" } else { "no" }.into(),
    );
    line(
        "Autostart:",
        if rec.autostart { "enable" } else { "disable" }.into(),
    );
    line(
        "Managed save:",
        if rec.managed_save { "yes" } else { "no" }.into(),
    );
    if let Some(model) = caps
        .as_ref()
        .and_then(|c| c.security_model.clone())
        .filter(|m| !m.is_empty())
    {
        line("Security model:", model);
        line(
            "Security DOI:",
            caps.as_ref()
                .and_then(|c| c.security_doi.clone())
                .unwrap_or_default(),
        );
        if let Some(label) = info.security_label.filter(|l| !l.is_empty()) {
            line(
                "Security label:",
                format!(
                    "{label} ({})",
                    if info.security_enforcing {
                        "enforcing"
                    } else {
                        "permissive"
                    }
                ),
            );
        }
    }
    sess.print(&out);
    Ok(())
}

fn domstate(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let s = rec.state();
    let text = if a.flag("reason") {
        format!("{} ({})\n", state_name(&s), reason_name(&s))
    } else {
        format!("{}\n", state_name(&s))
    };
    sess.print(&text);
    Ok(())
}

/// Which keys a lookup may match: virsh's domid takes a name or uuid, domname an id or
/// uuid, domuuid a name or id.
#[derive(Clone, Copy)]
struct Keys {
    id: bool,
    name: bool,
}

fn lookup_by(
    sess: &mut Session,
    key: &str,
    keys: Keys,
) -> Result<virtwasm_host::state::DomainRecord, Failure> {
    let rec = lookup(sess, key)?;
    let by_id = rec.id.map(|i| i.to_string()).as_deref() == Some(key);
    let by_uuid =
        virtwasm_host::domain::canonical_uuid(key).as_deref() == Some(rec.def.uuid.as_str());
    let by_name = rec.def.name == key;
    if by_uuid || (keys.id && by_id) || (keys.name && by_name) {
        Ok(rec)
    } else {
        Err(Failure::msg(format!("failed to get domain '{key}'")))
    }
}

fn domid(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup_by(
        sess,
        a.req("domain"),
        Keys {
            id: false,
            name: true,
        },
    )?;
    let text = rec
        .id
        .map(|i| format!("{i}\n"))
        .unwrap_or_else(|| "-\n".into());
    sess.print(&text);
    Ok(())
}

fn domname(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup_by(
        sess,
        a.req("domain"),
        Keys {
            id: true,
            name: false,
        },
    )?;
    sess.print(&format!("{}\n", rec.def.name));
    Ok(())
}

fn domuuid(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup_by(
        sess,
        a.req("domain"),
        Keys {
            id: true,
            name: true,
        },
    )?;
    sess.print(&format!("{}\n", rec.def.uuid));
    Ok(())
}

/// Runs a lifecycle verb with virsh's success line and its two-line failure.
fn verb(
    sess: &mut Session,
    a: &Args,
    failed: &str,
    ok: &str,
    f: impl FnOnce(&virtwasm_api::Client, &str) -> virtwasm_host::Result<()>,
) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let name = rec.def.name.clone();
    let conn = sess.conn()?;
    match f(conn, &rec.def.uuid) {
        Ok(()) => {
            sess.extra(&format!("{}\n", ok.replace("{}", &name)));
            Ok(())
        }
        Err(e) => Err(Failure(vec![failed.replace("{}", &name), e.message])),
    }
}

fn undefine(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    // virsh refuses this one itself, with no "Failed to undefine" line.
    if rec.managed_save && !a.flag("managed-save") {
        return Err(Failure::msg(
            "Refusing to undefine while domain managed save image exists",
        ));
    }
    let conn = sess.conn()?;
    let drop_snapshots = a.flag("snapshots-metadata");
    // Volumes to remove are the disks' sources that a pool manages; others are reported.
    let mut doomed = Vec::new();
    let mut unmanaged = Vec::new();
    if a.flag("remove-all-storage") {
        for d in &rec.def.disks {
            let Some(path) = d.source.clone() else {
                continue;
            };
            match conn.volume(&path, None) {
                Ok(_) => doomed.push((d.target_dev.clone(), path)),
                Err(_) => unmanaged.push(format!(
                    "Storage volume '{}'({path}) is not managed by libvirt. Remove it manually.",
                    d.target_dev
                )),
            }
        }
    }
    let name = rec.def.name.clone();
    conn.undefine_with(&rec.def.uuid, drop_snapshots, a.flag("managed-save"))
        .map_err(|e| {
            Failure(vec![
                format!("Failed to undefine domain '{name}'"),
                e.message,
            ])
        })?;
    // virsh reports unmanaged storage on stderr but still undefines.
    for line in &unmanaged {
        // virsh follows this report with an empty line on stderr.
        eprintln!("error: {line}\n");
    }
    let mut out = format!("Domain '{name}' has been undefined\n");
    for (target, path) in doomed {
        match conn.vol_delete(&path, None) {
            Ok(_) => out.push_str(&format!("Volume '{target}'({path}) removed.\n")),
            Err(e) => eprintln!(
                "error: Failed to remove storage volume '{target}'({path})\nerror: {}",
                e.message
            ),
        }
    }
    sess.extra(&out);
    Ok(())
}

fn start(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    if rec.is_active() {
        return Err(Failure::msg("Domain is already active"));
    }
    if a.flag("force-boot") && rec.managed_save {
        sess.conn()?.managed_save_remove(&rec.def.uuid)?;
    }
    let paused = a.flag("paused");
    verb(
        sess,
        a,
        "Failed to start domain '{}'",
        "Domain '{}' started",
        |c, d| c.start(d, paused),
    )?;
    if a.flag("console") {
        return crate::console::run(sess, &rec.def.uuid, &rec.def.name, None);
    }
    Ok(())
}

fn modes(a: &Args) -> Result<ShutdownModes, Failure> {
    let mut m = ShutdownModes::empty();
    if let Some(list) = a.get("mode") {
        for word in list.split(',') {
            m |= match word.trim() {
                "acpi" => ShutdownModes::ACPI,
                "agent" => ShutdownModes::AGENT,
                "initctl" => ShutdownModes::INITCTL,
                "signal" => ShutdownModes::SIGNAL,
                "paravirt" => ShutdownModes::PARAVIRT,
                other => {
                    return Err(Failure::msg(format!(
                        "Unknown mode {other} value, expecting 'acpi', 'agent', 'initctl', 'signal', or 'paravirt'"
                    )));
                }
            };
        }
    }
    Ok(m)
}

fn shutdown(sess: &mut Session, a: &Args) -> Outcome {
    let m = modes(a)?;
    verb(
        sess,
        a,
        "Failed to shutdown domain '{}'",
        "Domain '{}' is being shutdown",
        |c, d| c.shutdown(d, m),
    )
}

fn reboot(sess: &mut Session, a: &Args) -> Outcome {
    let m = modes(a)?;
    verb(
        sess,
        a,
        "Failed to reboot domain '{}'",
        "Domain '{}' is being rebooted",
        |c, d| c.reboot(d, m),
    )
}

fn reset(sess: &mut Session, a: &Args) -> Outcome {
    verb(
        sess,
        a,
        "Failed to reset domain '{}'",
        "Domain '{}' was reset",
        |c, d| c.reset(d),
    )
}

fn destroy(sess: &mut Session, a: &Args) -> Outcome {
    let graceful = a.flag("graceful");
    verb(
        sess,
        a,
        "Failed to destroy domain '{}'",
        "Domain '{}' destroyed",
        |c, d| c.destroy(d, graceful),
    )
}

fn suspend(sess: &mut Session, a: &Args) -> Outcome {
    verb(
        sess,
        a,
        "Failed to suspend domain '{}'",
        "Domain '{}' suspended",
        |c, d| c.suspend(d),
    )
}

fn resume(sess: &mut Session, a: &Args) -> Outcome {
    verb(
        sess,
        a,
        "Failed to resume domain '{}'",
        "Domain '{}' resumed",
        |c, d| c.resume(d),
    )
}

fn autostart(sess: &mut Session, a: &Args) -> Outcome {
    let on = !a.flag("disable");
    let (failed, ok) = if on {
        (
            "Failed to mark domain '{}' as autostarted",
            "Domain '{}' marked as autostarted",
        )
    } else {
        (
            "Failed to unmark domain '{}' as autostarted",
            "Domain '{}' unmarked as autostarted",
        )
    };
    verb(sess, a, failed, ok, |c, d| {
        c.set_autostart(d, on).map(|_| ())
    })
}

/// Reads an XML file argument with virsh's error.
pub(crate) fn read_file(path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "No such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "Permission denied".to_string(),
            _ => e.to_string(),
        };
        Failure::msg(format!("Failed to open file '{path}': {reason}"))
    })
}

/// virsh's `pool-define FILE`, `net-define FILE` and `net-create FILE`: read the file, hand
/// its XML (and `--validate`) to `call`, which returns the object's name; on failure
/// "Failed to VERB OBJECT from FILE" above the cause, on success "Kind NAME DONE from FILE".
pub(crate) fn object_from_file(
    sess: &mut Session,
    a: &Args,
    (verb, object, kind, done): (&str, &str, &str, &str),
    call: impl FnOnce(&virtwasm_api::Client, &str, bool) -> virtwasm_host::Result<String>,
) -> Outcome {
    let file = a.req("file");
    let text = read_file(file)?;
    let name = call(sess.conn()?, &text, a.flag("validate")).map_err(|e| {
        Failure(vec![
            format!("Failed to {verb} {object} from {file}"),
            e.message,
        ])
    })?;
    sess.extra(&format!("{kind} {name} {done} from {file}\n"));
    Ok(())
}

fn define(sess: &mut Session, a: &Args) -> Outcome {
    let file = a.req("file");
    let text = read_file(file)?;
    let validate = a.flag("validate");
    match sess.conn()?.define_xml(&text, validate) {
        Ok((def, _)) => {
            sess.extra(&format!("Domain '{}' defined from {file}\n", def.name));
            Ok(())
        }
        Err(e) => Err(Failure(vec![
            format!("Failed to define domain from {file}"),
            e.message,
        ])),
    }
}

fn create(sess: &mut Session, a: &Args) -> Outcome {
    let file = a.req("file");
    let text = read_file(file)?;
    let (validate, paused) = (a.flag("validate"), a.flag("paused"));
    match sess.conn()?.create_xml(&text, validate, paused) {
        Ok(def) => {
            sess.extra(&format!("Domain '{}' created from {file}\n", def.name));
            Ok(())
        }
        Err(e) => Err(Failure(vec![
            format!("Failed to create domain from {file}"),
            e.message,
        ])),
    }
}

fn dumpxml(sess: &mut Session, a: &Args) -> Outcome {
    let rec = lookup(sess, a.req("domain"))?;
    let xml = sess.conn()?.domain_xml(&rec.def.uuid, a.flag("inactive"))?;
    match a.get("xpath") {
        Some(expr) => {
            let selected =
                crate::xpath::select(&xml, expr, a.flag("wrap")).map_err(Failure::msg)?;
            sess.print(&selected);
        }
        None => sess.print(&xml),
    }
    Ok(())
}
