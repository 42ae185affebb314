//! `GET /v1/domains/{key}/console` with `Upgrade: virtwasm-console`: after `101 Switching
//! Protocols` the connection carries the guest's serial port both ways (the pty QEMU
//! allocated, or its socket), until either side closes. Attaching needs `open_device`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request as HttpRequest, Response};
use hyper_util::rt::TokioIo;
use virtwasm_api::Permission;
use virtwasm_api::console::{UPGRADE, open_pty};
use virtwasm_api::ops::ObjectKind;
use virtwasm_host::bindings::hypervisor::ConsoleEndpoint;
use virtwasm_host::{Error, Result};

use crate::access::authorize;
use crate::server::{Daemon, Peer, Reply, error_response};

/// Answers the upgrade and splices the connection to the console.
pub async fn attach(
    daemon: Arc<Daemon>,
    peer: Arc<Peer>,
    uri: &str,
    readonly: bool,
    key: String,
    device: Option<String>,
    mut req: HttpRequest<Incoming>,
) -> Response<Reply> {
    let wants_upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE));
    if !wants_upgrade {
        return error_response(&Error::invalid(format!(
            "a console is a byte stream: send 'Connection: Upgrade' and 'Upgrade: {UPGRADE}'"
        )));
    }
    let d = daemon.clone();
    let p = peer.clone();
    let uri = uri.to_string();
    let endpoint = tokio::task::spawn_blocking(move || -> Result<(String, ConsoleEndpoint)> {
        let conn = d.open(&uri, readonly)?;
        let name = conn.domain(&key)?.def.name;
        authorize(
            &d.access(),
            &p.identity,
            readonly,
            "console",
            ObjectKind::Domain,
            Permission::OpenDevice,
            Some(&name),
        )?;
        Ok((name, conn.console_endpoint(&key, device.as_deref())?))
    })
    .await
    .unwrap_or_else(|e| Err(Error::internal(format!("console handler failed: {e}"))));
    let (name, endpoint) = match endpoint {
        Ok(x) => x,
        Err(e) => return error_response(&e),
    };
    // Open the console before answering, so a failure is an answer, not a dead stream.
    let backend: Result<Box<dyn Backend>> = match &endpoint {
        ConsoleEndpoint::Pty(p) => open_pty(p)
            .and_then(|f| {
                Pty::new(f)
                    .map_err(|e| Error::io("cannot watch console", std::path::Path::new(p), e))
            })
            .map(|f| Box::new(f) as Box<dyn Backend>),
        ConsoleEndpoint::UnixSocket(p) => tokio::net::UnixStream::connect(p)
            .await
            .map(|s| Box::new(s) as Box<dyn Backend>)
            .map_err(|e| Error::io("cannot connect to console", std::path::Path::new(p), e)),
    };
    let mut backend = match backend {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let who = peer.identity.describe();
    tracing::info!(client = %who, domain = %name, "console attached");
    let on_upgrade = hyper::upgrade::on(&mut req);
    let held = daemon.hold_connection();
    tokio::spawn(async move {
        let _held = held;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    Ok((up, down)) => tracing::debug!(up, down, "console closed"),
                    Err(e) => tracing::info!(client = %who, "console ended: {e}"),
                }
            }
            Err(e) => tracing::warn!(client = %who, "console upgrade failed: {e}"),
        }
        tracing::info!(client = %who, domain = %name, "console detached");
    });
    Response::builder()
        .status(101)
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, UPGRADE)
        .body(Reply::Full(http_body_util::Full::new(bytes::Bytes::new())))
        .expect("static headers")
}

/// A console backend: a pty file or a socket.
trait Backend: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Backend for T {}

/// A pty as an async stream: non-blocking reads and writes driven by the reactor (a
/// `tokio::fs::File` would seek, which a terminal refuses).
struct Pty(tokio::io::unix::AsyncFd<std::fs::File>);

impl Pty {
    fn new(f: std::fs::File) -> std::io::Result<Pty> {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fd = f.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: the File owns its descriptor for as long as the AsyncFd holds it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(f) }.map_err(|e| e.into_parts().1)?;
        Ok(Pty(fd))
    }
}

impl tokio::io::AsyncRead for Pty {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for Pty {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|inner| inner.get_ref().write(data)) {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
