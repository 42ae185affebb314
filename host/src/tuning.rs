//! Changing a domain's vCPUs and memory, live (through the driver), in its persistent
//! definition, or both, as `virsh setvcpus`, `setmem` and `setmaxmem` do.

use crate::bindings::types::DomainDef;
use crate::connect::Connection;
use crate::error::{Error, Result};

/// Which definition a change applies to (`--live`, `--config`, `--current`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    /// The running domain.
    pub live: bool,
    /// The persistent definition (next boot).
    pub config: bool,
}

impl Scope {
    /// `--current`: the running domain if it runs, else the persistent definition.
    pub fn current(active: bool) -> Scope {
        Scope {
            live: active,
            config: !active,
        }
    }
}

/// What `vcpucount` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VcpuCount {
    /// Maximum and current in the persistent definition.
    pub config: (u32, u32),
    /// Maximum and current of the running domain.
    pub live: Option<(u32, u32)>,
}

fn counts(def: &DomainDef) -> (u32, u32) {
    (def.vcpus, def.current_vcpus.unwrap_or(def.vcpus))
}

fn not_running() -> Error {
    Error::invalid_state("Requested operation is not valid: domain is not running")
}

impl Connection {
    /// The vCPU counts of a domain.
    pub fn vcpu_count(&self, key: &str) -> Result<VcpuCount> {
        let rec = self.domain(key)?;
        Ok(VcpuCount {
            config: counts(&rec.def),
            live: rec.live.as_ref().map(counts),
        })
    }

    /// Sets the number of vCPUs (`maximum`: the maximum, persistent definition only).
    pub fn set_vcpus(
        &self,
        key: &str,
        count: u32,
        scope: Option<Scope>,
        maximum: bool,
    ) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "setvcpus")?;
        let scope = scope.unwrap_or_else(|| Scope::current(rec.is_active()));
        if count == 0 {
            return Err(Error::invalid(
                "invalid argument: requested cpu amount must be at least 1",
            ));
        }
        if scope.live && !rec.is_active() {
            return Err(not_running());
        }
        if maximum {
            if scope.live {
                return Err(Error::invalid(
                    "invalid argument: cannot change the maximum vcpu count of a running domain",
                ));
            }
        } else {
            // Both copies that change must allow it: --live --config checks each maximum.
            let live_max = rec.live.as_ref().unwrap_or(&rec.def).vcpus;
            for max in [
                scope.live.then_some(live_max),
                scope.config.then_some(rec.def.vcpus),
            ]
            .into_iter()
            .flatten()
            {
                if count > max {
                    return Err(Error::invalid(format!(
                        "invalid argument: requested cpu amount exceeds maximum ({count} > {max})"
                    )));
                }
            }
        }
        let mut new = rec.clone();
        if scope.live {
            let runtime = self.plugin.hypervisor("set-vcpus", |g, s| {
                g.call_set_vcpus(s, &rec.as_ref(), count)
            })?;
            if let Some(live) = new.live.as_mut() {
                live.current_vcpus = (count != live.vcpus).then_some(count);
            }
            new.runtime = Some(runtime);
        }
        if scope.config {
            if maximum {
                new.def.vcpus = count;
                if new.def.current_vcpus.is_some_and(|c| c > count) {
                    new.def.current_vcpus = None;
                }
            } else {
                new.def.current_vcpus = (count != new.def.vcpus).then_some(count);
            }
        }
        self.replace_record(new)
    }

    /// Sets the current memory, in KiB.
    pub fn set_memory(&self, key: &str, kib: u64, scope: Option<Scope>) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "setmem")?;
        let scope = scope.unwrap_or_else(|| Scope::current(rec.is_active()));
        if scope.live && !rec.is_active() {
            return Err(not_running());
        }
        let live_max = rec.live.as_ref().unwrap_or(&rec.def).memory_kib;
        let max = match (scope.live, scope.config) {
            (true, true) => live_max.min(rec.def.memory_kib),
            (true, false) => live_max,
            _ => rec.def.memory_kib,
        };
        if kib > max {
            return Err(Error::invalid(
                "invalid argument: cannot set memory higher than max memory",
            ));
        }
        if kib == 0 {
            return Err(Error::invalid(
                "invalid argument: memory size must be greater than zero",
            ));
        }
        let mut new = rec.clone();
        if scope.live {
            let runtime = self.plugin.hypervisor("set-memory", |g, s| {
                g.call_set_memory(s, &rec.as_ref(), kib)
            })?;
            if let Some(live) = new.live.as_mut() {
                live.current_memory_kib = kib;
            }
            new.runtime = Some(runtime);
        }
        if scope.config {
            new.def.current_memory_kib = kib;
        }
        self.replace_record(new)
    }

    /// Sets the maximum memory, in KiB (persistent definition only: no driver hot-plugs it).
    pub fn set_max_memory(&self, key: &str, kib: u64, scope: Option<Scope>) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "setmaxmem")?;
        let scope = scope.unwrap_or_else(|| Scope::current(rec.is_active()));
        if scope.live {
            return Err(Error::invalid_state(
                "Requested operation is not valid: cannot resize the maximum memory on an active domain",
            ));
        }
        if kib == 0 {
            return Err(Error::invalid(
                "invalid argument: memory size must be greater than zero",
            ));
        }
        let mut new = rec;
        new.def.memory_kib = kib;
        new.def.current_memory_kib = new.def.current_memory_kib.min(kib);
        self.replace_record(new)
    }
}
