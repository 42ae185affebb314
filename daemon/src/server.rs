//! The HTTP front end: listeners (unix read-write and read-only, TLS, TCP), one hyper
//! connection task per client, and the translation of HTTP requests into API requests for
//! the dispatch layer. Host calls run in blocking threads (the connection's own, handed its
//! other work's thread first with `block_in_place`, or the blocking pool), so a slow call or
//! a slow client never holds up another client.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use virtwasm_api::ops::{ObjectKind, Request, query_param, unescape};
use virtwasm_api::wire::{URI_HEADER, error_body, sse_frame, status_of};
use virtwasm_api::{Permission, dispatch};
use virtwasm_host::events::Event;
use virtwasm_host::uri::ConnectUri;
use virtwasm_host::{Connection, Error, ErrorKind, Host, Result};

use crate::access::{Identity, authorize, decide};
use crate::config::Config;

/// Certificate-less TLS connections served at once.
const ANONYMOUS_CLIENTS: usize = 16;

/// Whether this daemon serves `DRIVER:///system` or a user's `DRIVER:///session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Root's daemon.
    System,
    /// A user's daemon.
    Session,
}

impl Mode {
    fn path(self) -> &'static str {
        match self {
            Mode::System => "/system",
            Mode::Session => "/session",
        }
    }
}

/// The daemon's shared state.
pub struct Daemon {
    /// The host every request runs on.
    pub host: Arc<Host>,
    /// The configuration.
    pub config: Config,
    /// System or session.
    pub mode: Mode,
    /// Directories under which clients may name files (save images).
    pub files_allowed: Vec<PathBuf>,
    /// Long work, listed while it runs and for a while after.
    pub operations: crate::operations::Operations,
    /// Trust tokens and the clients they admitted (with TLS only), and what signing their
    /// certificates needs: the CA's directory and the server certificate's fingerprint.
    pub trust: Option<TrustSetup>,
    access: std::sync::RwLock<Arc<crate::config::Access>>,
    /// Driver URIs opened so far: the poller's round.
    opened: Mutex<std::collections::BTreeSet<String>>,
    clients: Arc<Semaphore>,
    anonymous: Arc<Semaphore>,
    /// Long operations running per client identity (answered at once, so not counted by
    /// the per-client request places).
    running_ops: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    per_client: Mutex<HashMap<String, Arc<Semaphore>>>,
    last_activity: Mutex<Instant>,
    connected: AtomicUsize,
}

/// The response body: a whole answer, or an event stream.
pub enum Reply {
    /// A complete body.
    Full(Full<Bytes>),
    /// Chunks from a channel (Server-Sent Events, a volume's data).
    Stream(virtwasm_api::wire::ChannelBody),
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Reply::Full(f) => Pin::new(f).poll_frame(cx),
            Reply::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    // A whole answer's exact size gives it a Content-Length rather than chunks.
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Reply::Full(f) => f.size_hint(),
            Reply::Stream(b) => b.size_hint(),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Full(f) => f.is_end_stream(),
            Reply::Stream(_) => false,
        }
    }
}

pub(crate) fn json_response(status: u16, body: Vec<u8>) -> Response<Reply> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Reply::Full(Full::new(Bytes::from(body))))
        .expect("static headers")
}

pub(crate) fn error_response(e: &Error) -> Response<Reply> {
    json_response(status_of(e.kind), error_body(e))
}

impl Daemon {
    /// A daemon over `host`.
    pub fn new(host: Arc<Host>, config: Config, mode: Mode, files_allowed: Vec<PathBuf>) -> Daemon {
        Daemon {
            host,
            operations: Default::default(),
            trust: None,
            access: std::sync::RwLock::new(Arc::new(config.access.clone())),
            opened: Mutex::new(Default::default()),
            clients: Arc::new(Semaphore::new(config.limits.max_clients)),
            anonymous: Arc::new(Semaphore::new(ANONYMOUS_CLIENTS)),
            running_ops: Mutex::new(HashMap::new()),
            config,
            mode,
            files_allowed,
            in_flight: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            last_activity: Mutex::new(Instant::now()),
            connected: AtomicUsize::new(0),
        }
    }

    /// Enables trust tokens.
    pub fn with_trust(mut self, trust: TrustSetup) -> Daemon {
        self.trust = Some(trust);
        self.refresh_access();
        self
    }

    /// The access rules in force: the config's, then those of clients admitted by tokens.
    pub fn access(&self) -> Arc<crate::config::Access> {
        self.access.read().unwrap().clone()
    }

    fn refresh_access(&self) {
        let mut a = self.config.access.clone();
        if let Some(t) = &self.trust {
            a.rule.extend(t.store.rules());
        }
        *self.access.write().unwrap() = Arc::new(a);
    }

    /// Counts an upgraded connection (a console) as a connected client until the guard is
    /// dropped: hyper forgets a connection once it is upgraded, yet the idle exit must not
    /// cut an attached console. (SIGTERM does not wait for consoles: they are not work.)
    pub(crate) fn hold_connection(self: &Arc<Self>) -> impl Drop + Send + use<> {
        struct Held(Arc<Daemon>);
        impl Drop for Held {
            fn drop(&mut self) {
                self.0.connected.fetch_sub(1, Ordering::SeqCst);
                *self.0.last_activity.lock().unwrap() = Instant::now();
            }
        }
        self.connected.fetch_add(1, Ordering::SeqCst);
        Held(self.clone())
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// How long the daemon has had no client connected.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.connected.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.last_activity.lock().unwrap().elapsed())
    }

    /// Opens the driver a request is for, refusing URIs that would reach outside this
    /// daemon's directories (node files, `embed?root=`, another mode's path).
    /// Opens every persistent driver this daemon serves and keeps polling their running
    /// domains, so a guest that powers itself off (or an emulator that dies) is noticed
    /// and announced even when no client asks.
    pub fn watch_persistent_drivers(&self) {
        for p in self.host.registry().list() {
            let persistent = self.host.registry().plugin(&p.name).is_ok_and(|pl| {
                pl.manifest.plugin.state == virtwasm_host::manifest::StateKind::Persistent
            });
            if !persistent {
                continue;
            }
            for scheme in &p.schemes {
                let uri = format!("{scheme}://{}", self.mode.path());
                match self.open(&uri, false) {
                    Ok(c) => {
                        let running = c.list_domains().iter().filter(|d| d.id.is_some()).count();
                        tracing::info!(%uri, domains = c.list_domains().len(), running, "driver state loaded");
                    }
                    Err(e) => tracing::debug!(%uri, "not watched: {}", e.message),
                }
            }
        }
    }

    /// One round of polling: every driver URI this daemon has opened.
    pub fn poll_once(&self) {
        let uris: Vec<String> = self.opened.lock().unwrap().iter().cloned().collect();
        for uri in uris {
            if let Ok(c) = self.host.open(&uri, false) {
                c.refresh_active();
            }
        }
    }

    pub(crate) fn open(&self, uri: &str, readonly: bool) -> Result<Connection> {
        let parsed = ConnectUri::parse(uri)?;
        let mine = self.mode.path();
        let ok = parsed.transport.is_none()
            && parsed.host.is_none()
            && parsed.params.is_empty()
            && (parsed.path == mine || parsed.path == "/default");
        if !ok {
            return Err(Error::invalid(format!(
                "this daemon serves DRIVER://{mine} and test:///default, not '{uri}'"
            )));
        }
        let conn = self.host.open(uri, readonly)?;
        self.opened.lock().unwrap().insert(uri.to_string());
        Ok(conn)
    }

    /// Runs `req` as a client that may name files under `dirs` asked it, with the daemon's
    /// rules on paths, pool directories and display addresses; long work reports to
    /// `progress`. Reads skip the driver's state refresh: the daemon polls every running
    /// domain once a second anyway.
    fn dispatch(
        &self,
        conn: &Connection,
        req: Request,
        dirs: &[PathBuf],
        progress: &dyn Fn(u64, u64) -> Result<()>,
    ) -> Result<serde_json::Value> {
        let ctx = dispatch::Context {
            files: &|f, create| self.check_file(dirs, f, create),
            pool_dirs: &|p| self.check_pool_dir(dirs, p),
            displays: &|l| self.config.displays.check(l),
            progress,
            refresh_on_read: false,
        };
        dispatch::dispatch(conn, req, &ctx)
    }

    /// The directories `who` may name files under: those of the first access rule for it
    /// that narrows them, else every directory clients may name.
    pub(crate) fn file_dirs(&self, who: &Identity) -> Vec<PathBuf> {
        match crate::access::file_dirs(&self.access(), who) {
            Some(dirs) => dirs.to_vec(),
            None => self.files_allowed.clone(),
        }
    }

    /// Whether a client that may name files under `dirs` may make `path` a storage pool's
    /// directory: a path it may name, and not one of those directories themselves.
    fn check_pool_dir(&self, dirs: &[PathBuf], path: &str) -> Result<()> {
        let real = self.allowed_path(dirs, path, false)?;
        pool_dir_allowed(dirs, &real)
    }

    /// Whether a client that may name files under `dirs` may name `path` (absolute, under
    /// one of them once symbolic links are resolved); one it would `create` must not exist
    /// yet, so a client can never replace a file (another domain's image, the daemon's own
    /// state).
    fn check_file(&self, dirs: &[PathBuf], path: &str, create: bool) -> Result<()> {
        self.allowed_path(dirs, path, create).map(|_| ())
    }

    /// `path` resolved (its directory's symbolic links followed, and its own if it is one),
    /// once it is known to lie under one of `dirs` (see `check_file`).
    fn allowed_path(&self, dirs: &[PathBuf], path: &str, create: bool) -> Result<PathBuf> {
        if create && std::fs::symlink_metadata(path).is_ok() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("'{path}' exists; through the daemon a save never replaces a file"),
            ));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(Error::invalid(format!(
                "'{path}' is relative; name files on the daemon's host by absolute path"
            )));
        }
        // The file may not exist yet (save): resolve its directory.
        let (dir, file) = match (p.parent(), p.file_name()) {
            (Some(d), Some(f)) => (d, f),
            _ => return Err(Error::invalid(format!("'{path}' names no file"))),
        };
        let real_dir = dir
            .canonicalize()
            .map_err(|e| Error::io("cannot resolve directory", dir, e))?;
        let real = match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => p
                .canonicalize()
                .map_err(|e| Error::io("cannot resolve", p, e))?,
            _ => real_dir.join(file),
        };
        let under = |list: &[PathBuf]| {
            list.iter()
                .any(|a| a.canonicalize().is_ok_and(|a| real.starts_with(a)))
        };
        // A rule's directories narrow the daemon's, never widen them: one that has become
        // a link out of them since the daemon started leads nowhere.
        let narrowed = dirs != self.files_allowed.as_slice();
        if under(dirs) && (!narrowed || under(&self.files_allowed)) {
            return Ok(real);
        }
        let listed = dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(Error::denied(if !narrowed {
            format!(
                "'{path}' is outside the directories this daemon lets clients name ({listed}); add one to [files] allowed in virtwasmd.toml"
            )
        } else {
            format!("'{path}' is outside the directories your access rule lets you name ({listed})")
        }))
    }
}

/// Whether a pool's directory, `defined` where its definition puts it and `real` with every
/// link resolved, is still inside each of the directories (`allowed` for every client, and
/// those access rules narrow clients to) that holds it as defined: a tenant's pool swapped
/// for a link into another tenant's directory, though that one is allowed too, is refused.
pub(crate) fn pool_dir_stays(
    allowed: &[PathBuf],
    narrowed: &[PathBuf],
    defined: &Path,
    real: &Path,
) -> Result<()> {
    for dir in allowed.iter().chain(narrowed) {
        if !defined.starts_with(dir) {
            continue;
        }
        let resolved = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if !real.starts_with(&resolved) {
            return Err(Error::denied(format!(
                "its directory '{}' resolves to '{}', outside '{}' where it was defined",
                defined.display(),
                real.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Whether `real` (a path with every link resolved) may be a storage pool's directory:
/// strictly below one of the `allowed` directories clients may name, never one of them.
pub(crate) fn pool_dir_allowed(allowed: &[PathBuf], real: &Path) -> Result<()> {
    let resolved: Vec<PathBuf> = allowed
        .iter()
        .filter_map(|a| a.canonicalize().ok())
        .collect();
    if resolved.iter().any(|a| a == real) {
        return Err(Error::denied(format!(
            "'{}' is one of the directories clients may name; a pool's directory must lie below one",
            real.display()
        )));
    }
    if resolved.iter().any(|a| real.starts_with(a)) {
        return Ok(());
    }
    Err(Error::denied(format!(
        "its directory resolves to '{}', outside the directories this daemon lets clients name ({})",
        real.display(),
        allowed
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// What trust tokens need.
pub struct TrustSetup {
    /// The store.
    pub store: crate::trust::Trust,
    /// The CA's directory (cacert.pem, private/cakey.pem).
    pub ca_dir: PathBuf,
    /// The server certificate's fingerprint, which tokens pin.
    pub server_fingerprint: String,
}

/// How a connection arrived.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Who it is.
    pub identity: Identity,
    /// The read-only socket (every change refused).
    pub readonly_socket: bool,
    /// Why every request on this connection is refused (a certificate off the allow-list),
    /// told to the client rather than dropping it without a word.
    pub refusal: Option<(u16, Error)>,
}

/// Serves one client connection until it closes.
pub async fn serve<S>(daemon: Arc<Daemon>, io: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Certificate-less TLS peers (who may only redeem a token) draw from a small pool of
    // their own, so they cannot take the places of real clients.
    let pool = if matches!(peer.identity, Identity::Anonymous { .. }) {
        daemon.anonymous.clone()
    } else {
        daemon.clients.clone()
    };
    let permit = pool.try_acquire_owned();
    let peer = Arc::new(match permit {
        Ok(_) => peer,
        Err(_) => Peer {
            refusal: Some((
                503,
                Error::new(
                    ErrorKind::OperationFailed,
                    format!(
                        "too many clients: this daemon serves at most {} at once ([limits] max_clients)",
                        daemon.config.limits.max_clients
                    ),
                ),
            )),
            ..peer
        },
    });
    daemon.connected.fetch_add(1, Ordering::SeqCst);
    let d = daemon.clone();
    let p = peer.clone();
    let service = service_fn(move |req| {
        let d = d.clone();
        let p = p.clone();
        async move { Ok::<_, Infallible>(handle(d, p, req).await) }
    });
    let limits = &daemon.config.limits;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper's header timer also runs while a kept-alive connection waits for its next
        // request, so it is the idle timeout too.
        .header_read_timeout(Duration::from_secs(limits.idle_timeout_secs.max(1)))
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(client = %peer.identity.describe(), "connection ended: {e}");
    }
    drop(permit);
    daemon.connected.fetch_sub(1, Ordering::SeqCst);
    *daemon.last_activity.lock().unwrap() = Instant::now();
}

/// A request in flight: counted for SIGTERM's wait, and holding one of its client's
/// places. A client past `max_requests_per_client` waits for a place (up to 30 s) rather
/// than being refused, so a greedy client slows itself, not the others.
pub(crate) struct InFlight {
    daemon: Arc<Daemon>,
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How long a request waits for one of its client's places before it is refused.
const PLACE_WAIT: Duration = Duration::from_secs(30);

impl InFlight {
    pub(crate) async fn enter(daemon: &Arc<Daemon>, who: &Identity) -> Result<InFlight> {
        let limit = daemon.config.limits.max_requests_per_client.max(1);
        let places = daemon
            .per_client
            .lock()
            .unwrap()
            .entry(who.key())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone();
        let place = match tokio::time::timeout(PLACE_WAIT, places.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                return Err(Error::new(
                    ErrorKind::OperationFailed,
                    format!(
                        "too many requests in flight for {}: waited {} s behind {limit} of them ([limits] max_requests_per_client)",
                        who.describe(),
                        PLACE_WAIT.as_secs()
                    ),
                ));
            }
        };
        daemon.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(InFlight {
            daemon: daemon.clone(),
            _place: Some(place),
        })
    }

    /// A slot outside the per-client limit, for work that outlives its request (an
    /// operation answered at once): it keeps SIGTERM waiting without counting against the
    /// client.
    pub(crate) fn enter_unlimited(daemon: &Arc<Daemon>) -> InFlight {
        daemon.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            daemon: daemon.clone(),
            _place: None,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.daemon.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    daemon: Arc<Daemon>,
    peer: Arc<Peer>,
    req: HttpRequest<Incoming>,
) -> Response<Reply> {
    if let Some((status, e)) = &peer.refusal {
        let mut r = json_response(*status, error_body(e));
        r.headers_mut()
            .insert(hyper::header::CONNECTION, "close".parse().expect("static"));
        return r;
    }
    if matches!(peer.identity, Identity::Anonymous { .. })
        && !(req.method() == hyper::Method::POST && req.uri().path() == "/v1/trust/join")
    {
        return error_response(&Error::denied(
            "this TLS connection has no client certificate: it may only redeem a trust token (`virtwasm trust add TOKEN`); ask the daemon's admin for one with `virtwasm trust token NAME`",
        ));
    }
    let guard = match InFlight::enter(&daemon, &peer.identity).await {
        Ok(g) => g,
        Err(e) => return json_response(429, error_body(&e)),
    };
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let readonly = peer.readonly_socket
        || req
            .headers()
            .get(virtwasm_api::remote::READONLY_HEADER)
            .is_some_and(|v| v == "1");
    let uri = match req.headers().get(URI_HEADER).map(|v| v.to_str()) {
        None => daemon.config.daemon.default_uri.clone(),
        Some(Ok(u)) => u.to_string(),
        Some(Err(_)) => {
            return error_response(&Error::invalid(format!(
                "the {URI_HEADER} header is not text"
            )));
        }
    };
    let asynchronous = req
        .headers()
        .get(hyper::header::HeaderName::from_static("prefer"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim() == virtwasm_api::wire::PREFER_ASYNC)
        });
    // A console: the connection becomes the guest's serial port.
    if let Some(key) = path
        .strip_prefix("/v1/domains/")
        .and_then(|r| r.strip_suffix("/console"))
        .filter(|k| !k.is_empty() && !k.contains('/'))
    {
        let decoded = unescape(key).and_then(|key| {
            let device = query_param(&query, "device").map(unescape).transpose()?;
            Ok((key, device))
        });
        let (key, device) = match decoded {
            Ok(x) => x,
            Err(e) => return error_response(&e),
        };
        let response = if method == "GET" {
            crate::console::attach(
                daemon.clone(),
                peer.clone(),
                &uri,
                readonly,
                key,
                device,
                req,
            )
            .await
        } else {
            error_response(&Error::new(
                ErrorKind::Unsupported,
                format!(
                    "method {method} is not allowed on '{path}' (allowed: GET with Upgrade: virtwasm-console)"
                ),
            ))
        };
        drop(guard);
        return response;
    }
    // A volume's data streams through without the request-size cap.
    if let Some((key, pool)) = volume_data_target(&path, &query) {
        let response = match method.as_str() {
            "GET" | "PUT" => {
                crate::volumes::transfer(
                    daemon.clone(),
                    peer.clone(),
                    &uri,
                    readonly,
                    key,
                    pool,
                    req,
                    asynchronous,
                )
                .await
            }
            other => error_response(&Error::new(
                ErrorKind::Unsupported,
                format!("method {other} is not allowed on '{path}' (allowed: GET, PUT)"),
            )),
        };
        drop(guard);
        return response;
    }
    let limit = daemon.config.limits.max_request_bytes;
    // The header timer stops once the headers are in: bound the body too.
    let body_wait = Duration::from_secs(daemon.config.limits.idle_timeout_secs.max(1));
    let collected =
        match tokio::time::timeout(body_wait, Limited::new(req.into_body(), limit).collect()).await
        {
            Ok(c) => c,
            Err(_) => {
                return json_response(
                    408,
                    error_body(&Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the request body did not arrive within {} s",
                            body_wait.as_secs()
                        ),
                    )),
                );
            }
        };
    let body = match collected {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let err = if too_big {
                Error::invalid(format!(
                    "request body larger than {limit} bytes ([limits] max_request_bytes)"
                ))
            } else {
                Error::failed(format!("cannot read the request body: {e}"))
            };
            let status = if too_big { 413 } else { 400 };
            return json_response(status, error_body(&err));
        }
    };
    let segs: Vec<&str> = path.split('/').collect();
    let response = match (method.as_str(), segs.as_slice()) {
        ("GET", ["", "v1"]) => json_response(200, info(&daemon, &peer)),
        ("GET", ["", "v1", "openapi.json"]) => json_response(
            200,
            serde_json::to_vec_pretty(&virtwasm_api::openapi::document()).unwrap_or_default(),
        ),
        ("GET", ["", "v1", "events"]) => events(daemon.clone(), peer.clone(), &uri, readonly).await,
        (_, ["", "v1", "trust", rest @ ..]) => {
            let d = daemon.clone();
            let p = peer.clone();
            let method = method.clone();
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            tokio::task::spawn_blocking(move || {
                trust_request(&d, &p, readonly, &method, &rest, &body)
            })
            .await
            .unwrap_or_else(|e| {
                error_response(&Error::internal(format!("trust handler failed: {e}")))
            })
        }
        (_, ["", "v1", "operations", rest @ ..]) => {
            operation_request(&daemon, &peer, readonly, &method, rest, &query).await
        }
        // A read the host answers from its own records (a listing, most often) runs right
        // here once its driver is open: a hop to the blocking pool would double its cost.
        // (Opening a driver may compile a plugin, so the first request always hops.)
        _ if method == "GET"
            && Request::route_of("GET", &path)
                .is_some_and(|r| virtwasm_api::ops::FROM_RECORDS.contains(&r.op))
            && daemon.opened.lock().unwrap().contains(&uri) =>
        {
            let answered = prepare(
                &daemon, &peer, &uri, readonly, &method, &path, &query, &body,
            )
            .and_then(|call| answer_quick(&daemon, &peer, call));
            match answered {
                Err(e) => error_response(&e),
                Ok(call) => run(&daemon, &peer, call, asynchronous).await,
            }
        }
        _ => {
            let d = daemon.clone();
            let p = peer.clone();
            // No hop at all: this I/O thread becomes a blocking one (its other connections
            // move to another thread) and checks and runs the request itself, long work
            // included when the client waits for it (registered as an operation all the
            // same); only long work answered at once goes on in a thread of its own. Each
            // hop to the blocking pool and back cost about 45 us (measured: a GET /v1/node
            // took 207 us back to back with the hops, 114 us without).
            let handled = tokio::task::block_in_place(move || {
                let call = prepare(&d, &p, &uri, readonly, &method, &path, &query, &body)
                    .and_then(|call| answer_quick(&d, &p, call))?;
                if asynchronous || !matches!(call, Prepared::Call { .. }) {
                    return Ok(Handled::Prepared(Box::new(call)));
                }
                Ok(Handled::Done(match register(&d, &p, call) {
                    Registered::Answered(response) => response,
                    Registered::Long(long) => answer(long.run()),
                }))
            });
            match handled {
                Err(e) => error_response(&e),
                Ok(Handled::Done(response)) => response,
                Ok(Handled::Prepared(call)) => run(&daemon, &peer, *call, asynchronous).await,
            }
        }
    };
    drop(guard);
    *daemon.last_activity.lock().unwrap() = Instant::now();
    response
}

/// Runs a prepared call that is not long work and returns its answer; long work is returned
/// as it is, for [`run`] to register as an operation.
fn answer_quick(daemon: &Daemon, peer: &Peer, call: Prepared) -> Result<Prepared> {
    match call {
        Prepared::Call {
            conn, req, route, ..
        } if !virtwasm_api::ops::LONG.contains(&route.op) => {
            let dirs = daemon.file_dirs(&peer.identity);
            let value = daemon.dispatch(&conn, req, &dirs, &|_, _| Ok(()))?;
            Ok(Prepared::Answer(visible_only(
                daemon, peer, route.op, value,
            )))
        }
        other => Ok(other),
    }
}

/// `/v1/volumes/{key}/data[?pool=P]`: the key and pool, decoded.
fn volume_data_target(path: &str, query: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix("/v1/volumes/")?.strip_suffix("/data")?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    let key = unescape(rest).ok()?;
    let pool = query_param(query, "pool").and_then(|p| unescape(p).ok());
    Some((key, pool))
}

/// `/v1/operations`, `/v1/operations/{id}`, `/v1/operations/{id}/wait?timeout=S`, and
/// `DELETE /v1/operations/{id}` (cancel).
async fn operation_request(
    daemon: &Arc<Daemon>,
    peer: &Peer,
    readonly: bool,
    method: &str,
    rest: &[&str],
    query: &str,
) -> Response<Reply> {
    let ok = |v: &dyn erased::Json| json_response(200, v.to_json());
    let check = |kind, perm, name: Option<&str>, op: &str| {
        authorize(
            &daemon.access(),
            &peer.identity,
            readonly,
            op,
            kind,
            perm,
            name,
        )
    };
    // An operation is its starter's business (and an admin's): others do not learn of it.
    let admin = decide(
        &daemon.access(),
        &peer.identity,
        Permission::Write,
        ObjectKind::Node,
        None,
    )
    .role
        == crate::config::Role::Admin
        && !readonly;
    let me = peer.identity.key();
    let owner = (!admin).then_some(me.as_str());
    match (method, rest) {
        ("GET", []) => match check(ObjectKind::Node, Permission::Getattr, None, "operations") {
            Ok(()) => ok(&daemon.operations.list(owner)),
            Err(e) => error_response(&e),
        },
        ("GET", [id]) | ("GET", [id, "wait"]) | ("DELETE", [id]) => {
            let entry = match daemon.operations.get(id) {
                Ok(e) if owner.is_none_or(|o| e.owner == o) => e,
                Ok(_) => {
                    return error_response(&Error::not_found(format!(
                        "no operation with id '{id}'"
                    )));
                }
                Err(e) => return error_response(&e),
            };
            let info = entry.snapshot();
            if method == "DELETE" {
                let (kind, perm) = entry.guard;
                if let Err(e) = check(kind, perm, info.target.as_deref(), "cancel") {
                    return error_response(&e);
                }
                return match daemon.operations.cancel(&entry) {
                    Ok(op) => ok(&op),
                    Err(e) => error_response(&e),
                };
            }
            if let Err(e) = check(ObjectKind::Node, Permission::Getattr, None, "operations") {
                return error_response(&e);
            }
            if rest.len() == 2 {
                let secs = query_param(query, "timeout")
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(30)
                    .min(3600);
                return ok(&entry.wait(Duration::from_secs(secs)).await);
            }
            ok(&info)
        }
        _ => error_response(&Error::not_found(format!(
            "no API endpoint at '/v1/operations/{}' for {method}",
            rest.join("/")
        ))),
    }
}

/// `/v1/trust`: tokens (admins), the join a token allows (anyone holding one), the list
/// and removal of trusted clients (admins).
fn trust_request(
    daemon: &Daemon,
    peer: &Peer,
    readonly: bool,
    method: &str,
    rest: &[String],
    body: &[u8],
) -> Response<Reply> {
    let Some(trust) = &daemon.trust else {
        return error_response(&Error::new(
            ErrorKind::Unsupported,
            "trust tokens need TLS: start the daemon with [tls] enabled (or --listen-tls) and a CA made by `virtwasm pki ca`",
        ));
    };
    let admin = |op: &str| {
        authorize(
            &daemon.access(),
            &peer.identity,
            readonly,
            op,
            ObjectKind::Node,
            Permission::Write,
            None,
        )
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let result: Result<serde_json::Value> = (|| match (method, rest.as_slice()) {
        ("GET", []) => {
            authorize(
                &daemon.access(),
                &peer.identity,
                readonly,
                "trust-list",
                ObjectKind::Node,
                Permission::Read,
                None,
            )?;
            let (clients, tokens) = trust.store.list();
            Ok(serde_json::json!({ "clients": clients, "tokens": tokens }))
        }
        ("POST", ["tokens"]) => {
            admin("trust-token")?;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Ask {
                name: String,
                #[serde(default = "operator")]
                role: crate::config::Role,
                #[serde(default = "hour")]
                ttl_secs: u64,
            }
            fn operator() -> crate::config::Role {
                crate::config::Role::Operator
            }
            fn hour() -> u64 {
                3600
            }
            let ask: Ask = serde_json::from_slice(body)
                .map_err(|e| Error::invalid(format!("invalid token request: {e}")))?;
            let (secret, token) = trust
                .store
                .create_token(&ask.name, ask.role, ask.ttl_secs)?;
            tracing::info!(client = %peer.identity.describe(), name = %ask.name, role = ask.role.name(), "trust token issued");
            Ok(serde_json::json!({
                "token": crate::trust::format_token(&secret, &trust.server_fingerprint),
                "name": token.name,
                "role": token.role,
                "expires_ms": token.expires_ms,
            }))
        }
        ("POST", ["join"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Join {
                secret: String,
                csr: String,
            }
            let join: Join = serde_json::from_slice(body)
                .map_err(|e| Error::invalid(format!("invalid join request: {e}")))?;
            // Check the request before spending the token: a malformed one must not burn it.
            let pending = trust.store.peek(&join.secret)?;
            let cert =
                virtwasm_api::pki::sign_client_request(&trust.ca_dir, &join.csr, &pending.name)?;
            let token = trust.store.redeem(&join.secret)?;
            let fingerprint =
                virtwasm_api::pki::fingerprint_of_pem(cert.as_bytes(), "the signed certificate")?;
            let client = trust.store.add_client(&token, &fingerprint)?;
            daemon.refresh_access();
            tracing::info!(peer = %peer.identity.describe(), name = %client.name, fingerprint = %client.fingerprint, role = client.role.name(), "client joined with a trust token");
            let ca_path = trust.ca_dir.join("cacert.pem");
            let ca = std::fs::read_to_string(&ca_path)
                .map_err(|e| Error::io("cannot read", &ca_path, e))?;
            Ok(serde_json::json!({
                "name": client.name,
                "role": client.role,
                "fingerprint": client.fingerprint,
                "certificate": cert,
                "ca": ca,
            }))
        }
        ("DELETE", ["clients", key]) => {
            admin("trust-remove")?;
            let c = trust.store.remove_client(&unescape(key)?)?;
            daemon.refresh_access();
            Ok(serde_json::to_value(c).unwrap_or_default())
        }
        _ => Err(Error::not_found(format!(
            "no API endpoint at '/v1/trust/{}' for {method}",
            rest.join("/")
        ))),
    })();
    match result {
        Ok(v) => json_response(200, serde_json::to_vec(&v).unwrap_or_default()),
        Err(e) => error_response(&e),
    }
}

/// Serialization behind one small trait object, so handlers can answer any record.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// A request checked and ready to run.
#[allow(clippy::large_enum_variant)] // one per request, moved once
pub enum Prepared {
    /// Already answered.
    Answer(serde_json::Value),
    /// A host call to make.
    Call {
        /// The driver connection.
        conn: Connection,
        /// The request.
        req: Request,
        /// Its route.
        route: &'static virtwasm_api::ops::Route,
        /// The object it acts on, by name.
        target: Option<String>,
    },
}

/// Drops from a listing the objects the client may not see (`getattr` on each, as libvirt
/// filters its lists by ACL), so a rule limiting a client to `web-*` hides the rest.
fn visible_only(
    daemon: &Daemon,
    peer: &Peer,
    op: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    let (kind, name_of): (ObjectKind, fn(&serde_json::Value) -> Option<&str>) = match op {
        "list-domains" => (ObjectKind::Domain, |v| v.get("name")?.as_str()),
        "list-pools" => (ObjectKind::Pool, |v| {
            v.get("record")?.get("def")?.get("name")?.as_str()
        }),
        "list-networks" => (ObjectKind::Network, |v| v.get("def")?.get("name")?.as_str()),
        _ => return value,
    };
    match value {
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .filter(|item| {
                    name_of(item).is_some_and(|n| {
                        decide(
                            &daemon.access(),
                            &peer.identity,
                            Permission::Getattr,
                            kind,
                            Some(n),
                        )
                        .allowed
                    })
                })
                .collect(),
        ),
        other => other,
    }
}

/// Runs a prepared request: a quick one's answer at once; a long one as an operation in the
/// blocking pool, answered `202` with the operation at once when the client sent
/// `Prefer: respond-async`.
async fn run(
    daemon: &Arc<Daemon>,
    peer: &Peer,
    call: Prepared,
    asynchronous: bool,
) -> Response<Reply> {
    let long = match register(daemon, peer, call) {
        Registered::Answered(response) => return response,
        Registered::Long(long) => long,
    };
    let entry = long.entry.clone();
    let work = tokio::task::spawn_blocking(move || long.run());
    if asynchronous {
        let op = entry.snapshot();
        let mut r = json_response(202, serde_json::to_vec(&op).unwrap_or_default());
        if let Ok(v) = format!("/v1/operations/{}", op.id).parse() {
            r.headers_mut().insert(hyper::header::LOCATION, v);
        }
        return r;
    }
    match work.await {
        Ok(outcome) => answer(outcome),
        Err(e) => error_response(&Error::internal(format!("request handler failed: {e}"))),
    }
}

/// What the connection's blocking thread did with a request: prepared it for [`run`], or
/// ran it through.
enum Handled {
    Prepared(Box<Prepared>),
    Done(Response<Reply>),
}

/// A long call's answer to a client that waited for it.
fn answer(outcome: Result<serde_json::Value>) -> Response<Reply> {
    match outcome {
        Ok(value) => json_response(200, serde_json::to_vec(&value).unwrap_or_default()),
        Err(e) => error_response(&e),
    }
}

/// A prepared call after [`register`]: answered already (or refused), or long work
/// registered as an operation and ready to run.
enum Registered {
    Answered(Response<Reply>),
    Long(Box<LongWork>),
}

/// Long work registered as an operation: counted against its client's running operations
/// and holding an in-flight slot (SIGTERM waits for it) until it has run, however it ends.
struct LongWork {
    counted: RunningCount,
    conn: Connection,
    req: Request,
    entry: Arc<crate::operations::Entry>,
    slot: InFlight,
    /// The directories the client may name files under.
    dirs: Vec<PathBuf>,
}

/// One of a client's running operations, counted until dropped.
struct RunningCount {
    daemon: Arc<Daemon>,
    who: String,
}

impl Drop for RunningCount {
    fn drop(&mut self) {
        let mut m = self.daemon.running_ops.lock().unwrap();
        if let Some(n) = m.get_mut(&self.who) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.who);
            }
        }
    }
}

impl LongWork {
    /// Does the work, in the thread that calls it (a blocking one), and records its end.
    fn run(self) -> Result<serde_json::Value> {
        let LongWork {
            counted,
            conn,
            req,
            entry,
            slot,
            dirs,
        } = self;
        let outcome = counted.daemon.dispatch(&conn, req, &dirs, &|done, total| {
            entry.progress(done, total, "bytes")
        });
        entry.finish(&outcome);
        drop((counted, slot));
        outcome
    }
}

/// Registers a prepared call's long work as an operation (or answers why not: too many
/// running for its client); a call already answered is answered.
fn register(daemon: &Arc<Daemon>, peer: &Peer, call: Prepared) -> Registered {
    let (conn, req, route, target) = match call {
        Prepared::Answer(v) => {
            return Registered::Answered(json_response(
                200,
                serde_json::to_vec(&v).unwrap_or_default(),
            ));
        }
        Prepared::Call {
            conn,
            req,
            route,
            target,
        } => (conn, req, route, target),
    };
    let who = peer.identity.key();
    {
        let mut running = daemon.running_ops.lock().unwrap();
        let n = running.entry(who.clone()).or_default();
        let cap = daemon.config.limits.max_requests_per_client.max(1);
        if *n >= cap {
            return Registered::Answered(json_response(
                429,
                error_body(&Error::new(
                    ErrorKind::OperationFailed,
                    format!(
                        "too many operations running for {} (at most {cap}, [limits] max_requests_per_client)",
                        peer.identity.describe()
                    ),
                )),
            ));
        }
        *n += 1;
    }
    let entry = daemon.operations.start(
        route.op,
        target,
        peer.identity.describe(),
        peer.identity.key(),
        // Only a migration can be stopped midway and leave the guest as it was; other long
        // work is a driver call that runs to its end.
        route.op == "migrate",
        (route.object, route.permission),
    );
    Registered::Long(Box::new(LongWork {
        counted: RunningCount {
            daemon: daemon.clone(),
            who,
        },
        conn,
        req,
        entry,
        // The work holds an in-flight slot of its own, so SIGTERM waits for it even when
        // the client was answered at once.
        slot: InFlight::enter_unlimited(daemon),
        dirs: daemon.file_dirs(&peer.identity),
    }))
}

fn info(daemon: &Daemon, peer: &Peer) -> Vec<u8> {
    let role = decide(
        &daemon.access(),
        &peer.identity,
        Permission::Write,
        ObjectKind::Node,
        None,
    )
    .role;
    serde_json::to_vec_pretty(&serde_json::json!({
        "api": "v1",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": match daemon.mode { Mode::System => "system", Mode::Session => "session" },
        "client": peer.identity,
        "role": role.name(),
        "readonly": peer.readonly_socket,
    }))
    .unwrap_or_default()
}

/// Parses a request, opens its driver and authorizes it. `list-plugins`, which only the
/// front end (holding the registry) can answer, is answered here.
#[allow(clippy::too_many_arguments)]
fn prepare(
    daemon: &Daemon,
    peer: &Peer,
    uri: &str,
    readonly: bool,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Result<Prepared> {
    let (req, route) = Request::from_http(method, path, query, body)?;
    if let Request::ListPlugins = req {
        authorize(
            &daemon.access(),
            &peer.identity,
            readonly,
            route.op,
            route.object,
            route.permission,
            None,
        )?;
        return serde_json::to_value(daemon.host.registry().list())
            .map(Prepared::Answer)
            .map_err(|e| Error::internal(e.to_string()));
    }
    let conn = daemon.open(uri, readonly)?;
    let name = dispatch::target_name(&conn, &req)?;
    authorize(
        &daemon.access(),
        &peer.identity,
        readonly,
        route.op,
        route.object,
        route.permission,
        name.as_deref(),
    )?;
    // A new volume is an object too: rules on volume names apply to the name it will have
    // (a client limited to `volume:scratch-*` creates only scratch volumes).
    let new_volume = match &req {
        Request::VolCreate { vol, .. } => Some(vol.name.clone()),
        Request::VolCreateXml { xml, .. } => virtwasm_host::xml::parse_volume(xml)
            .ok()
            .map(|p| p.def.name),
        Request::VolClone { name, .. } => Some(name.clone()),
        _ => None,
    };
    if let Some(new) = new_volume {
        authorize(
            &daemon.access(),
            &peer.identity,
            readonly,
            route.op,
            ObjectKind::Volume,
            Permission::Write,
            Some(&new),
        )?;
    }
    tracing::debug!(client = %peer.identity.describe(), op = route.op, "request");
    Ok(Prepared::Call {
        conn,
        req,
        route,
        target: name,
    })
}

/// `GET /v1/events`: Server-Sent Events, each a JSON event the client may see (getattr on
/// its object), with a comment every 15 s so dead clients are noticed.
async fn events(
    daemon: Arc<Daemon>,
    peer: Arc<Peer>,
    uri: &str,
    readonly: bool,
) -> Response<Reply> {
    let conn = match daemon.open(uri, readonly) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = authorize(
        &daemon.access(),
        &peer.identity,
        readonly,
        "events",
        ObjectKind::Domain,
        Permission::Search,
        None,
    ) {
        return error_response(&e);
    }
    let rx = conn.state().events.subscribe();
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    let access = daemon.access();
    // A client that stops reading is dropped after the idle timeout, freeing this thread
    // (its event queue is bounded too, see EventBus).
    let stall = Duration::from_secs(daemon.config.limits.idle_timeout_secs.max(1));
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let visible = |e: &Event| {
            let (kind, name) = match e {
                Event::Domain { name, .. } => (ObjectKind::Domain, name),
                Event::Pool { name, .. } => (ObjectKind::Pool, name),
                Event::Network { name, .. } => (ObjectKind::Network, name),
            };
            decide(
                &access,
                &peer.identity,
                Permission::Getattr,
                kind,
                Some(name),
            )
            .allowed
        };
        if tx
            .blocking_send(Bytes::from_static(b": subscribed\n\n"))
            .is_err()
        {
            return;
        }
        loop {
            let chunk = match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(e) if visible(&e) => Bytes::from(sse_frame(&e)),
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    Bytes::from_static(b": keepalive\n\n")
                }
                // The bus dropped this subscriber: it fell too far behind. Say so, so the
                // client knows it missed events (and can reconnect and re-read state).
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = runtime.block_on(tx.send_timeout(
                        Bytes::from(format!(
                            "event: overflow\ndata: {{\"reason\":\"this client fell {} events behind; events were lost\"}}\n\n",
                            virtwasm_host::events::SUBSCRIBER_BACKLOG
                        )),
                        stall,
                    ));
                    return;
                }
            };
            if runtime.block_on(tx.send_timeout(chunk, stall)).is_err() {
                tracing::info!(
                    client = %peer.identity.describe(),
                    "event stream ended: the client went away or read nothing for {} s",
                    stall.as_secs()
                );
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "text/event-stream")
        .header(hyper::header::CACHE_CONTROL, "no-cache")
        .body(Reply::Stream(virtwasm_api::wire::ChannelBody {
            rx: body_rx,
            len: None,
        }))
        .expect("static headers")
}
