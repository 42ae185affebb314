//! The client side of the daemon's HTTP API: one HTTP/1.1 connection (hyper) over a unix
//! socket, TCP, TLS (rustls) or an `ssh` child's standard streams, driven by a small
//! single-threaded runtime so callers stay synchronous.

use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;
use virtwasm_host::events::Event;
use virtwasm_host::{Error, ErrorKind, Result};

use crate::endpoint::{Endpoint, Target};
use crate::ops::Request;
use crate::wire::{URI_HEADER, parse_error};

/// The header asking the daemon to refuse every change on this connection (`virtwasm -r`).
pub const READONLY_HEADER: &str = "x-virtwasm-readonly";

/// Every request body: whole (JSON) or streamed (a volume upload).
type Body = BoxBody<Bytes, std::convert::Infallible>;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A connection to a daemon.
pub struct Remote {
    rt: Runtime,
    target: Target,
    sender: Mutex<SendRequest<Body>>,
    /// The `ssh` child and what it printed on standard error, for ssh connections.
    ssh: Mutex<SshChild>,
}

type SshChild = Option<(tokio::process::Child, Arc<Mutex<String>>)>;

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("target", &self.target)
            .finish()
    }
}

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the client's I/O runtime: {e}")))
}

impl Remote {
    /// Connects to the daemon `target` names.
    pub fn connect(target: &Target) -> Result<Remote> {
        let rt = runtime()?;
        let (stream, ssh) = rt.block_on(open_stream(target))?;
        let sender = handshake(&rt, stream, target)?;
        Ok(Remote {
            rt,
            target: target.clone(),
            sender: Mutex::new(sender),
            ssh: Mutex::new(ssh),
        })
    }

    /// Runs one operation on the daemon.
    pub fn call(&self, req: &Request) -> Result<Value> {
        let wire = req.to_http()?;
        let (status, body) = self.send(wire.method.as_str(), &wire.target(), wire.body)?;
        if status == 200 {
            serde_json::from_slice(&body).map_err(|e| {
                Error::failed(format!(
                    "the daemon's answer to '{}' is not valid JSON: {e}",
                    req.op()
                ))
            })
        } else {
            Err(parse_error(status, &body))
        }
    }

    /// Runs a long operation asynchronously (`Prefer: respond-async`), telling `watch`
    /// about the operation each time it is checked (about twice a second), and returns its
    /// result once it has finished: what a progress bar needs.
    pub fn call_watched(
        &self,
        req: &Request,
        watch: &mut dyn FnMut(&crate::operation::Operation),
    ) -> Result<Value> {
        use crate::operation::{Operation, Status};
        let wire = req.to_http()?;
        let mut request = self.request(wire.method.as_str(), &wire.target(), wire.body)?;
        request.headers_mut().insert(
            hyper::header::HeaderName::from_static("prefer"),
            hyper::header::HeaderValue::from_static(crate::wire::PREFER_ASYNC),
        );
        let (status, body) = self.exchange(request)?;
        match status {
            // Not a long operation after all: the answer is here.
            200 => {
                return serde_json::from_slice(&body).map_err(|e| {
                    Error::failed(format!(
                        "the daemon's answer to '{}' is not valid JSON: {e}",
                        req.op()
                    ))
                });
            }
            202 => {}
            _ => return Err(parse_error(status, &body)),
        }
        let mut op: Operation = serde_json::from_slice(&body)
            .map_err(|e| Error::failed(format!("the daemon's operation is not valid JSON: {e}")))?;
        loop {
            watch(&op);
            if op.status != Status::Running {
                break;
            }
            let (status, body) = self.send(
                "GET",
                &format!(
                    "/v1/operations/{}/wait?timeout=1",
                    crate::ops::escape(&op.id)
                ),
                None,
            )?;
            if status != 200 {
                return Err(parse_error(status, &body));
            }
            op = serde_json::from_slice(&body).map_err(|e| {
                Error::failed(format!("the daemon's operation is not valid JSON: {e}"))
            })?;
        }
        match (op.status, op.result, op.error) {
            (Status::Success, Some(v), _) => Ok(v),
            (Status::Success, None, _) => Ok(Value::Null),
            (_, _, Some(e)) => Err(e),
            (s, _, None) => Err(Error::failed(format!(
                "operation {} ended {s:?} without a reason",
                op.id
            ))),
        }
    }

    /// Sends a request and reads the whole answer: status and body.
    pub fn send(
        &self,
        method: &str,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>)> {
        let request = self.request(method, target, body)?;
        self.exchange(request)
    }

    /// Sends a built request on the connection and reads the whole answer.
    fn exchange(&self, request: hyper::Request<Body>) -> Result<(u16, Vec<u8>)> {
        let mut sender = self.sender.lock().unwrap();
        if sender.is_closed() {
            // The daemon closed an idle connection; nothing was sent on it, so reconnecting
            // and sending is safe.
            *sender = self.reconnect()?;
        }
        let result = self.rt.block_on(async {
            sender.ready().await?;
            let resp = sender.send_request(request).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body.to_vec()))
        });
        result.map_err(|e| self.transport_error(e))
    }

    fn reconnect(&self) -> Result<SendRequest<Body>> {
        let (stream, ssh) = self.rt.block_on(open_stream(&self.target))?;
        if let Some(old) = std::mem::replace(&mut *self.ssh.lock().unwrap(), ssh) {
            drop(old); // kill_on_drop ends the old ssh
        }
        handshake(&self.rt, stream, &self.target)
    }

    fn request(
        &self,
        method: &str,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Request<Body>> {
        self.request_with(
            method,
            target,
            body.is_some(),
            Full::new(Bytes::from(body.unwrap_or_default())).boxed(),
        )
    }

    fn request_with(
        &self,
        method: &str,
        target: &str,
        json: bool,
        body: Body,
    ) -> Result<hyper::Request<Body>> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header(hyper::header::HOST, "virtwasm")
            .header(URI_HEADER, &self.target.driver_uri);
        if self.target.readonly {
            builder = builder.header(READONLY_HEADER, "1");
        }
        builder = builder.header(
            hyper::header::CONTENT_TYPE,
            if json {
                "application/json"
            } else {
                "application/octet-stream"
            },
        );
        builder
            .body(body)
            .map_err(|e| Error::internal(format!("cannot build request {method} {target}: {e}")))
    }

    /// A lost connection, named with its cause: for ssh, what ssh printed.
    fn transport_error(&self, e: hyper::Error) -> Error {
        let mut message = format!("lost the connection to {}: {e}", describe(&self.target));
        if let Some((_, stderr)) = &*self.ssh.lock().unwrap() {
            // Give ssh a moment to finish writing why it gave up.
            std::thread::sleep(Duration::from_millis(100));
            let text = stderr.lock().unwrap().trim().to_string();
            if !text.is_empty() {
                message = format!("{message}; ssh said: {text}");
            }
        }
        Error::failed(message)
    }

    /// Streams a local file into a volume (`PUT .../data`) or a volume into a local file
    /// (`GET .../data`), telling `progress` the bytes done of the total.
    pub fn vol_transfer(
        &self,
        key: &str,
        pool: Option<&str>,
        file: &Path,
        upload: bool,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<u64> {
        use std::io::{Read, Write};
        let target = crate::wire::volume_data_path(key, pool);
        let mut sender = self.sender.lock().unwrap();
        if sender.is_closed() {
            *sender = self.reconnect()?;
        }
        if upload {
            let mut src =
                std::fs::File::open(file).map_err(|e| Error::io("cannot open", file, e))?;
            let total = src
                .metadata()
                .map_err(|e| Error::io("cannot stat", file, e))?
                .len();
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            let body = crate::wire::ChannelBody {
                rx,
                len: Some(total),
            };
            let request = self.request_with("PUT", &target, false, body.boxed())?;
            let outcome: Result<(u16, Vec<u8>)> = self.rt.block_on(async {
                sender.ready().await.map_err(|e| self.transport_error(e))?;
                let answer = sender.send_request(request);
                tokio::pin!(answer);
                let mut buf = vec![0u8; 1 << 20];
                let mut done = 0u64;
                let mut tx = Some(tx);
                loop {
                    let n = src
                        .read(&mut buf)
                        .map_err(|e| Error::io("cannot read", file, e))?;
                    if n == 0 {
                        tx = None;
                        break;
                    }
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    let Some(sending) = tx.as_ref() else { break };
                    tokio::select! {
                        sent = sending.send(chunk) => {
                            if sent.is_err() {
                                break;
                            }
                        }
                        // The daemon answered before taking everything: a refusal.
                        early = &mut answer => {
                            let resp = early.map_err(|e| self.transport_error(e))?;
                            let status = resp.status().as_u16();
                            let body = resp.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            return Ok((status, body));
                        }
                    }
                    done += n as u64;
                    if let Err(e) = progress(done, total) {
                        drop(tx.take());
                        return Err(e);
                    }
                }
                drop(tx);
                let resp = answer.await.map_err(|e| self.transport_error(e))?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| self.transport_error(e))?
                    .to_bytes();
                Ok((status, body.to_vec()))
            });
            let (status, body) = outcome?;
            if status != 200 {
                return Err(parse_error(status, &body));
            }
            serde_json::from_slice(&body)
                .map_err(|e| Error::failed(format!("unexpected answer to an upload: {e}")))
        } else {
            let request =
                self.request_with("GET", &target, false, Full::new(Bytes::new()).boxed())?;
            self.rt.block_on(async {
                sender.ready().await.map_err(|e| self.transport_error(e))?;
                let resp = sender
                    .send_request(request)
                    .await
                    .map_err(|e| self.transport_error(e))?;
                let status = resp.status().as_u16();
                let total = resp
                    .headers()
                    .get(hyper::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                let mut body = resp.into_body();
                if status != 200 {
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    return Err(parse_error(status, &bytes));
                }
                let mut dst = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(file)
                    .map_err(|e| Error::io("cannot open", file, e))?;
                let mut done = 0u64;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| self.transport_error(e))?;
                    if let Ok(data) = frame.into_data() {
                        dst.write_all(&data)
                            .map_err(|e| Error::io("cannot write", file, e))?;
                        done += data.len() as u64;
                        progress(done, total)?;
                    }
                }
                if total > 0 && done != total {
                    return Err(Error::failed(format!(
                        "the download ended after {done} of {total} bytes"
                    )));
                }
                dst.sync_all()
                    .map_err(|e| Error::io("cannot sync", file, e))?;
                Ok(done)
            })
        }
    }

    /// Attaches to a domain's console through the daemon: a second connection, upgraded to
    /// a byte stream (`GET /v1/domains/{key}/console`, `Upgrade: virtwasm-console`).
    pub fn console(&self, key: &str, device: Option<&str>) -> Result<crate::console::Console> {
        let rt = runtime()?;
        let (stream, _ssh) = rt.block_on(open_stream(&self.target))?;
        let mut sender = handshake(&rt, stream, &self.target)?;
        let mut target = format!("/v1/domains/{}/console", crate::ops::escape(key));
        if let Some(d) = device {
            target.push_str(&format!("?device={}", crate::ops::escape(d)));
        }
        let mut req = self.request("GET", &target, None)?;
        req.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static(crate::console::UPGRADE),
        );
        req.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        let upgraded = rt.block_on(async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| Error::failed(format!("console request failed: {e}")))?;
            let status = resp.status().as_u16();
            if status != 101 {
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                return Err(parse_error(status, &body));
            }
            hyper::upgrade::on(resp)
                .await
                .map_err(|e| Error::failed(format!("console upgrade failed: {e}")))
        })?;
        if let Some((child, _)) = _ssh {
            // The console's ssh lives as long as the console: leak it into the runtime.
            std::mem::forget(child);
        }
        Ok(crate::console::Console::Remote(rt, TokioIo::new(upgraded)))
    }

    /// Subscribes to the daemon's events: a second connection reads `/v1/events` on a
    /// thread and forwards each event until the receiver is dropped.
    pub fn events(&self) -> Result<Receiver<Event>> {
        let target = self.target.clone();
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel::<Result<()>>();
        std::thread::spawn(move || {
            let remote = match Remote::connect(&target) {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let request = match remote.request("GET", "/v1/events", None) {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut sender = remote.sender.lock().unwrap();
            remote.rt.block_on(async {
                let resp = match sender.send_request(request).await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::failed(format!(
                            "cannot subscribe to events: {e}"
                        ))));
                        return;
                    }
                };
                let status = resp.status().as_u16();
                let mut body = resp.into_body();
                if status != 200 {
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let _ = ready_tx.send(Err(parse_error(status, &bytes)));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                let mut buf = String::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        for line in block.lines() {
                            if let Some(json) = line.strip_prefix("data: ")
                                && let Ok(event) = serde_json::from_str::<Event>(json)
                                && tx.send(event).is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
        });
        ready_rx.recv().unwrap_or_else(|_| {
            Err(Error::internal("the event reader ended before subscribing"))
        })?;
        Ok(rx)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut *self.ssh.lock().unwrap() {
            let _ = child.start_kill();
        }
    }
}

/// Speaks HTTP/1.1 over `stream`, the connection driven by `rt` (with upgrades: a console
/// turns it into a byte stream).
fn handshake(rt: &Runtime, stream: Box<dyn Stream>, target: &Target) -> Result<SendRequest<Body>> {
    let (sender, conn) = rt
        .block_on(hyper::client::conn::http1::handshake::<_, Body>(
            TokioIo::new(stream),
        ))
        .map_err(|e| Error::failed(format!("HTTP handshake with {}: {e}", describe(target))))?;
    rt.spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("daemon connection ended: {e}");
        }
    });
    Ok(sender)
}

/// Where a target leads, for error messages.
fn describe(target: &Target) -> String {
    match &target.endpoint {
        Endpoint::InProcess => "the in-process host".into(),
        Endpoint::Unix { path, .. } => format!("virtwasmd at {}", path.display()),
        Endpoint::Tcp { host, port } => format!("virtwasmd at tcp://{host}:{port}"),
        Endpoint::Tls { host, port, .. } | Endpoint::TlsPinned { host, port, .. } => {
            format!("virtwasmd at tls://{host}:{port}")
        }
        Endpoint::Ssh { host, .. } => format!("virtwasmd on {host} over ssh"),
    }
}

type Opened = (Box<dyn Stream>, SshChild);

async fn open_stream(target: &Target) -> Result<Opened> {
    match &target.endpoint {
        Endpoint::InProcess => Err(Error::internal("an in-process target has no stream")),
        Endpoint::Unix { path, autostart } => {
            let stream = match tokio::net::UnixStream::connect(path).await {
                Ok(s) => s,
                Err(e)
                    if *autostart
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    start_session_daemon(path).await?
                }
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::OperationFailed,
                        format!(
                            "cannot connect to virtwasmd at '{}': {e} (is virtwasmd running? start it with `virtwasmd`, or `virtwasmd --session` for your own)",
                            path.display()
                        ),
                    ));
                }
            };
            Ok((Box::new(stream), None))
        }
        Endpoint::Tcp { host, port } => Ok((Box::new(tcp(host, *port).await?), None)),
        Endpoint::Tls {
            host,
            port,
            pki_dir,
        } => {
            let paths = crate::tls::PkiPaths::client(pki_dir.as_deref());
            let config = crate::tls::client_config(&paths, crate::tls::TlsVersions::default())?;
            let why = format!(
                "client certificate {}, CA {}",
                paths.cert.display(),
                paths.ca_cert.display()
            );
            Ok((Box::new(tls(host, *port, config, &why).await?), None))
        }
        Endpoint::TlsPinned {
            host,
            port,
            fingerprint,
        } => {
            let config = crate::tls::pinned_client_config(fingerprint)?;
            let why = format!("the token pins the server certificate {fingerprint}");
            Ok((Box::new(tls(host, *port, config, &why).await?), None))
        }
        Endpoint::Ssh {
            user,
            host,
            port,
            keyfile,
            known_hosts,
            no_verify,
            binary,
            socket,
        } => {
            let mut cmd = tokio::process::Command::new("ssh");
            cmd.arg("-T").arg("-o").arg("BatchMode=yes");
            if let Some(p) = port {
                cmd.arg("-p").arg(p.to_string());
            }
            if let Some(k) = keyfile {
                cmd.arg("-i").arg(k).arg("-o").arg("IdentitiesOnly=yes");
            }
            if let Some(k) = known_hosts {
                cmd.arg("-o")
                    .arg(format!("UserKnownHostsFile={}", k.display()));
            }
            if *no_verify {
                cmd.arg("-o").arg("StrictHostKeyChecking=no");
            }
            cmd.arg("--");
            cmd.arg(match user {
                Some(u) => format!("{u}@{host}"),
                None => host.clone(),
            });
            // The far side's shell reads one command line: quote every word.
            let mut remote = vec![shell_quote(binary), "proxy".into()];
            remote.push(shell_quote(&target.driver_uri));
            if let Some(s) = socket {
                remote.push("--socket".into());
                remote.push(shell_quote(s));
            }
            if target.readonly {
                remote.push("--readonly".into());
            }
            cmd.arg(remote.join(" "));
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .map_err(|e| Error::failed(format!("cannot run ssh: {e}")))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let stderr = child
                .stderr
                .take()
                .expect("piped")
                .into_owned_fd()
                .map_err(|e| Error::failed(format!("cannot read ssh's standard error: {e}")))?;
            let said = Arc::new(Mutex::new(String::new()));
            let sink = said.clone();
            // A thread of its own, not a task: the client's runtime only runs while it waits
            // on the daemon, and ssh's last words must be collected even when it does not.
            std::thread::spawn(move || {
                use std::io::Read;
                let mut stderr = std::fs::File::from(stderr);
                let mut buf = [0u8; 1024];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            Ok((
                Box::new(tokio::io::join(stdout, stdin)),
                Some((child, said)),
            ))
        }
    }
}

/// A TCP connection to `host:port`, without Nagle's delay (requests are small and
/// answered one at a time).
async fn tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::failed(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A TLS connection to `host:port` with `config`; a failed handshake names `why` it may
/// have failed (the files used, the pinned certificate).
async fn tls(
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    why: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tcp(host, port).await?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Error::invalid(format!("'{host}' is not a valid TLS server name: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            Error::failed(format!(
                "TLS handshake with {host}:{port} failed: {e} ({why})"
            ))
        })
}

/// Quotes `word` for a POSIX shell.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Starts the user's session daemon (as libvirt starts its session daemon on first use)
/// and waits for its socket.
async fn start_session_daemon(path: &Path) -> Result<tokio::net::UnixStream> {
    let program = daemon_program();
    let mut cmd = std::process::Command::new(&program);
    cmd.arg("--session")
        .arg("--timeout")
        .arg("120")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own session: a ^C in this terminal must not reach the daemon.
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::failed(format!(
            "cannot start the session daemon '{}': {e}",
            program.display()
        ))
    })?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(s) => {
                // The daemon runs on by itself; reap it on a thread if it ever exits while
                // this process lives.
                std::thread::spawn(move || child.wait());
                return Ok(s);
            }
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::failed(format!(
                        "the session daemon '{}' exited ({status}) before listening on '{}'; run `virtwasmd --session` to see why",
                        program.display(),
                        path.display()
                    )));
                }
                if Instant::now() > deadline {
                    return Err(Error::failed(format!(
                        "the session daemon did not listen on '{}' within 15 s: {e}",
                        path.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// `virtwasmd` beside this program, else from `PATH`.
fn daemon_program() -> std::path::PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let beside = dir.join("virtwasmd");
        if beside.is_file() {
            return beside;
        }
    }
    "virtwasmd".into()
}

/// Redeems a trust token (`vwt1.SECRET.FINGERPRINT`) at the TLS daemon `uri` names: makes
/// a key and CSR here, sends the CSR with the secret over TLS pinned to the token's
/// fingerprint, and writes the CA, the signed certificate and the key into `dir`.
/// Returns the daemon's answer (name, role, fingerprint).
pub fn trust_join(uri: &str, token: &str, dir: &Path, force: bool) -> Result<serde_json::Value> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let (secret, fingerprint) = match parts.as_slice() {
        ["vwt1", secret, fp] if fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()) => (
            secret.to_string(),
            format!("sha256:{}", fp.to_ascii_lowercase()),
        ),
        _ => {
            return Err(Error::invalid(
                "not a virtwasm trust token (expected vwt1.SECRET.FINGERPRINT, as `virtwasm trust token` prints it)",
            ));
        }
    };
    let target = crate::endpoint::resolve(uri, false)?;
    let (host, port) = match &target.endpoint {
        Endpoint::Tls { host, port, .. } => (host.clone(), *port),
        _ => {
            return Err(Error::invalid(format!(
                "a trust token is redeemed over TLS: give a DRIVER+tls://HOST/PATH URI, not '{uri}'"
            )));
        }
    };
    let pinned = Target {
        endpoint: Endpoint::TlsPinned {
            host,
            port,
            fingerprint,
        },
        ..target
    };
    let (key, csr) = crate::pki::new_client_request("joining")?;
    let remote = Remote::connect(&pinned)?;
    let body = serde_json::to_vec(&serde_json::json!({ "secret": secret, "csr": csr }))
        .map_err(|e| Error::internal(e.to_string()))?;
    let (status, answer) = remote.send("POST", "/v1/trust/join", Some(body))?;
    if status != 200 {
        return Err(parse_error(status, &answer));
    }
    let answer: serde_json::Value = serde_json::from_slice(&answer)
        .map_err(|e| Error::failed(format!("unexpected answer to the join: {e}")))?;
    let text = |k: &str| {
        answer[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::failed(format!("the join's answer lacks '{k}'")))
    };
    crate::pki::write_client_files(dir, &text("ca")?, &text("certificate")?, &key, force)?;
    Ok(answer)
}

/// `virtwasm proxy`: joins this process's standard input and output to the local daemon's
/// socket for `uri`, so `ssh host virtwasm proxy URI` carries a remote client's HTTP to
/// that host's daemon (starting the session daemon when the URI is a session one).
pub fn proxy_stdio(uri: &str, socket: Option<&Path>, readonly: bool) -> Result<()> {
    let mut target = crate::endpoint::resolve(uri, readonly)?;
    if let Some(s) = socket {
        target.endpoint = Endpoint::Unix {
            path: s.to_path_buf(),
            autostart: false,
        };
    } else if target.endpoint == Endpoint::InProcess {
        // `test+ssh://host/default` arrives here as test:///default: the far side's daemon
        // serves it, as `test+unix:///default` would reach it (root's system daemon, a
        // user's session daemon).
        // SAFETY: geteuid has no preconditions.
        let session = unsafe { libc::geteuid() } != 0;
        target.endpoint = Endpoint::Unix {
            path: crate::endpoint::default_socket(session, readonly),
            autostart: session,
        };
        target.driver_uri = uri.to_string();
    }
    if !matches!(target.endpoint, Endpoint::Unix { .. }) {
        return Err(Error::invalid(format!(
            "proxy reaches this machine's daemon over its unix socket; '{uri}' does not name one (use DRIVER:///system or DRIVER:///session)"
        )));
    }
    let rt = runtime()?;
    rt.block_on(async {
        let (stream, _) = open_stream(&target).await?;
        let (mut from_daemon, mut to_daemon) = tokio::io::split(stream);
        let mut stdin = tokio::io::stdin();
        let mut stdout = tokio::io::stdout();
        let up = async {
            let _ = tokio::io::copy(&mut stdin, &mut to_daemon).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_daemon).await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut from_daemon, &mut stdout).await;
            let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
        };
        // The client hanging up (stdin EOF) or the daemon closing ends the proxy.
        tokio::select! {
            _ = down => {}
            _ = async { up.await; std::future::pending::<()>().await } => {}
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_quote("qemu:///system"), "qemu:///system");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("x;rm -rf /"), "'x;rm -rf /'");
    }
}
