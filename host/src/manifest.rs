//! Plugin manifests (`plugin.toml`): what a plugin is, what it serves, what it may touch.
//!
//! A manifest is the whole of a plugin's authority. Nothing it does not name is linked or
//! allowed: no programs, no files, no sockets. Defaults are the most restrictive values
//! (64 MiB of memory, 10 s per call, 16 concurrent instances, logging only).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "virtwasm:plugin";
/// The WIT package version this host implements. Plugins built for any `0.1.x` load.
pub const WIT_VERSION: &str = "0.1.0";

/// The worlds a plugin may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `hypervisor`.
    HypervisorDriver,
    /// Exports `storage`.
    StorageDriver,
    /// Exports `network`.
    NetworkDriver,
    /// Exports all three.
    FullDriver,
}

impl World {
    /// The world's WIT name.
    pub fn name(self) -> &'static str {
        match self {
            World::HypervisorDriver => "hypervisor-driver",
            World::StorageDriver => "storage-driver",
            World::NetworkDriver => "network-driver",
            World::FullDriver => "full-driver",
        }
    }
    /// Whether plugins of this world serve hypervisor verbs.
    pub fn has_hypervisor(self) -> bool {
        matches!(self, World::HypervisorDriver | World::FullDriver)
    }
    /// Whether plugins of this world serve storage verbs.
    pub fn has_storage(self) -> bool {
        matches!(self, World::StorageDriver | World::FullDriver)
    }
    /// Whether plugins of this world serve network verbs.
    pub fn has_network(self) -> bool {
        matches!(self, World::NetworkDriver | World::FullDriver)
    }
}

/// Read-only or read-write access to a granted directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// The plugin may read files and list directories.
    ReadOnly,
    /// The plugin may also create, write and delete.
    ReadWrite,
}

/// A directory granted through a WASI preopen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it; the same path as on the host when absent.
    #[serde(default)]
    pub guest: Option<String>,
    /// `read-only` or `read-write`.
    pub access: Access,
}

/// The `[capabilities.process]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessGrant {
    /// Programs the plugin may run: absolute paths, or names (with an optional trailing `*`,
    /// as in `qemu-system-*`) looked up in the host's `PATH`.
    pub programs: Vec<String>,
}

/// The `[capabilities]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Logging through the host. Always granted; accepted for explicitness.
    #[serde(default = "yes")]
    pub log: bool,
    /// Running programs.
    #[serde(default)]
    pub process: Option<ProcessGrant>,
    /// Directories reachable through WASI.
    #[serde(default)]
    pub files: Vec<FileGrant>,
    /// Path prefixes under which the plugin may connect to unix sockets.
    #[serde(default)]
    pub sockets: Vec<PathBuf>,
    /// Tap devices on the bridges named here.
    #[serde(default)]
    pub netdev: Option<NetdevGrant>,
}

/// The `[capabilities.netdev]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetdevGrant {
    /// Bridges the plugin may attach taps to: names, or globs such as `br*` or `*`.
    pub bridges: Vec<String>,
}

fn yes() -> bool {
    true
}

/// The `[limits]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Linear memory cap per instance, in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Wall-clock budget of guest execution per call, in milliseconds.
    #[serde(default = "default_timeout")]
    pub call_timeout_ms: u32,
    /// How many instances of this plugin may run at once.
    #[serde(default = "default_instances")]
    pub instances: u32,
}

fn default_memory() -> u32 {
    64
}
fn default_timeout() -> u32 {
    10_000
}
fn default_instances() -> u32 {
    16
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: default_memory(),
            call_timeout_ms: default_timeout(),
            instances: default_instances(),
        }
    }
}

/// The `[plugin]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// Unique plugin name: lowercase letters, digits and `-`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// One line saying what it drives.
    #[serde(default)]
    pub description: String,
    /// The WIT world it implements, e.g. `virtwasm:plugin/hypervisor-driver@0.1.0`.
    pub world: String,
    /// URI schemes it serves (`qemu`, `test`, ...).
    #[serde(default)]
    pub schemes: Vec<String>,
    /// The component file beside the manifest (default `<name>.wasm`).
    #[serde(default)]
    pub wasm: Option<String>,
    /// Expected sha256 of the component; a mismatch refuses the load.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Where the driver's objects live: `persistent` (on disk, surviving the process: every
    /// real driver) or `per-process` (in memory, as libvirt's test driver).
    #[serde(default)]
    pub state: StateKind,
    /// Whether `scheme:///path/to/node.xml` opens a libvirt test-node file.
    #[serde(default, rename = "node-files")]
    pub node_files: bool,
    /// Whether a transient domain may be marked autostart and "undefined" (a success that
    /// changes nothing), as libvirt's test driver allows. Hypervisor drivers refuse both, as
    /// libvirt's QEMU driver does.
    #[serde(default, rename = "lenient-transient")]
    pub lenient_transient: bool,
    /// The running reason a start from a managed-save image reports: `restored` (the guest's
    /// memory came back, as in libvirt's QEMU driver) or `booted` (libvirt's test driver).
    #[serde(default, rename = "managed-save-start-reason")]
    pub managed_save_start_reason: ManagedSaveStartReason,
    /// Storage pool types (libvirt's names: `dir`, `fs`, `logical`, ...) whose pools this
    /// plugin serves. A connection's own plugin serves the types it lists; a pool of any other
    /// type goes to the storage-driver plugin that lists it, which then may touch that pool's
    /// target directory and nothing else.
    #[serde(default, rename = "pool-types")]
    pub pool_types: Vec<String>,
    /// Whether the host picks the port of each automatic VNC or SPICE display when a domain
    /// starts (as libvirt's port allocator), and refuses displays with settings the model
    /// does not carry. For drivers whose guests really listen: make-believe ones keep
    /// `port='-1'` as libvirt's test driver does.
    #[serde(default, rename = "graphics-ports")]
    pub graphics_ports: bool,
    /// Whether the host refuses definitions with devices outside the model (a sound card,
    /// a host device): the driver never sees them, and for one that builds real guests
    /// leaving them out would change the guest silently.
    #[serde(default, rename = "strict-devices")]
    pub strict_devices: bool,
}

/// The running reason after a start from a managed-save image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManagedSaveStartReason {
    /// `running (restored)`.
    #[default]
    Restored,
    /// `running (booted)`.
    Booted,
}

/// Where a driver's objects live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// On disk, in the host's config and runtime directories.
    #[default]
    Persistent,
    /// In memory, for the life of the process.
    PerProcess,
}

/// A parsed and validated manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Identity.
    pub plugin: PluginSection,
    /// Grants.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Directories the host substitutes for `{runtime_dir}`, `{state_dir}`, `{config_dir}` and
/// `{cache_dir}` in manifest paths, so one manifest serves system and session mode.
#[derive(Debug, Clone, Default)]
pub struct PathVars {
    /// Substitutions, name (without braces) to directory.
    pub vars: Vec<(String, PathBuf)>,
}

impl PathVars {
    fn expand(&self, path: &Path, origin: &str) -> Result<PathBuf> {
        let mut text = path.to_string_lossy().into_owned();
        for (name, dir) in &self.vars {
            text = text.replace(&format!("{{{name}}}"), &dir.to_string_lossy());
        }
        if !text.starts_with('/') && !text.contains('{') {
            return Err(Error::new(
                ErrorKind::PluginLoad,
                format!("{origin}: path '{text}' is not absolute after expanding variables"),
            ));
        }
        if text.contains('{') {
            return Err(Error::new(
                ErrorKind::PluginLoad,
                format!(
                    "{origin}: unknown variable in path '{text}' (known: {{runtime_dir}}, {{state_dir}}, {{config_dir}}, {{cache_dir}})"
                ),
            ));
        }
        Ok(PathBuf::from(text))
    }
}

impl Manifest {
    /// Parses and validates manifest text; `origin` (a path) names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            Error::new(
                ErrorKind::PluginLoad,
                format!("{origin}: invalid plugin manifest: {e}"),
            )
        })?;
        manifest.validate(origin)?;
        Ok(manifest)
    }

    /// Replaces `{state_dir}`-style variables in granted paths.
    pub fn expand_paths(&mut self, vars: &PathVars, origin: &str) -> Result<()> {
        for grant in &mut self.capabilities.files {
            grant.host = vars.expand(&grant.host, origin)?;
        }
        for prefix in &mut self.capabilities.sockets {
            *prefix = vars.expand(prefix, origin)?;
        }
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::new(
                ErrorKind::PluginLoad,
                format!("{origin}: {msg}"),
            ))
        };
        let name = &self.plugin.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad(format!(
                "plugin name '{name}' must be 1 to 64 characters of a-z, 0-9 and '-'"
            ));
        }
        self.world()?;
        check_world_version(&self.plugin.world, origin)?;
        for scheme in &self.plugin.schemes {
            if scheme.is_empty()
                || !scheme
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return bad(format!(
                    "URI scheme '{scheme}' must be lowercase letters and digits"
                ));
            }
        }
        for t in &self.plugin.pool_types {
            if crate::xml::pool_type_from_name(t).is_none() {
                return bad(format!(
                    "pool type '{t}' is not one of libvirt's ({})",
                    crate::xml::pool_type_names().join(", ")
                ));
            }
        }
        if !self.plugin.pool_types.is_empty() && !self.world()?.has_storage() {
            return bad(format!(
                "pool-types is set but world '{}' exports no storage interface",
                self.plugin.world
            ));
        }
        if let Some(sha) = &self.plugin.sha256
            && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return bad(format!("sha256 '{sha}' must be 64 hexadecimal digits"));
        }
        // A path may start with a `{variable}` that expands to an absolute directory.
        let absolute = |p: &Path| p.is_absolute() || p.to_string_lossy().starts_with('{');
        for grant in &self.capabilities.files {
            if !absolute(&grant.host) {
                return bad(format!(
                    "granted directory '{}' must be an absolute path",
                    grant.host.display()
                ));
            }
        }
        for prefix in &self.capabilities.sockets {
            if !absolute(prefix) {
                return bad(format!(
                    "socket prefix '{}' must be an absolute path",
                    prefix.display()
                ));
            }
        }
        if let Some(n) = &self.capabilities.netdev {
            for b in &n.bridges {
                if b.is_empty()
                    || b.len() > 15
                    || b.contains('/')
                    || b.chars().any(char::is_whitespace)
                {
                    return bad(format!(
                        "netdev bridge pattern '{b}' must be an interface name or glob (1 to 15 characters, no '/' or spaces)"
                    ));
                }
            }
        }
        if let Some(p) = &self.capabilities.process {
            for program in &p.programs {
                if program.is_empty()
                    || program.contains("..")
                    || (program.contains('/') && !program.starts_with('/'))
                {
                    return bad(format!(
                        "program '{program}' must be an absolute path or a bare name looked up in PATH"
                    ));
                }
            }
        }
        let l = &self.limits;
        if !(1..=1024).contains(&l.memory_mib) {
            return bad(format!(
                "limits.memory-mib = {} must be between 1 and 1024",
                l.memory_mib
            ));
        }
        if !(1..=3_600_000).contains(&l.call_timeout_ms) {
            return bad(format!(
                "limits.call-timeout-ms = {} must be between 1 and 3600000",
                l.call_timeout_ms
            ));
        }
        if !(1..=256).contains(&l.instances) {
            return bad(format!(
                "limits.instances = {} must be between 1 and 256",
                l.instances
            ));
        }
        Ok(())
    }

    /// The declared world.
    pub fn world(&self) -> Result<World> {
        let w = &self.plugin.world;
        let rest = w.strip_prefix("virtwasm:plugin/").ok_or_else(|| {
            Error::new(
                ErrorKind::PluginLoad,
                format!(
                    "plugin '{}': world '{w}' is not a virtwasm:plugin world",
                    self.plugin.name
                ),
            )
        })?;
        let name = rest.split('@').next().unwrap_or_default();
        Ok(match name {
            "hypervisor-driver" => World::HypervisorDriver,
            "storage-driver" => World::StorageDriver,
            "network-driver" => World::NetworkDriver,
            "full-driver" => World::FullDriver,
            other => {
                return Err(Error::new(
                    ErrorKind::PluginLoad,
                    format!(
                        "plugin '{}': unknown world '{other}' (expected hypervisor-driver, storage-driver, network-driver or full-driver)",
                        self.plugin.name
                    ),
                ));
            }
        })
    }
}

/// Checks that a `pkg/item@version` name uses a version this host implements: the same
/// `0.minor` (or, from 1.0, the same major), which is exactly what wasmtime's linker matches.
pub fn check_world_version(name: &str, origin: &str) -> Result<()> {
    let Some((_, version)) = name.rsplit_once('@') else {
        return Err(Error::new(
            ErrorKind::PluginLoad,
            format!(
                "{origin}: '{name}' has no version; write it as {WIT_PACKAGE}/<world>@{WIT_VERSION}"
            ),
        ));
    };
    if !semver_compatible(version, WIT_VERSION) {
        return Err(Error::new(
            ErrorKind::PluginLoad,
            format!(
                "{origin}: built for {WIT_PACKAGE}@{version}, but this host implements {WIT_PACKAGE}@{WIT_VERSION} (compatible: {})",
                compatible_range()
            ),
        ));
    }
    Ok(())
}

/// The range of versions this host accepts, for messages.
pub fn compatible_range() -> String {
    let mut parts = WIT_VERSION.split('.');
    let major = parts.next().unwrap_or("0");
    let minor = parts.next().unwrap_or("0");
    if major == "0" {
        format!("0.{minor}.x")
    } else {
        format!("{major}.x")
    }
}

/// Cargo-style semver compatibility for `0.x` and `1+.x`.
pub fn semver_compatible(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(a), parse(b)) {
        (Some((0, am)), Some((0, bm))) => am == bm,
        (Some((a0, _)), Some((b0, _))) => a0 == b0 && a0 != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[plugin]
name = "qemu"
version = "1.0.0"
world = "virtwasm:plugin/hypervisor-driver@0.1.0"
schemes = ["qemu"]
[capabilities]
process = { programs = ["qemu-system-*", "/usr/bin/qemu-img"] }
files = [{ host = "{state_dir}/qemu", access = "read-write" }]
sockets = ["{runtime_dir}/qemu"]
[limits]
memory-mib = 32
"#;

    #[test]
    fn parses_a_full_manifest_and_expands_variables() {
        let mut m = Manifest::parse(GOOD, "qemu/plugin.toml").unwrap();
        assert_eq!(m.world().unwrap(), World::HypervisorDriver);
        assert_eq!(m.limits.memory_mib, 32);
        assert_eq!(m.limits.call_timeout_ms, 10_000, "default timeout");
        let vars = PathVars {
            vars: vec![
                ("state_dir".into(), "/var/lib/virtwasm".into()),
                ("runtime_dir".into(), "/run/virtwasm".into()),
            ],
        };
        m.expand_paths(&vars, "x").unwrap();
        assert_eq!(
            m.capabilities.files[0].host,
            Path::new("/var/lib/virtwasm/qemu")
        );
        assert_eq!(m.capabilities.sockets[0], Path::new("/run/virtwasm/qemu"));
    }

    #[test]
    fn refuses_unknown_keys_with_the_location() {
        let err = Manifest::parse(&GOOD.replace("memory-mib", "memory_mb"), "p.toml").unwrap_err();
        assert_eq!(err.kind, ErrorKind::PluginLoad);
        assert!(err.message.contains("p.toml"), "{err}");
        assert!(err.message.contains("memory_mb"), "{err}");
        assert!(err.message.contains("line"), "{err}");
    }

    #[test]
    fn refuses_another_wit_version_naming_both() {
        let err = Manifest::parse(&GOOD.replace("@0.1.0", "@0.2.0"), "p.toml").unwrap_err();
        assert!(err.message.contains("virtwasm:plugin@0.2.0"), "{err}");
        assert!(err.message.contains("virtwasm:plugin@0.1.0"), "{err}");
    }

    #[test]
    fn refuses_relative_grants_and_bad_limits() {
        let e = Manifest::parse(&GOOD.replace("{state_dir}/qemu", "images"), "p").unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
        let e =
            Manifest::parse(&GOOD.replace("memory-mib = 32", "memory-mib = 0"), "p").unwrap_err();
        assert!(e.message.contains("memory-mib = 0"), "{e}");
        let e =
            Manifest::parse(&GOOD.replace("\"qemu-system-*\"", "\"../bin/sh\""), "p").unwrap_err();
        assert!(e.message.contains("../bin/sh"), "{e}");
        let e =
            Manifest::parse(&GOOD.replace("name = \"qemu\"", "name = \"Q/emu\""), "p").unwrap_err();
        assert!(e.message.contains("Q/emu"), "{e}");
    }

    #[test]
    fn semver_rules_match_the_linker() {
        assert!(semver_compatible("0.1.0", "0.1.0"));
        assert!(semver_compatible("0.1.7", "0.1.0"));
        assert!(!semver_compatible("0.2.0", "0.1.0"));
        assert!(semver_compatible("1.4.0", "1.0.0"));
        assert!(!semver_compatible("2.0.0", "1.0.0"));
        assert!(!semver_compatible("x", "0.1.0"));
    }
}
