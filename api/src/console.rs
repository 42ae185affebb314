//! A console attached: the bytes between a terminal and a guest's serial port, locally (the
//! pty QEMU allocated, or its socket) or through the daemon (an upgraded HTTP connection).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use virtwasm_host::bindings::hypervisor::ConsoleEndpoint;
use virtwasm_host::{Error, Result};

/// The protocol name of the daemon's console upgrade.
pub const UPGRADE: &str = "virtwasm-console";

/// An attached console.
pub enum Console {
    /// A local pty or socket.
    Local(Box<dyn LocalIo>),
    /// Through the daemon: the runtime driving the upgraded connection, and the connection.
    Remote(
        tokio::runtime::Runtime,
        hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>,
    ),
}

/// A local console's file or socket (readable and writable from two threads).
pub trait LocalIo: Read + Write + Send {
    /// A second handle for the other direction.
    fn duplicate(&self) -> std::io::Result<Box<dyn LocalIo>>;
}

impl LocalIo for std::fs::File {
    fn duplicate(&self) -> std::io::Result<Box<dyn LocalIo>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl LocalIo for std::os::unix::net::UnixStream {
    fn duplicate(&self) -> std::io::Result<Box<dyn LocalIo>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// Opens a pty's slave side in raw mode (no echo, no line editing: the guest's shell does
/// that), without making it our controlling terminal.
pub fn open_pty(path: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !path.starts_with("/dev/pts/") {
        return Err(Error::denied(format!(
            "'{path}' is not a pseudo-terminal; a console is one of /dev/pts"
        )));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::io("cannot open console", std::path::Path::new(path), e))?;
    // SAFETY: termios calls on a descriptor we own, with a zeroed struct filled by tcgetattr.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
    Ok(f)
}

impl Console {
    /// Opens a console endpoint on this machine.
    pub fn local(endpoint: ConsoleEndpoint) -> Result<Console> {
        Ok(Console::Local(match endpoint {
            ConsoleEndpoint::Pty(p) => Box::new(open_pty(&p)?),
            ConsoleEndpoint::UnixSocket(p) => {
                Box::new(std::os::unix::net::UnixStream::connect(&p).map_err(|e| {
                    Error::io("cannot connect to console", std::path::Path::new(&p), e)
                })?)
            }
        }))
    }

    /// Carries `input` to the console and the console's output to `output` until `input`
    /// ends (the user typed the escape, or closed the input) or the console closes.
    pub fn attach(
        self,
        mut input: UnboundedReceiver<Vec<u8>>,
        mut output: impl FnMut(&[u8]) + Send + 'static,
    ) -> Result<()> {
        match self {
            Console::Local(mut io) => {
                let mut reader = io
                    .duplicate()
                    .map_err(|e| Error::failed(format!("cannot share the console: {e}")))?;
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = reader.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        output(&buf[..n]);
                    }
                });
                while let Some(bytes) = input.blocking_recv() {
                    io.write_all(&bytes)
                        .map_err(|e| Error::failed(format!("cannot write to the console: {e}")))?;
                }
                Ok(())
            }
            Console::Remote(rt, io) => rt.block_on(async move {
                let (mut r, mut w) = tokio::io::split(io);
                let mut buf = vec![0u8; 4096];
                loop {
                    tokio::select! {
                        got = r.read(&mut buf) => match got {
                            Ok(0) | Err(_) => return Ok(()),
                            Ok(n) => output(&buf[..n]),
                        },
                        msg = input.recv() => match msg {
                            None => return Ok(()),
                            Some(bytes) => w.write_all(&bytes).await.map_err(|e| {
                                Error::failed(format!("cannot write to the console: {e}"))
                            })?,
                        },
                    }
                }
            }),
        }
    }
}
