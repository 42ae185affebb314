//! # virtwasm-daemon: `virtwasmd`
//!
//! The daemon owns the host (plugins, definitions, runtime records) and serves the API
//! (`docs/api.md`) on a read-write and a read-only unix socket, and optionally on mutual TLS
//! and plain TCP. Stopping it never stops a domain: the host's status files let the next
//! daemon find every object again.
//!
//! The `virtwasmd` binary is built beside `virtwasm` (in the CLI package, so tests get both
//! programs from one build) and calls [`main`].

pub mod access;
pub mod config;
pub mod console;
pub mod operations;
pub mod server;
pub mod trust;
pub mod volumes;

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::net::{TcpListener, UnixListener};
use virtwasm_api::endpoint::{SOCKET_RO, SOCKET_RW, socket_dir};
use virtwasm_api::tls::{PkiPaths, TlsVersions, peer_cert};
use virtwasm_host::connect::Dirs;
use virtwasm_host::pool_driver::PoolDirRule;
use virtwasm_host::{Error, Host, HostConfig, Result};

use access::Identity;
use config::Config;
use server::{Daemon, Mode, Peer, serve};

/// Command-line options; each overrides the config file.
#[derive(Debug, Parser)]
#[command(name = "virtwasmd", version, about = "The virtwasm daemon")]
struct Args {
    /// Serve the calling user's DRIVER:///session instead of root's DRIVER:///system.
    #[arg(long)]
    session: bool,
    /// Keep everything (config, sockets, state) under DIR: for tests and side-by-side daemons.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The config file (default: /etc/virtwasm/virtwasmd.toml, ~/.config/virtwasm/virtwasmd.toml
    /// in session mode, ROOT/etc/virtwasm/virtwasmd.toml with --root).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Exit after SECS without clients (0: never).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Listen for TLS clients on ADDR (e.g. 0.0.0.0:16514).
    #[arg(long, value_name = "ADDR")]
    listen_tls: Option<String>,
    /// The TLS certificate directory (cacert.pem, servercert.pem, private/serverkey.pem).
    #[arg(long, value_name = "DIR")]
    pki_dir: Option<PathBuf>,
    /// Listen for plain TCP clients on ADDR (unauthenticated: loopback experiments only).
    #[arg(long, value_name = "ADDR")]
    listen_tcp: Option<String>,
}

/// Where this daemon keeps things.
struct Layout {
    config_file: PathBuf,
    /// Where the trust store lives.
    state: PathBuf,
    sockets: PathBuf,
    host_dirs: Option<Dirs>,
    files_allowed: Vec<PathBuf>,
}

fn layout(args: &Args, mode: Mode) -> Layout {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/".into());
    if let Some(root) = &args.root {
        return Layout {
            config_file: root.join("etc/virtwasm/virtwasmd.toml"),
            state: root.join("var/lib/virtwasm"),
            sockets: root.join("run/virtwasm"),
            host_dirs: Some(Dirs::under(root)),
            files_allowed: vec![root.join("images")],
        };
    }
    match mode {
        Mode::System => Layout {
            config_file: "/etc/virtwasm/virtwasmd.toml".into(),
            state: "/var/lib/virtwasm".into(),
            sockets: socket_dir(false),
            host_dirs: None,
            files_allowed: vec!["/var/lib/virtwasm/images".into()],
        },
        Mode::Session => Layout {
            config_file: std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".config"))
                .join("virtwasm/virtwasmd.toml"),
            state: std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".local/share"))
                .join("virtwasm"),
            sockets: socket_dir(true),
            host_dirs: None,
            // Apart from the daemon's own state (trust store, managed-save images).
            files_allowed: vec![
                std::env::var_os("XDG_DATA_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join(".local/share"))
                    .join("virtwasm/images"),
            ],
        },
    }
}

/// `virtwasmd`'s entry point: parses the command line, runs until SIGTERM, SIGINT or the
/// idle timeout.
pub fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtwasmd: {}", e.message);
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let mode = if args.session {
        Mode::Session
    } else {
        Mode::System
    };
    if mode == Mode::System && euid != 0 && args.root.is_none() {
        return Err(Error::denied(format!(
            "the system daemon needs root (running as uid {euid}); run `virtwasmd --session` for your own domains"
        )));
    }
    let lay = layout(&args, mode);
    let explicit = args.config.is_some();
    let config_file = args
        .config
        .clone()
        .unwrap_or_else(|| lay.config_file.clone());
    let mut config = Config::load(&config_file, !explicit)?;
    if let Some(l) = &args.log_level {
        config.daemon.log_level = l.clone();
    }
    if let Some(t) = args.timeout {
        config.daemon.idle_exit_secs = t;
    }
    if let Some(a) = &args.listen_tls {
        config.tls.enabled = true;
        config.tls.listen = a.clone();
    }
    if let Some(d) = &args.pki_dir {
        config.tls.pki_dir = Some(d.clone());
    }
    if let Some(a) = &args.listen_tcp {
        config.tcp.enabled = true;
        config.tcp.listen = a.clone();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.daemon.log_level).map_err(|e| {
                Error::invalid(format!(
                    "invalid log level '{}': {e} (expected error, warn, info, debug or trace)",
                    config.daemon.log_level
                ))
            })?,
        )
        .with_writer(std::io::stderr)
        .init();

    make_dir(&lay.sockets, mode)?;
    let _lock = lock(&lay.sockets)?;

    let bundled = virtwasm_bundle::BUNDLED
        .iter()
        .map(|b| virtwasm_host::BundledPlugin {
            manifest: b.manifest,
            wasm: b.wasm,
            sha256: b.sha256,
        })
        .collect();
    let mut host_config = HostConfig::for_current_user(bundled);
    if let Some(d) = &lay.host_dirs {
        host_config.system_dirs = d.clone();
        host_config.session_dirs = d.clone();
        // Plugins' granted paths ({runtime_dir}/qemu, ...) follow the root too, so a test
        // daemon's QEMU sockets stay under its own directory.
        for (name, path) in host_config.path_vars.vars.iter_mut() {
            match name.as_str() {
                "config_dir" => *path = d.config.clone(),
                "runtime_dir" => *path = d.status.clone(),
                "state_dir" => *path = d.state.clone(),
                _ => {}
            }
        }
    }
    // The daemon's children (QEMU) are recorded beside its sockets, so a restarted daemon
    // controls the guests its predecessor started.
    host_config.children_dir = Some(lay.sockets.join("children"));
    // The images directory clients save into: created, private to the daemon's user.
    for d in &lay.files_allowed {
        std::fs::create_dir_all(d).map_err(|e| Error::io("cannot create", d, e))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot set the mode of", d, e))?;
    }
    let mut files_allowed = lay.files_allowed.clone();
    files_allowed.extend(config.files.allowed.iter().cloned());
    rule_files_within(&config.access.rule, &files_allowed)?;
    // A pool's directory is checked when a client defines the pool, and again by the host
    // whenever a storage driver is handed it: by then a link may have replaced it.
    // A pool defined in a directory an access rule narrows a client to must stay in it.
    let pool_dirs = files_allowed.clone();
    let narrowed: Vec<PathBuf> = config
        .access
        .rule
        .iter()
        .flat_map(|r| r.files.iter().flatten().cloned())
        .collect();
    host_config.pool_dir_rule = Some(PoolDirRule::new(move |defined, real| {
        server::pool_dir_allowed(&pool_dirs, real)?;
        server::pool_dir_stays(&pool_dirs, &narrowed, defined, real)
    }));
    let host = Arc::new(Host::new(host_config)?);

    let mut trust = None;
    let tls = if config.tls.enabled {
        let versions = if config.tls.min_version == "1.2" {
            TlsVersions::Tls12AndUp
        } else {
            TlsVersions::Tls13Only
        };
        let paths = PkiPaths::server(config.tls.pki_dir.as_deref());
        // Certificate-less clients may finish the handshake, to redeem a trust token and
        // nothing else (server.rs refuses every other request from them).
        let server = virtwasm_api::tls::server_config_with(&paths, versions, true)?;
        let ca_dir = paths
            .ca_cert
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        trust = Some(server::TrustSetup {
            store: trust::Trust::open(lay.state.join("trust.json"))?,
            ca_dir,
            server_fingerprint: virtwasm_api::pki::fingerprint_of_pem_file(&paths.cert)?,
        });
        Some(server)
    } else {
        None
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the I/O runtime: {e}")))?;
    let mut daemon = Daemon::new(host, config.clone(), mode, files_allowed);
    if let Some(t) = trust {
        daemon = daemon.with_trust(t);
    }
    let daemon = Arc::new(daemon);
    rt.block_on(async move {
        // Handlers first: a SIGTERM that arrives while the daemon is still loading must
        // still mean "finish and exit cleanly", not the default instant death.
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (
            signal(SignalKind::terminate())
                .map_err(|e| Error::internal(format!("cannot handle SIGTERM: {e}")))?,
            signal(SignalKind::interrupt())
                .map_err(|e| Error::internal(format!("cannot handle SIGINT: {e}")))?,
        );
        let rw_path = lay.sockets.join(SOCKET_RW);
        let ro_path = lay.sockets.join(SOCKET_RO);
        // Only root (system) or the user (session) may connect read-write; anyone may
        // connect read-only to the system daemon.
        let rw = bind_unix(&rw_path, 0o600)?;
        let ro = bind_unix(&ro_path, if mode == Mode::System { 0o666 } else { 0o600 })?;
        tokio::spawn(accept_unix(daemon.clone(), rw, false));
        tokio::spawn(accept_unix(daemon.clone(), ro, true));
        let mut listening = vec![rw_path.display().to_string(), ro_path.display().to_string()];
        if let Some(tls) = tls {
            let l = TcpListener::bind(&config.tls.listen).await.map_err(|e| {
                Error::failed(format!(
                    "cannot listen for TLS on {}: {e}",
                    config.tls.listen
                ))
            })?;
            listening.push(format!(
                "tls://{}",
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            ));
            tokio::spawn(accept_tls(daemon.clone(), l, tls));
        }
        if config.tcp.enabled {
            let l = TcpListener::bind(&config.tcp.listen).await.map_err(|e| {
                Error::failed(format!(
                    "cannot listen for TCP on {}: {e}",
                    config.tcp.listen
                ))
            })?;
            listening.push(format!(
                "tcp://{}",
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            ));
            tokio::spawn(accept_tcp(daemon.clone(), l));
        }
        // Restart safety: load every persistent driver's records now, then keep polling
        // their running domains (a guest powering itself off is seen within a second).
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || d.watch_persistent_drivers()).await;
        let d = daemon.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let d = d.clone();
                let _ = tokio::task::spawn_blocking(move || d.poll_once()).await;
            }
        });
        tracing::info!(
            pid = std::process::id(),
            mode = ?mode,
            "virtwasmd ready on {}",
            listening.join(", ")
        );
        let why = wait_for_stop(&daemon, signals).await;
        tracing::info!("{why}: no new connections; waiting for requests in flight");
        let deadline = Instant::now() + Duration::from_secs(config.daemon.shutdown_grace_secs);
        while daemon.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = daemon.in_flight();
        if left > 0 {
            tracing::warn!("exiting with {left} requests unfinished after the grace period");
        }
        let _ = std::fs::remove_file(&rw_path);
        let _ = std::fs::remove_file(&ro_path);
        // Domains keep running: their processes and status files do not depend on us.
        tracing::info!("virtwasmd stopped; domains were left as they were");
        Ok::<(), Error>(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Waits for SIGTERM, SIGINT, or the idle exit.
async fn wait_for_stop(
    daemon: &Daemon,
    (mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) -> &'static str {
    let idle_exit = daemon.config.daemon.idle_exit_secs;
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if idle_exit > 0
                    && daemon.in_flight() == 0
                    && daemon.idle_for().is_some_and(|d| d >= Duration::from_secs(idle_exit))
                {
                    return "idle timeout";
                }
            }
        }
    }
}

fn make_dir(dir: &Path, mode: Mode) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let bits = if mode == Mode::System { 0o755 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(bits))
        .map_err(|e| Error::io("cannot set the mode of", dir, e))
}

/// Takes the daemon lock in the socket directory: one daemon per directory, and a second
/// one says which pid holds it instead of stealing its sockets.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("virtwasmd.pid");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("cannot open", &path, e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::new(
            virtwasm_host::ErrorKind::AlreadyExists,
            format!(
                "another virtwasmd (pid {}) already serves {}",
                pid.trim(),
                dir.display()
            ),
        ));
    }
    file.set_len(0)
        .map_err(|e| Error::io("cannot write", &path, e))?;
    std::io::Write::write_all(&mut &file, format!("{}\n", std::process::id()).as_bytes())
        .map_err(|e| Error::io("cannot write", &path, e))?;
    Ok(file)
}

fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener> {
    // We hold the lock, so a socket file here is a dead daemon's.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove the stale socket", path, e)),
    }
    let l = UnixListener::bind(path).map_err(|e| Error::io("cannot listen on", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("cannot set the mode of", path, e))?;
    Ok(l)
}

async fn accept_unix(daemon: Arc<Daemon>, listener: UnixListener, readonly: bool) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept on the unix socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (uid, pid) = match stream.peer_cred() {
            Ok(c) => (c.uid(), c.pid()),
            Err(e) => {
                tracing::warn!("cannot read a unix peer's credentials: {e}");
                continue;
            }
        };
        let refusal = (!readonly && uid != 0 && uid != me).then(|| {
            (403, Error::denied(format!(
                "uid {uid} may not use the read-write socket (root or uid {me} only); use the read-only socket"
            )))
        });
        let peer = Peer {
            identity: Identity::Unix { uid, pid },
            readonly_socket: readonly,
            refusal,
        };
        tokio::spawn(serve(daemon.clone(), stream, peer));
    }
}

async fn accept_tls(daemon: Arc<Daemon>, listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept on the TLS port failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %addr, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(peer = %addr, "TLS handshake timed out");
                        return;
                    }
                };
            let der = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            let cert = match der.as_deref().map(peer_cert) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::warn!(peer = %addr, "unreadable client certificate: {}", e.message);
                    return;
                }
                None => {
                    let peer = Peer {
                        identity: Identity::Anonymous {
                            addr: addr.to_string(),
                        },
                        readonly_socket: false,
                        refusal: None,
                    };
                    serve(daemon, tls, peer).await;
                    return;
                }
            };
            let tls_conf = &daemon.config.tls;
            let listed = tls_conf.allowed_dn.is_empty() && tls_conf.allowed_fingerprints.is_empty()
                || tls_conf
                    .allowed_dn
                    .iter()
                    .any(|p| virtwasm_api::tls::dn_matches(p, &cert.subject))
                || tls_conf
                    .allowed_fingerprints
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(&cert.fingerprint))
                || daemon
                    .trust
                    .as_ref()
                    .is_some_and(|t| t.store.knows(&cert.fingerprint));
            let revoked = daemon
                .trust
                .as_ref()
                .is_some_and(|t| t.store.revoked(&cert.fingerprint));
            if revoked {
                tracing::warn!(peer = %addr, subject = %cert.subject, "revoked client certificate");
                let peer = Peer {
                    refusal: Some((
                        403,
                        Error::denied(format!(
                            "client certificate '{}' ({}) was revoked (`virtwasm trust remove`)",
                            cert.subject, cert.fingerprint
                        )),
                    )),
                    identity: Identity::Cert(cert),
                    readonly_socket: false,
                };
                serve(daemon, tls, peer).await;
                return;
            }
            let refusal = (!listed).then(|| {
                tracing::warn!(peer = %addr, subject = %cert.subject, "client certificate not on the allow-list");
                (403, Error::denied(format!(
                    "client certificate '{}' ({}) is not on this daemon's allow-list ([tls] allowed_dn, allowed_fingerprints)",
                    cert.subject, cert.fingerprint
                )))
            });
            let peer = Peer {
                identity: Identity::Cert(cert),
                readonly_socket: false,
                refusal,
            };
            serve(daemon, tls, peer).await;
        });
    }
}

async fn accept_tcp(daemon: Arc<Daemon>, listener: TcpListener) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept on the TCP port failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let peer = Peer {
            identity: Identity::Tcp {
                addr: addr.to_string(),
            },
            readonly_socket: false,
            refusal: None,
        };
        tokio::spawn(serve(daemon.clone(), tcp, peer));
    }
}

/// Refuses an access rule whose `files` reach beyond the directories clients may name at
/// all: a rule narrows what a client may name, it never widens it.
fn rule_files_within(rules: &[config::Rule], allowed: &[PathBuf]) -> Result<()> {
    let resolve = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let allowed: Vec<PathBuf> = allowed.iter().map(|a| resolve(a)).collect();
    for r in rules {
        for f in r.files.iter().flatten() {
            if !allowed.iter().any(|a| resolve(f).starts_with(a)) {
                return Err(Error::invalid(format!(
                    "access rule for '{}': files entry '{}' is not under a directory of [files] allowed or the images directory ({})",
                    r.identity,
                    f.display(),
                    allowed
                        .iter()
                        .map(|a| a.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(())
}
