//! The host's front door: [`Host`] opens a [`Connection`] to a URI, finding the plugin that
//! serves its scheme and the driver state behind it. The CLI calls it in-process; the daemon
//! will call the same API behind its sockets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::Runtime;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{PathVars, StateKind};
use crate::plugin::Plugin;
use crate::pool_driver::PoolDirRule;
use crate::registry::{BundledPlugin, Registry};
use crate::state::{DomainRecord, DriverState, NetworkRecord, PoolRecord};
use crate::store::DiskStore;
use crate::uri::ConnectUri;

/// How a host is set up.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where precompiled plugins are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Directories holding third-party plugins (`DIR/NAME/plugin.toml`).
    pub plugin_dirs: Vec<PathBuf>,
    /// First-party plugins compiled into the binary.
    pub bundled: Vec<BundledPlugin>,
    /// Substitutions for manifest paths.
    pub path_vars: PathVars,
    /// How long a verb waits for another job on the same object.
    pub job_timeout: Duration,
    /// Config and status roots for `DRIVER:///system` (root only).
    pub system_dirs: Dirs,
    /// Config and status roots for `DRIVER:///session` (this user's).
    pub session_dirs: Dirs,
    /// Where the registries of long-lived children (QEMU and kin) and of the taps the host
    /// made are kept, so a later host
    /// finds the guests this one started: the daemon's runtime directory, or an embed
    /// root's. `None`: children are known only to this process.
    pub children_dir: Option<PathBuf>,
    /// Where storage pools' directories may be, for a front end serving clients it does not
    /// trust; `None`: anywhere the host's user may write.
    pub pool_dir_rule: Option<PoolDirRule>,
}

/// Where persistent drivers keep their files: each driver gets `config/DRIVER/` and
/// `status/DRIVER/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Definitions (`/etc/virtwasm`, `~/.config/virtwasm`).
    pub config: PathBuf,
    /// Runtime records (`/run/virtwasm`, `$XDG_RUNTIME_DIR/virtwasm`).
    pub status: PathBuf,
    /// Data that must survive a reboot but is not configuration: managed-save images
    /// (`/var/lib/virtwasm`, `~/.local/share/virtwasm`).
    pub state: PathBuf,
}

impl Dirs {
    /// The layout under one root, for `DRIVER:///embed?root=DIR`.
    pub fn under(root: &std::path::Path) -> Dirs {
        Dirs {
            config: root.join("etc/virtwasm"),
            status: root.join("run/virtwasm"),
            state: root.join("var/lib/virtwasm"),
        }
    }
}

impl HostConfig {
    /// Defaults for a user: the cache under `$XDG_CACHE_HOME/virtwasm` (or `~/.cache`), the
    /// plugin directory under `$XDG_DATA_HOME/virtwasm/plugins` for a user and
    /// `/usr/lib/virtwasm/plugins` for root, and a 30 s job wait as libvirt's.
    pub fn for_current_user(bundled: Vec<BundledPlugin>) -> HostConfig {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let xdg = |var: &str, fallback: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(fallback))
        };
        let cache_dir = std::env::var_os("VIRTWASM_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| xdg("XDG_CACHE_HOME", ".cache").join("virtwasm/plugins"));
        let mut plugin_dirs = vec![xdg("XDG_DATA_HOME", ".local/share").join("virtwasm/plugins")];
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            plugin_dirs.insert(0, PathBuf::from("/usr/lib/virtwasm/plugins"));
        }
        if let Some(extra) = std::env::var_os("VIRTWASM_PLUGIN_DIR") {
            plugin_dirs.push(PathBuf::from(extra));
        }
        // Without XDG_RUNTIME_DIR, stay in the user's own cache rather than a guessable /tmp path.
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| xdg("XDG_CACHE_HOME", ".cache").join("virtwasm-run"));
        let session_dirs = Dirs {
            config: xdg("XDG_CONFIG_HOME", ".config").join("virtwasm"),
            status: runtime.join("virtwasm"),
            state: xdg("XDG_DATA_HOME", ".local/share").join("virtwasm"),
        };
        let system_dirs = Dirs {
            config: PathBuf::from("/etc/virtwasm"),
            status: PathBuf::from("/run/virtwasm"),
            state: PathBuf::from("/var/lib/virtwasm"),
        };
        // Manifests name host directories as {config_dir}, {runtime_dir}, {state_dir} and
        // {cache_dir}: root's are the system ones, a user's the session ones.
        // SAFETY: geteuid has no preconditions.
        let mine = if unsafe { libc::geteuid() } == 0 {
            &system_dirs
        } else {
            &session_dirs
        };
        let path_vars = PathVars {
            vars: vec![
                ("config_dir".into(), mine.config.clone()),
                ("runtime_dir".into(), mine.status.clone()),
                ("state_dir".into(), mine.state.clone()),
                ("cache_dir".into(), cache_dir.clone()),
            ],
        };
        HostConfig {
            cache_dir: Some(cache_dir),
            plugin_dirs,
            bundled,
            path_vars,
            job_timeout: Duration::from_secs(30),
            system_dirs,
            session_dirs,
            children_dir: None,
            pool_dir_rule: None,
        }
    }
}

/// A driver connection's state, shared by every connection to the same URI, and its store.
type SharedDriver = (Arc<DriverState>, Option<DiskStore>);

/// One host: a wasm runtime, the plugins, and the state of every driver connection opened.
pub struct Host {
    registry: Arc<Registry>,
    states: Mutex<HashMap<String, SharedDriver>>,
    job_timeout: Duration,
    system_dirs: Dirs,
    session_dirs: Dirs,
    pool_dir_rule: Option<PoolDirRule>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("registry", &self.registry)
            .finish()
    }
}

impl Host {
    /// Builds the runtime and reads the plugin manifests (no plugin is compiled yet).
    pub fn new(config: HostConfig) -> Result<Host> {
        let runtime = Arc::new(Runtime::new(config.cache_dir.clone())?);
        let registry = Registry::new(
            runtime,
            &config.bundled,
            &config.plugin_dirs,
            &config.path_vars,
        );
        for problem in registry.problems() {
            tracing::warn!("{problem}");
        }
        if let Some(dir) = &config.children_dir {
            let found = registry
                .runtime()
                .children()
                .persist_in(dir)
                .map_err(|e| Error::io("cannot keep the child registry in", dir, e))?;
            if found > 0 {
                tracing::info!(
                    "found {found} running children from an earlier host in {}",
                    dir.display()
                );
            }
            registry
                .runtime()
                .taps()
                .persist_in(dir)
                .map_err(|e| Error::io("cannot keep the tap registry in", dir, e))?;
        }
        Ok(Host {
            registry: Arc::new(registry),
            states: Mutex::new(HashMap::new()),
            job_timeout: config.job_timeout,
            system_dirs: config.system_dirs,
            session_dirs: config.session_dirs,
            pool_dir_rule: config.pool_dir_rule,
        })
    }

    /// The plugins.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Opens `uri`; `readonly` refuses every change through this connection.
    pub fn open(&self, uri: &str, readonly: bool) -> Result<Connection> {
        let parsed = ConnectUri::parse(uri)?;
        if !parsed.is_local() {
            let how = parsed.transport.as_deref().unwrap_or("unix");
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "'{uri}' reaches a virtwasmd daemon over the '{how}' transport; this build runs drivers in-process only, so use a local URI such as {}:///{}",
                    parsed.driver,
                    parsed.path.trim_start_matches('/')
                ),
            ));
        }
        let plugin = self.registry.for_scheme(&parsed.driver)?;
        let (key, dirs) = match plugin.manifest.plugin.state {
            StateKind::PerProcess => (format!("{}://{}", parsed.driver, parsed.path), None),
            StateKind::Persistent => {
                let dirs = self.dirs_for(&parsed)?;
                (
                    format!(
                        "{}://{}#{}",
                        parsed.driver,
                        parsed.path,
                        dirs.config.display()
                    ),
                    Some(dirs),
                )
            }
        };
        let existing = self.states.lock().unwrap().get(&key).cloned();
        let (state, store) = match existing {
            Some(s) => s,
            None => {
                let state = Arc::new(DriverState::default());
                let store = match &dirs {
                    Some(d) => Some(DiskStore::open(
                        d.config.join(&parsed.driver),
                        d.status.join(&parsed.driver),
                        d.state.join(&parsed.driver),
                    )?),
                    None => None,
                };
                // As libvirt's test driver: any path but /default names a node file.
                let node_file = plugin.manifest.plugin.node_files && parsed.path != "/default";
                // Names become file names and lookups: whatever a plugin or a node file
                // says, refuse what could not have been defined by hand.
                let check = |initial: &crate::bindings::types::InitialObjects,
                             origin: &str|
                 -> Result<()> {
                    let names = initial
                        .domains
                        .iter()
                        .map(|(d, _)| ("domain", d.name.as_str()))
                        .chain(initial.pools.iter().map(|(p, _)| ("pool", p.name.as_str())))
                        .chain(
                            initial
                                .networks
                                .iter()
                                .map(|n| ("network", n.name.as_str())),
                        );
                    for (kind, name) in names {
                        crate::domain::validate_object_name(kind, name)
                            .map_err(|e| Error::invalid(format!("{origin}: {}", e.message)))?;
                    }
                    Ok(())
                };
                if node_file {
                    let (initial, extras) =
                        crate::nodefile::load(std::path::Path::new(&parsed.path))?;
                    populate_from_node_file(&plugin, &state, initial, extras)?;
                } else {
                    let initial = plugin
                        .hypervisor("open", |g, s| g.call_open(s, &parsed.path, &parsed.params))?;
                    check(&initial, &format!("plugin '{}'", plugin.name()))?;
                    populate(&state, initial);
                }
                if let Some(store) = &store {
                    let mut o = state.objects();
                    for rec in store.load_domains()? {
                        if let Some(id) = rec.id {
                            o.next_id = o.next_id.max(id + 1);
                        }
                        o.domains.insert(rec.def.uuid.clone(), rec);
                    }
                    for rec in store.load_pools()? {
                        o.pools.insert(rec.def.uuid.clone(), rec);
                    }
                    for rec in store.load_networks()? {
                        o.networks.insert(rec.def.uuid.clone(), rec);
                    }
                }
                self.states
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_insert((state, store))
                    .clone()
            }
        };
        Ok(Connection {
            uri: parsed,
            plugin,
            registry: self.registry.clone(),
            state,
            store,
            readonly,
            job_timeout: self.job_timeout,
            pool_dir_rule: self.pool_dir_rule.clone(),
        })
    }

    /// The directories behind a persistent driver's URI path.
    fn dirs_for(&self, uri: &ConnectUri) -> Result<Dirs> {
        match uri.path.as_str() {
            "/system" => {
                // SAFETY: geteuid has no preconditions.
                let uid = unsafe { libc::geteuid() };
                if uid != 0 {
                    return Err(Error::denied(format!(
                        "{}:///system manages the host's domains and needs root (running as uid {uid}); use {}:///session for your own",
                        uri.driver, uri.driver
                    )));
                }
                Ok(self.system_dirs.clone())
            }
            "/session" => Ok(self.session_dirs.clone()),
            "/embed" => {
                let root = uri.param("root").ok_or_else(|| {
                    Error::invalid(format!(
                        "{} needs a root directory: {}:///embed?root=/path/to/dir",
                        uri.raw, uri.driver
                    ))
                })?;
                let root = std::path::Path::new(root);
                if !root.is_absolute() {
                    return Err(Error::invalid(format!(
                        "embed root '{}' must be an absolute path",
                        root.display()
                    )));
                }
                Ok(Dirs::under(root))
            }
            other => Err(Error::invalid(format!(
                "unexpected {} URI path '{other}', try {}:///system, {}:///session or {}:///embed?root=DIR",
                uri.driver, uri.driver, uri.driver, uri.driver
            ))),
        }
    }
}

/// A node file's domains start running, as in libvirt's test driver.
fn populate_from_node_file(
    plugin: &Plugin,
    state: &DriverState,
    initial: crate::bindings::types::InitialObjects,
    extras: Vec<crate::xml::Extras>,
) -> Result<()> {
    use crate::bindings::types::{DomainRuntime, DomainState, RunningReason};
    let mut filled = Vec::with_capacity(initial.domains.len());
    for ((def, _), extras) in initial.domains.into_iter().zip(extras) {
        let def = plugin.hypervisor("fill-defaults", |g, s| g.call_fill_defaults(s, &def))?;
        filled.push((def, extras));
    }
    let mut o = state.objects();
    for (def, extras) in filled {
        if o.domains.contains_key(&def.uuid) || o.domain_by_name(&def.name).is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("node file defines domain '{}' twice", def.name),
            ));
        }
        let mut record = DomainRecord::inactive(def, true);
        record.extras = extras;
        record.live = Some(record.def.clone());
        record.id = Some(o.take_id());
        record.runtime = Some(DomainRuntime {
            state: DomainState::Running(RunningReason::Booted),
            driver_data: String::new(),
        });
        o.domains.insert(record.def.uuid.clone(), record);
    }
    for (def, volumes) in initial.pools {
        o.pools.insert(def.uuid.clone(), initial_pool(def, volumes));
    }
    for def in initial.networks {
        o.networks.insert(def.uuid.clone(), initial_network(def));
    }
    Ok(())
}

/// Pools a driver reports when it opens are active, as libvirt's test driver has them.
fn initial_pool(
    def: crate::bindings::types::PoolDef,
    volumes: Vec<crate::bindings::types::VolumeDef>,
) -> PoolRecord {
    use crate::bindings::types::{PoolInfo, PoolState};
    let running = PoolInfo {
        state: PoolState::Running,
        capacity: 0,
        allocation: 0,
        available: 0,
    };
    PoolRecord {
        def,
        info: Some(running),
        volumes,
        persistent: true,
        autostart: false,
        extras: Default::default(),
    }
}

/// Networks a driver reports when it opens are active.
fn initial_network(def: crate::bindings::types::NetworkDef) -> NetworkRecord {
    NetworkRecord {
        def,
        active: true,
        persistent: true,
        autostart: false,
        extras: Default::default(),
        next: None,
    }
}

fn populate(state: &DriverState, initial: crate::bindings::types::InitialObjects) {
    let mut o = state.objects();
    for (def, runtime) in initial.domains {
        let id = runtime.as_ref().map(|_| o.take_id());
        let mut record = DomainRecord::inactive(def, true);
        record.live = runtime.as_ref().map(|_| record.def.clone());
        record.id = id;
        record.runtime = runtime;
        o.domains.insert(record.def.uuid.clone(), record);
    }
    for (def, volumes) in initial.pools {
        o.pools.insert(def.uuid.clone(), initial_pool(def, volumes));
    }
    for def in initial.networks {
        o.networks.insert(def.uuid.clone(), initial_network(def));
    }
}

/// An open connection to one driver.
pub struct Connection {
    pub(crate) uri: ConnectUri,
    pub(crate) plugin: Arc<Plugin>,
    /// Where pools of types the plugin does not serve find their storage driver.
    pub(crate) registry: Arc<Registry>,
    pub(crate) state: Arc<DriverState>,
    pub(crate) store: Option<DiskStore>,
    pub(crate) readonly: bool,
    pub(crate) job_timeout: Duration,
    /// The front end's rule on pool directories (see [`PoolDirRule`]).
    pub(crate) pool_dir_rule: Option<PoolDirRule>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("uri", &self.uri.raw)
            .finish()
    }
}

impl Connection {
    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri.raw
    }

    /// The plugin behind it.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Its driver state (events, locks, objects).
    pub fn state(&self) -> &Arc<DriverState> {
        &self.state
    }

    /// Refuses a change on a read-only connection.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.readonly {
            return Err(Error::denied(
                "operation forbidden: read only access prevents this operation",
            ));
        }
        Ok(())
    }

    /// Host numbers (`nodeinfo`): the driver's answer, or, for a driver that does not
    /// implement `get-node-info` (QEMU's: its guests run on this machine, and a plugin gets
    /// no `/proc`), the host's own facts, computed as libvirt's QEMU driver computes them.
    /// A driver's own answer is kept (the test driver's make-believe node).
    pub fn node_info(&self) -> Result<crate::bindings::types::NodeInfo> {
        match self
            .plugin
            .hypervisor("get-node-info", |g, s| g.call_get_node_info(s))
        {
            Err(e) if e.kind == ErrorKind::Unsupported && self.plugin.lacks("get-node-info") => {
                crate::hostinfo::node_info()
            }
            answer => answer,
        }
    }

    /// What guests the driver runs.
    pub fn capabilities(&self) -> Result<crate::bindings::hypervisor::DriverCapabilities> {
        self.plugin
            .hypervisor("capabilities", |g, s| g.call_capabilities(s))
    }

    /// The driver name and version for `virsh version`.
    pub fn driver_version(&self) -> (String, String) {
        (
            self.plugin.manifest.plugin.name.to_uppercase(),
            self.plugin.manifest.plugin.version.clone(),
        )
    }
}
