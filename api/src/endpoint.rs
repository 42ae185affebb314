//! Where a connection URI leads: in-process, or to which daemon over which transport.
//!
//! As libvirt: `test:///default` and other driver paths run in the client, `DRIVER:///system`
//! and `DRIVER:///session` reach the local daemon's unix socket (the session daemon is started
//! on demand), `DRIVER+unix`, `+tls`, `+ssh` and `+tcp` name the transport, and
//! `DRIVER:///embed?root=DIR` runs the host in-process on its own directories.

use std::path::PathBuf;

use virtwasm_host::uri::ConnectUri;
use virtwasm_host::{Error, Result};

/// The default port of TLS connections, as libvirt's.
pub const TLS_PORT: u16 = 16514;
/// The default port of plain TCP connections, as libvirt's.
pub const TCP_PORT: u16 = 16509;

/// URI parameters the client consumes; the rest go to the daemon with the driver URI.
const CLIENT_PARAMS: &[&str] = &[
    "socket",
    "pkipath",
    "keyfile",
    "known_hosts",
    "no_verify",
    "no_tty",
    "binary",
];

/// How to reach the host serving a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The host runs inside this process.
    InProcess,
    /// A daemon's unix socket.
    Unix {
        /// The socket.
        path: PathBuf,
        /// Start the session daemon when nothing listens there.
        autostart: bool,
    },
    /// Plain TCP (only where the daemon enables it).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Mutual TLS.
    Tls {
        /// Host name or address (also the name the server certificate must carry).
        host: String,
        /// Port.
        port: u16,
        /// libvirt's `pkipath`: the directory holding cacert.pem, clientcert.pem, clientkey.pem.
        pki_dir: Option<PathBuf>,
    },
    /// TLS without a client certificate, trusting one server certificate by fingerprint:
    /// only for redeeming a trust token.
    TlsPinned {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// The server certificate's fingerprint (`sha256:HEX`).
        fingerprint: String,
    },
    /// `ssh` to the host, running `virtwasm proxy` there to reach its daemon's socket.
    Ssh {
        /// `user@`.
        user: Option<String>,
        /// Host.
        host: String,
        /// Port.
        port: Option<u16>,
        /// `-i` identity file.
        keyfile: Option<PathBuf>,
        /// `UserKnownHostsFile`.
        known_hosts: Option<PathBuf>,
        /// Skip host key checking (`no_verify=1`).
        no_verify: bool,
        /// The `virtwasm` program on the far side.
        binary: String,
        /// The socket on the far side, when not the default.
        socket: Option<String>,
    },
}

/// A resolved URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// How to reach the host.
    pub endpoint: Endpoint,
    /// The URI the host serves: driver and path, with the transport, host and the client's
    /// own parameters removed (`qemu+ssh://h/system?keyfile=k` → `qemu:///system`).
    pub driver_uri: String,
    /// The URI as given, which `virtwasm uri` prints.
    pub uri: String,
    /// Connect read-only.
    pub readonly: bool,
}

/// The directory of the daemon's sockets: `/run/virtwasm` for the system daemon,
/// `$XDG_RUNTIME_DIR/virtwasm` for a user's session daemon (the host's status directory
/// for that user, so one place holds a user's runtime files).
pub fn socket_dir(session: bool) -> PathBuf {
    if !session {
        return PathBuf::from("/run/virtwasm");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("virtwasm-run")
        })
        .join("virtwasm")
}

/// The read-write socket's file name.
pub const SOCKET_RW: &str = "virtwasm-sock";
/// The read-only socket's file name.
pub const SOCKET_RO: &str = "virtwasm-sock-ro";

/// The default socket for `/system` or `/session`.
pub fn default_socket(session: bool, readonly: bool) -> PathBuf {
    socket_dir(session).join(if readonly { SOCKET_RO } else { SOCKET_RW })
}

fn param<'a>(uri: &'a ConnectUri, name: &str) -> Option<&'a str> {
    uri.params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true" | "yes"))
}

/// Resolves `uri` to where its host is.
pub fn resolve(uri: &str, readonly: bool) -> Result<Target> {
    let parsed = ConnectUri::parse(uri)?;
    let rest: Vec<String> = parsed
        .params
        .iter()
        .filter(|(k, _)| !CLIENT_PARAMS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut driver_uri = format!("{}://{}", parsed.driver, parsed.path);
    if !rest.is_empty() {
        driver_uri = format!("{driver_uri}?{}", rest.join("&"));
    }
    if parsed.transport.is_none() && !matches!(parsed.path.as_str(), "/system" | "/session") {
        // test:///default, node files, embed?root=: the host runs here, as virsh runs the
        // test driver in the client.
        return Ok(Target {
            endpoint: Endpoint::InProcess,
            driver_uri: uri.to_string(),
            uri: uri.to_string(),
            readonly,
        });
    }
    // `test+unix:///default` reaches a daemon too, as libvirtd serves it: root's system
    // daemon, or a user's session daemon.
    // SAFETY: geteuid has no preconditions.
    let session = match parsed.path.as_str() {
        "/system" => false,
        "/session" => true,
        _ => (unsafe { libc::geteuid() }) != 0,
    };
    let socket = param(&parsed, "socket").map(PathBuf::from);
    let host = parsed.host.clone();
    let endpoint = match parsed.transport.as_deref() {
        None | Some("unix") => {
            if host.is_some() {
                return Err(Error::invalid(format!(
                    "'{uri}': the unix transport reaches this machine only; drop the host name or use +tls or +ssh"
                )));
            }
            Endpoint::Unix {
                autostart: parsed.path == "/session" && socket.is_none(),
                path: socket.unwrap_or_else(|| default_socket(session, readonly)),
            }
        }
        Some("tcp") => Endpoint::Tcp {
            host: host.unwrap_or_else(|| "localhost".into()),
            port: parsed.port.unwrap_or(TCP_PORT),
        },
        Some("tls") => Endpoint::Tls {
            host: host.unwrap_or_else(|| "localhost".into()),
            port: parsed.port.unwrap_or(TLS_PORT),
            pki_dir: param(&parsed, "pkipath").map(PathBuf::from),
        },
        Some("ssh") | Some("libssh") | Some("libssh2") => Endpoint::Ssh {
            user: parsed.user.clone(),
            host: host.ok_or_else(|| {
                Error::invalid(format!("'{uri}': the ssh transport needs a host name"))
            })?,
            port: parsed.port,
            keyfile: param(&parsed, "keyfile").map(PathBuf::from),
            known_hosts: param(&parsed, "known_hosts").map(PathBuf::from),
            no_verify: truthy(param(&parsed, "no_verify")),
            binary: param(&parsed, "binary").unwrap_or("virtwasm").to_string(),
            socket: param(&parsed, "socket").map(str::to_string),
        },
        Some(other) => {
            return Err(Error::new(
                virtwasm_host::ErrorKind::Unsupported,
                format!(
                    "'{uri}': the '{other}' transport is not supported (use unix, tls, ssh or tcp)"
                ),
            ));
        }
    };
    Ok(Target {
        endpoint,
        driver_uri,
        uri: uri.to_string(),
        readonly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_stay_in_process() {
        for uri in [
            "test:///default",
            "test:///tmp/node.xml",
            "qemu:///embed?root=/tmp/x",
        ] {
            assert_eq!(
                resolve(uri, false).unwrap().endpoint,
                Endpoint::InProcess,
                "{uri}"
            );
        }
    }

    #[test]
    fn system_and_session_reach_the_daemon() {
        let t = resolve("qemu:///system", true).unwrap();
        assert_eq!(
            t.endpoint,
            Endpoint::Unix {
                path: PathBuf::from("/run/virtwasm/virtwasm-sock-ro"),
                autostart: false
            }
        );
        assert_eq!(t.driver_uri, "qemu:///system");
        let t = resolve("test+unix:///session?socket=/tmp/s", false).unwrap();
        assert_eq!(
            t.endpoint,
            Endpoint::Unix {
                path: PathBuf::from("/tmp/s"),
                autostart: false
            }
        );
        assert_eq!(t.driver_uri, "test:///session");
    }

    #[test]
    fn remote_transports_keep_their_parameters() {
        let t = resolve("qemu+tls://h.example:1234/system?pkipath=/p", false).unwrap();
        assert_eq!(
            t.endpoint,
            Endpoint::Tls {
                host: "h.example".into(),
                port: 1234,
                pki_dir: Some(PathBuf::from("/p"))
            }
        );
        let t = resolve(
            "lxc+ssh://root@h:2222/system?keyfile=/k&no_verify=1&binary=/opt/virtwasm",
            false,
        )
        .unwrap();
        assert_eq!(t.driver_uri, "lxc:///system");
        match t.endpoint {
            Endpoint::Ssh {
                user,
                host,
                port,
                keyfile,
                no_verify,
                binary,
                ..
            } => {
                assert_eq!(user.as_deref(), Some("root"));
                assert_eq!(host, "h");
                assert_eq!(port, Some(2222));
                assert_eq!(keyfile, Some(PathBuf::from("/k")));
                assert!(no_verify);
                assert_eq!(binary, "/opt/virtwasm");
            }
            other => panic!("{other:?}"),
        }
        let t = resolve("test+tls://h/default", false).unwrap();
        assert_eq!(t.driver_uri, "test:///default");
        let e = resolve("qemu+unix://h/system", false).unwrap_err();
        assert!(e.message.contains("drop the host name"), "{}", e.message);
    }
}
