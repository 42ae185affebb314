//! `virtwasm console`: the terminal in raw mode joined to a guest's serial port, locally or
//! through the daemon, until the escape character ^] (as virsh).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;

use crate::commands::Failure;
use crate::session::Session;

/// virsh's escape: Ctrl + ].
const ESCAPE: u8 = 0x1d;

/// The terminal's settings, put back when dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios calls on standard input with a zeroed struct tcgetattr fills.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read in `enter` on the same descriptor.
            unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, t) };
        }
    }
}

/// Attaches this terminal to the console of `uuid` (named `name`).
pub fn run(
    sess: &mut Session,
    uuid: &str,
    name: &str,
    device: Option<&str>,
) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(Failure::msg(
            "Cannot run interactive console without a controlling TTY",
        ));
    }
    let console = sess.conn()?.console(uuid, device)?;
    sess.print(&format!(
        "Connected to domain '{name}'\nEscape character is ^] (Ctrl + ])\n"
    ));
    sess.flush();
    let raw = RawMode::enter();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            if let Some(i) = chunk.iter().position(|b| *b == ESCAPE) {
                let _ = tx.send(chunk[..i].to_vec());
                break; // dropping the sender detaches
            }
            if tx.send(chunk.to_vec()).is_err() {
                break;
            }
        }
    });
    let result = console.attach(rx, |bytes| {
        let mut out = std::io::stdout();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    });
    drop(raw);
    sess.print("\n");
    result.map_err(Failure::from)
}
