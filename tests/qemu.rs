//! The QEMU driver on real guests under TCG, through the daemon and the CLI: every
//! lifecycle verb with the guest's own console as the witness, a guest that powers itself
//! off (ACPI) noticed without anyone asking, a guest that panics (crashed, then what
//! `<on_crash>` says), the balloon and a hot-plugged vCPU seen from inside the guest, a
//! kill -9 of the daemon while the guest runs, and QEMU's own words when it refuses a domain.

mod common;
#[path = "common/guest.rs"]
mod guest;
#[path = "common/pki.rs"]
mod pki;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Daemon;
use guest::console_text;

/// A domain booting the test guest, its console in `console`.
fn domain_xml(name: &str, g: &guest::Guest, console: &Path) -> String {
    g.domain_xml(
        name,
        "",
        &format!(
            "<serial type='file'><source path='{}'/></serial>",
            console.display()
        ),
    )
}

/// Waits until the guest has printed a counter above `n` (it runs on), failing with
/// `what` after `secs` seconds.
#[track_caller]
fn wait_counter_above(p: &Path, n: u64, secs: u64, what: &str) {
    poll_until(secs, 100, || {
        if last_counter(p) > n {
            Ok(())
        } else {
            Err(what.to_string())
        }
    });
}

/// Calls `check` every `every_ms` milliseconds until it answers `Ok`, failing after `secs`
/// seconds with the last thing it said: the one polling loop the waits here share.
#[track_caller]
fn poll_until(secs: u64, every_ms: u64, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let why = match check() {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(every_ms));
    }
}

/// The first `counter N` in the console file (QEMU truncates a file console when it
/// starts, so after a restore this is the first line the restored guest printed).
fn first_counter(p: &Path) -> u64 {
    console_text(p)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("counter "))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the console holds `needle` at least `count` times.
#[track_caller]
fn wait_console(p: &Path, needle: &str, count: usize, secs: u64) {
    poll_until(secs, 100, || {
        let text = console_text(p);
        if text.matches(needle).count() >= count {
            Ok(())
        } else {
            Err(format!(
                "no {count}x '{needle}' on the console within {secs} s:\n{text}"
            ))
        }
    });
}

/// The last `counter N` the guest printed.
fn last_counter(p: &Path) -> u64 {
    console_text(p)
        .lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix("counter "))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `virtwasm event NAME --event lifecycle --loop` run as a client of a daemon, its output
/// collected as it arrives.
struct EventWatcher {
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl EventWatcher {
    /// Starts the watcher and returns once it is subscribed: once it has reported the
    /// `Resumed Unpaused` that `poke` (a pause and resume of NAME) causes. No fixed sleep: a
    /// loaded machine takes its time to start the watcher.
    fn start(d: &Daemon, uri: &str, name: &str, poke: impl Fn()) -> EventWatcher {
        let mut c = std::process::Command::new(common::binary());
        Daemon::env(d.home.as_path(), &mut c);
        let mut child = c
            .args([
                "-c",
                uri,
                &format!("event {name} --event lifecycle --loop --timeout 60"),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = seen.clone();
        let mut out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 1024];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !seen.lock().unwrap().contains("Resumed Unpaused") {
            assert!(Instant::now() < deadline, "the watcher never subscribed");
            poke();
            std::thread::sleep(Duration::from_millis(300));
        }
        EventWatcher {
            child,
            seen,
            reader,
        }
    }

    /// Waits up to `secs` seconds for `needle` in what the watcher printed.
    #[track_caller]
    fn wait_for(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.seen.lock().unwrap().contains(needle) {
            assert!(Instant::now() < deadline, "{}", self.seen.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends the watcher (SIGINT, as ^C) and returns everything it printed.
    fn stop(mut self) -> String {
        // SAFETY: a signal to the watcher this test started, by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = self.reader.join();
        self.seen.lock().unwrap().clone()
    }
}

struct Setup {
    // Fields drop in this order: the daemon (which ends the guests it recorded under its
    // root) before the directory that holds those records.
    d: Daemon,
    _home: tempfile::TempDir,
    uri: String,
    console: PathBuf,
}

fn setup(name: &str) -> Option<Setup> {
    let g = guest::test_guest_or_skip()?;
    if std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        guest::skip("qemu-system-x86_64 is not installed (.ci/run installs qemu-system-x86)");
        return None;
    }
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start(home.path(), &[]);
    let uri = d.uri("qemu", "/system");
    let console = home.path().join(format!("{name}.console"));
    let xml = home.path().join(format!("{name}.xml"));
    std::fs::write(&xml, domain_xml(name, &g, &console)).unwrap();
    d.client(&uri, &format!("define {}", xml.display())).ok();
    Some(Setup {
        _home: home,
        d,
        uri,
        console,
    })
}

#[test]
fn every_lifecycle_verb_on_a_real_guest() {
    let Some(s) = setup("vm1") else { return };
    let (d, uri, console) = (&s.d, &s.uri, &s.console);
    let started = Instant::now();
    assert_eq!(d.client(uri, "start vm1").ok(), "Domain 'vm1' started\n\n");
    wait_console(console, guest::READY, 1, 60);
    eprintln!("start to guest userspace: {:?}", started.elapsed());
    wait_console(console, "counter ", 2, 30);
    assert_eq!(
        d.client(uri, "domstate vm1 --reason").ok(),
        "running (booted)\n\n"
    );

    // Paused, the guest's counter stands still; resumed, it goes on.
    d.client(uri, "suspend vm1").ok();
    assert_eq!(
        d.client(uri, "domstate vm1 --reason").ok(),
        "paused (user)\n\n"
    );
    let frozen = last_counter(console);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        last_counter(console),
        frozen,
        "the counter moved while paused"
    );
    d.client(uri, "resume vm1").ok();
    wait_counter_above(console, frozen, 20, "the counter did not move after resume");

    // reset: the guest boots again.
    d.client(uri, "reset vm1").ok();
    wait_console(console, guest::READY, 2, 60);

    // shutdown: ACPI power button; the guest powers off and QEMU exits; the daemon's
    // poll notices with nobody asking, and a watcher sees the event.
    let watcher = EventWatcher::start(d, uri, "vm1", || {
        d.client(uri, "suspend vm1; resume vm1").ok();
    });
    assert_eq!(
        d.client(uri, "shutdown vm1").ok(),
        "Domain 'vm1' is being shutdown\n\n"
    );
    wait_console(console, guest::POWEROFF, 1, 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = d.client(uri, "domstate vm1 --reason");
        if out.stdout == "shut off (shutdown)\n\n" {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", out.stdout);
        std::thread::sleep(Duration::from_millis(200));
    }
    watcher.wait_for("event 'lifecycle' for domain 'vm1': Stopped Shutdown", 10);
    watcher.stop();

    // start --paused, then destroy.
    d.client(uri, "start vm1 --paused").ok();
    assert_eq!(
        d.client(uri, "domstate vm1 --reason").ok(),
        "paused (user)\n\n"
    );
    assert_eq!(
        d.client(uri, "destroy vm1").ok(),
        "Domain 'vm1' destroyed\n\n"
    );
    assert_eq!(
        d.client(uri, "domstate vm1 --reason").ok(),
        "shut off (destroyed)\n\n"
    );
}

#[test]
fn a_guest_outlives_a_killed_daemon_and_stays_controllable() {
    let Some(mut s) = setup("vm2") else { return };
    let uri = s.uri.clone();
    s.d.client(&uri, "start vm2").ok();
    wait_console(&s.console, "counter ", 2, 90);
    let status = s.d.stop_with(libc::SIGKILL);
    assert!(!status.success());
    // The guest keeps counting while no daemon exists.
    let before = last_counter(&s.console);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        last_counter(&s.console) > before,
        "the guest stopped with the daemon"
    );
    s.d.spawn();
    assert!(
        s.d.log_text().contains("found 1 running children"),
        "{}",
        s.d.log_text()
    );
    assert_eq!(
        s.d.client(&uri, "domstate vm2 --reason").ok(),
        "running (booted)\n\n"
    );
    s.d.client(&uri, "suspend vm2").ok();
    let frozen = last_counter(&s.console);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(last_counter(&s.console), frozen);
    assert_eq!(
        s.d.client(&uri, "destroy vm2").ok(),
        "Domain 'vm2' destroyed\n\n"
    );
}

#[test]
fn qemus_own_words_explain_a_failed_start() {
    let Some(s) = setup("vm3") else { return };
    let xml = s.d.home.join("bad.xml");
    // A kernel file that does not exist, in a directory that does (the daemon refuses paths
    // it cannot resolve before QEMU ever sees them).
    let kernel = s.d.home.join("no-such-vmlinux");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>bad</name><memory unit='MiB'>64</memory><os><type>hvm</type><kernel>{}</kernel></os></domain>",
            kernel.display()
        ),
    )
    .unwrap();
    s.d.client(&s.uri, &format!("define {}", xml.display()))
        .ok();
    let r = s.d.client(&s.uri, "start bad");
    let e = r.failed();
    assert_eq!(
        e,
        format!(
            "error: Failed to start domain 'bad'\nerror: operation failed: QEMU failed to start bad: qemu: could not open kernel file '{}': No such file or directory (exit status 1)\n",
            kernel.display()
        )
    );
    assert_eq!(s.d.client(&s.uri, "domstate bad").ok(), "shut off\n\n");
}

#[test]
fn the_console_round_trips_through_the_daemon_and_the_cli() {
    use std::io::{Read, Write};
    let Some(s) = setup("vm4") else { return };
    let g = guest::test_guest().unwrap();
    let xml = s.d.home.join("vm5.xml");
    std::fs::write(&xml, g.domain_xml("vm5", "", "<serial type='pty'/>")).unwrap();
    s.d.client(&s.uri, &format!("define {}; start vm5", xml.display()))
        .ok();

    // Through the API: an upgraded connection is the guest's serial port.
    let mut c = std::os::unix::net::UnixStream::connect(s.d.socket()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    write!(
        c,
        "GET /v1/domains/vm5/console HTTP/1.1\r\nHost: x\r\nx-virtwasm-uri: qemu:///system\r\nConnection: Upgrade\r\nUpgrade: virtwasm-console\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last_try = Instant::now() - Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("rt-42") {
        assert!(
            Instant::now() < deadline,
            "no answer on the console:\n{}",
            String::from_utf8_lossy(&seen)
        );
        if String::from_utf8_lossy(&seen).contains("101 Switching Protocols")
            && last_try.elapsed() > Duration::from_secs(2)
        {
            // The guest's shell may not read yet: ask again now and then.
            c.write_all(b"echo rt-$((40+2))\n").unwrap();
            last_try = Instant::now();
        }
        if let Ok(n) = c.read(&mut buf) {
            assert!(
                n > 0,
                "the console closed:\n{}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    }
    drop(c);

    // Through the CLI on a terminal (script gives it one): type a command, then ^].
    let mut cmd = std::process::Command::new("script");
    Daemon::env(s.d.home.as_path(), &mut cmd);
    let mut child = cmd
        .args([
            "-qfec",
            &format!("{} -c '{}' console vm5", common::binary().display(), s.uri),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut stdout = stdout;
        let _ = stdout.read_to_end(&mut out);
        out
    });
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(b"echo cli-$((6*7))\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    stdin.write_all(&[0x1d]).unwrap();
    let status = child.wait().unwrap();
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("Connected to domain 'vm5'"), "{out}");
    assert!(out.contains("cli-42"), "{out}");
    s.d.client(&s.uri, "destroy vm5").ok();
}

#[test]
fn save_and_restore_continue_the_guest_where_it_was() {
    let Some(s) = setup("vm6") else { return };
    let (d, uri, console) = (&s.d, &s.uri, &s.console);
    d.client(uri, "start vm6").ok();
    wait_console(console, "counter ", 3, 90);
    // Under the daemon's root: the only place its clients may name files.
    let image = d.root.join("images/vm6.save");
    let r = d.client(uri, &format!("save vm6 {}", image.display()));
    assert_eq!(
        r.ok(),
        format!("\nDomain 'vm6' saved to {}\n\n", image.display())
    );
    assert_eq!(
        d.client(uri, "domstate vm6 --reason").ok(),
        "shut off (saved)\n\n"
    );
    let at_save = last_counter(console);
    let size = std::fs::metadata(&image).unwrap().len();
    assert!(
        size > 1 << 20,
        "the image holds the guest's memory ({size} bytes)"
    );
    let r = d.client(uri, &format!("restore {}", image.display()));
    assert_eq!(
        r.ok(),
        format!("Domain restored from {}\n\n", image.display())
    );
    assert_eq!(
        d.client(uri, "domstate vm6 --reason").ok(),
        "running (restored)\n\n"
    );
    // The guest goes on counting from where it was: no second boot, no counter reset.
    // (The restored QEMU reopened the console file, so it holds only what came after.)
    wait_counter_above(
        console,
        at_save + 1,
        30,
        "the counter did not continue after restore",
    );
    assert!(
        first_counter(console) >= at_save,
        "{}",
        console_text(console)
    );
    assert!(
        !console_text(console).contains(guest::READY),
        "the guest rebooted"
    );

    // Managed save: the same stream in the host's own place; start restores it.
    d.client(uri, "managedsave vm6").ok();
    assert_eq!(
        d.client(uri, "domstate vm6 --reason").ok(),
        "shut off (saved)\n\n"
    );
    let before = last_counter(console);
    d.client(uri, "start vm6").ok();
    wait_counter_above(
        console,
        before + 1,
        30,
        "the counter did not continue after managed save",
    );
    assert!(
        first_counter(console) >= before,
        "{}",
        console_text(console)
    );
    assert!(
        !console_text(console).contains(guest::READY),
        "the guest rebooted"
    );
    // Its memory came back, so the QEMU driver says so (libvirt's QEMU driver does too).
    assert_eq!(
        d.client(uri, "domstate vm6 --reason").ok(),
        "running (restored)\n\n"
    );
    d.client(uri, "destroy vm6").ok();
}

#[test]
fn a_hot_plugged_disk_is_seen_inside_the_guest() {
    let Some(s) = setup("vm7") else { return };
    let (d, uri, console) = (&s.d, &s.uri, &s.console);
    d.client(uri, "start vm7").ok();
    wait_console(console, guest::READY, 1, 90);
    let disk = d.home.join("extra.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let r = d.client(
        uri,
        &format!("attach-disk vm7 {} vdb --live", disk.display()),
    );
    assert_eq!(r.ok(), "Disk attached successfully\n\n");
    // The guest names disks in the order it finds them: with no other virtio disk, the
    // hot-plugged vdb is its vda.
    wait_console(console, "disk vda present", 1, 30);
    let r = d.client(uri, "domblklist vm7");
    assert!(
        r.ok().contains(&format!(" vdb      {}", disk.display())),
        "{}",
        r.stdout
    );
    // domstats comes from QEMU: the guest read the new disk when it found it.
    let r = d.client(uri, "domstats vm7");
    let stats = r.ok();
    assert!(
        stats.contains("  block.count=1\n  block.0.name=vdb\n"),
        "{stats}"
    );
    let reads: u64 = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("block.0.rd.reqs="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(reads > 0, "{stats}");
    assert!(stats.contains("  vcpu.current=1\n"), "{stats}");
    // A user-mode NIC, hot-plugged and removed by its MAC.
    let r = d.client(
        uri,
        "attach-interface vm7 user none --mac 52:54:00:12:34:56 --model virtio --live",
    );
    assert_eq!(r.ok(), "Interface attached successfully\n\n");
    let r = d.client(uri, "domiflist vm7");
    assert!(r.ok().contains("52:54:00:12:34:56"), "{}", r.stdout);
    // The live XML says where the hot-plugged devices sit, so a restore rebuilds the same
    // guest: its device state loads, and it counts on.
    let image = d.root.join("images/vm7.save");
    d.client(uri, &format!("save vm7 {}", image.display())).ok();
    let at_save = last_counter(console);
    d.client(uri, &format!("restore {}", image.display())).ok();
    wait_counter_above(
        console,
        at_save + 1,
        30,
        "the counter did not continue after restoring a guest with hot-plugged devices",
    );
    let r = d.client(
        uri,
        "detach-interface vm7 user --mac 52:54:00:12:34:56 --live",
    );
    assert_eq!(r.ok(), "Interface detached successfully\n\n");
    let r = d.client(uri, "detach-disk vm7 vdb --live");
    assert_eq!(r.ok(), "Disk detached successfully\n\n");
    let r = d.client(uri, "domblklist vm7");
    assert!(!r.ok().contains("vdb"), "{}", r.stdout);
    d.client(uri, "destroy vm7").ok();
}

#[test]
fn live_migration_between_two_daemons_keeps_the_guest_counting() {
    let Some(s) = setup("vm8") else { return };
    let (src, uri, console) = (&s.d, &s.uri, &s.console);
    // A second daemon on its own directories: the destination.
    let dst_home = tempfile::tempdir().unwrap();
    let dst = Daemon::start(dst_home.path(), &[]);
    let dst_uri = dst.uri("qemu", "/system");
    src.client(uri, "start vm8").ok();
    wait_console(console, "counter ", 3, 90);
    let r = src.client(
        uri,
        &format!("migrate vm8 '{dst_uri}' --live --p2p --verbose"),
    );
    assert_eq!(r.ok(), "Migration: [100 %]\n\n", "{}", r.stderr);
    let at_move = last_counter(console);
    assert_eq!(
        src.client(uri, "domstate vm8 --reason").ok(),
        "shut off (migrated)\n\n"
    );
    assert_eq!(
        dst.client(&dst_uri, "domstate vm8 --reason").ok(),
        "running (migrated)\n\n"
    );
    // The guest counts on at the destination (same console file: it is the same machine).
    wait_counter_above(
        console,
        at_move + 1,
        30,
        "the counter did not continue on the destination",
    );
    assert!(
        !console_text(console).contains(guest::READY),
        "the guest rebooted"
    );
    // The source's definition stays (persistent); the destination's copy is transient.
    assert!(
        src.client(uri, "list --all")
            .ok()
            .contains(" -    vm8    shut off")
    );
    dst.client(&dst_uri, "destroy vm8").ok();
    let r = dst.client(&dst_uri, "list --all");
    assert!(!r.ok().contains("vm8"), "{}", r.stdout);

    // A destination that cannot take it: the source keeps running.
    src.client(uri, "start vm8").ok();
    let r = src.client(
        uri,
        "migrate vm8 'qemu+unix:///system?socket=/nonexistent/sock'",
    );
    assert!(
        r.failed()
            .contains("cannot reach the destination qemu+unix:///system?socket=/nonexistent/sock"),
        "{}",
        r.stderr
    );
    assert_eq!(src.client(uri, "domstate vm8").ok(), "running\n\n");
    src.client(uri, "destroy vm8").ok();
}

#[test]
fn a_snapshot_revert_rolls_the_guest_back() {
    let Some(s) = setup("vm9") else { return };
    let (d, uri, console) = (&s.d, &s.uri, &s.console);
    let disk = d.root.join("vm9.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        _ => {
            guest::skip("qemu-img is not installed (.ci/run installs qemu-utils)");
            return;
        }
    }
    // A qcow2 disk holds the snapshot; the domain's definition gains it.
    let r = d.client(
        uri,
        &format!(
            "attach-disk vm9 {} vda --subdriver qcow2 --config",
            disk.display()
        ),
    );
    r.ok();
    d.client(uri, "start vm9").ok();
    wait_console(console, "counter ", 3, 90);
    let r = d.client(uri, "snapshot-create-as vm9 s1");
    assert_eq!(r.ok(), "Domain snapshot s1 created\n");
    let at_snapshot = last_counter(console);
    // Let the guest move on, well past the snapshot.
    wait_counter_above(console, at_snapshot + 5, 30, "the guest stopped counting");
    let mark = console_text(console).len();
    let r = d.client(uri, "snapshot-revert vm9 s1; domstate vm9 --reason");
    assert_eq!(
        r.ok(),
        "Domain snapshot s1 reverted\n\nrunning (from snapshot)\n\n"
    );
    // What the guest prints after the revert counts on from the snapshot, not from where it
    // had got to.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let text = console_text(console);
        let tail = &text[mark.min(text.len())..];
        if let Some(n) = tail
            .lines()
            .filter_map(|l| l.trim().strip_prefix("counter "))
            .find_map(|n| n.trim().parse::<u64>().ok())
        {
            break n;
        }
        assert!(Instant::now() < deadline, "no counter after the revert");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        after <= at_snapshot + 2,
        "after the revert the guest printed counter {after}; the snapshot was taken at {at_snapshot}"
    );
    let r = d.client(uri, "snapshot-list vm9 --name; snapshot-delete vm9 s1");
    assert_eq!(r.ok(), "s1\n\nDomain snapshot s1 deleted\n\n");
    d.client(uri, "destroy vm9").ok();
}

/// One request on a daemon's socket for its QEMU driver; the status line and body.
fn api(socket: &Path, method: &str, target: &str, headers: &str, body: &str) -> (String, String) {
    common::http(
        socket,
        method,
        target,
        &format!("x-virtwasm-uri: qemu:///system\r\n{headers}"),
        body,
    )
}

#[test]
fn a_cancelled_migration_leaves_the_source_running() {
    let Some(s) = setup("vm10") else { return };
    let (src, uri, console) = (&s.d, &s.uri, &s.console);
    let dst_home = tempfile::tempdir().unwrap();
    let dst = Daemon::start(dst_home.path(), &[]);
    let dst_uri = dst.uri("qemu", "/system");
    src.client(uri, "start vm10").ok();
    wait_console(console, "counter ", 2, 90);
    // 1 MiB/s: a 128 MiB guest would take minutes, so the operation is surely running.
    let (status, body) = api(
        &src.socket(),
        "POST",
        "/v1/domains/vm10/migrate",
        "Prefer: respond-async\r\n",
        &format!(r#"{{"dest": "{dst_uri}", "bandwidth_mib": 1}}"#),
    );
    assert_eq!(status, "HTTP/1.1 202 Accepted", "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = op["id"].as_str().unwrap().to_string();
    assert_eq!(op["may_cancel"], true);
    // Progress shows bytes moving.
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let (_, body) = api(
            &src.socket(),
            "GET",
            &format!("/v1/operations/{id}"),
            "",
            "",
        );
        let op: serde_json::Value = serde_json::from_str(&body).unwrap();
        if op["progress"]["done"].as_u64().unwrap_or(0) > 0 {
            break op["progress"].clone();
        }
        assert!(Instant::now() < deadline, "no progress: {op}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(progress["unit"], "bytes");
    assert!(
        progress["total"].as_u64().unwrap() >= 128 << 20,
        "{progress}"
    );
    let (status, body) = api(
        &src.socket(),
        "DELETE",
        &format!("/v1/operations/{id}"),
        "",
        "",
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let (_, body) = api(
        &src.socket(),
        "GET",
        &format!("/v1/operations/{id}/wait?timeout=60"),
        "",
        "",
    );
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(op["status"], "cancelled", "{op}");
    // The guest runs on at the source; the destination kept nothing.
    assert_eq!(
        src.client(uri, "domstate vm10 --reason").ok(),
        "running (migration canceled)\n\n"
    );
    let before = last_counter(console);
    wait_counter_above(
        console,
        before + 1,
        20,
        "the guest stopped after the cancel",
    );
    let r = dst.client(&dst_uri, "list --all --name");
    assert_eq!(r.ok(), "\n", "{}", r.stdout);
    src.client(uri, "destroy vm10").ok();
}

#[test]
fn migration_reaches_the_destination_daemon_over_mutual_tls() {
    let Some(s) = setup("vm11") else { return };
    let (src, uri, console) = (&s.d, &s.uri, &s.console);
    // The destination listens for TLS only to clients of its CA; the source daemon
    // presents its own client certificate, which a rule makes an admin there.
    let dst_home = tempfile::tempdir().unwrap();
    let ca = pki::Pki::new(dst_home.path(), "pki");
    let source_cert = ca.client("source-daemon");
    let (dst, port) = pki::tls_daemon(
        dst_home.path(),
        &ca,
        "[[access.rule]]\nidentity = \"dn:O=virtwasm,CN=source-daemon\"\nrole = \"admin\"\n",
    );
    let dest = format!(
        "qemu+tls://127.0.0.1:{port}/system?pkipath={}",
        source_cert.display()
    );
    src.client(uri, "start vm11").ok();
    wait_console(console, "counter ", 2, 90);
    let r = src.client(uri, &format!("migrate vm11 '{dest}' --live"));
    r.ok();
    let at_move = last_counter(console);
    assert_eq!(
        src.client(uri, "domstate vm11 --reason").ok(),
        "shut off (migrated)\n\n"
    );
    let dst_uri = dst.uri("qemu", "/system");
    assert_eq!(
        dst.client(&dst_uri, "domstate vm11 --reason").ok(),
        "running (migrated)\n\n"
    );
    wait_counter_above(
        console,
        at_move + 1,
        30,
        "the counter did not continue on the destination",
    );
    dst.client(&dst_uri, "destroy vm11").ok();
}

/// A domain booting the test guest (console in `console`) that panics once its counter
/// reaches `at` (at / 2 seconds after it is up), with `<on_crash>on_crash</on_crash>`.
fn panicking_domain_xml(
    name: &str,
    g: &guest::Guest,
    console: &Path,
    on_crash: &str,
    at: u32,
) -> String {
    domain_xml(name, g, console)
        .replace(
            &g.cmdline,
            &format!("{} {}={at}", g.cmdline, guest::PANIC_AT),
        )
        .replace(
            "</features>",
            &format!("</features>\n  <on_crash>{on_crash}</on_crash>"),
        )
}

/// Polls `domstate NAME --reason` until it prints `want`, failing after `secs` seconds with
/// what it last said and the guest's console.
#[track_caller]
fn wait_state(d: &Daemon, uri: &str, name: &str, want: &str, secs: u64, console: &Path) {
    poll_until(secs, 200, || {
        let out = d.client(uri, &format!("domstate {name} --reason"));
        if out.stdout == format!("{want}\n\n") {
            return Ok(());
        }
        Err(format!(
            "{name} is still '{}' {secs} s on (wanted '{want}'); console:\n{}",
            out.stdout.trim(),
            console_text(console)
        ))
    });
}

#[test]
fn a_guest_panic_is_a_crash_and_on_crash_decides_what_follows() {
    let Some(s) = setup("vm12") else { return };
    let (d, uri) = (&s.d, &s.uri);
    let g = guest::test_guest().unwrap();
    // Up and running before the panic: the crash is a change the driver saw.
    let boot = |name: &str, on_crash: &str, at: u32| -> PathBuf {
        let console = d.home.join(format!("{name}.console"));
        let xml = d.home.join(format!("{name}.xml"));
        std::fs::write(&xml, panicking_domain_xml(name, &g, &console, on_crash, at)).unwrap();
        d.client(uri, &format!("define {}", xml.display())).ok();
        d.client(uri, &format!("start {name}")).ok();
        wait_console(&console, guest::READY, 1, 90);
        assert_eq!(
            d.client(uri, &format!("domstate {name} --reason")).ok(),
            "running (booted)\n\n",
            "{}",
            console_text(&console)
        );
        console
    };
    let run = |name: &str, on_crash: &str| -> PathBuf {
        let console = boot(name, on_crash, 6);
        wait_console(&console, guest::PANICKING, 1, 60);
        console
    };

    // preserve: QEMU holds the panicked guest; the domain is crashed (panicked), stays so,
    // and is still there to destroy.
    let console = run("crash-preserve", "preserve");
    wait_state(d, uri, "crash-preserve", "crashed (panicked)", 30, &console);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        d.client(uri, "domstate crash-preserve --reason").ok(),
        "crashed (panicked)\n\n"
    );
    assert_eq!(console_text(&console).matches(guest::READY).count(), 1);
    let list = d.client(uri, "list").ok().to_string();
    assert!(
        list.lines()
            .any(|l| l.contains(" crash-preserve ") && l.trim_end().ends_with(" crashed")),
        "{list}"
    );
    assert_eq!(
        d.client(uri, "destroy crash-preserve").ok(),
        "Domain 'crash-preserve' destroyed\n\n"
    );
    assert_eq!(
        d.client(uri, "domstate crash-preserve --reason").ok(),
        "shut off (destroyed)\n\n"
    );

    // destroy (libvirt's default): the driver ends QEMU, and the domain is shut off
    // (crashed) with nobody asking; a watcher sees the crash, then the stop, as libvirt
    // announces them. (The guest panics 8 s after boot: time to subscribe.)
    let console = boot("crash-destroy", "destroy", 16);
    let watcher = EventWatcher::start(d, uri, "crash-destroy", || {
        d.client(uri, "suspend crash-destroy; resume crash-destroy");
    });
    wait_console(&console, guest::PANICKING, 1, 60);
    wait_state(d, uri, "crash-destroy", "shut off (crashed)", 30, &console);
    assert_eq!(console_text(&console).matches(guest::READY).count(), 1);
    let prefix = "event 'lifecycle' for domain 'crash-destroy': ";
    watcher.wait_for(&format!("{prefix}Stopped Crashed"), 10);
    let events = watcher.stop();
    let after_subscribed = &events[events.rfind("Resumed Unpaused").unwrap()..];
    let lines: Vec<&str> = after_subscribed
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect();
    assert_eq!(lines, ["Crashed Panicked", "Stopped Crashed"], "{events}");

    // restart: the guest boots again after its panic, and runs.
    let console = run("crash-restart", "restart");
    wait_console(&console, guest::READY, 2, 90);
    assert_eq!(
        d.client(uri, "domstate crash-restart --reason").ok(),
        "running (booted)\n\n",
        "{}",
        console_text(&console)
    );
    d.client(uri, "destroy crash-restart").ok();

    // What the driver cannot do on a crash is refused when the domain is defined.
    let xml = d.home.join("crash-dump.xml");
    std::fs::write(
        &xml,
        panicking_domain_xml("crash-dump", &g, &console, "coredump-destroy", 6),
    )
    .unwrap();
    let r = d.client(uri, &format!("define {}", xml.display()));
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to define domain from {}\nerror: unsupported configuration: on_crash action 'coredump-destroy' (the QEMU driver takes no core dumps and renames nothing; use destroy, restart or preserve)\n",
            xml.display()
        )
    );
}

#[test]
fn setmem_takes_memory_from_the_guest_through_the_balloon() {
    let Some(s) = setup("vm13") else { return };
    let (d, uri, console) = (&s.d, &s.uri, &s.console);
    d.client(uri, "start vm13").ok();
    wait_console(console, "memtotal ", 1, 90);
    let memtotal = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.split_once("memtotal ").map(|(_, n)| n.trim()))
            .filter_map(|l| l.trim_end_matches(" kB").parse().ok())
            .collect()
    };
    let before = memtotal(&console_text(console))[0];
    assert!(before > 64 * 1024, "a 128 MiB guest sees {before} kB");
    d.client(uri, "setmem vm13 96M --live").ok();
    assert!(
        d.client(uri, "dominfo vm13")
            .ok()
            .contains("Used memory:    98304 KiB\n"),
        "{}",
        d.client(uri, "dominfo vm13").stdout
    );
    // The guest's balloon driver gives the memory back: MemTotal drops by about 32 MiB.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = *memtotal(&console_text(console)).last().unwrap();
        if now + 24 * 1024 < before {
            eprintln!("MemTotal {before} kB -> {now} kB after setmem 96M");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "MemTotal is still {now} kB (was {before} kB) 30 s after setmem 96M:\n{}",
            console_text(console)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.client(uri, "destroy vm13").ok();
}

/// The last `cpus N online` the guest printed (it brings hot-plugged CPUs online itself).
fn guest_cpus(p: &Path) -> u64 {
    console_text(p)
        .lines()
        .rev()
        // Anywhere in the line: the console shell's prompt may share it.
        .filter_map(|l| l.split_once("cpus ").map(|(_, n)| n.trim()))
        .find_map(|l| l.trim_end_matches(" online").parse().ok())
        .unwrap_or(0)
}

/// Waits until the guest reports `n` online CPUs.
#[track_caller]
fn wait_guest_cpus(p: &Path, n: u64, secs: u64) {
    poll_until(secs, 100, || {
        if guest_cpus(p) == n {
            Ok(())
        } else {
            Err(format!(
                "the guest does not see {n} CPUs within {secs} s:\n{}",
                console_text(p)
            ))
        }
    });
}

#[test]
fn setvcpus_live_adds_cpus_the_guest_sees_and_refuses_what_it_cannot_remove() {
    let Some(s) = setup("vm14") else { return };
    let (d, uri) = (&s.d, &s.uri);
    let g = guest::test_guest().unwrap();
    // Two vCPUs at boot, room for three.
    let console = d.home.join("vm15.console");
    let xml = d.home.join("vm15.xml");
    std::fs::write(
        &xml,
        domain_xml("vm15", &g, &console).replace("<vcpu>1</vcpu>", "<vcpu current='2'>3</vcpu>"),
    )
    .unwrap();
    d.client(uri, &format!("define {}; start vm15", xml.display()))
        .ok();
    wait_console(&console, guest::READY, 1, 90);
    wait_guest_cpus(&console, 2, 30);

    // Up: QEMU adds the CPU, the guest finds it and brings it online.
    let added = Instant::now();
    assert_eq!(d.client(uri, "setvcpus vm15 3 --live").ok(), "\n");
    wait_guest_cpus(&console, 3, 30);
    eprintln!(
        "setvcpus 2 -> 3: the guest runs 3 CPUs after {:?}",
        added.elapsed()
    );
    assert!(
        d.client(uri, "vcpucount vm15 --live --active")
            .ok()
            .contains("current      live           3\n"),
        "{}",
        d.client(uri, "vcpucount vm15").stdout
    );
    assert!(
        d.client(uri, "dominfo vm15")
            .ok()
            .contains("CPU(s):         3\n"),
        "{}",
        d.client(uri, "dominfo vm15").stdout
    );
    let stats = d.client(uri, "domstats vm15").ok().to_string();
    assert!(stats.contains("  vcpu.current=3\n"), "{stats}");

    // Beyond the maximum: refused (by the host, before the driver: its words are libvirt's
    // test driver's, "requested cpu amount exceeds maximum (4 > 3)").
    let r = d.client(uri, "setvcpus vm15 4 --live");
    assert!(r.failed().contains("4 > 3"), "{}", r.stderr);

    // Down: QEMU 7.2 under TCG corrupts itself when a vCPU leaves (it dies at the next
    // reset; seen by hand), so the driver refuses, naming the QEMU it runs; the guest keeps
    // its three CPUs.
    let version = String::from_utf8(
        std::process::Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let version = version
        .split_whitespace()
        .nth(3)
        .expect("QEMU emulator version X.Y.Z");
    let r = d.client(uri, "setvcpus vm15 2 --live");
    assert_eq!(
        r.failed(),
        format!(
            "error: unsupported configuration: removing vCPUs from a TCG guest (domain type 'qemu'): QEMU {version} under TCG corrupts its memory when a vCPU is unplugged and dies at the guest's next reset; restart the domain with fewer vCPUs instead\n"
        )
    );
    // Below the two it booted with: refused with the count first, as libvirt refuses CPUs
    // that are not hot-pluggable.
    let r = d.client(uri, "setvcpus vm15 1 --live");
    assert_eq!(
        r.failed(),
        "error: invalid argument: failed to find appropriate hotpluggable vcpus to reach the desired target vcpu count: the domain started with 2 vCPUs, which cannot be unplugged (requested 1)\n"
    );
    assert!(
        d.client(uri, "vcpucount vm15 --live --active")
            .ok()
            .contains("current      live           3\n")
    );
    // The guest still runs its three CPUs, and a reset (what an unplug would have made
    // fatal) boots it again.
    d.client(uri, "reset vm15").ok();
    wait_console(&console, guest::READY, 2, 90);
    wait_console(&console, "cpus 3 online", 2, 30);
    assert_eq!(
        d.client(uri, "domstate vm15 --reason").ok(),
        "running (booted)\n\n"
    );
    d.client(uri, "destroy vm15").ok();
}

/// Emulators installed for one test in `/usr/local/bin` (the host runs only programs found
/// in its search path), removed when dropped.
struct Emulators(Vec<PathBuf>);

impl Drop for Emulators {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
            for f in probe_cache_files(p) {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// Writes `script` as an executable file at `path`.
fn write_script(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    // Replaced, never rewritten in place: a running script must not change under sh.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The cache files the QEMU driver keeps for the emulator at `path`.
fn probe_cache_files(path: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(common::cache_dir().join("qemu"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|f| {
            std::fs::read(f)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["path"].as_str() == path.to_str())
        })
        .collect()
}

#[test]
fn what_an_emulator_offers_is_probed_once_per_binary_and_cached() {
    let Some(mut s) = setup("vm16") else { return };
    let uri = s.uri.clone();
    let g = guest::test_guest().unwrap();
    let qemu = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .unwrap();
    // Emulators that count their runs: scripts named as QEMU (the manifest allows
    // qemu-system-*) that note their arguments and run the real one. The second one also
    // hides virtio-rng-pci from what QEMU lists, as a QEMU built without it would.
    let dir = Path::new("/usr/local/bin");
    let tag = format!("vwtest-{}", std::process::id());
    let counting = dir.join(format!("qemu-system-x86_64-{tag}"));
    let lacking = dir.join(format!("qemu-system-x86_64-{tag}-norng"));
    let runs = s.d.home.join("emulator-runs");
    let script = |extra: &str| {
        format!(
            "#!/bin/sh\n{extra}echo \"$*\" >> {}\nexec {} \"$@\"\n",
            runs.display(),
            qemu.display()
        )
    };
    if std::fs::write(dir.join(format!(".{tag}")), "").is_err() {
        guest::skip("cannot write to /usr/local/bin (run as root) for the emulator-probe test");
        return;
    }
    let _ = std::fs::remove_file(dir.join(format!(".{tag}")));
    let _installed = Emulators(vec![counting.clone(), lacking.clone()]);
    write_script(&counting, &script(""));
    write_script(
        &lacking,
        &format!(
            "#!/bin/sh\necho \"$*\" >> {}\n{} \"$@\" | sed 's/\"virtio-rng-pci\"/\"virtio-rng-pci-absent\"/g'\n",
            runs.display(),
            qemu.display()
        ),
    );
    let run_lines = || -> Vec<String> {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let probes = || {
        run_lines()
            .iter()
            .filter(|l| l.contains("-qmp stdio"))
            .count()
    };
    let define = |d: &Daemon, name: &str, emulator: &Path, extra: &str| {
        let console = d.home.join(format!("{name}.console"));
        let xml = d.home.join(format!("{name}.xml"));
        std::fs::write(
            &xml,
            domain_xml(name, &g, &console).replace(
                "<devices>",
                &format!(
                    "<devices>\n    <emulator>{}</emulator>{extra}",
                    emulator.display()
                ),
            ),
        )
        .unwrap();
        let t = Instant::now();
        let r = d.client(&uri, &format!("define {}", xml.display()));
        (r, t.elapsed(), xml)
    };

    // First use: probed (one run, with QMP on stdin), and the answer cached under the
    // binary's identity.
    let (r, first, _) = define(&s.d, "probe1", &counting, "");
    r.ok();
    assert_eq!(probes(), 1, "{:?}", run_lines());
    let cache = match probe_cache_files(&counting).as_slice() {
        [one] => one.clone(),
        other => panic!("one cache file for the new emulator, not {other:?}"),
    };
    let cached = std::fs::read(&cache).unwrap();
    let cached_mtime = std::fs::metadata(&cache).unwrap().modified().unwrap();
    // Second use, and a use by a restarted daemon: from the cache, no run at all.
    let (r, second, _) = define(&s.d, "probe2", &counting, "");
    r.ok();
    s.d.stop_with(libc::SIGTERM);
    s.d.spawn();
    let (r, restarted, _) = define(&s.d, "probe3", &counting, "");
    r.ok();
    assert_eq!(run_lines().len(), 1, "{:?}", run_lines());
    assert_eq!(std::fs::read(&cache).unwrap(), cached);
    assert_eq!(
        std::fs::metadata(&cache).unwrap().modified().unwrap(),
        cached_mtime
    );
    eprintln!(
        "define with a probe: {first:?}; from the cache: {second:?}; after a daemon restart: {restarted:?}"
    );
    // A start runs the emulator for the guest only, never to probe it.
    s.d.client(&uri, "start probe1 --paused").ok();
    s.d.client(&uri, "destroy probe1").ok();
    assert_eq!(probes(), 1, "{:?}", run_lines());
    assert_eq!(run_lines().len(), 2, "{:?}", run_lines());

    // A changed binary (other size and mtime) is another identity: probed again, and cached
    // in a file of its own.
    write_script(&counting, &script("# a new build\n"));
    let (r, _, _) = define(&s.d, "probe4", &counting, "");
    r.ok();
    assert_eq!(probes(), 2, "{:?}", run_lines());
    // ... and the old identity's file, useless now, is gone.
    let recached = match probe_cache_files(&counting).as_slice() {
        [one] => one.clone(),
        other => panic!("one cache file for the changed emulator, not {other:?}"),
    };
    assert_ne!(recached, cache);
    assert!(!cache.exists());

    // What the emulator lacks is refused at define, naming the emulator.
    let (r, _, xml) = define(&s.d, "probe5", &counting, "");
    std::fs::write(
        &xml,
        std::fs::read_to_string(&xml)
            .unwrap()
            .replace("machine='pc'", "machine='no-such-machine'"),
    )
    .unwrap();
    r.ok();
    let r = s.d.client(&uri, &format!("define {}", xml.display()));
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to define domain from {}\nerror: unsupported configuration: Emulator '{}' does not support machine type 'no-such-machine'\n",
            xml.display(),
            counting.display()
        )
    );
    let rng = "\n    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>";
    let (r, _, xml) = define(&s.d, "probe6", &lacking, rng);
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to define domain from {}\nerror: unsupported configuration: Emulator '{}' does not support device model 'virtio-rng-pci'\n",
            xml.display(),
            lacking.display()
        )
    );
    // The same domain on the emulator that has it is fine.
    let (r, _, _) = define(&s.d, "probe7", &counting, rng);
    r.ok();
    // Without <emulator>, the message names the file the host runs for the default
    // emulator (the first in the host's program search path).
    let default = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join("qemu-system-x86_64"))
    .find(|p| p.is_file())
    .unwrap();
    let xml = s.d.home.join("probe8.xml");
    std::fs::write(
        &xml,
        domain_xml("probe8", &g, &s.d.home.join("probe8.console"))
            .replace("machine='pc'", "machine='no-such-machine'"),
    )
    .unwrap();
    let r = s.d.client(&uri, &format!("define {}", xml.display()));
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to define domain from {}\nerror: unsupported configuration: Emulator '{}' does not support machine type 'no-such-machine'\n",
            xml.display(),
            default.display()
        )
    );

    // capabilities lists what QEMU itself says it has: every machine of `-machine help`
    // (read here through the API, as a program would).
    let help = std::process::Command::new(&qemu)
        .args(["-machine", "help"])
        .output()
        .unwrap();
    let names: Vec<String> = String::from_utf8_lossy(&help.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(names.len() > 10, "{names:?}");
    let (status, body) = api(&s.d.socket(), "GET", "/v1/node/capabilities", "", "");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let caps: serde_json::Value = serde_json::from_str(&body).unwrap();
    let machines: Vec<&str> = caps["guests"][0]["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    for name in &names {
        assert!(machines.contains(&name.as_str()), "{name} missing: {body}");
    }
    assert_eq!(
        caps["guests"][0]["emulator"], "qemu-system-x86_64",
        "{body}"
    );
}

/// A file with `marker` at its start, `size` bytes long.
fn marked_image(path: &Path, marker: &str, size: usize) {
    let mut bytes = marker.as_bytes().to_vec();
    bytes.resize(size, 0);
    std::fs::write(path, bytes).unwrap();
}

/// Writes the test guest with `devices` as `HOME/NAME.xml` and defines it.
fn define_guest(d: &Daemon, uri: &str, g: &guest::Guest, name: &str, devices: &str) -> common::Run {
    let xml = d.home.join(format!("{name}.xml"));
    std::fs::write(&xml, g.domain_xml(name, "", devices)).unwrap();
    d.client(uri, &format!("define {}", xml.display()))
}

/// A loop device over `file`, detached when dropped.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Result<Loop, String> {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .map_err(|e| format!("losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Loop(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["--detach", &self.0])
            .status();
    }
}

#[test]
fn disks_on_every_bus_and_a_block_device_reach_the_guest() {
    let Some(g) = guest::test_guest_or_skip() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let blk_file = home.path().join("blk.img");
    marked_image(&blk_file, "MARKER-BLOCK", 1 << 20);
    let lo = match Loop::attach(&blk_file) {
        Ok(l) => l,
        Err(e) => {
            guest::skip(&format!("no loop device for the block disk: {e}"));
            return;
        }
    };
    // Block devices are files a client names like any other: this daemon lets clients name
    // the loop device's directory too.
    let d = Daemon::start_with_config(
        home.path(),
        &format!(
            "[files]\nallowed = [{:?}, {:?}, \"/dev\"]\n",
            std::env::temp_dir().display().to_string(),
            env!("CARGO_TARGET_TMPDIR")
        ),
        &[],
    );
    let uri = d.uri("qemu", "/system");
    let sata = home.path().join("sata.img");
    marked_image(&sata, "MARKER-SATA", 1 << 20);
    let iso = home.path().join("cd.iso");
    marked_image(&iso, "MARKER-CDROM", 1 << 20);
    // A 1.44 MB image: the size QEMU's floppy drive recognises.
    let floppy = home.path().join("floppy.img");
    marked_image(&floppy, "MARKER-FLOPPY", 1_474_560);
    let console = home.path().join("disks.console");
    let disks = format!(
        "<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='{}'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{}'/><target dev='hdc' bus='ide'/><readonly/></disk>
    <disk type='file' device='floppy'><driver name='qemu' type='raw'/><source file='{}'/><target dev='fda' bus='fdc'/></disk>
    <disk type='file' device='cdrom'><target dev='hdd' bus='ide'/><readonly/></disk>
    <serial type='file'><source path='{}'/></serial>",
        lo.0,
        sata.display(),
        iso.display(),
        floppy.display(),
        console.display()
    );
    let xml = home.path().join("disks.xml");
    std::fs::write(&xml, g.domain_xml("disks", "", &disks)).unwrap();
    let r = d.client(
        &uri,
        &format!("define {}; start disks; domblklist disks", xml.display()),
    );
    let out = r.ok();
    assert!(
        out.contains(&format!(" vda      {}\n", lo.0))
            && out.contains(&format!(" sda      {}\n", sata.display()))
            && out.contains(&format!(" hdc      {}\n", iso.display())),
        "{out}"
    );
    // Each reaches the guest as the device its bus makes, holding its own file's bytes.
    wait_console(&console, "disk vda present MARKER-BLOCK", 1, 60);
    wait_console(&console, "disk sda present MARKER-SATA", 1, 30);
    wait_console(&console, "disk sr0 present MARKER-CDROM", 1, 30);
    wait_console(&console, "disk fd0 present MARKER-FLOPPY", 1, 30);
    // The empty CD-ROM drive is there, with nothing in it to read.
    wait_console(&console, "disk sr1 present", 1, 30);
    let text = console_text(&console);
    assert!(
        text.lines().any(|l| l.trim_end() == "disk sr1 present"),
        "{text}"
    );
    d.client(&uri, "destroy disks").ok();
    drop(d);
    drop(lo);
}

#[test]
fn a_kvm_domain_where_kvm_is_unusable_fails_with_qemus_reason() {
    let Some(g) = guest::test_guest_or_skip() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        guest::skip("hiding /dev/kvm in a mount namespace needs root");
        return;
    }
    // The daemon runs in a mount namespace where /dev/kvm is /dev/null: present, unusable.
    let home = tempfile::tempdir().unwrap();
    let d = Daemon::start_under(
        home.path(),
        &[],
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind /dev/null /dev/kvm && exec \"$@\"",
            "sh",
        ],
    );
    let uri = d.uri("qemu", "/system");
    let console = home.path().join("kvm.console");
    let xml = home.path().join("kvm.xml");
    std::fs::write(
        &xml,
        domain_xml("kvm1", &g, &console).replace("<domain type='qemu'>", "<domain type='kvm'>"),
    )
    .unwrap();
    let r = d.client(&uri, &format!("define {}; start kvm1", xml.display()));
    let e = r.failed();
    assert!(
        e.contains("QEMU failed to start kvm1: ")
            && e.contains(
                "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Inappropriate ioctl for device"
            ),
        "{e}"
    );
    assert_eq!(
        d.client(&uri, "domstate kvm1 --reason").ok(),
        "shut off (failed)\n\n"
    );
}

/// Waits up to `secs` seconds for `done`, failing with what was awaited.
#[track_caller]
fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    poll_until(secs, 50, || {
        if done() {
            Ok(())
        } else {
            Err(format!("waited {secs} s for {what}"))
        }
    });
}

/// The port of the display in a domain's live XML.
fn display_port(d: &Daemon, uri: &str, name: &str) -> u16 {
    let xml = d.client(uri, &format!("dumpxml {name}")).ok().to_string();
    let line = xml
        .lines()
        .find(|l| l.contains("<graphics type='vnc'"))
        .unwrap_or_else(|| panic!("no VNC display in {name}'s live XML:\n{xml}"));
    let port = line
        .split("port='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or_else(|| panic!("no port in {line}"));
    port.parse()
        .unwrap_or_else(|_| panic!("{name}'s display has no port yet: {line}"))
}

/// The first 12 bytes a VNC server sends: its RFB protocol version.
fn rfb_greeting(port: u16) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 12];
    s.read_exact(&mut greeting).unwrap();
    String::from_utf8_lossy(&greeting).into_owned()
}

#[test]
fn displays_get_free_ports_and_answer_in_their_protocols() {
    let Some(s) = setup("vnc0") else { return };
    let g = guest::test_guest_or_skip().expect("setup found it");
    let (d, uri) = (&s.d, &s.uri);
    // A port something else holds: the host must pass over it.
    let squatter = (5900..6000)
        .find_map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
        .expect("a free port from 5900");
    let held = squatter.local_addr().unwrap().port();
    let define = |name: &str, devices: &str| define_guest(d, uri, &g, name, devices);
    define("vnc1", "<graphics type='vnc'/>").ok();
    define(
        "vnc2",
        "<graphics type='vnc' autoport='yes' listen='127.0.0.1'/><video><model type='cirrus'/></video>",
    )
    .ok();
    assert_eq!(
        d.client(uri, "start vnc1; start vnc2").ok(),
        "Domain 'vnc1' started\n\nDomain 'vnc2' started\n\n"
    );
    let (p1, p2) = (display_port(d, uri, "vnc1"), display_port(d, uri, "vnc2"));
    assert!(
        p1 >= 5900 && p2 >= 5900 && p1 != p2 && p1 != held && p2 != held,
        "ports {p1} and {p2} (held by the test: {held})"
    );
    for p in [p1, p2] {
        assert_eq!(rfb_greeting(p), "RFB 003.008\n", "port {p}");
    }
    let live = d.client(uri, "dumpxml vnc1").ok().to_string();
    assert!(
        live.contains(&format!(
            "<graphics type='vnc' port='{p1}' autoport='yes' listen='127.0.0.1'>"
        )),
        "{live}"
    );
    let inactive = d.client(uri, "dumpxml --inactive vnc1").ok().to_string();
    assert!(
        inactive.contains("<graphics type='vnc' port='-1' autoport='yes'/>"),
        "{inactive}"
    );
    assert_eq!(
        d.client(uri, "vncdisplay vnc1; domdisplay vnc2").ok(),
        format!("127.0.0.1:{}\n\nvnc://127.0.0.1:{}\n", p1 - 5900, p2 - 5900)
    );

    // A fixed port something holds: QEMU's own words say why the start failed.
    define(
        "vnc3",
        &format!("<graphics type='vnc' port='{held}' autoport='no'/>"),
    )
    .ok();
    let e = d.client(uri, "start vnc3").failed().to_string();
    assert!(
        e.contains("QEMU failed to start vnc3: qemu-system-x86_64: -vnc 127.0.0.1:")
            && e.contains("Address already in use"),
        "{e}"
    );
    drop(squatter);

    // Ended, a guest's port is closed; started again, it gets the lowest free one.
    d.client(uri, "destroy vnc1").ok();
    wait_until(10, &format!("port {p1} to close after destroy"), || {
        std::net::TcpStream::connect(("127.0.0.1", p1)).is_err()
    });
    assert_eq!(
        d.client(uri, "vncdisplay vnc1").failed(),
        "error: Domain is not running\n"
    );

    // What the driver would not carry out is refused, never silently dropped: a display
    // run without its password would be open to anyone.
    let e = define("vnc4", "<graphics type='vnc' passwd='secret'/>")
        .failed()
        .to_string();
    assert!(
        e.contains("the qemu driver does not build /domain/devices/graphics[1]/@passwd yet, and would run the guest without it"),
        "{e}"
    );
    // So are devices outside the model, which the driver would never see; a sound backend
    // alone (<audio>) changes nothing in the guest and is kept.
    let e = define(
        "vnc5",
        "<sound model='ich9'/><audio id='1' type='none'/><hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>",
    )
    .failed()
    .to_string();
    assert!(
        e.ends_with("error: unsupported configuration: the qemu driver does not build /domain/devices/hostdev, /domain/devices/sound yet, and would run the guest without it (remove it to run without)\n"),
        "{e}"
    );
    define("vnc6", "<audio id='1' type='none'/>").ok();
    // Through the daemon a display listens on loopback unless its [displays] allow more.
    let e = define("vnc7", "<graphics type='vnc' listen='0.0.0.0'/>")
        .failed()
        .to_string();
    assert!(
        e.contains("vnc display: listening on '0.0.0.0' is not allowed here ([displays] listen_allowed in virtwasmd.toml: 127.0.0.1, ::1)"),
        "{e}"
    );
    assert!(d.client(uri, "domstate vnc4").failed().contains("vnc4"));

    // A restored guest listens again, on a port picked at the restore (its image's live XML
    // named the port of its earlier run).
    let image = d.root.join("images/vnc2.save");
    d.client(uri, &format!("save vnc2 {}", image.display()))
        .ok();
    // The saved QEMU may take a moment to let go of its port.
    let mut held_again = None;
    wait_until(10, &format!("port {p2} to be free after save"), || {
        held_again = std::net::TcpListener::bind(("127.0.0.1", p2)).ok();
        held_again.is_some()
    });
    d.client(uri, &format!("restore {}", image.display())).ok();
    let p3 = display_port(d, uri, "vnc2");
    assert_ne!(
        p3, p2,
        "the restore passed over the port the test holds now"
    );
    assert_eq!(rfb_greeting(p3), "RFB 003.008\n");
    drop(held_again);
    d.client(uri, "destroy vnc2").ok();

    // SPICE: a port of its own, where a SPICE server answers a link message with "REDQ".
    define("spice1", "<graphics type='spice' autoport='yes'/>").ok();
    d.client(uri, "start spice1").ok();
    let shown = d.client(uri, "domdisplay spice1").ok().to_string();
    let port: u16 = shown
        .trim()
        .strip_prefix("spice://127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("domdisplay said {shown:?}"));
    assert!(port >= 5900, "{port}");
    assert_eq!(spice_magic(port), *b"REDQ", "port {port}");
    d.client(uri, "destroy spice1").ok();
}

/// What a SPICE server sends back first when a client opens a link: its magic, "REDQ".
fn spice_magic(port: u16) -> [u8; 4] {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // SpiceLinkHeader: magic, major 2, minor 2, size of the SpiceLinkMess that follows
    // (connection 0, channel type 1 = main, channel id 0, no capabilities, caps offset 18).
    let mut msg = Vec::new();
    msg.extend_from_slice(b"REDQ");
    for v in [2u32, 2, 18, 0] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg.extend_from_slice(&[1, 0]);
    for v in [0u32, 0, 18] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&msg).unwrap();
    let mut magic = [0u8; 4];
    s.read_exact(&mut magic).unwrap();
    magic
}

#[test]
fn a_q35_guest_finds_its_devices_where_libvirt_placed_them() {
    let Some(s) = setup("q35setup") else { return };
    let g = guest::test_guest_or_skip().expect("setup found it");
    let (d, uri) = (&s.d, &s.uri);
    let console = d.home.join("q35.console");
    // libvirt's q35 layout, as virt-manager writes it: root ports on slot 2's functions,
    // each device behind one of them by controller index; one NIC left without an address.
    let port = |index: u32| {
        format!(
            "<controller type='pci' index='{index}' model='pcie-root-port'><address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='{:#x}'{}/></controller>",
            index - 1,
            if index == 1 {
                " multifunction='on'"
            } else {
                ""
            }
        )
    };
    let devices = format!(
        "<controller type='pci' index='0' model='pcie-root'/>{}{}{}{}\
         <interface type='user'><mac address='52:54:00:00:00:21'/><model type='virtio'/><address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/></interface>\
         <interface type='user'><mac address='52:54:00:00:00:22'/><model type='virtio'/></interface>\
         <memballoon model='virtio'><address type='pci' domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></memballoon>\
         <serial type='file'><source path='{}'/></serial>",
        port(1),
        port(2),
        port(3),
        port(4),
        console.display()
    );
    let xml = g
        .domain_xml("q35a", "", &devices)
        .replace("machine='pc'", "machine='q35'");
    let file = d.home.join("q35a.xml");
    std::fs::write(&file, xml).unwrap();
    d.client(uri, &format!("define {}; start q35a", file.display()))
        .ok();
    wait_console(&console, "VIRTWASM-GUEST-READY", 1, 90);
    let text = console_text(&console);
    // Root port index 2 (00:02.1) is the guest's bus 2: where the XML put the first NIC.
    assert!(
        text.contains("nic 52:54:00:00:00:21 at 0000:02:00.0"),
        "{text}"
    );
    // The NIC without an address: the first empty root port (index 1), as libvirt places an
    // endpoint; the definition records it there, as libvirt's does.
    assert!(
        text.contains("nic 52:54:00:00:00:22 at 0000:01:00.0"),
        "{text}"
    );
    let xml = d.client(uri, "dumpxml --inactive q35a").ok().to_string();
    assert!(
        xml.contains("<mac address='52:54:00:00:00:22'/>\n      <model type='virtio'/>\n      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>"),
        "{xml}"
    );

    // A device on a bus no controller makes is refused at define, naming both.
    let bad = d.home.join("q35b.xml");
    std::fs::write(
        &bad,
        g.domain_xml(
            "q35b",
            "",
            "<interface type='user'><model type='virtio'/><address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></interface>",
        )
        .replace("machine='pc'", "machine='q35'"),
    )
    .unwrap();
    let e = d
        .client(uri, &format!("define {}", bad.display()))
        .failed()
        .to_string();
    assert!(
        e.contains("is on PCI bus 0x5, which no <controller type='pci' index='5'> makes"),
        "{e}"
    );

    // q35's root bus takes no hot-plug: a disk goes to the one root port left empty
    // (index 4), the live XML records it there, and the guest finds it; with none left, the
    // error says what to add.
    let disk = d.home.join("q35-extra.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let r = d.client(
        uri,
        &format!("attach-disk q35a {} vdb --live", disk.display()),
    );
    assert_eq!(r.ok(), "Disk attached successfully\n\n");
    wait_console(&console, "disk vda present", 1, 30);
    let live = d.client(uri, "dumpxml q35a").ok().to_string();
    assert!(
        live.contains("<target dev='vdb' bus='virtio'/>\n      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>"),
        "{live}"
    );
    let r = d.client(
        uri,
        "attach-interface q35a user none --mac 52:54:00:00:00:23 --model virtio --live",
    );
    assert!(
        r.failed()
            .contains("no free pcie-root-port to hot-plug into"),
        "{}",
        r.stderr
    );
    // Unplugged, the port is free again.
    let r = d.client(uri, "detach-disk q35a vdb --live");
    assert_eq!(r.ok(), "Disk detached successfully\n\n");
    let r = d.client(
        uri,
        "attach-interface q35a user none --mac 52:54:00:00:00:23 --model virtio --live",
    );
    assert_eq!(r.ok(), "Interface attached successfully\n\n");
    d.client(uri, "destroy q35a").ok();
}

#[test]
fn scsi_disks_reach_the_guest_through_virtio_scsi_and_lsi_controllers() {
    let Some(s) = setup("scsisetup") else { return };
    let g = guest::test_guest_or_skip().expect("setup found it");
    let (d, uri) = (&s.d, &s.uri);
    let console = d.home.join("scsi.console");
    let vscsi = d.home.join("vscsi.img");
    marked_image(&vscsi, "MARKER-VSCSI", 1 << 20);
    let lsi = d.home.join("lsi.img");
    marked_image(&lsi, "MARKER-LSI", 1 << 20);
    // sda on the virtio-scsi controller by its drive address; sdh (libvirt's index 7) on
    // controller 1, which the definition lacks: libvirt's default lsilogic is added.
    let devices = format!(
        "<controller type='scsi' index='0' model='virtio-scsi'/>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sda' bus='scsi'/><address type='drive' controller='0' bus='0' target='0' unit='0'/></disk>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sdh' bus='scsi'/></disk>\
         <serial type='file'><source path='{}'/></serial>",
        vscsi.display(),
        lsi.display(),
        console.display()
    );
    define_guest(d, uri, &g, "scsi1", &devices).ok();
    let dumped = d.client(uri, "dumpxml scsi1").ok().to_string();
    assert!(
        dumped.contains("<controller type='scsi' index='1' model='lsilogic'>\n      <address type='pci' domain='0x0000'"),
        "{dumped}"
    );
    d.client(uri, "start scsi1").ok();
    // The guest names SCSI disks in the order it finds them: look for the bytes.
    wait_console(&console, "present MARKER-VSCSI", 1, 90);
    wait_console(&console, "present MARKER-LSI", 1, 30);

    // A disk hot-plugged onto the virtio-scsi controller is a new LUN the guest finds.
    let hot = d.home.join("hot.img");
    marked_image(&hot, "MARKER-HOTSCSI", 1 << 20);
    let r = d.client(
        uri,
        &format!(
            "attach-disk scsi1 {} sdc --targetbus scsi --live",
            hot.display()
        ),
    );
    assert_eq!(r.ok(), "Disk attached successfully\n\n");
    wait_console(&console, "present MARKER-HOTSCSI", 1, 30);
    // Not onto the LSI one (sdi: index 8, controller 1).
    let r = d.client(
        uri,
        &format!(
            "attach-disk scsi1 {} sdi --targetbus scsi --live",
            hot.display()
        ),
    );
    assert!(
        r.failed()
            .contains("hot-plugging onto a 'lsilogic' SCSI controller"),
        "{}",
        r.stderr
    );
    let r = d.client(uri, "detach-disk scsi1 sdc --live");
    assert_eq!(r.ok(), "Disk detached successfully\n\n");
    d.client(uri, "destroy scsi1").ok();
}

#[test]
fn usb_disks_reach_the_guest_through_the_ich9_set_and_xhci_and_hot_plug() {
    let Some(s) = setup("usbsetup") else { return };
    let g = guest::test_guest_or_skip().expect("setup found it");
    let (d, uri) = (&s.d, &s.uri);
    let console = d.home.join("usb.console");
    let ich9_img = d.home.join("ich9.img");
    marked_image(&ich9_img, "MARKER-ICH9", 1 << 20);
    let xhci = d.home.join("xhci.img");
    marked_image(&xhci, "MARKER-XHCI", 1 << 20);
    // USB controller 0 is the ICH9 USB2 set as virt-manager writes it (an EHCI at function 7
    // and its three UHCI companions, all index 0), and sda plugs into it; sdb into port 2 of
    // the qemu-xhci controller 1.
    let ich9 = |model: &str, function: u32, startport: Option<u32>| {
        format!(
            "<controller type='usb' index='0' model='{model}'>{}<address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='{function:#x}'{}/></controller>",
            startport
                .map(|p| format!("<master startport='{p}'/>"))
                .unwrap_or_default(),
            if function == 0 {
                " multifunction='on'"
            } else {
                ""
            }
        )
    };
    let devices = format!(
        "{}{}{}{}\
         <controller type='usb' index='1' model='qemu-xhci'/>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sda' bus='usb'/></disk>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sdb' bus='usb'/><address type='usb' bus='1' port='2'/></disk>\
         <serial type='file'><source path='{}'/></serial>",
        ich9("ich9-ehci1", 7, None),
        ich9("ich9-uhci1", 0, Some(0)),
        ich9("ich9-uhci2", 1, Some(2)),
        ich9("ich9-uhci3", 2, Some(4)),
        ich9_img.display(),
        xhci.display(),
        console.display()
    );
    define_guest(d, uri, &g, "usb1", &devices).ok();
    let dumped = d.client(uri, "dumpxml usb1").ok().to_string();
    assert!(
        dumped.contains(
            "<controller type='usb' index='0' model='ich9-uhci2'>\n      <master startport='2'/>"
        ),
        "{dumped}"
    );
    assert!(
        dumped.contains("<address type='usb' bus='1' port='2'/>"),
        "{dumped}"
    );
    // Each USB disk's port is recorded, as libvirt records it.
    assert!(
        dumped.contains(
            "<target dev='sda' bus='usb'/>\n      <address type='usb' bus='0' port='1'/>"
        ),
        "{dumped}"
    );
    d.client(uri, "start usb1").ok();
    // The guest names the disks in the order it finds them: look for the bytes.
    wait_console(&console, "present MARKER-ICH9", 1, 90);
    wait_console(&console, "present MARKER-XHCI", 1, 30);

    // A USB stick plugged into the running guest, and pulled out again.
    let hot = d.home.join("hotusb.img");
    marked_image(&hot, "MARKER-USBHOT", 1 << 20);
    let r = d.client(
        uri,
        &format!(
            "attach-disk usb1 {} sdc --targetbus usb --live",
            hot.display()
        ),
    );
    assert_eq!(r.ok(), "Disk attached successfully\n\n");
    wait_console(&console, "present MARKER-USBHOT", 1, 30);
    // It took the next free port, and the running definition says which.
    let live = d.client(uri, "dumpxml usb1").ok().to_string();
    assert!(
        live.contains(
            "<target dev='sdc' bus='usb'/>\n      <address type='usb' bus='0' port='2'/>"
        ),
        "{live}"
    );
    let r = d.client(uri, "detach-disk usb1 sdc --live");
    assert_eq!(r.ok(), "Disk detached successfully\n\n");
    let live = d.client(uri, "domblklist usb1").ok().to_string();
    assert!(!live.contains("sdc"), "{live}");
    d.client(uri, "destroy usb1").ok();

    // Without a controller for its USB devices, a definition gets libvirt's default for pc,
    // the PIIX3 UHCI; a USB CD-ROM is a SCSI CD-ROM in a stick of its own.
    let console3 = d.home.join("usb3.console");
    let cd = d.home.join("usbcd.iso");
    marked_image(&cd, "MARKER-USBCD", 1 << 20);
    let devices = format!(
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sda' bus='usb'/></disk>\
         <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sdb' bus='usb'/><readonly/></disk>\
         <serial type='file'><source path='{}'/></serial>",
        ich9_img.display(),
        cd.display(),
        console3.display()
    );
    define_guest(d, uri, &g, "usb3", &devices).ok();
    let dumped = d.client(uri, "dumpxml usb3").ok().to_string();
    assert!(
        dumped.contains("<controller type='usb' index='0' model='piix3-uhci'>"),
        "{dumped}"
    );
    d.client(uri, "start usb3").ok();
    wait_console(&console3, "present MARKER-ICH9", 1, 90);
    wait_console(&console3, "disk sr0 present MARKER-USBCD", 1, 30);
    d.client(uri, "destroy usb3").ok();

    // model='none' is the word that there is no controller 0: nothing is added, and the
    // USB disk that needs one is refused at define, naming what to add.
    let none = format!(
        "<controller type='usb' index='0' model='none'/>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sda' bus='usb'/></disk>",
        ich9_img.display()
    );
    let r = define_guest(d, uri, &g, "usb2", &none);
    assert!(
        r.failed()
            .contains("disk 'sda' on bus 'usb' needs USB controller 0"),
        "{}",
        r.stderr
    );
}
