//! The plugins this host knows: the bundled first-party ones and those in plugin directories.
//! Manifests are read up front (cheap); a plugin is compiled and linked only when first used.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::engine::Runtime;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{Manifest, PathVars};
use crate::plugin::{Plugin, PluginSource};

/// A first-party plugin compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct BundledPlugin {
    /// Its `plugin.toml`.
    pub manifest: &'static str,
    /// Its component.
    pub wasm: &'static [u8],
    /// sha256 of `wasm`, computed at build time so a start does not hash it again.
    pub sha256: &'static str,
}

enum Origin {
    Bundled(BundledPlugin),
    Directory(PathBuf),
}

struct Entry {
    manifest: Manifest,
    origin: Origin,
    loaded: OnceLock<Result<Arc<Plugin>>>,
}

/// What `plugin-list` shows about one plugin.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PluginSummary {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// WIT world.
    pub world: String,
    /// URI schemes.
    pub schemes: Vec<String>,
    /// Description.
    pub description: String,
    /// Where it comes from.
    pub source: PluginSource,
}

/// All known plugins.
pub struct Registry {
    runtime: Arc<Runtime>,
    entries: Vec<Entry>,
    problems: Vec<Error>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("plugins", &self.entries.len())
            .finish()
    }
}

impl Registry {
    /// Reads the bundled manifests and every `DIR/*/plugin.toml`. A directory plugin replaces
    /// a bundled one of the same name (that is how a driver is upgraded without a rebuild).
    /// Broken manifests do not stop the others; [`Registry::problems`] lists them.
    pub fn new(
        runtime: Arc<Runtime>,
        bundled: &[BundledPlugin],
        dirs: &[PathBuf],
        vars: &PathVars,
    ) -> Registry {
        let mut entries: Vec<Entry> = Vec::new();
        let mut problems = Vec::new();
        for b in bundled {
            match Manifest::parse(b.manifest, "bundled plugin.toml").and_then(|mut m| {
                m.expand_paths(vars, "bundled plugin.toml")?;
                Ok(m)
            }) {
                Ok(manifest) => entries.push(Entry {
                    manifest,
                    origin: Origin::Bundled(*b),
                    loaded: OnceLock::new(),
                }),
                Err(e) => problems.push(e),
            }
        }
        for dir in dirs {
            if !dir.exists() {
                continue;
            }
            // A plugin's files are code and grants: only trust what this user (or root)
            // owns and nobody else can change.
            if let Err(why) = trusted(dir) {
                problems.push(Error::new(
                    ErrorKind::PluginLoad,
                    format!("ignoring plugin directory {}: {why}", dir.display()),
                ));
                continue;
            }
            let Ok(read) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut subdirs: Vec<PathBuf> = read
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            subdirs.sort();
            for sub in subdirs {
                let path = sub.join("plugin.toml");
                if !path.exists() {
                    continue;
                }
                if let Err(why) = trusted(&sub).and_then(|_| trusted(&path)) {
                    problems.push(Error::new(
                        ErrorKind::PluginLoad,
                        format!("ignoring plugin {}: {why}", sub.display()),
                    ));
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let origin = path.display().to_string();
                match Manifest::parse(&text, &origin).and_then(|mut m| {
                    m.expand_paths(vars, &origin)?;
                    Ok(m)
                }) {
                    Ok(manifest) => {
                        if let Some(i) = entries
                            .iter()
                            .position(|e| e.manifest.plugin.name == manifest.plugin.name)
                        {
                            tracing::info!(
                                "plugin '{}' from {} replaces the bundled one",
                                manifest.plugin.name,
                                sub.display()
                            );
                            entries.remove(i);
                        }
                        entries.push(Entry {
                            manifest,
                            origin: Origin::Directory(sub),
                            loaded: OnceLock::new(),
                        });
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        Registry {
            runtime,
            entries,
            problems,
        }
    }

    /// Manifests that could not be read.
    pub fn problems(&self) -> &[Error] {
        &self.problems
    }

    /// The shared runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Every known plugin, loaded or not.
    pub fn list(&self) -> Vec<PluginSummary> {
        self.entries
            .iter()
            .map(|e| PluginSummary {
                name: e.manifest.plugin.name.clone(),
                version: e.manifest.plugin.version.clone(),
                world: e.manifest.plugin.world.clone(),
                schemes: e.manifest.plugin.schemes.clone(),
                description: e.manifest.plugin.description.clone(),
                source: source_of(&e.origin),
            })
            .collect()
    }

    /// The plugin named `name`, loading it on first use.
    pub fn plugin(&self, name: &str) -> Result<Arc<Plugin>> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.manifest.plugin.name == name)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no plugin named '{name}' (known: {})",
                        self.names().join(", ")
                    ),
                )
            })?;
        self.load(entry)
    }

    /// The plugin serving URI scheme `scheme`.
    pub fn for_scheme(&self, scheme: &str) -> Result<Arc<Plugin>> {
        let entry = self
            .entries
            .iter()
            .rev()
            .find(|e| e.manifest.plugin.schemes.iter().any(|s| s == scheme))
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .entries
                    .iter()
                    .flat_map(|e| e.manifest.plugin.schemes.clone())
                    .collect();
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no connection driver available for '{scheme}' (drivers here serve: {})",
                        known.join(", ")
                    ),
                )
            })?;
        self.load(entry)
    }

    /// The storage-driver plugin serving pools of type `pool_type` (libvirt's name), loading
    /// it on first use; `None` when no storage driver lists that type.
    pub fn for_pool_type(&self, pool_type: &str) -> Option<Result<Arc<Plugin>>> {
        self.entries
            .iter()
            .rev()
            .find(|e| {
                e.manifest.world().ok() == Some(crate::manifest::World::StorageDriver)
                    && e.manifest.plugin.pool_types.iter().any(|t| t == pool_type)
            })
            .map(|e| self.load(e))
    }

    /// Pool types the storage-driver plugins serve, for errors that say what is available.
    pub fn storage_pool_types(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.manifest.world().ok() == Some(crate::manifest::World::StorageDriver))
            .flat_map(|e| e.manifest.plugin.pool_types.clone())
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| e.manifest.plugin.name.clone())
            .collect()
    }

    fn load(&self, entry: &Entry) -> Result<Arc<Plugin>> {
        entry
            .loaded
            .get_or_init(|| {
                let source = source_of(&entry.origin);
                match &entry.origin {
                    Origin::Bundled(b) => {
                        Plugin::load(self.runtime.clone(), entry.manifest.clone(), b.wasm, Some(b.sha256), source).map(Arc::new)
                    }
                    Origin::Directory(dir) => {
                        let file = entry.manifest.plugin.wasm.clone().unwrap_or_else(|| format!("{}.wasm", entry.manifest.plugin.name));
                        if file.contains('/') {
                            return Err(Error::new(
                                ErrorKind::PluginLoad,
                                format!("plugin '{}': wasm = '{file}' must be a file name beside plugin.toml", entry.manifest.plugin.name),
                            ));
                        }
                        let path: PathBuf = Path::new(dir).join(file);
                        trusted(&path).map_err(|why| Error::new(ErrorKind::PluginLoad, format!("refusing {}: {why}", path.display())))?;
                        let wasm = std::fs::read(&path).map_err(|e| Error::io("cannot read plugin component", &path, e))?;
                        Plugin::load(self.runtime.clone(), entry.manifest.clone(), &wasm, None, source).map(Arc::new)
                    }
                }
            })
            .clone()
    }
}

/// Whether `path` is owned by this user or root and not writable by group or others.
fn trusted(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "owned by uid {}, neither this user ({me}) nor root",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "writable by others (mode {:o})",
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

fn source_of(origin: &Origin) -> PluginSource {
    match origin {
        Origin::Bundled(_) => PluginSource::Bundled,
        Origin::Directory(d) => PluginSource::Directory(d.clone()),
    }
}
