//! Durable state on disk, for drivers whose objects outlive the process (everything but the
//! per-process test driver).
//!
//! Layout, as libvirt's (`/etc/libvirt/qemu/NAME.xml`, `/run/libvirt/qemu/NAME.xml`):
//! - `CONFIG/domains/NAME.xml`: a persistent definition, libvirt XML an operator can read;
//! - `CONFIG/domains/autostart/NAME`: present when the domain starts with the host;
//! - `STATUS/domains/NAME.json`: the runtime record of a running domain (its id, the
//!   definition it runs with, the driver's record such as a pid and a monitor path), kept in
//!   the runtime directory so a reboot of the host forgets it, as it forgets the guests.
//!
//! Every file is written atomically (temporary file, rename), so a crash leaves the old version
//! or the new one, never a torn file. Definitions are also flushed (fsync of the file and the
//! directory) so they survive a power loss; runtime status is not, since after a power loss
//! there is no guest left for it to describe.

use std::path::{Path, PathBuf};

use crate::bindings::types::{DomainDef, DomainRuntime};
use crate::engine::{write_atomically, write_atomically_volatile};
use crate::error::{Error, Result};
use crate::state::DomainRecord;
use crate::xml::{self, FormatOptions, ParsedDomain};

/// Where one driver connection keeps its files.
#[derive(Debug, Clone)]
pub struct DiskStore {
    config: PathBuf,
    status: PathBuf,
    state: PathBuf,
}

/// What the status file of a running domain holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Status {
    id: Option<i32>,
    persistent: bool,
    live: DomainDef,
    runtime: DomainRuntime,
    extras: xml::Extras,
}

fn io<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(what, path, e)
}

/// Refuses a name that is not a plain file name. Every path below is built from an object's
/// name, so this is checked here too, whatever the caller already checked: a name from a
/// save image, a plugin or a node file must never reach outside the store's directories.
pub fn check_file_name(name: &str) -> Result<()> {
    crate::domain::validate_object_name("object", name)
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io("cannot create directory", path))
}

impl DiskStore {
    /// A store under `config` (definitions), `status` (runtime records) and `state`
    /// (managed-save images).
    pub fn open(config: PathBuf, status: PathBuf, state: PathBuf) -> Result<DiskStore> {
        for dir in [
            config.join("domains/autostart"),
            config.join("storage/autostart"),
            config.join("networks/autostart"),
            status.join("domains"),
            status.join("storage"),
            status.join("networks"),
            state.join("save"),
        ] {
            create_private_dir(&dir)?;
        }
        // Writers killed mid-write leave temporary files; nothing reads them, so remove them.
        for dir in [
            config.join("domains"),
            config.join("storage"),
            config.join("networks"),
            status.join("domains"),
            status.join("storage"),
            status.join("networks"),
        ] {
            crate::engine::sweep_stale_temps(&dir);
        }
        Ok(DiskStore {
            config,
            status,
            state,
        })
    }

    /// Where managed-save images live.
    pub fn save_dir(&self) -> PathBuf {
        self.state.join("save")
    }

    fn def_path(&self, name: &str) -> PathBuf {
        self.config.join("domains").join(format!("{name}.xml"))
    }

    fn autostart_path(&self, name: &str) -> PathBuf {
        self.config.join("domains/autostart").join(name)
    }

    fn snapshots_path(&self, name: &str) -> PathBuf {
        self.config
            .join("domains")
            .join(format!("{name}.snapshots.json"))
    }

    fn status_path(&self, name: &str) -> PathBuf {
        self.status.join("domains").join(format!("{name}.json"))
    }

    /// Writes what `rec` needs on disk: its definition when persistent, its autostart mark,
    /// and its status file while it runs (removed when it stops).
    pub fn save_domain(&self, rec: &DomainRecord) -> Result<()> {
        check_file_name(&rec.def.name)?;
        let name = &rec.def.name;
        if rec.persistent {
            let xml = xml::format_domain(
                &ParsedDomain {
                    def: rec.def.clone(),
                    extras: rec.extras.clone(),
                },
                &FormatOptions {
                    id: None,
                    inactive: true,
                },
            );
            let path = self.def_path(name);
            write_if_changed(&path, xml.as_bytes()).map_err(io("cannot write", &path))?;
            let snaps = self.snapshots_path(name);
            if rec.snapshots.is_empty() {
                remove_if_present(&snaps)?;
            } else {
                let body = serde_json::to_vec_pretty(&(&rec.snapshots, &rec.current_snapshot))
                    .map_err(|e| Error::internal(format!("encoding snapshots of '{name}': {e}")))?;
                write_if_changed(&snaps, &body).map_err(io("cannot write", &snaps))?;
            }
            let mark = self.autostart_path(name);
            if rec.autostart {
                write_if_changed(&mark, b"").map_err(io("cannot write", &mark))?;
            } else {
                remove_if_present(&mark)?;
            }
        }
        let status = self.status_path(name);
        match (&rec.runtime, &rec.live) {
            (Some(runtime), live) => {
                let body = Status {
                    id: rec.id,
                    persistent: rec.persistent,
                    live: live.clone().unwrap_or_else(|| rec.def.clone()),
                    runtime: runtime.clone(),
                    extras: rec.extras.clone(),
                };
                let json = serde_json::to_vec_pretty(&body)
                    .map_err(|e| Error::internal(format!("encoding status of '{name}': {e}")))?;
                write_atomically_volatile(&status, &json).map_err(io("cannot write", &status))?;
            }
            (None, _) => remove_status(&status)?,
        }
        Ok(())
    }

    /// Removes a domain's definition and autostart mark (its status stays while it runs).
    pub fn remove_definition(&self, name: &str) -> Result<()> {
        check_file_name(name)?;
        remove_if_present(&self.def_path(name))?;
        remove_if_present(&self.snapshots_path(name))?;
        remove_if_present(&self.autostart_path(name))
    }

    /// Removes every file of a domain.
    pub fn forget(&self, name: &str) -> Result<()> {
        check_file_name(name)?;
        self.remove_definition(name)?;
        remove_status(&self.status_path(name))
    }

    /// Reads every domain back: definitions first, then status files of running domains
    /// (transient ones exist only there). A file that cannot be read is reported, not
    /// skipped silently: losing track of a running guest is worse than refusing to start.
    pub fn load_domains(&self) -> Result<Vec<DomainRecord>> {
        let mut records: Vec<DomainRecord> = Vec::new();
        for path in files_with(&self.config.join("domains"), "xml")? {
            let text = std::fs::read_to_string(&path).map_err(io("cannot read", &path))?;
            let parsed = xml::parse_domain(&text)
                .map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.message)))?;
            let mut rec = DomainRecord::inactive(parsed.def, true);
            rec.extras = parsed.extras;
            rec.autostart = self.autostart_path(&rec.def.name).exists();
            let snaps = self.snapshots_path(&rec.def.name);
            if snaps.exists() {
                let body = std::fs::read(&snaps).map_err(io("cannot read", &snaps))?;
                let (list, current): (Vec<crate::state::SnapshotRecord>, Option<String>) =
                    serde_json::from_slice(&body)
                        .map_err(|e| Error::invalid(format!("{}: {e}", snaps.display())))?;
                rec.snapshots = list;
                rec.current_snapshot = current;
            }
            records.push(rec);
        }
        for path in files_with(&self.status.join("domains"), "json")? {
            let text = std::fs::read(&path).map_err(io("cannot read", &path))?;
            let status: Status = serde_json::from_slice(&text)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
            let rec = match records.iter_mut().find(|r| r.def.uuid == status.live.uuid) {
                Some(r) => r,
                None => {
                    let mut r = DomainRecord::inactive(status.live.clone(), false);
                    r.extras = status.extras.clone();
                    records.push(r);
                    records.last_mut().expect("just pushed")
                }
            };
            rec.id = status.id;
            rec.persistent = status.persistent;
            rec.live = Some(status.live);
            rec.runtime = Some(status.runtime);
        }
        Ok(records)
    }
}

/// What the status file of an active pool or network holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ObjectStatus {
    active: bool,
    #[serde(default)]
    volumes: Vec<crate::bindings::types::VolumeDef>,
}

impl DiskStore {
    fn object_paths(&self, kind: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.config.join(kind).join(format!("{name}.xml")),
            self.config.join(kind).join("autostart").join(name),
            self.status.join(kind).join(format!("{name}.json")),
        )
    }

    fn save_object(
        &self,
        kind: &str,
        name: &str,
        xml: Option<String>,
        autostart: bool,
        status: Option<ObjectStatus>,
    ) -> Result<()> {
        check_file_name(name)?;
        let (def, mark, stat) = self.object_paths(kind, name);
        if let Some(xml) = xml {
            write_atomically(&def, xml.as_bytes()).map_err(io("cannot write", &def))?;
            if autostart {
                write_atomically(&mark, b"").map_err(io("cannot write", &mark))?;
            } else {
                remove_if_present(&mark)?;
            }
        }
        match status {
            Some(s) => {
                let body = serde_json::to_vec_pretty(&s)
                    .map_err(|e| Error::internal(format!("encoding status of '{name}': {e}")))?;
                write_atomically_volatile(&stat, &body).map_err(io("cannot write", &stat))?;
            }
            None => remove_status(&stat)?,
        }
        Ok(())
    }

    fn forget_object(&self, kind: &str, name: &str, keep_status: bool) -> Result<()> {
        check_file_name(name)?;
        let (def, mark, stat) = self.object_paths(kind, name);
        remove_if_present(&def)?;
        remove_if_present(&mark)?;
        if !keep_status {
            remove_status(&stat)?;
        }
        Ok(())
    }

    fn read_status(path: &Path) -> Result<Option<ObjectStatus>> {
        if !path.exists() {
            return Ok(None);
        }
        let body = std::fs::read(path).map_err(io("cannot read", path))?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
    }

    /// Writes a pool's definition (when persistent), autostart mark and status.
    pub fn save_pool(&self, rec: &crate::state::PoolRecord) -> Result<()> {
        let xml = rec.persistent.then(|| {
            xml::format_pool(
                &xml::ParsedPool {
                    def: rec.def.clone(),
                    capacity: 0,
                    allocation: 0,
                    available: 0,
                    extras: rec.extras.clone(),
                },
                &FormatOptions {
                    id: None,
                    inactive: true,
                },
            )
        });
        let status = rec.info.as_ref().map(|_| ObjectStatus {
            active: true,
            volumes: rec.volumes.clone(),
        });
        self.save_object("storage", &rec.def.name, xml, rec.autostart, status)
    }

    /// Removes a pool's files; `keep_status` while it is still active.
    pub fn forget_pool(&self, name: &str, keep_status: bool) -> Result<()> {
        self.forget_object("storage", name, keep_status)
    }

    /// Writes a network's definition (when persistent), autostart mark and status.
    pub fn save_network(&self, rec: &crate::state::NetworkRecord) -> Result<()> {
        let xml = rec.persistent.then(|| {
            // The file holds what the next start uses.
            let def = rec.next.clone().unwrap_or_else(|| rec.def.clone());
            xml::format_network(
                &xml::ParsedNetwork {
                    def,
                    extras: rec.extras.clone(),
                },
                &FormatOptions::default(),
            )
        });
        let status = rec.active.then(|| ObjectStatus {
            active: true,
            volumes: vec![],
        });
        self.save_object("networks", &rec.def.name, xml, rec.autostart, status)
    }

    /// Removes a network's files; `keep_status` while it is still active.
    pub fn forget_network(&self, name: &str, keep_status: bool) -> Result<()> {
        self.forget_object("networks", name, keep_status)
    }

    /// Reads every persistent pool back, with its active state and volumes.
    pub fn load_pools(&self) -> Result<Vec<crate::state::PoolRecord>> {
        let mut out = Vec::new();
        for path in files_with(&self.config.join("storage"), "xml")? {
            let text = std::fs::read_to_string(&path).map_err(io("cannot read", &path))?;
            let parsed = xml::parse_pool(&text)
                .map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.message)))?;
            let (_, mark, stat) = self.object_paths("storage", &parsed.def.name);
            let status = Self::read_status(&stat)?;
            out.push(crate::state::PoolRecord {
                info: status.as_ref().map(|_| crate::bindings::types::PoolInfo {
                    state: crate::bindings::types::PoolState::Running,
                    capacity: 0,
                    allocation: 0,
                    available: 0,
                }),
                volumes: status.map(|s| s.volumes).unwrap_or_default(),
                persistent: true,
                autostart: mark.exists(),
                extras: parsed.extras,
                def: parsed.def,
            });
        }
        Ok(out)
    }

    /// Reads every persistent network back, with its active state.
    pub fn load_networks(&self) -> Result<Vec<crate::state::NetworkRecord>> {
        let mut out = Vec::new();
        for path in files_with(&self.config.join("networks"), "xml")? {
            let text = std::fs::read_to_string(&path).map_err(io("cannot read", &path))?;
            let parsed = xml::parse_network(&text)
                .map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.message)))?;
            let (_, mark, stat) = self.object_paths("networks", &parsed.def.name);
            out.push(crate::state::NetworkRecord {
                active: Self::read_status(&stat)?.is_some(),
                persistent: true,
                autostart: mark.exists(),
                extras: parsed.extras,
                def: parsed.def,
                next: None,
            });
        }
        Ok(out)
    }
}

/// Writes `bytes` atomically unless the file already holds exactly them: every state change
/// saves the record, and most (a start, a pause) leave the definition as it was; its two
/// fsyncs would be paid for nothing on the path of every verb.
fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomically(path, bytes)
}

/// Removes a status file without flushing the removal: runtime state, see
/// [`write_atomically_volatile`](crate::engine::write_atomically_volatile).
fn remove_status(path: &Path) -> Result<()> {
    remove_file(path, false)
}

fn remove_if_present(path: &Path) -> Result<()> {
    remove_file(path, true)
}

/// Removes `path` if it exists; with `durable`, the removal is flushed too.
fn remove_file(path: &Path, durable: bool) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if durable && let Some(dir) = path.parent() {
                crate::engine::sync_dir(dir).map_err(|e| Error::io("cannot sync", dir, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

fn files_with(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io("cannot list", dir, e)),
    };
    let mut v: Vec<PathBuf> = read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().and_then(|x| x.to_str()) == Some(ext)
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(".")
                    .starts_with('.')
        })
        .collect();
    v.sort();
    Ok(v)
}
