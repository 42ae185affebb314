//! Which plugin serves a storage pool, and what it may touch.
//!
//! A connection's own plugin serves the pool types its manifest lists (the test driver lists
//! all of them: its pools are make-believe). Any other type goes to the storage-driver plugin
//! that lists it, as libvirt's storage driver serves every hypervisor connection. Such a
//! plugin has no directory of its own: each call about a pool gets that pool's target
//! directory, read-write, in a single-use instance, so through WASI a dir-pool driver can reach
//! the pools an operator defined and nothing else. (A program it runs, such as qemu-img, runs
//! with the host's privileges and takes paths: the driver must check what it hands it.)
//!
//! The host owns the existence of a pool's target directory (it creates it for `pool-build`
//! and removes it, once empty, for `pool-delete`); the driver owns what is inside.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::Store;

use crate::bindings::types::PoolDef;
use crate::bindings::{storage, types};
use crate::capabilities::HostState;
use crate::connect::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::plugin::Plugin;

/// The plugin serving a pool and the directory it is given for the pool's calls.
pub struct PoolDriver {
    /// The plugin.
    pub plugin: Arc<Plugin>,
    /// The pool's target directory when the plugin is a storage driver of its own (`None`
    /// when the connection's own plugin serves the pool).
    pub dir: Option<PathBuf>,
}

/// A front end's rule on where storage pools' directories may be, asked with a directory's
/// path as the pool defines it and its real path (every symbolic link resolved) before each
/// call that hands it to a storage driver and before the host creates one. A daemon checks
/// a pool's path when a client defines it; this catches what changed on disk since (a
/// directory swapped for a link to /etc), at the moment it would matter.
#[derive(Clone)]
pub struct PoolDirRule(Arc<PoolDirCheck>);

/// The check behind a [`PoolDirRule`]: (the directory as defined, its real path).
type PoolDirCheck = dyn Fn(&Path, &Path) -> Result<()> + Send + Sync;

impl PoolDirRule {
    /// The rule `check`, called with the directory as defined and its real path; an `Err`
    /// refuses the call, its message saying why.
    pub fn new(check: impl Fn(&Path, &Path) -> Result<()> + Send + Sync + 'static) -> PoolDirRule {
        PoolDirRule(Arc::new(check))
    }

    fn check(&self, pool: &PoolDef, real: &Path) -> Result<()> {
        let defined = Path::new(pool.target_path.as_deref().unwrap_or_default());
        (self.0)(defined, real).map_err(|e| {
            Error::new(
                e.kind,
                format!("storage pool '{}': {}", pool.name, e.message),
            )
        })
    }
}

impl std::fmt::Debug for PoolDirRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolDirRule")
    }
}

/// The mode of a target directory the host creates for `pool-build` when the definition names
/// none (libvirt's default for pool directories).
const DEFAULT_POOL_DIR_MODE: u32 = 0o711;

impl Connection {
    /// Which plugin serves `pool`, refusing a type nothing here serves.
    pub fn pool_driver(&self, pool: &PoolDef) -> Result<PoolDriver> {
        let kind = crate::xml::pool_type_name(pool.pool_type);
        let own = &self.plugin.manifest.plugin.pool_types;
        if own.iter().any(|t| t == kind) {
            return Ok(PoolDriver {
                plugin: self.plugin.clone(),
                dir: None,
            });
        }
        let Some(plugin) = self.registry.for_pool_type(kind) else {
            let others = self.registry.storage_pool_types();
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "no storage driver here serves pools of type '{kind}' (the '{}' driver serves {}; storage plugins serve {})",
                    self.plugin.name(),
                    listing(own),
                    listing(&others)
                ),
            ));
        };
        let target = pool.target_path.as_deref().unwrap_or_default();
        let path = Path::new(target);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::invalid(format!(
                "storage pool '{}': target path '{target}' must be an absolute path without '..'",
                pool.name
            )));
        }
        Ok(PoolDriver {
            plugin: plugin?,
            dir: Some(path.to_path_buf()),
        })
    }

    /// Runs storage `verb` about `pool` in the plugin serving it.
    pub(crate) fn pool_call<R>(
        &self,
        pool: &PoolDef,
        verb: &str,
        f: impl FnOnce(
            &storage::Guest,
            &mut Store<HostState>,
        ) -> wasmtime::Result<std::result::Result<R, types::Error>>,
    ) -> Result<R> {
        let driver = self.pool_driver(pool)?;
        let Some(dir) = &driver.dir else {
            return driver.plugin.storage(verb, None, f);
        };
        let real = existing_dir(dir)?;
        if let Some(rule) = &self.pool_dir_rule {
            rule.check(pool, &real)?;
        }
        driver
            .plugin
            .storage(verb, Some((&real, &dir.to_string_lossy())), f)
    }

    /// Creates the target directory of a pool served by a storage driver (before its
    /// `pool-build`), with the definition's mode or libvirt's default.
    pub(crate) fn create_pool_dir(&self, pool: &PoolDef) -> Result<()> {
        let Some(dir) = self.pool_driver(pool)?.dir else {
            return Ok(());
        };
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(rule) = &self.pool_dir_rule {
            rule.check(pool, &would_be(&dir)?)?;
        }
        let mode = pool
            .target_permissions
            .as_ref()
            .and_then(|p| p.mode)
            .unwrap_or(DEFAULT_POOL_DIR_MODE);
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&dir)
            .map_err(|e| Error::io("cannot create storage pool directory", &dir, e))
    }

    /// Removes the (emptied) target directory of a pool served by a storage driver, after its
    /// `pool-delete`.
    pub(crate) fn remove_pool_dir(&self, pool: &PoolDef) -> Result<()> {
        let Some(dir) = self.pool_driver(pool)?.dir else {
            return Ok(());
        };
        if let (Some(rule), Ok(real)) = (&self.pool_dir_rule, dir.canonicalize()) {
            rule.check(pool, &real)?;
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove storage pool directory", &dir, e)),
        }
    }
}

/// The directory itself, symlinks resolved, refusing what is not an existing directory (the
/// plugin is given exactly this directory, never what a link inside it would reach).
fn existing_dir(dir: &Path) -> Result<PathBuf> {
    let real = dir
        .canonicalize()
        .map_err(|e| Error::io("cannot open storage pool directory", dir, e))?;
    if !real.is_dir() {
        return Err(Error::invalid(format!(
            "storage pool target '{}' is not a directory",
            dir.display()
        )));
    }
    Ok(real)
}

/// Where `dir`, which does not exist yet, would be made: its nearest existing ancestor with
/// links resolved, then the rest of the path.
fn would_be(dir: &Path) -> Result<PathBuf> {
    let mut base = dir;
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(base).is_err() {
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                base = parent;
            }
            _ => break,
        }
    }
    let mut real = base
        .canonicalize()
        .map_err(|e| Error::io("cannot resolve storage pool directory", base, e))?;
    real.extend(rest.iter().rev());
    Ok(real)
}

fn listing(types: &[String]) -> String {
    if types.is_empty() {
        "none".to_string()
    } else {
        types.join(", ")
    }
}
