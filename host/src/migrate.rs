//! Live migration's two halves on one host. The destination takes the definition and has
//! its driver wait for the stream (`migrate_prepare`), then resumes or discards the guest
//! (`migrate_finish`); the source streams it while reporting progress (`migrate_perform`,
//! cancellable) and then ends or keeps its copy (`migrate_confirm`). Who talks to whom
//! across hosts is the API layer's business (`virtwasm-api`'s `migrate`), not the host's.

use crate::bindings::hypervisor::MigrationProgress;
use crate::bindings::types::{DomainState, PausedReason};
use crate::connect::Connection;
use crate::error::{Error, Result};

impl Connection {
    /// Destination: defines `xml` as a transient domain (unless a definition with its uuid
    /// exists here) and has the driver wait for the stream on `listen`; returns the domain's
    /// name and the URI the source must send to.
    pub fn migrate_prepare(&self, xml: &str, listen: &str) -> Result<(String, String)> {
        let parsed = crate::domain::parse(xml, false)?;
        let def = self.stage_for_run(parsed.def, parsed.extras, " here")?;
        let (_job, rec) = self.locked_domain(&def.uuid, "migration in")?;
        let (live, _ports) = match self.with_display_ports(def.clone()) {
            Ok(p) => p,
            Err(e) => {
                self.unstage(&def.uuid);
                return Err(e);
            }
        };
        let dom = crate::state::DomainRecord {
            live: Some(live.clone()),
            ..rec
        };
        let target = self.plugin.hypervisor("migrate-prepare", |g, s| {
            g.call_migrate_prepare(s, &dom.as_ref(), listen)
        });
        match target {
            Ok(t) => {
                if !matches!(t.runtime.state, DomainState::Paused(_)) {
                    return Err(Error::internal(format!(
                        "plugin '{}' prepared an incoming migration that is not paused",
                        self.plugin.name()
                    )));
                }
                self.set_live(&def.uuid, live);
                self.apply(&def.uuid, t.runtime)?;
                Ok((def.name, t.uri))
            }
            Err(e) => {
                self.unstage(&def.uuid);
                Err(e)
            }
        }
    }

    /// Destination: resumes the guest that arrived (`success`) or throws away the waiting
    /// backend.
    pub fn migrate_finish(&self, key: &str, success: bool) -> Result<()> {
        self.verb(
            key,
            "migration in",
            |rec| match rec.state() {
                DomainState::Paused(PausedReason::Migration) => Ok(()),
                other => Err(Error::invalid_state(format!(
                    "Requested operation is not valid: domain is not waiting for a migration (it is {other:?})"
                ))),
            },
            |c, dom| {
                c.plugin
                    .hypervisor("migrate-finish", |g, s| g.call_migrate_finish(s, &dom, success))
            },
        )
    }

    /// Source: streams the running domain to `target_uri` (at most `bandwidth_mib` MiB/s),
    /// telling `progress` how far it is at least every 100 ms; an error from `progress` (a cancel) stops the migration and
    /// the domain keeps running here.
    pub fn migrate_perform(
        &self,
        key: &str,
        target_uri: &str,
        bandwidth_mib: Option<u64>,
        progress: &mut dyn FnMut(&MigrationProgress) -> Result<()>,
    ) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "migration out")?;
        if !rec.is_active() {
            return Err(Error::invalid_state(
                "Requested operation is not valid: domain is not running",
            ));
        }
        let dom = rec.as_ref();
        self.plugin.hypervisor("migrate-perform", |g, s| {
            g.call_migrate_perform(s, &dom, target_uri, bandwidth_mib)
        })?;
        // Checked at once, every 10 ms for the first second (a small guest's stream ends in
        // tens of milliseconds, and each step of waiting is added to the migration), then
        // every 100 ms (a large one's progress needs no finer steps).
        let started = std::time::Instant::now();
        loop {
            let p = self
                .plugin
                .hypervisor("migrate-progress", |g, s| g.call_migrate_progress(s, &dom))?;
            if let Err(stop) = progress(&p) {
                let _ = self
                    .plugin
                    .hypervisor("migrate-cancel", |g, s| g.call_migrate_cancel(s, &dom));
                return Err(stop);
            }
            match p.status.as_str() {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(Error::failed(format!(
                        "operation failed: migration {}: {}",
                        p.status,
                        p.error.unwrap_or_else(|| "no reason given".into())
                    )));
                }
                _ => {}
            }
            let pause = if started.elapsed() < std::time::Duration::from_secs(1) {
                10
            } else {
                100
            };
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
    }

    /// Source: after a migration, ends the local copy (`success`) or resumes it.
    pub fn migrate_confirm(&self, key: &str, success: bool) -> Result<()> {
        self.verb(
            key,
            "migration out",
            |_| Ok(()),
            |c, dom| {
                c.plugin.hypervisor("migrate-confirm", |g, s| {
                    g.call_migrate_confirm(s, &dom, success)
                })
            },
        )
    }
}
