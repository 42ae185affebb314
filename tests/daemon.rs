//! virtwasmd on temporary directories, driven by the real `virtwasm` and by raw HTTP:
//! the unix sockets (read-write and read-only), events seen by a second client, a kill -9
//! and restart with every object intact, and the session daemon started on demand.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::Daemon;

/// One request as curl would send it, with no extra headers.
fn http(socket: &Path, method: &str, target: &str, body: &str) -> (String, String) {
    common::http(socket, method, target, "", body)
}

#[test]
fn the_cli_works_through_the_unix_socket() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let uri = d.uri("test", "/default");
    let r = d.client(
        &uri,
        "list --all; suspend test; domstate test --reason; resume test; uri",
    );
    assert_eq!(
        r.ok(),
        format!(
            " Id   Name   State\n----------------------\n 1    test   running\n\nDomain 'test' suspended\n\npaused (user)\n\nDomain 'test' resumed\n\n{uri}\n\n"
        )
    );
    // The test driver's state lives in the daemon: a second client sees the first's change.
    let r = d.client(&uri, "destroy test");
    assert_eq!(r.ok(), "Domain 'test' destroyed\n\n");
    let r = d.client(&uri, "domstate test --reason; start nosuch");
    // virsh's blank line after each command, the failed one's too.
    assert_eq!(r.stdout, "shut off (destroyed)\n\n\n");
    assert_eq!(r.stderr, "error: failed to get domain 'nosuch'\n");
    // Errors from the host arrive with their wording, as in-process.
    let r = d.client(&uri, "destroy test");
    assert_eq!(
        r.failed(),
        "error: Failed to destroy domain 'test'\nerror: Requested operation is not valid: domain is not running\n"
    );
}

#[test]
fn the_api_answers_plain_http() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let (status, body) = http(&d.socket(), "GET", "/v1/domains", "");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["name"], "test");
    assert_eq!(list[0]["vcpus"], 2);

    let (status, body) = http(&d.socket(), "GET", "/v1/domains/nosuch", "");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(
        body,
        r#"{"error":{"kind":"not-found","message":"Domain not found: no domain with matching name 'nosuch'"}}"#
    );
    let (status, body) = http(
        &d.socket(),
        "POST",
        "/v1/domains/test/start",
        "{\"pased\":1}",
    );
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(body.contains("unknown field `pased`"), "{body}");
    let (status, body) = http(&d.socket(), "GET", "/v1/openapi.json", "");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        doc["paths"]["/v1/domains/{key}/start"]["post"]["x-permission"],
        "start"
    );
    // A body past the 32 MiB cap is refused with the limit named, and the daemon answers on.
    let big = format!("{{\"xml\":\"{}\"}}", "x".repeat(33 << 20));
    let (status, body) = http(&d.socket(), "POST", "/v1/domains", &big);
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    assert!(
        body.contains("request body larger than 33554432 bytes"),
        "{body}"
    );
    let (status, _) = http(&d.socket(), "GET", "/v1/node", "");
    assert_eq!(status, "HTTP/1.1 200 OK");
    // A driver URI that would reach outside the daemon's directories is refused.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    write!(
        s,
        "GET /v1/domains HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-virtwasm-uri: test:///etc/passwd\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.contains(
            "this daemon serves DRIVER:///system and test:///default, not 'test:///etc/passwd'"
        ),
        "{text}"
    );
}

#[test]
fn the_read_only_socket_refuses_every_change() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let ro = format!("test+unix:///default?socket={}", d.ro_socket().display());
    let r = d.client(&ro, "list --all; dominfo test");
    assert!(r.ok().contains(" 1    test   running"), "{}", r.stdout);
    let r = d.client(&ro, "suspend test");
    assert_eq!(
        r.failed(),
        "error: Failed to suspend domain 'test'\nerror: this connection is read-only: 'suspend' needs permission 'domain:suspend' (use the read-write socket, or connect without -r)\n"
    );
    let (status, body) = http(
        &d.ro_socket(),
        "POST",
        "/v1/domains",
        r#"{"xml":"<domain/>"}"#,
    );
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(body.contains("needs permission 'domain:write'"), "{body}");
    // `-r` on the read-write socket is honoured by the daemon too.
    let mut c = std::process::Command::new(common::binary());
    Daemon::env(home.path(), &mut c);
    let out = c
        .args(["-r", "-c", &d.uri("test", "/default"), "destroy test"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this connection is read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.client(&d.uri("test", "/default"), "domstate test");
    assert_eq!(r.ok(), "running\n\n");
}

#[test]
fn a_second_client_sees_the_events() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let uri = d.uri("test", "/default");
    let mut c = std::process::Command::new(common::binary());
    Daemon::env(home.path(), &mut c);
    let watcher = c
        .args(["-c", &uri, "event --all --loop --timeout 4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the watcher subscribe before the changes.
    std::thread::sleep(Duration::from_millis(700));
    d.client(&uri, "suspend test; resume test; destroy test")
        .ok();
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(
            "event 'lifecycle' for domain 'test': Suspended Paused\nevent 'lifecycle' for domain 'test': Resumed Unpaused\nevent 'lifecycle' for domain 'test': Stopped Destroyed\n"
        ),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same stream is curl-able: Server-Sent Events.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 256];
    let n = s.read(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).contains("text/event-stream"));
    d.client(&uri, "start test").ok();
    let mut got = String::new();
    let mut buf = [0u8; 1024];
    while !got.contains("\n\n") || !got.contains("data: ") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        got.contains(r#"data: {"object":"domain","name":"test","uuid":"6695eb01-f6a4-8304-79aa-97f2502e193f","event":{"started":"Booted"}}"#),
        "{got}"
    );
}

#[test]
fn a_killed_daemon_restarts_with_every_object() {
    let home = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(home.path(), &[]);
    let uri = d.uri("ptest", "/system");
    let xml = home.path().join("vm1.xml");
    std::fs::write(
        &xml,
        "<domain type='test'><name>vm1</name><memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>",
    )
    .unwrap();
    let net = home.path().join("net1.xml");
    std::fs::write(&net, "<network><name>net1</name><bridge name='virbr9'/><forward mode='nat'/><ip address='10.9.0.1' prefix='24'/></network>").unwrap();
    d.client(
        &uri,
        &format!(
            "define {}; start vm1; suspend vm1; net-define {}; net-start net1; pool-define-as p1 dir --target /srv/p1",
            xml.display(),
            net.display()
        ),
    )
    .ok();
    let before = d
        .client(&uri, "list --all; net-list --all; pool-list --all")
        .ok()
        .to_string();
    assert!(before.contains(" 1    vm1    paused"), "{before}");
    // kill -9: no chance to tidy up.
    let status = d.stop_with(libc::SIGKILL);
    assert!(!status.success());
    d.spawn();
    let after = d
        .client(&uri, "list --all; net-list --all; pool-list --all")
        .ok()
        .to_string();
    assert_eq!(after, before);
    // And it is still controllable.
    let r = d.client(&uri, "resume vm1; domstate vm1 --reason");
    assert_eq!(r.ok(), "Domain 'vm1' resumed\n\nrunning (unpaused)\n\n");
    // SIGTERM ends the daemon cleanly and leaves the domain running.
    let status = d.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", d.log_text());
    assert!(d.log_text().contains("domains were left as they were"));
    d.spawn();
    let r = d.client(&uri, "domstate vm1");
    assert_eq!(r.ok(), "running\n\n");
}

#[test]
fn a_second_daemon_on_the_same_directories_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let mut c = std::process::Command::new(common::daemon_binary());
    Daemon::env(home.path(), &mut c);
    let out = c.arg("--root").arg(&d.root).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "virtwasmd: another virtwasmd (pid {}) already serves {}\n",
            d.pid(),
            d.root.join("run/virtwasm").display()
        )
    );
    // The first one still answers.
    assert_eq!(
        d.client(&d.uri("test", "/default"), "domstate test").ok(),
        "running\n\n"
    );
}

#[test]
fn the_session_daemon_starts_on_demand() {
    let home = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(common::binary());
    Daemon::env(home.path(), &mut c);
    let out = c
        .args(["-c", "ptest:///session", "list --all; uri"])
        .output()
        .unwrap();
    let pidfile = home.path().join("run/virtwasm/virtwasmd.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .map(|s| s.trim().parse().unwrap_or(0))
        .unwrap_or(0);
    // Stop the daemon we caused, by pid, whatever the assertions say.
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            if self.0 > 0 {
                // SAFETY: a signal to the daemon this test started, by pid.
                unsafe { libc::kill(self.0, libc::SIGTERM) };
            }
        }
    }
    let _reap = Reap(pid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        " Id   Name   State\n--------------------\n\nptest:///session\n\n"
    );
    assert!(pid > 0, "no session daemon pid in {}", pidfile.display());
    assert!(home.path().join("run/virtwasm/virtwasm-sock").exists());
    // A second client finds the running daemon rather than starting another.
    let mut c = std::process::Command::new(common::binary());
    Daemon::env(home.path(), &mut c);
    let out = c
        .args(["-c", "ptest:///session", "list --all"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let again: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(again, pid);
}

/// Sends one request with extra header lines; returns the whole raw answer.
fn http_raw(socket: &Path, head: &str) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{head}\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn long_work_runs_as_an_operation() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let uri = d.uri("test", "/default");
    d.client(&uri, "destroy test").ok();
    // Asked to answer at once, the daemon returns the operation and where to watch it.
    let answer = http_raw(
        &d.socket(),
        "POST /v1/domains/test/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\nPrefer: respond-async\r\nContent-Length: 0\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 202 Accepted"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let op: serde_json::Value = serde_json::from_str(body).unwrap();
    let id = op["id"].as_str().unwrap().to_string();
    assert_eq!(op["op"], "start");
    assert_eq!(op["target"], "test");
    assert!(
        answer.contains(&format!("location: /v1/operations/{id}")),
        "{answer}"
    );

    // Any client can wait for it and sees its outcome.
    let r = d.client(&uri, &format!("operation-wait {id}; domstate test"));
    assert_eq!(
        r.ok(),
        format!("Operation {id} (start) succeeded\n\nrunning\n\n")
    );
    let r = d.client(&uri, "operation-list --json");
    let list: serde_json::Value = serde_json::from_str(r.ok()).unwrap();
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == id.as_str())
        .expect("the operation is listed");
    assert_eq!(listed["status"], "success");
    // Who started it: this test's uid, by its unix credentials.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert!(
        listed["client"]
            .as_str()
            .unwrap()
            .starts_with(&format!("uid:{me} (pid ")),
        "{listed}"
    );
    // A synchronous long request is an operation too, listed after it finished.
    d.client(&uri, "suspend test; resume test; shutdown test")
        .ok();
    let r = d.client(&uri, "operation-list");
    assert!(
        r.ok().contains(" shutdown    test     success"),
        "{}",
        r.stdout
    );

    // A finished operation cannot be cancelled, and an unknown id is named.
    let r = d.client(&uri, &format!("operation-cancel {id}"));
    assert_eq!(
        r.failed(),
        format!("error: operation '{id}' (start) has already finished\n")
    );
    let r = d.client(&uri, "operation-wait nosuch");
    assert_eq!(r.failed(), "error: no operation with id 'nosuch'\n");
    // In-process there are no operations, and the CLI says why.
    let r = common::test_driver("operation-list");
    assert!(
        r.failed().contains(
            "'/v1/operations' is served by virtwasmd; this connection runs the host in-process"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn driver_errors_read_the_same_through_the_daemon() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let file = home.path().join("in.img");
    std::fs::write(&file, b"data").unwrap();
    let script = format!(
        "vol-create-as default-pool a.img 1M; vol-upload a.img {} --pool default-pool; dominfo nosuch; pool-start default-pool",
        file.display()
    );
    let local = common::test_driver(&script);
    let remote = d.client(&d.uri("test", "/default"), &script);
    assert_eq!(remote.stdout, local.stdout);
    assert_eq!(remote.stderr, local.stderr);
    assert_eq!(remote.code, local.code);
    assert!(
        local.stderr.contains("cannot upload to volume a.img"),
        "{}",
        local.stderr
    );
}

#[test]
fn a_slow_or_greedy_client_does_not_stall_the_others() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_config(
        home.path(),
        "[limits]\nmax_clients = 3\nidle_timeout_secs = 2\n",
        &[],
    );
    // A slowloris: half a request line, then nothing.
    let mut slow = UnixStream::connect(d.socket()).unwrap();
    write!(slow, "GET /v1/dom").unwrap();
    // Another holds a connection open between requests.
    let mut idle = UnixStream::connect(d.socket()).unwrap();
    write!(idle, "GET /v1/node HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
    // The third client is still served at once.
    let started = std::time::Instant::now();
    let (status, _) = http(&d.socket(), "GET", "/v1/domains", "");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A third connection kept open: retried until served, since the closed one above may
    // still be giving its place back when we connect.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let _third = loop {
        let mut c = UnixStream::connect(d.socket()).unwrap();
        write!(c, "GET /v1/node HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let n = c.read(&mut buf).unwrap_or(0);
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK") {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no place for a third client"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // With three connections open, a fourth is told the limit rather than left hanging.
    let (status, body) = http(&d.socket(), "GET", "/v1/domains", "");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert!(
        body.contains(
            "too many clients: this daemon serves at most 3 at once ([limits] max_clients)"
        ),
        "{body}"
    );
    // Idle and slow connections are closed after idle_timeout_secs, freeing their places.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        slow.read(&mut buf).unwrap_or(0),
        0,
        "the slow connection is closed"
    );
    let _ = idle.read(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(_third);
    std::thread::sleep(Duration::from_millis(2500));
    let (status, _) = http(&d.socket(), "GET", "/v1/domains", "");
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn an_idle_session_daemon_exits_by_itself() {
    let home = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(home.path(), &["--timeout", "1"]);
    d.client(&d.uri("test", "/default"), "list").ok();
    let mut child = d.child.take().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(d.log_text().contains("idle timeout"), "{}", d.log_text());
    assert!(!d.socket().exists(), "the socket is removed on exit");
}

#[test]
fn on_a_terminal_long_work_is_followed_as_an_operation() {
    // `script` gives the CLI a terminal, so it asks for operations (Prefer: respond-async)
    // and follows them with a progress display, yet answers as before.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: `script` (util-linux) is not installed");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let uri = d.uri("test", "/default");
    let mut c = std::process::Command::new("script");
    Daemon::env(home.path(), &mut c);
    let out = c
        .args([
            "-qfec",
            &format!(
                "{} -c '{uri}' 'destroy test; start test; domstate test'",
                common::binary().display()
            ),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Domain 'test' started"), "{text}");
    assert!(text.contains("running"), "{text}");
    // The start went through the daemon as an asynchronous operation.
    let r = d.client(&uri, "operation-list --json");
    let ops: serde_json::Value = serde_json::from_str(r.ok()).unwrap();
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|o| o["op"] == "start" && o["status"] == "success"),
        "{ops}"
    );
}

#[test]
fn plain_tcp_is_off_unless_enabled_and_then_read_only() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &["--listen-tcp", "127.0.0.1:0"]);
    let log = d.log_text();
    let port: u16 = log
        .split("tcp://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no TCP port in the log:\n{log}"));
    let uri = format!("test+tcp://127.0.0.1:{port}/default");
    // Nothing is proven about a TCP peer: it may read, not change.
    let r = d.client(&uri, "domstate test");
    assert_eq!(r.ok(), "running\n\n");
    let r = d.client(&uri, "destroy test");
    assert!(
        r.failed().contains("access denied: tcp:127.0.0.1:")
            && r.stderr
                .contains("(role read-only) lacks permission 'domain:stop'"),
        "{}",
        r.stderr
    );
    // Without --listen-tcp nothing listens.
    let other = tempfile::tempdir().unwrap();
    let plain = Daemon::start(other.path(), &[]);
    assert!(!plain.log_text().contains("tcp://"), "{}", plain.log_text());
}

#[test]
fn a_definition_cannot_make_the_daemon_open_files_outside_its_directories() {
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let qemu = d.uri("qemu", "/system");
    let outside = |disk: &str, serial: &str| {
        format!(
            "<domain type='qemu'><name>vm</name><memory unit='MiB'>64</memory>\
             <os><type arch='x86_64'>hvm</type></os><devices>\
             <disk type='file' device='disk'><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>\
             <serial type='file'><source path='{serial}'/></serial></devices></domain>"
        )
    };
    let mine = home.path().join("disk.img");
    let log = home.path().join("serial.log");
    let bad_disk = home.path().join("bad-disk.xml");
    std::fs::write(
        &bad_disk,
        outside("/etc/shadow", &log.display().to_string()),
    )
    .unwrap();
    let bad_serial = home.path().join("bad-serial.xml");
    std::fs::write(
        &bad_serial,
        outside(&mine.display().to_string(), "/etc/passwd"),
    )
    .unwrap();
    let fine = home.path().join("fine.xml");
    std::fs::write(
        &fine,
        outside(&mine.display().to_string(), &log.display().to_string()),
    )
    .unwrap();

    let r = d.client(&qemu, &format!("define {}", bad_disk.display()));
    assert!(
        r.failed().contains(
            "error: disk 'vda': '/etc/shadow' is outside the directories this daemon lets clients name ("
        ),
        "{}",
        r.stderr
    );
    let r = d.client(&qemu, &format!("create {}", bad_serial.display()));
    assert!(
        r.failed()
            .contains("error: serial device: '/etc/passwd' is outside the directories"),
        "{}",
        r.stderr
    );
    let r = d.client(
        &qemu,
        &format!("define {}; list --all --name", fine.display()),
    );
    assert_eq!(
        r.ok(),
        format!("Domain 'vm' defined from {}\n\nvm\n\n", fine.display())
    );
    let r = d.client(
        &qemu,
        "attach-disk vm /etc/shadow vdb --config; domblklist vm",
    );
    assert!(
        r.stderr
            .contains("disk 'vdb': '/etc/shadow' is outside the directories"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("/etc/shadow"), "{}", r.stdout);

    // A disk image inside the allowed directories whose backing file is outside: refused at
    // define, and at start when the image was changed after the define.
    let qcow = home.path().join("overlay.qcow2");
    let img = |backing: Option<&str>| {
        let _ = std::fs::remove_file(&qcow);
        let mut c = std::process::Command::new("qemu-img");
        c.args(["create", "-q", "-f", "qcow2"]);
        if let Some(b) = backing {
            c.args(["-F", "raw", "-u", "-b", b]);
        }
        assert!(c.arg(&qcow).arg("1M").status().unwrap().success());
    };
    let with_qcow = home.path().join("with-qcow.xml");
    std::fs::write(
        &with_qcow,
        outside(&qcow.display().to_string(), &log.display().to_string())
            .replace("<name>vm</name>", "<name>vm2</name>")
            .replace(
                "<disk type='file' device='disk'>",
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>",
            ),
    )
    .unwrap();
    img(Some("/etc/shadow"));
    let r = d.client(&qemu, &format!("define {}", with_qcow.display()));
    assert!(
        r.failed().contains(&format!(
            "disk 'vda': '{}' is backed by '/etc/shadow': '/etc/shadow' is outside the directories",
            qcow.display()
        )),
        "{}",
        r.stderr
    );
    img(None);
    d.client(&qemu, &format!("define {}", with_qcow.display()))
        .ok();
    img(Some("/etc/shadow"));
    let r = d.client(&qemu, "start vm2");
    assert!(
        r.failed()
            .contains("is backed by '/etc/shadow': '/etc/shadow' is outside the directories"),
        "{}",
        r.stderr
    );

    // A save image is input too: one whose definition names /etc/shadow is not restored.
    // (Made with the in-process test driver, which opens no files, so it may name any.)
    let image = d.root.join("images/crafted.save");
    std::fs::write(
        home.path().join("bad-disk-test.xml"),
        outside("/etc/shadow", &log.display().to_string()).replace("type='qemu'", "type='test'"),
    )
    .unwrap();
    let r = common::test_driver(&format!(
        "define {}; start vm; save vm {}",
        home.path().join("bad-disk-test.xml").display(),
        image.display()
    ));
    assert!(r.ok().contains("saved to"), "{}", r.stdout);
    let r = d.client(&qemu, &format!("restore {}", image.display()));
    assert!(
        r.failed()
            .contains("disk 'vda': '/etc/shadow' is outside the directories"),
        "{}",
        r.stderr
    );

    // The test driver opens no files: its definitions may name any path, as libvirt's.
    let test_uri = d.uri("test", "/default");
    let r = d.client(
        &test_uri,
        &format!("define {}", home.path().join("bad-disk-test.xml").display()),
    );
    assert!(r.ok().starts_with("Domain 'vm' defined"), "{}", r.stderr);
}

#[test]
fn an_access_rule_narrows_the_directories_a_client_may_name() {
    let home = tempfile::tempdir().unwrap();
    let a = home.path().join("tenant-a");
    let b = home.path().join("tenant-b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    // The tests' clients are root on the unix socket: a rule for uid 0 keeps them to
    // tenant-a, though [files] allows both.
    let files = format!("[files]\nallowed = [{a:?}, {b:?}]\n");
    let rule = |dir: &Path| {
        format!("\n[[access.rule]]\nidentity = \"uid:0\"\nrole = \"admin\"\nfiles = [{dir:?}]\n")
    };
    let d = Daemon::start_with_config(home.path(), &format!("{files}{}", rule(&a)), &[]);
    let qemu = d.uri("qemu", "/system");
    let domain = |name: &str, dir: &Path| {
        let xml = home.path().join(format!("{name}.xml"));
        std::fs::write(
            &xml,
            format!(
                "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
                 <os><type arch='x86_64'>hvm</type></os><devices>\
                 <disk type='file' device='disk'><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
                 </devices></domain>",
                dir.join("disk.img").display()
            ),
        )
        .unwrap();
        xml
    };
    let r = d.client(&qemu, &format!("define {}", domain("mine", &a).display()));
    assert!(r.ok().starts_with("Domain 'mine' defined"), "{}", r.stderr);
    let r = d.client(&qemu, &format!("define {}", domain("theirs", &b).display()));
    assert!(
        r.failed().contains(&format!(
            "disk 'vda': '{}' is outside the directories your access rule lets you name ({})",
            b.join("disk.img").display(),
            a.display()
        )),
        "{}",
        r.stderr
    );
    // Pools too: not in the other tenant's directory, and nothing is defined.
    let r = d.client(
        &qemu,
        &format!("pool-define-as p dir --target {}", b.join("pool").display()),
    );
    assert!(
        r.failed()
            .contains("is outside the directories your access rule lets you name"),
        "{}",
        r.stderr
    );
    let r = d.client(&qemu, "list --all --name; pool-list --all --name");
    assert_eq!(r.ok(), "mine\n\n\n");
    assert!(!b.join("pool").exists());
    // A pool defined in tenant-a and then swapped for a link into tenant-b, which [files]
    // allows too, is not handed to the storage driver.
    let pool = a.join("pool");
    let r = d.client(
        &qemu,
        &format!(
            "pool-define-as pa dir --target {}; pool-build pa; pool-start pa",
            pool.display()
        ),
    );
    assert!(r.ok().contains("Pool pa started"), "{}", r.stderr);
    let theirs = b.join("their-pool");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("secret.img"), b"theirs").unwrap();
    std::fs::rename(&pool, a.join("pool.moved")).unwrap();
    std::os::unix::fs::symlink(&theirs, &pool).unwrap();
    let r = d.client(&qemu, "pool-refresh pa; vol-list pa");
    assert!(
        r.failed().contains(&format!(
            "storage pool 'pa': its directory '{}' resolves to '{}', outside '{}' where it was defined",
            pool.display(),
            theirs.canonicalize().unwrap().display(),
            a.display()
        )),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("secret.img"), "{}", r.stdout);

    // Long work (a save, run as an operation) is held to the same directories.
    let test = d.uri("test", "/default");
    let r = d.client(&test, &format!("save test {}", b.join("t.save").display()));
    assert!(
        r.failed()
            .contains("is outside the directories your access rule lets you name"),
        "{}",
        r.stderr
    );
    assert!(!b.join("t.save").exists());
    let r = d.client(&test, &format!("save test {}", a.join("t.save").display()));
    assert!(r.ok().contains("saved to"), "{}", r.stderr);
    drop(d);

    // A rule's directory swapped for a link out of [files] allowed leads nowhere.
    let shared = home.path().join("shared");
    let web = shared.join("web");
    let outside = home.path().join("outside");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let d = Daemon::start_with_config(
        home.path(),
        &format!("[files]\nallowed = [{shared:?}]\n{}", rule(&web)),
        &[],
    );
    std::fs::remove_dir(&web).unwrap();
    std::os::unix::fs::symlink(&outside, &web).unwrap();
    let r = d.client(
        &qemu,
        &format!("define {}", domain("linked", &web).display()),
    );
    assert!(
        r.failed()
            .contains("is outside the directories your access rule lets you name"),
        "{}",
        r.stderr
    );
    drop(d);

    // A rule cannot widen what [files] allows: the daemon does not start with one that tries.
    let other = tempfile::tempdir().unwrap();
    let etc = other.path().join("daemon-root/etc/virtwasm");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("virtwasmd.toml"),
        format!("{files}{}", rule(Path::new("/etc"))),
    )
    .unwrap();
    let out = std::process::Command::new(common::daemon_binary())
        .arg("--root")
        .arg(other.path().join("daemon-root"))
        .arg("--timeout")
        .arg("1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("access rule for 'uid:0': files entry '/etc' is not under a directory of [files] allowed"),
        "{stderr}"
    );
}
