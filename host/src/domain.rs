//! Domain operations on a [`Connection`]: lookup, listing, definition, and the lifecycle
//! verbs. The host checks libvirt's state machine before calling the plugin and applies the
//! runtime record the plugin returns, emitting libvirt's lifecycle events.

use crate::bindings::types::{
    DomainDef, DomainInfo, DomainRef, DomainRuntime, DomainState, PausedReason, RunningReason,
    ShutdownModes, ShutoffReason,
};
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{DomainEvent, Event};
use crate::state::{DomainRecord, Objects};
use crate::xml::{Extras, FormatOptions, ParseOptions, ParsedDomain};

/// One row of `list`, with what scripts usually loop for (memory, vCPUs) in the same answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DomainSummary {
    /// Id while running.
    pub id: Option<i32>,
    /// Name.
    pub name: String,
    /// Uuid.
    pub uuid: String,
    /// State and reason.
    pub state: DomainState,
    /// Defined (survives stopping).
    pub persistent: bool,
    /// Started with the host.
    pub autostart: bool,
    /// Has a managed-save image.
    pub managed_save: bool,
    /// `<title>`.
    pub title: Option<String>,
    /// Maximum memory, KiB.
    pub memory_kib: u64,
    /// Current memory, KiB.
    pub current_memory_kib: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
}

/// libvirt's word for a state (`virsh domstate`).
pub fn state_name(s: &DomainState) -> &'static str {
    match s {
        DomainState::Nostate(_) => "no state",
        DomainState::Running(_) => "running",
        DomainState::Blocked(_) => "idle",
        DomainState::Paused(_) => "paused",
        DomainState::Shutdown(_) => "in shutdown",
        DomainState::Shutoff(_) => "shut off",
        DomainState::Crashed(_) => "crashed",
        DomainState::Pmsuspended(_) => "pmsuspended",
    }
}

/// libvirt's word for a state's reason (`virsh domstate --reason`).
pub fn reason_name(s: &DomainState) -> &'static str {
    use crate::bindings::types::*;
    match s {
        DomainState::Nostate(_) | DomainState::Blocked(_) | DomainState::Pmsuspended(_) => {
            "unknown"
        }
        DomainState::Running(r) => match r {
            RunningReason::Unknown => "unknown",
            RunningReason::Booted => "booted",
            RunningReason::Migrated => "migrated",
            RunningReason::Restored => "restored",
            RunningReason::FromSnapshot => "from snapshot",
            RunningReason::Unpaused => "unpaused",
            RunningReason::MigrationCanceled => "migration canceled",
            RunningReason::SaveCanceled => "save canceled",
            RunningReason::Wakeup => "event wakeup",
            RunningReason::Crashed => "crashed",
            RunningReason::Postcopy => "post-copy",
            RunningReason::PostcopyFailed => "post-copy failed",
        },
        DomainState::Paused(r) => match r {
            PausedReason::Unknown => "unknown",
            PausedReason::User => "user",
            PausedReason::Migration => "migrating",
            PausedReason::Save => "saving",
            PausedReason::Dump => "dumping",
            PausedReason::Ioerror => "I/O error",
            PausedReason::Watchdog => "watchdog",
            PausedReason::FromSnapshot => "from snapshot",
            PausedReason::ShuttingDown => "shutting down",
            PausedReason::Snapshot => "creating snapshot",
            PausedReason::Crashed => "crashed",
            PausedReason::StartingUp => "starting up",
            PausedReason::Postcopy => "post-copy",
            PausedReason::PostcopyFailed => "post-copy failed",
            PausedReason::ApiError => "api error",
        },
        DomainState::Shutdown(r) => match r {
            ShutdownReason::Unknown => "unknown",
            ShutdownReason::User => "user",
        },
        DomainState::Shutoff(r) => match r {
            ShutoffReason::Unknown => "unknown",
            ShutoffReason::Shutdown => "shutdown",
            ShutoffReason::Destroyed => "destroyed",
            ShutoffReason::Crashed => "crashed",
            ShutoffReason::Migrated => "migrated",
            ShutoffReason::Saved => "saved",
            ShutoffReason::Failed => "failed",
            ShutoffReason::FromSnapshot => "from snapshot",
            ShutoffReason::Daemon => "daemon",
        },
        DomainState::Crashed(r) => match r {
            CrashedReason::Unknown => "unknown",
            CrashedReason::Panicked => "panicked",
        },
    }
}

fn summary(r: &DomainRecord) -> DomainSummary {
    let def = r.live.as_ref().unwrap_or(&r.def);
    DomainSummary {
        id: r.id,
        name: def.name.clone(),
        uuid: def.uuid.clone(),
        state: r.state(),
        persistent: r.persistent,
        autostart: r.autostart,
        managed_save: r.managed_save,
        title: def.title.clone(),
        memory_kib: def.memory_kib,
        current_memory_kib: def.current_memory_kib,
        vcpus: def.current_vcpus.unwrap_or(def.vcpus),
    }
}

fn is_uuid(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// Canonical lowercase 8-4-4-4-12 form of a uuid given with or without dashes.
pub fn canonical_uuid(s: &str) -> Option<String> {
    if !is_uuid(s) {
        return None;
    }
    let h: String = s
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Finds a domain by id, uuid or name, as virsh resolves its `<domain>` argument.
fn find<'a>(o: &'a Objects, key: &str) -> Option<&'a DomainRecord> {
    if let Ok(id) = key.parse::<i32>()
        && let Some(d) = o.domains.values().find(|d| d.id == Some(id))
    {
        return Some(d);
    }
    if let Some(uuid) = canonical_uuid(key)
        && let Some(d) = o.domains.get(&uuid)
    {
        return Some(d);
    }
    o.domain_by_name(key)
}

fn not_found(key: &str) -> Error {
    Error::not_found(format!(
        "Domain not found: no domain with matching name '{key}'"
    ))
}

fn not_running() -> Error {
    Error::invalid_state("Requested operation is not valid: domain is not running")
}

/// The lifecycle events between two states, with libvirt's details.
fn transition_events(before: &DomainState, after: &DomainState) -> Vec<DomainEvent> {
    use DomainState as S;
    let was_active = !matches!(before, S::Shutoff(_));
    match (before, after) {
        (_, S::Running(r)) if !was_active => vec![DomainEvent::Started(match r {
            RunningReason::Restored => "Restored",
            RunningReason::Migrated => "Migrated",
            RunningReason::FromSnapshot => "Snapshot",
            RunningReason::Wakeup => "Wakeup",
            _ => "Booted",
        })],
        (_, S::Paused(_)) if !was_active => vec![
            DomainEvent::Started("Booted"),
            DomainEvent::Suspended("Paused"),
        ],
        (S::Running(_), S::Paused(r)) => vec![DomainEvent::Suspended(match r {
            PausedReason::Migration => "Migrated",
            PausedReason::Ioerror => "I/O Error",
            PausedReason::Watchdog => "Watchdog",
            PausedReason::FromSnapshot => "Snapshot",
            PausedReason::ApiError => "API error",
            _ => "Paused",
        })],
        (S::Paused(_), S::Running(r)) => vec![DomainEvent::Resumed(match r {
            RunningReason::Migrated => "Migrated",
            RunningReason::FromSnapshot => "Snapshot",
            _ => "Unpaused",
        })],
        (_, S::Shutoff(r)) if was_active => {
            let detail = match r {
                ShutoffReason::Shutdown => "Shutdown",
                ShutoffReason::Destroyed => "Destroyed",
                ShutoffReason::Crashed => "Crashed",
                ShutoffReason::Migrated => "Migrated",
                ShutoffReason::Saved => "Saved",
                ShutoffReason::FromSnapshot => "Snapshot",
                _ => "Failed",
            };
            let mut v = Vec::new();
            if matches!(r, ShutoffReason::Shutdown) {
                v.push(DomainEvent::Shutdown("Finished"));
            }
            v.push(DomainEvent::Stopped(detail));
            v
        }
        (S::Crashed(_), S::Crashed(_)) => vec![],
        (_, S::Crashed(_)) => vec![DomainEvent::Crashed("Panicked")],
        (_, S::Pmsuspended(_)) if !matches!(before, S::Pmsuspended(_)) => {
            vec![DomainEvent::PmSuspended("Memory")]
        }
        _ => vec![],
    }
}

impl Connection {
    /// Every domain, sorted as virsh lists them: running ones by id, then the others by name.
    pub fn list_domains(&self) -> Vec<DomainSummary> {
        let o = self.state.objects();
        let mut v: Vec<DomainSummary> = o.domains.values().map(summary).collect();
        v.sort_by(|a, b| match (a.id, b.id) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.name.cmp(&b.name),
        });
        v
    }

    /// A snapshot of the domain named by `key` (id, uuid or name).
    pub fn domain(&self, key: &str) -> Result<DomainRecord> {
        find(&self.state.objects(), key)
            .cloned()
            .ok_or_else(|| not_found(key))
    }

    /// The summary of one domain.
    pub fn domain_summary(&self, key: &str) -> Result<DomainSummary> {
        self.domain(key).map(|r| summary(&r))
    }

    /// The driver's statistics for `domstats`, as `group.name` keys and printable values.
    pub fn domain_stats(&self, key: &str) -> Result<Vec<(String, String)>> {
        use crate::bindings::hypervisor::StatValue;
        let dom = self.domain(key)?.as_ref();
        let stats = self
            .plugin
            .hypervisor("stats", |g, s| g.call_stats(s, &dom))?;
        Ok(stats
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    StatValue::Unsigned(n) => n.to_string(),
                    StatValue::Signed(n) => n.to_string(),
                    StatValue::Float(f) => format!("{f:.6}"),
                    StatValue::Text(t) => t,
                };
                (k, v)
            })
            .collect())
    }

    /// The running guest's interfaces and addresses, learned from `source`.
    pub fn interface_addresses(
        &self,
        key: &str,
        source: &str,
    ) -> Result<Vec<crate::bindings::hypervisor::GuestInterface>> {
        let rec = self.domain(key)?;
        if !rec.is_active() {
            return Err(not_running());
        }
        let dom = rec.as_ref();
        self.plugin.hypervisor("interface-addresses", |g, s| {
            g.call_interface_addresses(s, &dom, source)
        })
    }

    /// Where the driver serves a domain's console (a pty or a unix socket), for the host
    /// to stream.
    pub fn console_endpoint(
        &self,
        key: &str,
        device: Option<&str>,
    ) -> Result<crate::bindings::hypervisor::ConsoleEndpoint> {
        let rec = self.domain(key)?;
        if !rec.is_active() {
            return Err(not_running());
        }
        let dom = rec.as_ref();
        let device = device.map(str::to_string);
        let endpoint = self.plugin.hypervisor("open-console", |g, s| {
            g.call_open_console(s, &dom, device.as_deref())
        })?;
        self.check_console(endpoint)
    }

    /// A console the host will open for a client must be what the driver may hand out: a
    /// pseudo-terminal, or a socket under the driver's granted socket directories (the
    /// host, possibly root, opens it, not the sandboxed plugin).
    fn check_console(
        &self,
        endpoint: crate::bindings::hypervisor::ConsoleEndpoint,
    ) -> Result<crate::bindings::hypervisor::ConsoleEndpoint> {
        use crate::bindings::hypervisor::ConsoleEndpoint;
        use std::os::unix::fs::FileTypeExt;
        let refuse = |what: &str, path: &str| {
            Error::denied(format!(
                "plugin '{}' named {what} '{path}' as a console",
                self.plugin.name()
            ))
        };
        match &endpoint {
            ConsoleEndpoint::Pty(p) => {
                let real = std::fs::canonicalize(p)
                    .map_err(|e| Error::io("cannot resolve console", std::path::Path::new(p), e))?;
                let is_pty = real.starts_with("/dev/pts/")
                    && std::fs::metadata(&real).is_ok_and(|m| m.file_type().is_char_device());
                if !is_pty {
                    return Err(refuse("something other than a pseudo-terminal", p));
                }
            }
            ConsoleEndpoint::UnixSocket(p) => {
                let path = std::path::Path::new(p);
                let lexical = crate::capabilities::socket::normalize(path);
                let real = path
                    .parent()
                    .and_then(|d| std::fs::canonicalize(d).ok())
                    .map(|d| d.join(path.file_name().unwrap_or_default()));
                let granted = &self.plugin.grants().socket_prefixes;
                let inside = |q: &std::path::Path| granted.iter().any(|g| q.starts_with(g));
                if !inside(&lexical) || !real.as_deref().is_some_and(inside) {
                    return Err(refuse("a socket outside its granted directories", p));
                }
            }
        }
        Ok(endpoint)
    }

    /// Numbers behind `dominfo`, from the driver.
    pub fn domain_info(&self, key: &str) -> Result<DomainInfo> {
        let dom = self.domain(key)?.as_ref();
        self.plugin.hypervisor("info", |g, s| g.call_info(s, &dom))
    }

    /// Defines (or redefines) a persistent domain from `def`. Returns the stored definition
    /// and whether it replaced an existing one.
    pub fn define(&self, def: DomainDef) -> Result<(DomainDef, bool)> {
        self.define_with_extras(def, Extras::default())
    }

    /// Defines a domain from libvirt XML. With `validate`, anything virtwasm would not
    /// interpret is refused, naming the element, instead of being carried along.
    pub fn define_xml(&self, text: &str, validate: bool) -> Result<(DomainDef, bool)> {
        let parsed = parse(text, validate)?;
        self.define_with_extras(parsed.def, parsed.extras)
    }

    /// Defines `def`, keeping `extras` (what its XML held beyond the model) for `dumpxml`.
    /// Nothing changes unless the definition is valid and written to disk.
    pub fn define_with_extras(&self, def: DomainDef, extras: Extras) -> Result<(DomainDef, bool)> {
        self.writable()?;
        validate_name(&def.name)?;
        self.check_unmodelled(&def, &extras)?;
        let def = self
            .plugin
            .hypervisor("fill-defaults", |g, s| g.call_fill_defaults(s, &def))?;
        validate_name(&def.name)?;
        let mut o = self.state.objects();
        let updated = check_collisions(&o, &def)?;
        let mut rec = o
            .domains
            .get(&def.uuid)
            .cloned()
            .unwrap_or_else(|| DomainRecord::inactive(def.clone(), true));
        rec.def = def.clone();
        rec.extras = extras;
        rec.persistent = true;
        self.persist(&rec)?;
        o.domains.insert(def.uuid.clone(), rec);
        drop(o);
        self.emit(
            &def,
            DomainEvent::Defined(if updated { "Updated" } else { "Added" }),
        );
        Ok((def, updated))
    }

    /// Creates and starts a transient domain from libvirt XML.
    pub fn create_xml(&self, text: &str, validate: bool, paused: bool) -> Result<DomainDef> {
        let parsed = parse(text, validate)?;
        self.create_with_extras(parsed.def, parsed.extras, paused)
    }

    /// Creates and starts a transient domain: it vanishes when it stops.
    pub fn create(&self, def: DomainDef, paused: bool) -> Result<DomainDef> {
        self.create_with_extras(def, Extras::default(), paused)
    }

    fn create_with_extras(
        &self,
        def: DomainDef,
        extras: Extras,
        paused: bool,
    ) -> Result<DomainDef> {
        let def = self.stage_for_run(def, extras, "")?;
        match self.start(&def.uuid, paused) {
            Ok(()) => Ok(def),
            Err(e) => {
                self.unstage(&def.uuid);
                Err(e)
            }
        }
    }

    /// Makes `def` the definition that is about to run (a create, an incoming migration):
    /// filled by the driver, then either a new transient record, or the live definition of
    /// an inactive domain with its uuid (whose persistent definition stays as it was). A
    /// running one is refused (`where_` says where, for the message).
    pub(crate) fn stage_for_run(
        &self,
        def: DomainDef,
        extras: Extras,
        where_: &str,
    ) -> Result<DomainDef> {
        self.writable()?;
        validate_name(&def.name)?;
        self.check_unmodelled(&def, &extras)?;
        let def = self
            .plugin
            .hypervisor("fill-defaults", |g, s| g.call_fill_defaults(s, &def))?;
        validate_name(&def.name)?;
        let mut o = self.state.objects();
        if check_collisions(&o, &def)? {
            let existing = &o.domains[&def.uuid];
            if existing.is_active() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "operation failed: domain '{}' is already active{where_}",
                        def.name
                    ),
                ));
            }
            if let Some(rec) = o.domains.get_mut(&def.uuid) {
                rec.live = Some(def.clone());
            }
        } else {
            let mut rec = DomainRecord::inactive(def.clone(), false);
            rec.extras = extras;
            o.domains.insert(def.uuid.clone(), rec);
        }
        Ok(def)
    }

    /// Undoes [`stage_for_run`](Self::stage_for_run) when the run did not start: a staged
    /// transient record goes, and a persistent domain's staged live definition must not be
    /// what its next start boots.
    pub(crate) fn unstage(&self, uuid: &str) {
        let mut o = self.state.objects();
        if o.domains
            .get(uuid)
            .is_some_and(|d| !d.persistent && !d.is_active())
        {
            o.domains.remove(uuid);
        } else if let Some(rec) = o.domains.get_mut(uuid).filter(|d| !d.is_active()) {
            rec.live = None;
        }
    }

    /// Makes `def` the live definition of the domain `uuid` (before the [`apply`] of a
    /// start: what the driver was given, display ports and all).
    ///
    /// [`apply`]: Connection::apply
    pub(crate) fn set_live(&self, uuid: &str, def: DomainDef) {
        if let Some(r) = self.state.objects().domains.get_mut(uuid) {
            r.live = Some(def);
        }
    }

    /// The domain's libvirt XML: the running definition with its id, or with `inactive` the
    /// persistent one.
    pub fn domain_xml(&self, key: &str, inactive: bool) -> Result<String> {
        let rec = self.domain(key)?;
        let def = if inactive {
            rec.def.clone()
        } else {
            rec.live.clone().unwrap_or_else(|| rec.def.clone())
        };
        let options = FormatOptions {
            id: rec.id,
            inactive: inactive || rec.id.is_none(),
        };
        Ok(crate::xml::format_domain(
            &ParsedDomain {
                def,
                extras: rec.extras,
            },
            &options,
        ))
    }

    /// Removes a domain's persistent definition. A running domain keeps running, transient.
    pub fn undefine(&self, key: &str) -> Result<String> {
        self.undefine_with(key, false, false)
    }

    /// Undefines, dropping snapshot metadata when `drop_snapshots`; an inactive domain with
    /// snapshots is refused otherwise, as libvirt refuses it.
    /// With `drop_managed_save` a managed-save image goes too (else its presence refuses).
    /// Every check comes before anything is removed.
    pub fn undefine_with(
        &self,
        key: &str,
        drop_snapshots: bool,
        drop_managed_save: bool,
    ) -> Result<String> {
        self.writable()?;
        let rec = self.domain(key)?;
        if !rec.persistent {
            if self.plugin.manifest.plugin.lenient_transient {
                // libvirt's test driver reports the undefine and leaves the domain as it is.
                self.emit(&rec.def, DomainEvent::Undefined("Removed"));
                return Ok(rec.def.name);
            }
            return Err(Error::invalid_state(
                "Requested operation is not valid: cannot undefine transient domain",
            ));
        }
        if rec.managed_save && !drop_managed_save {
            return Err(Error::invalid_state(
                "Refusing to undefine while domain managed save image exists",
            ));
        }
        if !rec.snapshots.is_empty() && !rec.is_active() && !drop_snapshots {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: cannot delete inactive domain with {} snapshots",
                rec.snapshots.len()
            )));
        }
        if rec.managed_save {
            self.managed_save_remove(&rec.def.uuid)?;
        }
        if drop_snapshots && !rec.snapshots.is_empty() {
            let mut now = self.domain(&rec.def.uuid)?;
            now.snapshots.clear();
            now.current_snapshot = None;
            self.replace_record(now)?;
        }
        self.undefine_inner(key)
    }

    fn undefine_inner(&self, key: &str) -> Result<String> {
        let (_job, rec) = self.locked_domain(key, "undefine")?;
        let mut o = self.state.objects();
        let Some(cur) = o.domains.get(&rec.def.uuid).cloned() else {
            return Err(not_found(key));
        };
        if !cur.persistent {
            return Err(Error::invalid_state(
                "Requested operation is not valid: cannot undefine transient domain",
            ));
        }
        // A running domain becomes transient: its status file says so before the definition
        // goes, so a crash in between never leaves a "persistent" domain without a definition.
        if cur.is_active() {
            let mut now = cur;
            now.persistent = false;
            now.autostart = false;
            self.persist(&now)?;
            if let Some(store) = &self.store {
                store.remove_definition(&now.def.name)?;
            }
            o.domains.insert(rec.def.uuid.clone(), now);
        } else {
            if let Some(store) = &self.store {
                store.remove_definition(&cur.def.name)?;
            }
            o.domains.remove(&rec.def.uuid);
        }
        drop(o);
        self.emit(&rec.def, DomainEvent::Undefined("Removed"));
        Ok(rec.def.name)
    }

    /// Starts an inactive domain (from its managed-save image when it has one).
    pub fn start(&self, key: &str, paused: bool) -> Result<()> {
        self.writable()?;
        let rec = self.domain(key)?;
        if rec.managed_save
            && !rec.is_active()
            && self
                .start_from_managed_save(&rec.def.uuid, paused)?
                .is_some()
        {
            return Ok(());
        }
        let (_job, rec) = self.locked_domain(key, "start")?;
        if rec.is_active() {
            return Err(Error::invalid_state(
                "Requested operation is not valid: domain is already running",
            ));
        }
        let mut dom = rec.as_ref();
        let (def, _ports) = self.with_display_ports(dom.def)?;
        dom.def = def;
        match self
            .plugin
            .hypervisor("start", |g, s| g.call_start(s, &dom, paused))
        {
            Ok(runtime) => {
                self.set_live(&rec.def.uuid, dom.def);
                self.apply(&rec.def.uuid, runtime)
            }
            Err(e) => {
                // As libvirt: a start the backend failed to carry out leaves the domain shut
                // off with the reason 'failed' (under the job lock, so no other start can
                // interleave); a refusal (a flag the driver does not take, bad input) changes
                // nothing. The start's own error is what the caller hears.
                if matches!(
                    e.kind,
                    ErrorKind::OperationFailed | ErrorKind::PluginCrashed
                ) && let Ok(mut now) = self.domain(&rec.def.uuid)
                    && !now.is_active()
                {
                    now.shutoff_reason = ShutoffReason::Failed;
                    if let Err(p) = self.replace_record(now) {
                        tracing::warn!(domain = %rec.def.name, "cannot record the failed start: {}", p.message);
                    }
                }
                Err(e)
            }
        }
    }

    /// Asks the guest to shut down. Whether the domain's state allows it is the driver's
    /// call (libvirt's drivers differ: a paused guest may or may not be asked); the host
    /// checks that the answer is consistent.
    pub fn shutdown(&self, key: &str, modes: ShutdownModes) -> Result<()> {
        self.writable()?;
        self.verb(
            key,
            "shutdown",
            |_| Ok(()),
            |c, dom| {
                let was_active = dom.runtime.is_some();
                let r = c
                    .plugin
                    .hypervisor("shutdown", |g, s| g.call_shutdown(s, &dom, modes))?;
                c.consistent("shutdown", was_active, &r.state, |_| true)?;
                Ok(r)
            },
        )
    }

    /// Asks the guest to reboot.
    pub fn reboot(&self, key: &str, modes: ShutdownModes) -> Result<()> {
        self.writable()?;
        self.verb(key, "reboot", require_active, |c, dom| {
            c.plugin
                .hypervisor("reboot", |g, s| g.call_reboot(s, &dom, modes))
        })
    }

    /// Resets the virtual hardware.
    pub fn reset(&self, key: &str) -> Result<()> {
        self.writable()?;
        self.verb(key, "reset", require_active, |c, dom| {
            c.plugin.hypervisor("reset", |g, s| g.call_reset(s, &dom))
        })
    }

    /// Stops the domain at once.
    pub fn destroy(&self, key: &str, graceful: bool) -> Result<()> {
        self.writable()?;
        self.verb(key, "destroy", require_active, |c, dom| {
            c.plugin
                .hypervisor("destroy", |g, s| g.call_destroy(s, &dom, graceful))
        })
    }

    /// Pauses the domain. The driver decides which states allow it (and words the refusal);
    /// the host checks that a success leaves the domain paused.
    pub fn suspend(&self, key: &str) -> Result<()> {
        self.writable()?;
        self.verb(
            key,
            "suspend",
            |_| Ok(()),
            |c, dom| {
                let was_active = dom.runtime.is_some();
                let r = c
                    .plugin
                    .hypervisor("suspend", |g, s| g.call_suspend(s, &dom))?;
                c.consistent("suspend", was_active, &r.state, |s| {
                    matches!(s, DomainState::Paused(_))
                })?;
                Ok(r)
            },
        )
    }

    /// Resumes a paused domain; as for `suspend`, the driver judges the state.
    pub fn resume(&self, key: &str) -> Result<()> {
        self.writable()?;
        self.verb(
            key,
            "resume",
            |_| Ok(()),
            |c, dom| {
                let was_active = dom.runtime.is_some();
                let r = c
                    .plugin
                    .hypervisor("resume", |g, s| g.call_resume(s, &dom))?;
                c.consistent("resume", was_active, &r.state, |s| {
                    matches!(s, DomainState::Running(_))
                })?;
                Ok(r)
            },
        )
    }

    /// Refuses a driver's answer that would break the state machine: a verb that needs a
    /// running guest succeeding on an inactive domain, or leaving an unexpected state.
    fn consistent(
        &self,
        verb: &str,
        was_active: bool,
        state: &DomainState,
        expected: impl Fn(&DomainState) -> bool,
    ) -> Result<()> {
        if !was_active {
            return Err(Error::internal(format!(
                "internal error: plugin '{}' answered '{verb}' of an inactive domain without an error",
                self.plugin.name()
            )));
        }
        if !expected(state) {
            return Err(Error::internal(format!(
                "internal error: plugin '{}' answered '{verb}' with the state '{}'",
                self.plugin.name(),
                state_name(state)
            )));
        }
        Ok(())
    }

    /// Sets whether a persistent domain starts with the host.
    pub fn set_autostart(&self, key: &str, on: bool) -> Result<String> {
        self.writable()?;
        let mut o = self.state.objects();
        let uuid = find(&o, key)
            .map(|d| d.def.uuid.clone())
            .ok_or_else(|| not_found(key))?;
        let mut rec = o
            .domains
            .get(&uuid)
            .cloned()
            .ok_or_else(|| not_found(key))?;
        if !rec.persistent && !self.plugin.manifest.plugin.lenient_transient {
            return Err(Error::invalid_state(
                "Requested operation is not valid: cannot set autostart for transient domain",
            ));
        }
        rec.autostart = on;
        self.persist(&rec)?;
        let name = rec.def.name.clone();
        o.domains.insert(uuid, rec);
        Ok(name)
    }

    /// Stores a changed record (same state) after writing it to disk.
    pub(crate) fn replace_record(&self, rec: DomainRecord) -> Result<()> {
        self.persist(&rec)?;
        self.state
            .objects()
            .domains
            .insert(rec.def.uuid.clone(), rec);
        Ok(())
    }

    /// Writes a record's files when this driver keeps state on disk.
    fn persist(&self, rec: &DomainRecord) -> Result<()> {
        match &self.store {
            Some(store) => store.save_domain(rec),
            None => Ok(()),
        }
    }

    /// Takes the domain's job lock for `job` (waiting at most the job timeout, and naming the
    /// holder if it times out), then reads its record again: another job may have changed it
    /// while this one waited.
    pub(crate) fn locked_domain(
        &self,
        key: &str,
        job: &str,
    ) -> Result<(crate::state::JobGuard<'_>, DomainRecord)> {
        let first = self.domain(key)?;
        let guard =
            self.state
                .jobs
                .acquire(&first.def.uuid, &first.def.name, job, self.job_timeout)?;
        let rec = self.domain(&first.def.uuid)?;
        Ok((guard, rec))
    }

    /// Asks the driver for a running domain's true state (a guest may have powered itself
    /// off, its emulator may have died) and records a change, with its events. Skipped while
    /// a job holds the domain: that job records what it does.
    pub fn refresh(&self, key: &str) -> Result<()> {
        let first = self.domain(key)?;
        if !first.is_active() {
            return Ok(());
        }
        let Ok(_job) = self.state.jobs.acquire(
            &first.def.uuid,
            &first.def.name,
            "poll",
            std::time::Duration::ZERO,
        ) else {
            return Ok(());
        };
        let rec = self.domain(&first.def.uuid)?;
        if !rec.is_active() {
            return Ok(());
        }
        let dom = rec.as_ref();
        let runtime = match self.plugin.hypervisor("poll", |g, s| g.call_poll(s, &dom)) {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::Unsupported => return Ok(()),
            Err(e) => return Err(e),
        };
        if Some(&runtime) != rec.runtime.as_ref() {
            self.apply(&rec.def.uuid, runtime)?;
        }
        Ok(())
    }

    /// [`refresh`](Self::refresh) for every running domain; a failure is logged and the
    /// others are still refreshed.
    pub fn refresh_active(&self) {
        let active: Vec<String> = self
            .list_domains()
            .into_iter()
            .filter(|d| d.id.is_some())
            .map(|d| d.uuid)
            .collect();
        for uuid in active {
            if let Err(e) = self.refresh(&uuid) {
                tracing::warn!(domain = %uuid, "cannot refresh the domain's state: {}", e.message);
            }
        }
    }

    fn emit(&self, def: &DomainDef, event: DomainEvent) {
        self.state.events.emit(Event::Domain {
            name: def.name.clone(),
            uuid: def.uuid.clone(),
            event,
        });
    }

    /// The common shape of a lifecycle verb: lock the domain, check the state machine, call
    /// the plugin with no table lock held, then apply the runtime record it returns.
    pub(crate) fn verb(
        &self,
        key: &str,
        job: &str,
        check: impl FnOnce(&DomainRecord) -> Result<()>,
        call: impl FnOnce(&Connection, DomainRef) -> Result<DomainRuntime>,
    ) -> Result<()> {
        let (_job, rec) = self.locked_domain(key, job)?;
        check(&rec)?;
        let runtime = call(self, rec.as_ref())?;
        self.apply(&rec.def.uuid, runtime)
    }

    /// Stores a runtime record the plugin returned, on disk first for a persistent driver,
    /// and emits the events of the change.
    pub(crate) fn apply(&self, uuid: &str, runtime: DomainRuntime) -> Result<()> {
        let mut o = self.state.objects();
        let Some(rec) = o.domains.get(uuid).cloned() else {
            // Only undefine removes records, and it takes the job lock the caller holds.
            return Err(Error::internal(format!(
                "internal error: domain {uuid} vanished while a job held its lock"
            )));
        };
        let before = rec.state();
        let after = runtime.state;
        let events = transition_events(&before, &after);
        let def = rec.live.clone().unwrap_or_else(|| rec.def.clone());
        let mut saved = Ok(());
        if let DomainState::Shutoff(reason) = after {
            if rec.persistent {
                let mut now = rec;
                now.runtime = None;
                now.live = None;
                now.id = None;
                now.shutoff_reason = reason;
                saved = self.persist(&now);
                o.domains.insert(uuid.to_string(), now);
            } else {
                if let Some(store) = &self.store {
                    saved = store.forget(&rec.def.name);
                }
                o.domains.remove(uuid);
            }
        } else {
            let mut now = rec;
            if now.id.is_none() {
                now.id = Some(o.take_id());
            }
            if now.live.is_none() {
                now.live = Some(now.def.clone());
            }
            now.runtime = Some(runtime);
            saved = self.persist(&now);
            o.domains.insert(uuid.to_string(), now);
        }
        drop(o);
        for e in events {
            self.emit(&def, e);
        }
        // The backend has changed already; a record that could not be written is reported,
        // since a daemon restart would not find the guest.
        saved.map_err(|e| {
            Error::failed(format!(
                "domain '{}' changed state but its status could not be saved: {}",
                def.name, e.message
            ))
        })
    }
}

/// Parses domain XML, strictly when validating.
pub(crate) fn parse(text: &str, validate: bool) -> Result<ParsedDomain> {
    let options = ParseOptions {
        strict: validate,
        fill_defaults: true,
    };
    crate::xml::parse_domain_with(text, &options)
}

/// Longest domain name accepted: names become file names.
pub const MAX_NAME_LEN: usize = 200;

/// Refuses names that cannot be file names or would be misread: no path separators, no
/// control characters, not `.`/`..` or hidden, at most [`MAX_NAME_LEN`] bytes.
pub fn validate_name(name: &str) -> Result<()> {
    validate_object_name("domain", name)
}

/// The same rules for any object (`kind`: domain, pool, volume, network): names become file
/// names, so every object's name is checked alike.
pub fn validate_object_name(kind: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid {kind} name '{}': {why}",
            name.escape_default()
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!(
            "it is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name.contains('/') {
        return bad("it cannot contain '/'");
    }
    if name.chars().any(char::is_control) {
        return bad("it cannot contain control characters");
    }
    if name.starts_with('.') {
        return bad("it cannot start with '.'");
    }
    Ok(())
}

fn require_active(r: &DomainRecord) -> Result<()> {
    if r.is_active() {
        Ok(())
    } else {
        Err(not_running())
    }
}

/// Checks a new definition against existing names and uuids. Returns whether it replaces
/// the domain with the same name and uuid.
fn check_collisions(o: &Objects, def: &DomainDef) -> Result<bool> {
    if let Some(same_uuid) = o.domains.get(&def.uuid) {
        if same_uuid.def.name != def.name {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "operation failed: domain '{}' is already defined with uuid {}",
                    same_uuid.def.name, def.uuid
                ),
            ));
        }
        return Ok(true);
    }
    if let Some(same_name) = o.domain_by_name(&def.name) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "operation failed: domain '{}' already exists with uuid {}",
                def.name, same_name.def.uuid
            ),
        ));
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_canonicalised() {
        assert_eq!(
            canonical_uuid("6695EB01F6A4830479AA97F2502E193F").unwrap(),
            "6695eb01-f6a4-8304-79aa-97f2502e193f"
        );
        assert!(canonical_uuid("test").is_none());
    }

    #[test]
    fn transitions_give_libvirts_events() {
        use DomainState as S;
        let off = S::Shutoff(ShutoffReason::Unknown);
        assert_eq!(
            transition_events(&off, &S::Running(RunningReason::Booted)),
            vec![DomainEvent::Started("Booted")]
        );
        assert_eq!(
            transition_events(&off, &S::Paused(PausedReason::User)),
            vec![
                DomainEvent::Started("Booted"),
                DomainEvent::Suspended("Paused")
            ]
        );
        assert_eq!(
            transition_events(
                &S::Running(RunningReason::Booted),
                &S::Shutoff(ShutoffReason::Shutdown)
            ),
            vec![
                DomainEvent::Shutdown("Finished"),
                DomainEvent::Stopped("Shutdown")
            ]
        );
        assert_eq!(
            transition_events(
                &S::Paused(PausedReason::User),
                &S::Running(RunningReason::Unpaused)
            ),
            vec![DomainEvent::Resumed("Unpaused")]
        );
        assert!(
            transition_events(
                &S::Running(RunningReason::Booted),
                &S::Running(RunningReason::Booted)
            )
            .is_empty()
        );
    }
}
