//! The ssh transport against a real OpenSSH server started on 127.0.0.1 for each test:
//! `virtwasm -c test+ssh://…` runs `ssh`, which runs `virtwasm proxy` on the far side, which
//! joins ssh's streams to a real virtwasmd's socket. Proves that commands, `-r` and events
//! travel through it to the daemon's own state, that an unknown host key is refused unless
//! `no_verify=1`, and that the reason for a failure (ssh's refusal of a key, the far side's
//! shell or proxy) reaches the user as `ssh said: …`.
//!
//! Needs `/usr/sbin/sshd` (openssh-server); without it each test says SKIPPED and passes.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Run};

const SSHD: &str = "/usr/sbin/sshd";

/// A private OpenSSH server on a free loopback port, accepting one generated client key;
/// stopped (SIGTERM) when dropped.
struct Sshd {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// The user the server lets in: whoever runs the tests (an unprivileged sshd can only
    /// log in as its own user; as root, `PermitRootLogin prohibit-password` lets the key in).
    user: String,
    /// The authorized client key (private half).
    key: PathBuf,
    /// A known_hosts file naming the server's host key for `[127.0.0.1]:PORT`.
    known_hosts: PathBuf,
    log: PathBuf,
}

/// Generates an ed25519 key pair at `path` and `path.pub`.
fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", "virtwasm-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nobody listens on right now: the kernel's pick for a throwaway listener.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The name of the user running the tests.
fn current_user() -> String {
    // SAFETY: getpwuid returns null or a pointer to a record valid until the next getpw*
    // call; the name is copied out at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        assert!(!pw.is_null(), "the test user has no passwd entry");
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

impl Sshd {
    /// Starts sshd in `dir`, or returns None (after saying SKIPPED) when OpenSSH is missing.
    fn start(dir: &Path) -> Option<Sshd> {
        if !Path::new(SSHD).exists() || !Path::new("/usr/bin/ssh").exists() {
            eprintln!(
                "\n*** SKIPPED: {SSHD} or /usr/bin/ssh is missing, the ssh transport is not tested (install openssh-server; .ci/run does) ***\n"
            );
            return None;
        }
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        // sshd started as root insists on its privilege-separation directory; it is the
        // package's own (normally made by its service unit), so it stays after the tests.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 && !Path::new("/run/sshd").is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new()
                .mode(0o755)
                .recursive(true)
                .create("/run/sshd");
        }
        // The port is free when picked but may be taken before sshd binds it (tests run in
        // parallel): try again with a new one when sshd says so.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\n\
                     Port {port}\n\
                     HostKey {host}\n\
                     AuthorizedKeysFile {auth}\n\
                     PidFile {pid}\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\n\
                     LogLevel VERBOSE\n",
                    host = host_key.display(),
                    auth = dir.join("authorized_keys").display(),
                    pid = dir.join("sshd.pid").display(),
                ),
            )
            .unwrap();
            let log = dir.join("sshd.log");
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start sshd");
            let known_hosts = dir.join("known_hosts");
            let mut sshd = Sshd {
                child,
                dir: dir.clone(),
                port,
                user: current_user(),
                key: key.clone(),
                known_hosts: known_hosts.clone(),
                log,
            };
            match sshd.wait_listening() {
                Ok(()) => {
                    let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
                    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
                    return Some(sshd);
                }
                Err(text) if attempt < 3 && text.contains("Address already in use") => continue,
                Err(text) => panic!("sshd did not start on 127.0.0.1:{port}:\n{text}"),
            }
        }
    }

    /// Polls until the port accepts connections; on failure returns what sshd printed.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("sshd exited ({status}):\n{}", self.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!("not listening within 10 s:\n{}", self.log_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// What sshd logged, for failure messages.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A URI reaching `d`'s test driver through this server, with `key` and `known_hosts`
    /// and any `extra` query parameters (`&name=value…`).
    fn uri_with(&self, d: &Daemon, key: &Path, known_hosts: &Path, extra: &str) -> String {
        // The far side runs the command through the login shell with sshd's PATH: name the
        // binary under test and this daemon's socket outright.
        self.uri_to(key, known_hosts, &common::binary(), &d.socket(), extra)
    }

    /// A URI through this server running `binary proxy test:///default --socket SOCKET`.
    fn uri_to(
        &self,
        key: &Path,
        known_hosts: &Path,
        binary: &Path,
        socket: &Path,
        extra: &str,
    ) -> String {
        format!(
            "test+ssh://{user}@127.0.0.1:{port}/default?keyfile={key}&known_hosts={kh}&binary={bin}&socket={sock}{extra}",
            user = self.user,
            port = self.port,
            key = key.display(),
            kh = known_hosts.display(),
            bin = binary.display(),
            sock = socket.display(),
        )
    }

    /// The URI with the authorized key and the right known_hosts.
    fn uri(&self, d: &Daemon) -> String {
        self.uri_with(d, &self.key, &self.known_hosts, "")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Only a child not yet reaped: a reaped one's pid may belong to someone else now.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: a signal to our own, unreaped child, by pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// Like `Run::failed`, with sshd's log in the message when the run unexpectedly succeeded.
#[track_caller]
fn assert_failed<'a>(r: &'a Run, sshd: &Sshd) -> &'a str {
    assert_ne!(
        r.code,
        0,
        "expected failure; stdout:\n{}\nstderr:\n{}\nsshd:\n{}",
        r.stdout,
        r.stderr,
        sshd.log_text()
    );
    &r.stderr
}

/// Like `Run::ok`, with sshd's log in the message on failure.
#[track_caller]
fn assert_ok<'a>(r: &'a Run, sshd: &Sshd) -> &'a str {
    assert_eq!(
        r.code,
        0,
        "expected success; stdout:\n{}\nstderr:\n{}\nsshd:\n{}",
        r.stdout,
        r.stderr,
        sshd.log_text()
    );
    &r.stdout
}

#[test]
fn the_cli_reaches_a_daemon_through_ssh() {
    let home = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(home.path()) else {
        return;
    };
    let d = Daemon::start(home.path(), &[]);
    let uri = sshd.uri(&d);
    // The script of the unix-socket test, with the same answers.
    let r = d.client(
        &uri,
        "list --all; suspend test; domstate test --reason; resume test",
    );
    assert_eq!(
        assert_ok(&r, &sshd),
        " Id   Name   State\n----------------------\n 1    test   running\n\nDomain 'test' suspended\n\npaused (user)\n\nDomain 'test' resumed\n\n"
    );
    // The state changed is the daemon's, not some host inside the proxy: a client on the
    // daemon's unix socket sees a suspension made over ssh.
    let r = d.client(&uri, "suspend test");
    assert_eq!(assert_ok(&r, &sshd), "Domain 'test' suspended\n\n");
    let r = d.client(&d.uri("test", "/default"), "domstate test --reason");
    assert_eq!(r.ok(), "paused (user)\n\n");
    let r = d.client(&uri, "resume test");
    assert_eq!(assert_ok(&r, &sshd), "Domain 'test' resumed\n\n");
    // Errors from the daemon arrive over ssh with their wording (the test driver's own, as
    // in-process).
    let r = d.client(&uri, "resume test");
    assert_eq!(
        assert_failed(&r, &sshd),
        "error: Failed to resume domain 'test'\nerror: internal error: domain 'test' not paused\n"
    );
    // `-r` travels too: the daemon behind the proxy refuses the change.
    let mut c = Command::new(common::binary());
    Daemon::env(home.path(), &mut c);
    let out = c
        .args(["-r", "-c", &uri, "suspend test"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: Failed to suspend domain 'test'\nerror: this connection is read-only: 'suspend' needs permission 'domain:suspend' (use the read-write socket, or connect without -r)\n"
    );
    // The key, not some other way in, opened the door.
    assert!(
        sshd.log_text().contains("Accepted publickey for"),
        "{}",
        sshd.log_text()
    );
}

#[test]
fn an_unknown_host_key_is_refused_unless_no_verify() {
    let home = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(home.path()) else {
        return;
    };
    let d = Daemon::start(home.path(), &[]);
    let empty = sshd.dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    // BatchMode cannot ask whether to trust the key, so ssh refuses the unknown host.
    let r = d.client(&sshd.uri_with(&d, &sshd.key, &empty, ""), "domstate test");
    let err = assert_failed(&r, &sshd);
    assert!(
        err.contains("ssh said:") && err.contains("Host key verification failed"),
        "{err}"
    );
    // Nothing but virsh's blank line after the failed command.
    assert_eq!(r.stdout, "\n");
    // no_verify=1 lets ssh accept (and record) the unknown key: the same command goes through.
    let r = d.client(
        &sshd.uri_with(&d, &sshd.key, &empty, "&no_verify=1"),
        "domstate test",
    );
    assert_eq!(assert_ok(&r, &sshd), "running\n\n");
}

#[test]
fn a_key_not_authorized_is_refused_with_sshs_reason() {
    let home = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(home.path()) else {
        return;
    };
    let d = Daemon::start(home.path(), &[]);
    let stranger = sshd.dir.join("stranger_key");
    keygen(&stranger);
    let r = d.client(
        &sshd.uri_with(&d, &stranger, &sshd.known_hosts, ""),
        "suspend test",
    );
    let err = assert_failed(&r, &sshd);
    assert!(
        err.contains("ssh said:") && err.contains("Permission denied"),
        "{err}"
    );
    // Refused before reaching the daemon: nothing was suspended.
    let r = d.client(&d.uri("test", "/default"), "domstate test");
    assert_eq!(r.ok(), "running\n\n");
}

#[test]
fn the_far_sides_failures_are_told_through_ssh() {
    let home = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(home.path()) else {
        return;
    };
    // No daemon here: both failures happen before one would be reached.
    let nowhere = home.path().join("nowhere");
    let socket = home.path().join("no-daemon.sock");
    // The remote shell cannot find the program: its complaint (worded by the user's shell)
    // is the error.
    let uri = sshd.uri_to(&sshd.key, &sshd.known_hosts, &nowhere, &socket, "");
    let r = common::virtwasm(home.path(), &["-c", &uri, "domstate test"]);
    let err = assert_failed(&r, &sshd);
    assert!(
        err.contains("; ssh said: ") && err.contains(&nowhere.display().to_string()),
        "{err}"
    );
    // `virtwasm proxy` runs but finds no daemon: its own error line comes back.
    let uri = sshd.uri_to(&sshd.key, &sshd.known_hosts, &common::binary(), &socket, "");
    let r = common::virtwasm(home.path(), &["-c", &uri, "domstate test"]);
    let err = assert_failed(&r, &sshd);
    assert!(
        err.contains(&format!(
            "ssh said: error: proxy: cannot connect to virtwasmd at '{}'",
            socket.display()
        )),
        "{err}"
    );
}

#[test]
fn events_arrive_over_ssh() {
    let home = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(home.path()) else {
        return;
    };
    let d = Daemon::start(home.path(), &[]);
    let mut c = Command::new(common::binary());
    Daemon::env(home.path(), &mut c);
    let mut watcher = c
        .args(["-c", &sshd.uri(&d), "event --all --loop --timeout 8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Collect the watcher's output as it arrives, so the test can poll it.
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        let mut stdout = watcher.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let pair = "event 'lifecycle' for domain 'test': Suspended Paused\nevent 'lifecycle' for domain 'test': Resumed Unpaused\n";
    // Nothing says when the watcher has subscribed (two ssh logins away), and events before
    // that are not replayed: make the pair of changes again until a whole pair arrives.
    let deadline = Instant::now() + Duration::from_secs(7);
    'rounds: loop {
        d.client(&d.uri("test", "/default"), "suspend test; resume test")
            .ok();
        let round = Instant::now() + Duration::from_millis(500);
        while Instant::now() < round {
            if seen.lock().unwrap().contains(pair) {
                break 'rounds;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if Instant::now() > deadline || watcher.try_wait().unwrap().is_some() {
            break;
        }
    }
    // The watcher ends by itself at its timeout, and ends well.
    let status = watcher.wait().unwrap();
    reader.join().unwrap();
    let mut stderr = String::new();
    watcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let text = seen.lock().unwrap().clone();
    assert!(
        text.contains(pair),
        "{text}\nstderr:\n{stderr}\nsshd:\n{}",
        sshd.log_text()
    );
    assert!(status.success(), "{status}\n{stderr}");
    // Every event is a lifecycle event of the test domain, and virsh's closing count
    // matches the lines: nothing else was mixed into the stream on the way.
    let events: Vec<&str> = text.lines().filter(|l| l.starts_with("event '")).collect();
    for line in &events {
        assert!(
            line.starts_with("event 'lifecycle' for domain 'test': "),
            "{text}"
        );
    }
    assert!(
        text.trim_end().ends_with(&format!(
            "event loop timed out\nevents received: {}",
            events.len()
        )),
        "{text}"
    );
}
