//! Saved-memory images: virtwasm's own header carrying the domain XML, then the driver's
//! memory stream. `restore FILE` needs nothing else: the header says what domain it is.
//!
//! Layout: `VirtwasmSaveImg\0` (16 bytes), format version (u32 LE), XML length (u32 LE),
//! 8 reserved bytes, the XML, zero padding to a 4 KiB boundary, then the driver's stream
//! (QEMU's migration stream for the QEMU driver; nothing for the test driver).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::bindings::types::{DomainState, RunningReason};
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::ManagedSaveStartReason;
use crate::xml::{FormatOptions, ParsedDomain};

const MAGIC: &[u8; 16] = b"VirtwasmSaveImg\0";
const VERSION: u32 = 1;
const ALIGN: usize = 4096;
/// Largest XML a header may carry; anything larger is not an image we wrote.
const MAX_XML: u32 = 16 << 20;

/// Writes the header for `xml` to a new file at `path`; returns the stream offset.
fn write_header(path: &Path, xml: &str) -> Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("cannot create save image", path, e))?;
    let mut head = Vec::with_capacity(ALIGN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(xml.len() as u32).to_le_bytes());
    head.extend_from_slice(&[0u8; 8]);
    head.extend_from_slice(xml.as_bytes());
    let padded = head.len().div_ceil(ALIGN) * ALIGN;
    head.resize(padded, 0);
    f.write_all(&head)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("cannot write save image", path, e))?;
    Ok(padded as u64)
}

/// Reads an image's header: the domain XML and the stream offset.
pub fn read_header(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "No such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "Permission denied".to_string(),
            _ => e.to_string(),
        };
        Error::new(
            ErrorKind::NotFound,
            format!("cannot read domain image '{}': {why}", path.display()),
        )
    })?;
    let mut fixed = [0u8; 32];
    f.read_exact(&mut fixed)
        .map_err(|_| not_an_image(path, "it is shorter than the header"))?;
    if &fixed[..16] != MAGIC {
        return Err(not_an_image(
            path,
            "it does not start with virtwasm's signature",
        ));
    }
    let version = u32::from_le_bytes(fixed[16..20].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(not_an_image(
            path,
            &format!("format version {version}, this host reads {VERSION}"),
        ));
    }
    let len = u32::from_le_bytes(fixed[20..24].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_XML {
        return Err(not_an_image(
            path,
            &format!("its XML length {len} is out of range"),
        ));
    }
    let mut xml = vec![0u8; len as usize];
    f.read_exact(&mut xml)
        .map_err(|_| not_an_image(path, "its XML is cut short"))?;
    let xml = String::from_utf8(xml).map_err(|_| not_an_image(path, "its XML is not UTF-8"))?;
    Ok((xml, ((32 + len as usize).div_ceil(ALIGN) * ALIGN) as u64))
}

fn not_an_image(path: &Path, why: &str) -> Error {
    Error::invalid(format!(
        "'{}' is not a virtwasm save image: {why}",
        path.display()
    ))
}

impl Connection {
    /// Saves a running domain's memory to `path` and stops it.
    pub fn save(&self, key: &str, path: &Path) -> Result<()> {
        self.writable()?;
        let (_job, rec) = self.locked_domain(key, "save")?;
        if !rec.is_active() {
            return Err(Error::invalid_state(
                "Requested operation is not valid: domain is not running",
            ));
        }
        let path = absolute(path)?;
        let live = rec.live.clone().unwrap_or_else(|| rec.def.clone());
        let xml = crate::xml::format_domain(
            &ParsedDomain {
                def: live,
                extras: rec.extras.clone(),
            },
            &FormatOptions {
                id: None,
                inactive: true,
            },
        );
        let partial = path.with_extension("partial");
        write_header(&partial, &xml)?;
        let saved = self.plugin.hypervisor("save", |g, s| {
            g.call_save(s, &rec.as_ref(), &partial.to_string_lossy())
        });
        let runtime = match saved {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        // The guest has stopped: record that first, whatever happens to the file's name.
        self.apply(&rec.def.uuid, runtime)?;
        std::fs::rename(&partial, &path).map_err(|e| {
            Error::io(
                &format!(
                    "the domain was saved to '{}', but naming it failed:",
                    partial.display()
                ),
                &path,
                e,
            )
        })
    }

    /// Starts the domain saved in `path`; returns its name.
    pub fn restore(&self, path: &Path, paused: bool) -> Result<String> {
        self.restore_from(path, paused, RunningReason::Restored, None)
    }

    /// [`restore`](Self::restore), refusing an image whose definition is no longer
    /// `checked`: a front end that vetted the definition (the files it names) must not
    /// restore one swapped in after its check.
    pub fn restore_checked(&self, path: &Path, paused: bool, checked: &str) -> Result<String> {
        self.restore_from(path, paused, RunningReason::Restored, Some(checked))
    }

    /// Restores, reporting `reason` when the guest runs (a start from a managed-save image
    /// reports what the driver's manifest says).
    fn restore_from(
        &self,
        path: &Path,
        paused: bool,
        reason: RunningReason,
        checked: Option<&str>,
    ) -> Result<String> {
        self.writable()?;
        let path = absolute(path)?;
        let (xml, offset) = read_header(&path)?;
        if checked.is_some_and(|c| c != xml) {
            return Err(Error::invalid_state(format!(
                "save image '{}' changed while it was being restored",
                path.display()
            )));
        }
        let parsed = crate::xml::parse_domain(&xml).map_err(|e| {
            Error::invalid(format!("save image '{}': {}", path.display(), e.message))
        })?;
        // The image's XML is input like any other: its name becomes file names.
        crate::domain::validate_name(&parsed.def.name)?;
        let uuid = parsed.def.uuid.clone();
        let name = parsed.def.name.clone();
        {
            let mut o = self.state.objects();
            match o.domains.get(&uuid) {
                Some(existing) if existing.is_active() => {
                    return Err(Error::invalid_state(format!(
                        "Requested operation is not valid: domain '{name}' is already active"
                    )));
                }
                Some(existing) if existing.def.name != name => {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "operation failed: domain '{}' is already defined with uuid {uuid}",
                            existing.def.name
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    if let Some(other) = o.domain_by_name(&name) {
                        return Err(Error::new(
                            ErrorKind::AlreadyExists,
                            format!(
                                "operation failed: domain '{name}' already exists with uuid {}",
                                other.def.uuid
                            ),
                        ));
                    }
                    let mut rec = crate::state::DomainRecord::inactive(parsed.def.clone(), false);
                    rec.extras = parsed.extras.clone();
                    o.domains.insert(uuid.clone(), rec);
                }
            }
        }
        // Locked and read again: a concurrent start may have won the race.
        let (_job, rec) = self.locked_domain(&uuid, "restore")?;
        if rec.is_active() {
            return Err(Error::invalid_state(format!(
                "Requested operation is not valid: domain '{name}' is already active"
            )));
        }
        self.check_unmodelled(&parsed.def, &parsed.extras)?;
        let mut dom = rec.as_ref();
        let (def, _ports) = self.with_display_ports(parsed.def)?;
        dom.def = def;
        let path_text = path.to_string_lossy().into_owned();
        match self.plugin.hypervisor("restore", |g, s| {
            g.call_restore(s, &dom, &path_text, offset, paused)
        }) {
            Ok(mut runtime) => {
                if runtime.state == DomainState::Running(RunningReason::Restored) {
                    runtime.state = DomainState::Running(reason);
                }
                self.set_live(&uuid, dom.def);
                self.apply(&uuid, runtime)?;
                Ok(name)
            }
            Err(e) => {
                let mut o = self.state.objects();
                if o.domains
                    .get(&uuid)
                    .is_some_and(|d| !d.persistent && !d.is_active())
                {
                    o.domains.remove(&uuid);
                }
                Err(e)
            }
        }
    }

    /// Saves a running domain to its managed-save image; `start` resumes from it.
    pub fn managed_save(&self, key: &str) -> Result<String> {
        self.writable()?;
        let rec = self.domain(key)?;
        if !rec.is_active() {
            return Err(Error::invalid_state(
                "Requested operation is not valid: domain is not running",
            ));
        }
        if !rec.persistent {
            return Err(Error::invalid_state(
                "Requested operation is not valid: cannot do managed save for transient domain",
            ));
        }
        let path = self.managed_save_path(&rec.def.name)?;
        let _ = std::fs::remove_file(&path);
        self.save(&rec.def.uuid, &path)?;
        let mut now = self.domain(&rec.def.uuid)?;
        now.managed_save = true;
        self.replace_record(now)?;
        Ok(rec.def.name)
    }

    /// Removes a managed-save image; `false` when there was none.
    pub fn managed_save_remove(&self, key: &str) -> Result<bool> {
        self.writable()?;
        let rec = self.domain(key)?;
        if !rec.managed_save {
            return Ok(false);
        }
        let path = self.managed_save_path(&rec.def.name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove managed save image", &path, e)),
        }
        let mut now = rec;
        now.managed_save = false;
        if matches!(now.state(), DomainState::Shutoff(_)) {
            now.shutoff_reason = crate::bindings::types::ShutoffReason::Unknown;
        }
        self.replace_record(now)?;
        Ok(true)
    }

    /// Starts from the managed-save image if there is one; `None` if there is none.
    pub(crate) fn start_from_managed_save(&self, uuid: &str, paused: bool) -> Result<Option<()>> {
        let rec = self.domain(uuid)?;
        if !rec.managed_save {
            return Ok(None);
        }
        let path = self.managed_save_path(&rec.def.name)?;
        // The image must be this domain's: a file put there by other means must not start
        // another guest under this name.
        let (xml, _) = read_header(&path)?;
        let theirs = crate::xml::parse_domain(&xml)
            .map(|p| p.def.uuid)
            .unwrap_or_default();
        if theirs != rec.def.uuid {
            return Err(Error::invalid(format!(
                "the managed-save image '{}' holds domain {theirs}, not '{}' ({})",
                path.display(),
                rec.def.name,
                rec.def.uuid
            )));
        }
        let reason = match self.plugin.manifest.plugin.managed_save_start_reason {
            ManagedSaveStartReason::Restored => RunningReason::Restored,
            ManagedSaveStartReason::Booted => RunningReason::Booted,
        };
        self.restore_from(&path, paused, reason, None)?;
        let _ = std::fs::remove_file(&path);
        let mut now = self.domain(uuid)?;
        now.managed_save = false;
        self.replace_record(now)?;
        Ok(Some(()))
    }

    fn managed_save_path(&self, name: &str) -> Result<PathBuf> {
        let dir = match &self.store {
            Some(store) => store.save_dir(),
            None => self.state.scratch_dir()?,
        };
        Ok(dir.join(format!("{name}.save")))
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(path))
        .map_err(|e| Error::io("cannot resolve", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.save");
        let off = write_header(&p, "<domain/>").unwrap();
        assert_eq!(off, 4096);
        assert_eq!(read_header(&p).unwrap(), ("<domain/>".to_string(), 4096));
        assert!(
            write_header(&p, "again")
                .unwrap_err()
                .message
                .contains("cannot create save image"),
            "never overwrites"
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"QEVM and then some other bytes entirely").unwrap();
        let e = read_header(&junk).unwrap_err();
        assert!(
            e.message
                .contains("does not start with virtwasm's signature"),
            "{e}"
        );
        std::fs::write(&junk, b"short").unwrap();
        assert!(
            read_header(&junk)
                .unwrap_err()
                .message
                .contains("shorter than the header")
        );
    }
}
