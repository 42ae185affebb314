//! `virtwasmd.toml`: every setting with its default, so an empty file (or none) gives a
//! working daemon. Unknown keys are refused with their name, as a typo must not silently
//! leave TLS or access control at a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use virtwasm_api::Permission;
use virtwasm_host::{Error, Result};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Logging and lifetime.
    pub daemon: DaemonSection,
    /// Connection limits.
    pub limits: Limits,
    /// Mutual TLS on TCP.
    pub tls: TlsSection,
    /// Plain TCP (off unless enabled).
    pub tcp: TcpSection,
    /// Who may do what.
    pub access: Access,
    /// Which paths a client may name (save images).
    pub files: Files,
    /// Where guests' displays may listen.
    pub displays: Displays,
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// `error`, `warn`, `info`, `debug` or `trace` (or a tracing filter).
    pub log_level: String,
    /// Exit after this many seconds without clients (0: never); the session daemon that
    /// `virtwasm` starts on demand uses 120, as libvirt's.
    pub idle_exit_secs: u64,
    /// The driver URI for requests that name none.
    pub default_uri: String,
    /// How long SIGTERM waits for requests in flight before exiting.
    pub shutdown_grace_secs: u64,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            log_level: "info".into(),
            idle_exit_secs: 0,
            default_uri: "test:///default".into(),
            shutdown_grace_secs: 30,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections served at once (libvirt's `max_clients`); the next is answered 503.
    pub max_clients: usize,
    /// Requests one client identity may have running at once across its connections;
    /// more wait (up to 30 s) for a place.
    pub max_requests_per_client: usize,
    /// A connection that sends no complete request head for this long is closed: idle
    /// between requests, or sending its headers too slowly.
    pub idle_timeout_secs: u64,
    /// Largest request body, bytes (libvirt's 32 MiB message limit).
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 5000,
            max_requests_per_client: 64,
            idle_timeout_secs: 300,
            max_request_bytes: virtwasm_api::wire::MAX_REQUEST_BYTES,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Listen for TLS clients.
    pub enabled: bool,
    /// Address and port (libvirt's 16514).
    pub listen: String,
    /// Directory with cacert.pem, servercert.pem, private/serverkey.pem.
    pub pki_dir: Option<PathBuf>,
    /// `1.3` (default) or `1.2`.
    pub min_version: String,
    /// Client certificate subjects allowed in (glob patterns, libvirt's
    /// `tls_allowed_dn_list`); empty means any certificate from the CA.
    pub allowed_dn: Vec<String>,
    /// Client certificate fingerprints allowed in (`sha256:HEX`), besides `allowed_dn`.
    pub allowed_fingerprints: Vec<String>,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            enabled: false,
            listen: format!("0.0.0.0:{}", virtwasm_api::endpoint::TLS_PORT),
            pki_dir: None,
            min_version: "1.3".into(),
            allowed_dn: Vec::new(),
            allowed_fingerprints: Vec::new(),
        }
    }
}

/// `[tcp]`: unauthenticated, unencrypted; for loopback experiments only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    /// Listen for plain TCP clients.
    pub enabled: bool,
    /// Address and port (libvirt's 16509).
    pub listen: String,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection {
            enabled: false,
            listen: format!("127.0.0.1:{}", virtwasm_api::endpoint::TCP_PORT),
        }
    }
}

/// A role: a named set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// getattr, read, search.
    ReadOnly,
    /// read-only plus the lifecycle: start, stop, init_control, reset, suspend, save,
    /// snapshot.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Whether the role includes `p`.
    pub fn allows(self, p: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::ReadOnly => p.is_read_only(),
            Role::Operator => {
                p.is_read_only()
                    || matches!(
                        p,
                        Permission::Start
                            | Permission::Stop
                            | Permission::InitControl
                            | Permission::Reset
                            | Permission::Suspend
                            | Permission::Save
                            | Permission::Snapshot
                    )
            }
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `[access]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// The role of a TLS client that passed the allow-list and matches no rule.
    /// libvirt gives such a client everything; virtwasm defaults to read-only.
    pub tls_default_role: Role,
    /// The role of a unix-socket peer that matches no rule: root and the daemon's own user
    /// are admins; others get this (their connecting at all needs the socket's mode).
    pub unix_default_role: Role,
    /// Rules, first match wins.
    pub rule: Vec<Rule>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            tls_default_role: Role::ReadOnly,
            unix_default_role: Role::ReadOnly,
            rule: Vec::new(),
        }
    }
}

/// `[[access.rule]]`: an identity pattern, the role it gets, and optionally the objects and
/// extra permissions it is limited to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `dn:PATTERN` (certificate subject, glob), `sha256:HEX` (certificate fingerprint),
    /// `uid:N` (unix peer), or `*`.
    pub identity: String,
    /// The role granted.
    pub role: Role,
    /// Object names the role applies to (glob), optionally limited to one kind of object by
    /// a `domain:`, `pool:`, `volume:` or `network:` prefix; other objects get nothing from
    /// this rule.
    #[serde(default = "any")]
    pub objects: String,
    /// Permissions taken away from the role for these objects.
    #[serde(default)]
    pub deny: Vec<Permission>,
    /// The directories under which a client of this identity may name files (save images,
    /// pool directories, a definition's disks, kernel and serial files), instead of all of
    /// `[files] allowed`: tenants sharing a daemon then cannot name each other's images.
    /// Each must lie under a directory of `[files] allowed` or the daemon's images
    /// directory. For a client, the first rule matching its identity that has `files`
    /// decides, whatever its `objects`.
    #[serde(default)]
    pub files: Option<Vec<PathBuf>>,
}

fn any() -> String {
    "*".into()
}

/// `[files]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Files {
    /// Directories under which clients may name files (save images, pool directories, the
    /// paths a domain definition makes a driver open), besides the daemon's images directory.
    pub allowed: Vec<PathBuf>,
}

/// `[displays]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Displays {
    /// Addresses a guest's VNC or SPICE display may listen on. A display has no password
    /// (the domain model carries none), so whoever reaches its address sees the guest's
    /// screen: loopback only unless the operator says otherwise (`"0.0.0.0"` for every
    /// address, as libvirt's `vnc_listen` can).
    pub listen_allowed: Vec<std::net::IpAddr>,
}

impl Default for Displays {
    fn default() -> Self {
        Displays {
            listen_allowed: vec![
                std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::Ipv6Addr::LOCALHOST.into(),
            ],
        }
    }
}

impl Displays {
    /// Whether a display may listen on `listen`, or why not.
    pub fn check(&self, listen: &str) -> Result<()> {
        let allowed = listen
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| self.listen_allowed.contains(&a));
        if allowed {
            return Ok(());
        }
        Err(Error::denied(format!(
            "listening on '{listen}' is not allowed here ([displays] listen_allowed in virtwasmd.toml: {}); a display has no password, so whoever reaches its address sees the guest's screen",
            self.listen_allowed
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

impl Config {
    /// Reads `path`; a missing file gives the defaults only when `optional`.
    pub fn load(path: &Path, optional: bool) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => return Err(Error::io("cannot read config", path, e)),
        };
        let config: Config = toml::from_str(&text)
            .map_err(|e| Error::invalid(format!("invalid config '{}': {e}", path.display())))?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<()> {
        if !matches!(self.tls.min_version.as_str(), "1.2" | "1.3") {
            return Err(Error::invalid(format!(
                "invalid config '{}': tls.min_version is '{}', expected \"1.2\" or \"1.3\"",
                path.display(),
                self.tls.min_version
            )));
        }
        for r in &self.access.rule {
            let ok = r.identity == "*"
                || r.identity.starts_with("dn:")
                || r.identity.starts_with("uid:") && r.identity[4..].parse::<u32>().is_ok()
                || r.identity.starts_with("sha256:")
                    && r.identity.len() == 7 + 64
                    && r.identity[7..].bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(Error::invalid(format!(
                    "invalid config '{}': access rule identity '{}' is not dn:PATTERN, sha256:HEX (64 digits), uid:N or *",
                    path.display(),
                    r.identity
                )));
            }
            if let Some(f) = r.files.iter().flatten().find(|f| {
                !f.is_absolute()
                    || f.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
            }) {
                return Err(Error::invalid(format!(
                    "invalid config '{}': access rule for '{}' has files entry '{}', expected an absolute directory without '..'",
                    path.display(),
                    r.identity,
                    f.display()
                )));
            }
            // A misspelt kind ("domains:web-*") would silently become a name pattern that
            // matches nothing.
            if let Some((word, _)) = r.objects.split_once(':')
                && !word.is_empty()
                && word.bytes().all(|b| b.is_ascii_lowercase())
                && crate::access::split_kind(&r.objects).is_none()
            {
                return Err(Error::invalid(format!(
                    "invalid config '{}': access rule objects '{}' starts with an unknown object kind '{word}' (expected {}, or a name pattern without a kind for every kind)",
                    path.display(),
                    r.objects,
                    crate::access::RULE_KINDS
                        .iter()
                        .map(|(k, _)| format!("{k}:"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_rules_files_must_be_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("virtwasmd.toml");
        std::fs::write(
            &p,
            "[[access.rule]]\nidentity = \"uid:1000\"\nrole = \"operator\"\nfiles = [\"images\"]\n",
        )
        .unwrap();
        let e = Config::load(&p, false).unwrap_err();
        assert!(
            e.message
                .contains("access rule for 'uid:1000' has files entry 'images', expected an absolute directory without '..'"),
            "{}",
            e.message
        );
        std::fs::write(
            &p,
            "[[access.rule]]\nidentity = \"uid:1000\"\nrole = \"operator\"\nfiles = [\"/srv/a\"]\n",
        )
        .unwrap();
        let c = Config::load(&p, false).unwrap();
        assert_eq!(c.access.rule[0].files, Some(vec!["/srv/a".into()]));
        std::fs::write(
            &p,
            "[[access.rule]]\nidentity = \"uid:1000\"\nrole = \"operator\"\nfiles = [\"/srv/a/../../etc\"]\n",
        )
        .unwrap();
        let e = Config::load(&p, false).unwrap_err();
        assert!(e.message.contains("'/srv/a/../../etc'"), "{}", e.message);
    }

    #[test]
    fn empty_file_gives_defaults_and_typos_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("virtwasmd.toml");
        std::fs::write(&p, "").unwrap();
        let c = Config::load(&p, false).unwrap();
        assert_eq!(c.limits.max_request_bytes, 32 << 20);
        assert!(!c.tls.enabled);
        std::fs::write(&p, "[tls]\nenabeld = true\n").unwrap();
        let e = Config::load(&p, false).unwrap_err();
        assert!(
            e.message.contains("unknown field `enabeld`"),
            "{}",
            e.message
        );
        std::fs::write(
            &p,
            "[[access.rule]]\nidentity = \"bob\"\nrole = \"admin\"\n",
        )
        .unwrap();
        let e = Config::load(&p, false).unwrap_err();
        assert!(
            e.message.contains("identity 'bob' is not dn:PATTERN"),
            "{}",
            e.message
        );
        std::fs::write(
            &p,
            "[[access.rule]]\nidentity = \"*\"\nrole = \"admin\"\nobjects = \"domains:web-*\"\n",
        )
        .unwrap();
        let e = Config::load(&p, false).unwrap_err();
        assert!(
            e.message.contains(
                "access rule objects 'domains:web-*' starts with an unknown object kind 'domains' (expected domain:, pool:, volume:, network:"
            ),
            "{}",
            e.message
        );
        std::fs::write(
            &p,
            "[[access.rule]]\nidentity = \"*\"\nrole = \"admin\"\nobjects = \"pool:*\"\n",
        )
        .unwrap();
        assert_eq!(
            Config::load(&p, false).unwrap().access.rule[0].objects,
            "pool:*"
        );
        std::fs::write(
            &p,
            "[[access.rule]]\nidentity = \"uid:5\"\nrole = \"boss\"\n",
        )
        .unwrap();
        let e = Config::load(&p, false).unwrap_err();
        assert!(
            e.message.contains("unknown variant `boss`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn displays_listen_on_loopback_unless_told_otherwise() {
        let d = Displays::default();
        assert!(d.check("127.0.0.1").is_ok() && d.check("::1").is_ok());
        let e = d.check("0.0.0.0").unwrap_err();
        assert!(
            e.message.starts_with("listening on '0.0.0.0' is not allowed here ([displays] listen_allowed in virtwasmd.toml: 127.0.0.1, ::1)"),
            "{}",
            e.message
        );
        assert!(d.check("localhost").is_err(), "names are not addresses");
        let open: Config = toml::from_str("[displays]\nlisten_allowed = [\"0.0.0.0\"]\n").unwrap();
        assert!(open.displays.check("0.0.0.0").is_ok());
        assert!(toml::from_str::<Config>("[displays]\nlisten_allowed = [\"nowhere\"]\n").is_err());
    }

    #[test]
    fn roles_nest() {
        for p in Permission::ALL {
            assert!(Role::Admin.allows(*p));
            if Role::ReadOnly.allows(*p) {
                assert!(Role::Operator.allows(*p), "{p:?}");
            }
        }
        assert!(Role::Operator.allows(Permission::Start));
        assert!(!Role::Operator.allows(Permission::Write));
        assert!(!Role::Operator.allows(Permission::Delete));
        assert!(!Role::ReadOnly.allows(Permission::Start));
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The example in packaging/ documents the defaults: it must parse and say the same.
    #[test]
    fn the_shipped_config_states_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/virtwasmd.toml"
        ));
        let c = Config::load(path, false).unwrap();
        let d = Config::default();
        assert_eq!(c.daemon.log_level, d.daemon.log_level);
        assert_eq!(c.daemon.idle_exit_secs, d.daemon.idle_exit_secs);
        assert_eq!(c.daemon.default_uri, d.daemon.default_uri);
        assert_eq!(c.daemon.shutdown_grace_secs, d.daemon.shutdown_grace_secs);
        assert_eq!(c.limits.max_clients, d.limits.max_clients);
        assert_eq!(
            c.limits.max_requests_per_client,
            d.limits.max_requests_per_client
        );
        assert_eq!(c.limits.idle_timeout_secs, d.limits.idle_timeout_secs);
        assert_eq!(c.limits.max_request_bytes, d.limits.max_request_bytes);
        assert_eq!(c.tls.enabled, d.tls.enabled);
        assert_eq!(c.tls.listen, d.tls.listen);
        assert_eq!(c.tls.min_version, d.tls.min_version);
        assert_eq!(c.tcp.listen, d.tcp.listen);
        assert_eq!(c.access.tls_default_role, d.access.tls_default_role);
        assert_eq!(c.access.unix_default_role, d.access.unix_default_role);
        assert!(c.access.rule.is_empty() && c.files.allowed.is_empty());
    }
}
