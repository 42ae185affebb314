//! Proves the test guest itself works, with QEMU alone (no virtwasm): it boots under TCG to
//! `VIRTWASM-GUEST-READY`, keeps printing its counter, and powers itself off through ACPI
//! when QMP sends `system_powerdown`, so QEMU exits by itself. The QEMU driver's tests build
//! on exactly these behaviours; when this test fails, theirs cannot mean anything.

#[path = "common/guest.rs"]
mod guest;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";

/// Kills QEMU (by its pid, through `Child`) if the test ends before QEMU exited.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `log` until `done` accepts its text, or panics after `timeout` showing the log.
fn wait_for_log(log: &Path, timeout: Duration, what: &str, done: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if done(&text) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "no {what} within {timeout:?}; serial console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one QMP command and returns its `{"return": ...}` line (events in between skipped).
fn qmp(reader: &mut BufReader<UnixStream>, command: &str) -> String {
    writeln!(reader.get_mut(), "{{\"execute\":\"{command}\"}}").expect("write to QMP");
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read QMP");
        assert!(n > 0, "QMP closed while waiting for the reply to {command}");
        let reply: serde_json::Value = serde_json::from_str(&line).expect("QMP sends JSON");
        assert!(reply.get("error").is_none(), "QMP {command} failed: {line}");
        if reply.get("return").is_some() {
            return line;
        }
    }
}

#[test]
fn guest_boots_counts_and_powers_off_on_acpi_request() {
    if Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        guest::skip(&format!(
            "{QEMU} is not installed (package qemu-system-x86)"
        ));
        return;
    }
    let built = Instant::now();
    let Some(g) = guest::test_guest_or_skip() else {
        return;
    };
    eprintln!(
        "test guest ready in {:.1?}: kernel {} initrd {} ({} KiB)",
        built.elapsed(),
        g.kernel.display(),
        g.initrd.display(),
        std::fs::metadata(&g.initrd).map_or(0, |m| m.len() / 1024)
    );

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let sock = dir.path().join("qmp.sock");
    let spawned = Instant::now();
    let mut qemu = Qemu(
        Command::new(QEMU)
            .args(["-machine", "pc,accel=tcg", "-m", "128"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(&g.kernel)
            .arg("-initrd")
            .arg(&g.initrd)
            .args(["-append", &g.cmdline])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn qemu"),
    );

    wait_for_log(&log, Duration::from_secs(60), guest::READY, |t| {
        t.contains(guest::READY)
    });
    let boot = spawned.elapsed();
    wait_for_log(&log, Duration::from_secs(10), "two counter lines", |t| {
        t.contains("counter 2")
    });
    eprintln!(
        "guest booted to userspace in {boot:.2?} (spawn to {})",
        guest::READY
    );

    // QMP: greeting, capabilities negotiation, then the ACPI power button.
    let stream = UnixStream::connect(&sock).expect("connect to QMP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("QMP greeting");
    assert!(
        greeting.contains("\"QMP\""),
        "not a QMP greeting: {greeting}"
    );
    qmp(&mut reader, "qmp_capabilities");
    let pressed = Instant::now();
    qmp(&mut reader, "system_powerdown");

    // The guest's acpid runs `poweroff -f`; QEMU (without -no-shutdown) then exits by itself.
    let status = loop {
        if let Some(status) = qemu.0.try_wait().expect("wait for qemu") {
            break status;
        }
        assert!(
            pressed.elapsed() < Duration::from_secs(30),
            "QEMU still running 30 s after system_powerdown; serial console:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "QEMU exited with {status}; serial:\n{text}"
    );
    assert!(
        text.contains(guest::POWEROFF),
        "QEMU exited but the guest's power-button handler did not run; serial:\n{text}"
    );
    eprintln!(
        "guest powered off {:.2?} after system_powerdown",
        pressed.elapsed()
    );
}

/// The guest's deliberate panic reaches QEMU: with [`guest::PANIC_AT`] on its command line it
/// panics a few seconds after boot, its pvpanic driver tells QEMU's ISA pvpanic device, and
/// QEMU (`-action panic=pause`) stops it in the run state `guest-panicked`, the state the QEMU
/// driver reports as crashed. Without the pvpanic modules in the initramfs, or without the
/// device, the guest reboots instead and this test fails.
#[test]
fn a_panicking_guest_stops_qemu_as_guest_panicked() {
    if Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        guest::skip(&format!(
            "{QEMU} is not installed (package qemu-system-x86)"
        ));
        return;
    }
    let Some(g) = guest::test_guest_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let sock = dir.path().join("qmp.sock");
    let _qemu = Qemu(
        Command::new(QEMU)
            .args(["-machine", "pc,accel=tcg", "-m", "128"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-device", "pvpanic", "-action", "panic=pause"])
            .arg("-kernel")
            .arg(&g.kernel)
            .arg("-initrd")
            .arg(&g.initrd)
            .args(["-append", &format!("{} {}=3", g.cmdline, guest::PANIC_AT)])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn qemu"),
    );
    wait_for_log(&log, Duration::from_secs(90), guest::PANICKING, |t| {
        t.contains(guest::PANICKING)
    });
    let stream = UnixStream::connect(&sock).expect("connect to QMP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("QMP greeting");
    qmp(&mut reader, "qmp_capabilities");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = qmp(&mut reader, "query-status");
        if status.contains("\"guest-panicked\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU is still {status} 30 s after the guest panicked; serial console:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stopped for good: the guest does not reboot (no second READY) while QEMU holds it.
    std::thread::sleep(Duration::from_millis(1000));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.matches(guest::READY).count(), 1, "{text}");
}
