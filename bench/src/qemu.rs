//! The QEMU section: real TCG guests (the test guest of `tests/common/guest.rs`: Debian's
//! kernel and a busybox initramfs, 128 MiB, 1 vCPU, machine `pc`) started, saved, restored
//! and migrated, each next to what it costs without a manager in the same run.
//!
//! What it measures, in order:
//!
//! 1. Start to QMP `running`, median of [`N`] rounds (the CLI and virsh in every
//!    [`SLOW_EVERY`]th) after one warm-up each, the four subjects
//!    interleaved so they see the same noise (the API and the bare script trading places each
//!    round), each timed start after the untimed [`Primer`]; the goal's ratio is the median of
//!    each round's API start over that round's bare start:
//!    - `virtwasm start` through the API: an in-process [`virtwasm_api::Client`] connected to a
//!      `virtwasmd --root TMP` (no CLI process), from the request to the answer (the driver
//!      answers once QEMU acknowledged `cont`), then `destroy`;
//!    - a bare script: spawn the very command line the driver ran (read from that QEMU's
//!      `/proc/PID/cmdline`, with its own monitor socket and console file), connect to the
//!      monitor (polled every millisecond), `qmp_capabilities`, `cont`, wait for the answer;
//!    - `virtwasm -c … start NAME` as a process, for the process-to-process comparison;
//!    - `virsh start NAME` (process wall time) on `libvirtd` with its QEMU driver, started as
//!      root in a network namespace of its own over private bind mounts (as the daemon section
//!      does) with a private `qemu.conf` (see [`QEMU_CONF`]).
//! 2. Save and restore of the booted guest, [`ROUNDS`] rounds: `virtwasm save`/`restore`
//!    (API) against QEMU driven directly: `stop`, `migrate exec:cat > FILE`, `query-migrate`
//!    polled until `completed`, `quit`, QEMU's exit; then a new QEMU with `-incoming defer`,
//!    `migrate-incoming exec:cat FILE`, polled until `completed`, `cont`. Both keep QEMU's
//!    default `max-bandwidth` (128 MiB/s in QEMU 7.2); three more raw saves with it raised
//!    (libvirt raises it for a save) show what that limit costs.
//! 3. Live migration, all inside the section's network namespace (its own loopback, nothing on
//!    the host's network): virtwasm's `migrate` through the API between two more `virtwasmd`
//!    started in the namespace, back and forth, against raw QEMU: a destination spawned with
//!    `-incoming tcp:127.0.0.1:PORT`, `migrate`, `query-migrate` polled until `completed`,
//!    `cont` there, `quit` here; once at QEMU's default `max-bandwidth`, then with it raised
//!    as virtwasm's driver raises it for a migration.
//!
//! The guest comes from the test guest cache, `target/tmp/test-guest/*/` (`guest.rs` reads
//! `CARGO_TARGET_TMPDIR`, which Cargo sets for tests only, so it cannot be compiled here);
//! without it the section is SKIPPED with the command that builds it. Every QEMU this section
//! caused is stopped by pid at the end, including any a failure left behind.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use virtwasm_api::Client;

use crate::daemon::{Binaries, Libvirtd, Netns, Virtwasmd, client_env, env_usize, tail};
use crate::{fmt, median};

/// Timed rounds (after one warm-up), unless `VIRTWASM_BENCH_QEMU_RUNS` says otherwise: 80
/// for the API and the bare script, whose ratio the goal bounds within 10 %, because QEMU's
/// own start is bimodal here, for virtwasm and the bare script alike (it answers
/// `qmp_capabilities` about 20 ms or about 25 ms after its greeting, measured with
/// timestamps in both), and with 25 rounds the medians moved between the two modes from run
/// to run. The CLI and virsh, far from their goal and slow to run (virsh's destroy takes
/// about 1.8 s), join every [`SLOW_EVERY`]th round.
const N: usize = 80;
/// The CLI process and virsh start in every this many rounds (the first timed one
/// included, and the warm-up). Odd, so the rounds that follow them start with the API and
/// with the bare script in turn.
const SLOW_EVERY: usize = 5;
/// The pause before each timed save, and after the [`Primer`] before each timed start.
const SETTLE: Duration = Duration::from_millis(100);
/// Save + restore rounds per subject.
const ROUNDS: usize = 5;
/// The domain's name, for virtwasm and for libvirt.
const NAME: &str = "vwbench";
/// The virtwasm domain's uuid: it names every QEMU of this section on its command line (the
/// bare script's reuse the driver's), so a left-over one can be found and stopped.
const VW_UUID: &str = "6b1f2c7e-51a4-4b9e-8c3d-7a5e0be0c001";
/// The libvirt domain's uuid, likewise.
const LV_UUID: &str = "6b1f2c7e-51a4-4b9e-8c3d-7a5e0be0c002";
/// The destination port of the loopback migration, inside the section's own namespace.
const MIGRATION_PORT: u16 = 49152;
/// How long a guest may take from start to its userspace (TCG on a loaded machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one migration (save, restore, live) may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The test guest's source: its constants ([`guest_const`]) are read from it, so the bench
/// boots the guest exactly as the tests describe it.
const GUEST_SOURCE: &str = include_str!("../../tests/common/guest.rs");

/// libvirt's QEMU driver configuration in the namespace's private `/etc/libvirt`: QEMU runs as
/// root (no `libvirt-qemu` user to own the guest's files, and no chown of the kernel and
/// initrd in the build tree: `dynamic_ownership`, `remember_owner`), no confinement
/// (`security_driver`: no AppArmor here), no private `/dev` for QEMU (`namespaces`), no
/// cgroups on the host (`cgroup_controllers`), and QEMU's stdout/stderr to a plain file
/// instead of `virtlogd` (`stdio_handler`), so no second daemon is needed.
const QEMU_CONF: &str = r#"user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
"#;

/// The built test guest.
/// The daemons' config: clients may name the section's work directory (consoles, save
/// images) and the guest's (kernel, initrd), as an operator lists their image directories.
fn files_config(work: &Path, guest: &Guest) -> String {
    let guest_dir = guest.kernel.parent().unwrap_or(Path::new("/"));
    format!(
        "[files]\nallowed = [{:?}, {:?}]\n",
        work.display().to_string(),
        guest_dir.display().to_string()
    )
}

struct Guest {
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    /// What `/init` prints once userspace is up.
    ready: String,
}

/// A `pub const NAME: &str = "…";` of `tests/common/guest.rs`.
fn guest_const(name: &str) -> Option<String> {
    let start = format!("pub const {name}: &str = \"");
    let line = GUEST_SOURCE.lines().find(|l| l.starts_with(&start))?;
    let rest = &line[start.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// The newest complete guest in the test guest cache beside this program's target directory.
fn find_guest() -> Result<Guest, String> {
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    // target/release/virtwasm-bench -> target/tmp/test-guest
    let root = me
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("tmp/test-guest"))
        .ok_or_else(|| format!("no target directory above {}", me.display()))?;
    let build = "run `cargo test -p virtwasm-cli --test guest_selftest` first, which builds it";
    let newest = std::fs::read_dir(&root)
        .map_err(|e| format!("no test guest in {} ({e}): {build}", root.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|d| {
            let name = d.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && name != "debs"
                && d.join("vmlinux").is_file()
                && d.join("initrd.gz").is_file()
        })
        .max_by_key(|d| {
            std::fs::metadata(d.join("initrd.gz"))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        })
        .ok_or_else(|| format!("no built test guest in {}: {build}", root.display()))?;
    Ok(Guest {
        kernel: newest.join("vmlinux"),
        initrd: newest.join("initrd.gz"),
        cmdline: guest_const("CMDLINE").ok_or("tests/common/guest.rs has no CMDLINE")?,
        ready: guest_const("READY").ok_or("tests/common/guest.rs has no READY")?,
    })
}

/// The domain for virtwasm, as `tests/qemu.rs` defines it.
fn virtwasm_xml(g: &Guest, console: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>{NAME}</name>
  <uuid>{VW_UUID}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
    <cmdline>{}</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    <serial type='file'><source path='{}'/></serial>
  </devices>
</domain>",
        g.kernel.display(),
        g.initrd.display(),
        g.cmdline,
        console.display()
    )
}

/// The same guest for libvirt, without the devices libvirt adds by default and virtwasm's
/// command line does not have (a USB controller, a memory balloon).
fn libvirt_xml(g: &Guest, console: &Path) -> String {
    virtwasm_xml(g, console).replace(VW_UUID, LV_UUID).replace(
        "  </devices>",
        "    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n  </devices>",
    )
}

/// A QMP connection, driven synchronously.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the monitor at `path` (polled every millisecond while QEMU starts, as long
    /// as `child` lives), reads the greeting and negotiates capabilities.
    fn connect(path: &Path, child: &mut Child, log: &Path) -> Result<Qmp, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("QEMU exited ({status}): {}", tail(log)));
                    }
                    if Instant::now() > deadline {
                        return Err(format!("no QMP monitor at {} within 30 s", path.display()));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(format!("connect {}: {e}", path.display())),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("reading QMP: {e}"))?;
            if n == 0 {
                return Err("QEMU closed its monitor".into());
            }
            if !line.trim().is_empty() {
                return serde_json::from_str(line.trim())
                    .map_err(|e| format!("QMP sent something that is not JSON ({e}): {line}"));
            }
        }
    }

    /// Runs `command`; its `return`, or QEMU's error. Events in between are dropped.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("writing QMP: {e}"))?;
        loop {
            let m = self.read()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(format!("QEMU refused '{command}': {e}"));
            }
        }
    }

    /// Polls `query-migrate` (every 2 ms) until the migration this QEMU takes part in, out or
    /// in, has completed; returns that last answer.
    fn wait_migration(&mut self) -> Result<Value, String> {
        let deadline = Instant::now() + MIGRATION_TIMEOUT;
        loop {
            let info = self.execute("query-migrate", None)?;
            match info["status"].as_str() {
                Some("completed") => return Ok(info),
                Some(s @ ("failed" | "cancelled")) => {
                    return Err(format!(
                        "migration {s}: {}",
                        info["error-desc"].as_str().unwrap_or("")
                    ));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "migration not completed within {MIGRATION_TIMEOUT:?}: {info}"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A QEMU this section spawned itself, killed (SIGKILL, by pid) when dropped.
struct RawQemu {
    child: Child,
    qmp: Qmp,
}

impl RawQemu {
    /// Spawns `argv` (inside `netns` when given, through `ip netns exec`, which execs QEMU so
    /// the child's pid is QEMU's) and connects to its monitor at `monitor`.
    fn spawn(
        argv: &[String],
        monitor: &Path,
        log: &Path,
        netns: Option<(&Path, &str)>,
    ) -> Result<RawQemu, String> {
        let _ = std::fs::remove_file(monitor);
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        let mut cmd = match netns {
            Some((ip, ns)) => {
                let mut c = Command::new(ip);
                c.args(["netns", "exec", ns]).args(argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", argv[0]))?;
        match Qmp::connect(monitor, &mut child, log) {
            Ok(qmp) => Ok(RawQemu { child, qmp }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// `quit`, then waits for the process to end.
    fn quit(mut self) -> Result<(), String> {
        let _ = self.qmp.execute("quit", None);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("QEMU did not exit within 10 s of quit".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for RawQemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: a signal to our own unreaped child, by pid.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// At the end of the section (and after a failure), stops by pid every QEMU whose command
/// line carries one of this section's uuids: the ones virtwasmd and libvirtd started for it
/// outlive their daemons by design.
struct Sweep;

impl Sweep {
    fn pids() -> Vec<(i32, String)> {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if !argv.first().is_some_and(|a| {
                a.rsplit('/')
                    .next()
                    .unwrap_or("")
                    .starts_with("qemu-system")
            }) {
                continue;
            }
            if let Some(w) = argv
                .windows(2)
                .find(|w| w[0] == "-uuid" && (w[1] == VW_UUID || w[1] == LV_UUID))
            {
                found.push((pid, w[1].clone()));
            }
        }
        found
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let left = Sweep::pids();
        for (pid, uuid) in &left {
            // Not println!, which panics: this may run while unwinding from a closed stdout.
            let _ = writeln!(
                std::io::stdout(),
                "!!! a QEMU of this section was still running (pid {pid}, uuid {uuid}): killing it"
            );
            // SAFETY: kill has no memory-safety preconditions; the pid is a QEMU this section
            // caused (its uuid is the section's own).
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Sweep::pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Quotes `word` for the shell QEMU runs `exec:` migrations with.
fn sh_quote(word: &Path) -> String {
    format!("'{}'", word.display().to_string().replace('\'', "'\\''"))
}

/// The QEMU command line of the running virtwasm domain, from `/proc/PID/cmdline`.
fn driver_cmdline() -> Result<Vec<String>, String> {
    let pids = Sweep::pids();
    let pid = pids
        .iter()
        .find(|(_, u)| u == VW_UUID)
        .map(|(p, _)| *p)
        .ok_or("no QEMU with the virtwasm domain's uuid is running")?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string())?;
    let mut argv: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if argv.last().is_some_and(|a| a.is_empty()) {
        argv.pop();
    }
    Ok(argv)
}

/// `argv` with every occurrence of each `(from, to)` replaced.
fn rewrite(argv: &[String], pairs: &[(String, String)]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            pairs
                .iter()
                .fold(a.clone(), |a, (from, to)| a.replace(from.as_str(), to))
        })
        .collect()
}

/// The monitor socket path on a QEMU command line (`-chardev socket,id=charmonitor,path=…`).
fn monitor_path(argv: &[String]) -> Option<String> {
    argv.iter()
        .find(|a| a.contains("id=charmonitor"))?
        .split(',')
        .find_map(|kv| kv.strip_prefix("path="))
        .map(str::to_string)
}

fn console_text(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Waits until every console holds `needle`.
fn wait_consoles(consoles: &[&Path], needle: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<&&Path> = consoles
            .iter()
            .filter(|c| !console_text(c).contains(needle))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no '{needle}' within {timeout:?} on {}",
                missing
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a program once; its wall time, or its stderr if it failed.
fn timed_process<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    args: &[S],
    env: &[(String, String)],
) -> Result<Duration, String> {
    let t = Instant::now();
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    let took = t.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "{} {} failed ({}): {}",
            program.display(),
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// libvirtd with its QEMU driver, in the section's namespace, and the `virsh` URI reaching it.
struct Libvirt {
    /// Held for its `Drop`, which stops libvirtd.
    _daemon: Libvirtd,
    uri: String,
    virsh: PathBuf,
    /// Spawn to the first answer of its test driver (`virsh list`).
    ready: Duration,
    /// The first call on its QEMU driver (`virsh define`), which waits for the driver's
    /// initialization (QEMU capability probing on fresh state).
    define: Duration,
}

fn start_libvirt(
    bins: &Binaries,
    ns: &Netns,
    work: &Path,
    env: &[(String, String)],
    xml: &str,
) -> Result<Libvirt, String> {
    let dir = work.join("lv");
    let etc = dir.join("fs/etc/libvirt");
    std::fs::create_dir_all(&etc).map_err(|e| format!("create {}: {e}", etc.display()))?;
    std::fs::write(etc.join("qemu.conf"), QEMU_CONF).map_err(|e| e.to_string())?;
    let (daemon, ready) = Libvirtd::start(bins, ns, &dir, env)?;
    let uri = format!("qemu+unix:///system?socket={}", daemon.socket.display());
    let virsh = bins.virsh.clone().ok_or("no virsh")?;
    let file = work.join("libvirt.xml");
    std::fs::write(&file, xml).map_err(|e| e.to_string())?;
    let define = ["-c", uri.as_str(), "define", file.to_str().ok_or("path")?];
    let define = timed_process(&virsh, &define, env).map_err(|e| {
        format!(
            "{e}\n    libvirtd's log: {}",
            tail(&dir.join("libvirtd.log"))
        )
    })?;
    Ok(Libvirt {
        _daemon: daemon,
        uri,
        virsh,
        ready,
        define,
    })
}

/// What the start comparison measured.
#[derive(Default)]
struct Starts {
    api: Vec<Duration>,
    bare: Vec<Duration>,
    cli: Vec<Duration>,
    virsh: Vec<Duration>,
    /// `destroy` right after the API's start, and `virsh destroy` after virsh's.
    api_destroy: Vec<Duration>,
    virsh_destroy: Vec<Duration>,
    /// Every timed start in order: the subject, the one before it, the time.
    order: Vec<(&'static str, &'static str, Duration)>,
}

/// What save/restore measured.
#[derive(Default)]
struct SaveRestore {
    vw_save: Vec<Duration>,
    vw_restore: Vec<Duration>,
    raw_save: Vec<Duration>,
    raw_restore: Vec<Duration>,
    /// Raw saves with `max-bandwidth` raised ([`UNTHROTTLED`]), as libvirt does for a save.
    raw_save_fast: Vec<Duration>,
    vw_size: u64,
    raw_size: u64,
    /// QEMU's default `max-bandwidth`, bytes/s.
    default_bandwidth: Option<u64>,
    vw_continued: Option<bool>,
    raw_continued: Option<bool>,
}

/// What one raw live migration measured.
struct Migration {
    /// `max-bandwidth` during it, bytes/s.
    bandwidth: Option<u64>,
    /// From spawning the destination QEMU to the source QEMU's exit, as a manager's migrate
    /// spans it (prepare, stream, resume there, end here).
    whole: Duration,
    /// `migrate` to the source's `query-migrate` saying `completed`.
    wall: Duration,
    total_ms: Option<u64>,
    downtime_ms: Option<u64>,
    transferred: Option<u64>,
}

/// The live migrations: virtwasm's between two daemons, and raw QEMU's.
struct Migrations {
    /// `migrate` through the API, request to answer, or why not measured.
    virtwasm: Result<Vec<Duration>, String>,
    /// Raw, `max-bandwidth` raised as virtwasm's driver (and libvirt) does.
    raw: Vec<Migration>,
    /// Raw, once at QEMU's default `max-bandwidth`.
    raw_default: Option<Migration>,
}

/// Live migrations per subject (alternating direction), after one untimed.
const MIGRATIONS: usize = 3;

/// The `max-bandwidth` (bytes/s) of the "raised" raw references: 1 TiB/s, unlimited in effect
/// (libvirt sets its maximum for a save to a file and, by default, for migrations).
const UNTHROTTLED: u64 = 1 << 40;

/// Runs the QEMU section and prints its tables.
pub fn run() {
    println!(
        "\n== QEMU under TCG: the test guest (128 MiB, 1 vCPU, pc), start / save / restore / migrate (`cargo run --release -p virtwasm-bench`, or VIRTWASM_BENCH_ONLY=qemu) =="
    );
    let guest = match find_guest() {
        Ok(g) => g,
        Err(e) => {
            println!("!!! SKIPPED the QEMU section: {e}");
            return;
        }
    };
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("!!! SKIPPED the QEMU section: qemu-system-x86_64 not found (qemu-system-x86)");
        return;
    }
    let bins = match Binaries::find() {
        Ok(b) => b,
        Err(e) => {
            println!("!!! SKIPPED the QEMU section: {e}");
            return;
        }
    };
    // Short paths: QEMU's monitor sockets live under the daemon's root (108-byte limit).
    let work = tempfile::Builder::new()
        .prefix("vwq")
        .tempdir_in("/tmp")
        .expect("temp dir");
    // Dropped after everything below (declared first): stops any QEMU left behind.
    let _sweep = Sweep;
    let env = client_env(work.path());
    let section = Instant::now();

    // The namespace: libvirtd's, then the loopback of the raw live migration.
    // SAFETY: geteuid has no preconditions.
    let mut ns_skip = if unsafe { libc::geteuid() } != 0 {
        Some("not root: no network namespace".to_string())
    } else if bins.ip.is_none() {
        Some("`ip` not found (iproute2): no network namespace".to_string())
    } else {
        None
    };
    let mut netns: Option<Netns> = None;
    if ns_skip.is_none() {
        let ip = bins.ip.as_ref().expect("ip");
        match Netns::create_named(ip, format!("vwbench-qemu-{}", std::process::id())) {
            Ok(ns) => {
                let up = Command::new(ip)
                    .args(["-n", &ns.name, "link", "set", "lo", "up"])
                    .status()
                    .is_ok_and(|s| s.success());
                if !up {
                    ns_skip = Some(format!("could not bring up lo in {}", ns.name));
                }
                netns = Some(ns);
            }
            Err(e) => ns_skip = Some(e),
        }
    }

    let config = files_config(work.path(), &guest);
    let vw = match Virtwasmd::start(&bins.virtwasmd, &work.path().join("vw"), Some(&config)) {
        Ok((d, _)) => d,
        Err(e) => {
            println!("!!! FAILED: virtwasmd did not answer: {e}");
            return;
        }
    };
    let uri = format!("qemu+unix:///system?socket={}", vw.socket.display());
    let client = match Client::connect(&uri, false, || {
        Err(virtwasm_host::Error::failed(
            "the bench reaches the daemon only",
        ))
    }) {
        Ok(c) => c,
        Err(e) => {
            println!("!!! FAILED: connect to virtwasmd ({uri}): {e}");
            return;
        }
    };
    let vw_console = work.path().join("vw.console");
    if let Err(e) = client.define_xml(&virtwasm_xml(&guest, &vw_console), false) {
        println!("!!! FAILED: define the domain on virtwasmd: {e}");
        return;
    }

    // libvirtd, before anything is timed (its first start probes QEMU's capabilities).
    let mut libvirt: Option<Libvirt> = None;
    let mut lv_skip = bins.peer_missing().or_else(|| ns_skip.clone());
    if let (None, Some(ns)) = (&lv_skip, &netns) {
        let lv_console = work.path().join("lv.console");
        match start_libvirt(
            &bins,
            ns,
            work.path(),
            &env,
            &libvirt_xml(&guest, &lv_console),
        ) {
            Ok(l) => libvirt = Some(l),
            Err(e) => lv_skip = Some(format!("libvirtd's QEMU driver did not work here: {e}")),
        }
    }

    let mut starts = Starts::default();
    let mut argv: Vec<String> = Vec::new();
    let result = measure_starts(
        &client,
        &bins,
        &uri,
        &env,
        work.path(),
        &mut argv,
        libvirt.as_ref(),
        &mut starts,
    );
    if let Err(e) = &result {
        println!("!!! FAILED during the start comparison: {e}");
        if let Some(l) = &libvirt {
            println!(
                "    libvirtd's log: {}",
                tail(&work.path().join("lv/libvirtd.log"))
            );
            let _ = timed_process(&l.virsh, &["-c", l.uri.as_str(), "destroy", NAME], &env);
        }
    }
    let _ = client.destroy(NAME, false);
    let lv_ready = libvirt.as_ref().map(|l| (l.ready, l.define));
    // libvirtd stops (SIGTERM, by pid) before anything else is timed.
    drop(libvirt.take());
    print_starts(&starts, lv_skip.as_deref(), lv_ready);

    // Save / restore and migration need the driver's command line.
    let mut sr = SaveRestore::default();
    let mut migration: Result<Migrations, String> = Err("not measured".into());
    if !argv.is_empty() {
        if let Err(e) = measure_save_restore(
            &client,
            &guest,
            &argv,
            work.path(),
            &work.path().join("vw/root"),
            &mut sr,
        ) {
            println!("!!! FAILED during save/restore: {e}");
        }
        let _ = client.destroy(NAME, false);
        migration = match (&ns_skip, &netns) {
            (None, Some(ns)) => measure_migrations(
                &bins,
                &guest,
                &argv,
                work.path(),
                bins.ip.as_deref().expect("ip"),
                &ns.name,
            ),
            (Some(why), _) => Err(format!("SKIPPED: {why}")),
            _ => Err("SKIPPED: no network namespace".into()),
        };
    }
    print_save_restore(&sr, &migration);
    println!(
        "(the QEMU section took {:.1} s)",
        section.elapsed().as_secs_f64()
    );
    drop(client);
    drop(vw);
    drop(netns);
}

fn runs() -> usize {
    env_usize("VIRTWASM_BENCH_QEMU_RUNS", N).max(1)
}

/// Runs before every timed QEMU start (start, restore): the bare command line started,
/// continued and killed, untimed, then a [`SETTLE`] pause.
///
/// Why: on this kind of machine (a VM whose free memory goes back to its host: virtio-balloon
/// free page reporting, DAMON) a QEMU start after a second or more without one costs 100-150
/// ms more, and a QEMU start right after another does not. Without the primer that cost falls
/// on whichever subject follows libvirt's `virsh destroy` (1.2-1.8 s here) and decides the
/// comparison; with it, every subject starts from the same state.
struct Primer {
    argv: Vec<String>,
    monitor: PathBuf,
    log: PathBuf,
}

impl Primer {
    fn new(argv: &[String], work: &Path) -> Primer {
        Primer {
            argv: rewrite(argv, &pairs(work, "primer")),
            monitor: work.join("primer.monitor"),
            log: work.join("primer-qemu.log"),
        }
    }

    fn run(&self) -> Result<(), String> {
        let mut q = RawQemu::spawn(&self.argv, &self.monitor, &self.log, None)?;
        q.qmp.execute("cont", None)?;
        drop(q);
        std::thread::sleep(SETTLE);
        Ok(())
    }
}

/// The subjects of the start comparison.
#[derive(Clone, Copy, PartialEq)]
enum Subject {
    Api,
    Bare,
    Cli,
    Virsh,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Api => "api",
            Subject::Bare => "bare",
            Subject::Cli => "cli",
            Subject::Virsh => "virsh",
        }
    }
}

/// One warm-up round (the API first: its QEMU gives the bare script its command line), then
/// [`N`] rounds, the API and the bare script in alternating order (the CLI and virsh in
/// every [`SLOW_EVERY`]th); every timed start after the [`Primer`].
#[allow(clippy::too_many_arguments)]
fn measure_starts(
    client: &Client,
    bins: &Binaries,
    uri: &str,
    env: &[(String, String)],
    work: &Path,
    argv: &mut Vec<String>,
    libvirt: Option<&Libvirt>,
    out: &mut Starts,
) -> Result<(), String> {
    let bare_monitor = work.join("bare.monitor");
    let bare_console = work.join("bare.console");
    let bare_log = work.join("bare-qemu.log");
    let cli_args = ["-c", uri, "start", NAME];
    let mut subjects = vec![Subject::Api, Subject::Bare, Subject::Cli];
    if libvirt.is_some() {
        subjects.push(Subject::Virsh);
    }
    let mut previous = "-";
    let mut primer: Option<Primer> = None;
    for i in 0..=runs() {
        let keep = i > 0;
        // The API and the bare script swap places every round, so neither always follows
        // the same subject (virsh's destroy, a CLI process) and the round's pair shares
        // whatever the machine was doing then. The warm-up round keeps the API first: its
        // QEMU gives the bare script its command line.
        let mut order = subjects.clone();
        if i != 0 && i % SLOW_EVERY != 1 {
            order.retain(|s| matches!(s, Subject::Api | Subject::Bare));
        }
        if i % 2 == 0 && keep {
            order.swap(0, 1);
        }
        for &subject in &order {
            match &primer {
                Some(p) => p.run()?,
                None => std::thread::sleep(SETTLE),
            }
            let took = match subject {
                // virtwasm through the API, in this process.
                Subject::Api => {
                    let t = Instant::now();
                    client
                        .start(NAME, false)
                        .map_err(|e| format!("virtwasm start: {e}"))?;
                    let took = t.elapsed();
                    if primer.is_none() {
                        let driver = driver_cmdline()?;
                        let monitor = monitor_path(&driver)
                            .ok_or("no monitor on the driver's command line")?;
                        *argv = rewrite(
                            &driver,
                            &[
                                (monitor, bare_monitor.display().to_string()),
                                (
                                    work.join("vw.console").display().to_string(),
                                    bare_console.display().to_string(),
                                ),
                            ],
                        );
                        primer = Some(Primer::new(argv, work));
                    }
                    let t = Instant::now();
                    client
                        .destroy(NAME, false)
                        .map_err(|e| format!("virtwasm destroy: {e}"))?;
                    if keep {
                        out.api_destroy.push(t.elapsed());
                    }
                    took
                }
                // The bare script: the same QEMU, monitor, capabilities, cont.
                Subject::Bare => {
                    let t = Instant::now();
                    let mut q = RawQemu::spawn(argv, &bare_monitor, &bare_log, None)?;
                    q.qmp.execute("cont", None)?;
                    t.elapsed()
                }
                // virtwasm's CLI, a process.
                Subject::Cli => {
                    let took = timed_process(&bins.virtwasm, &cli_args, env)?;
                    client
                        .destroy(NAME, false)
                        .map_err(|e| format!("virtwasm destroy: {e}"))?;
                    took
                }
                // virsh on libvirtd.
                Subject::Virsh => {
                    let l = libvirt.expect("libvirtd");
                    let uri = l.uri.as_str();
                    let took = timed_process(&l.virsh, &["-c", uri, "start", NAME], env)?;
                    let destroy = timed_process(&l.virsh, &["-c", uri, "destroy", NAME], env)?;
                    if keep {
                        out.virsh_destroy.push(destroy);
                    }
                    took
                }
            };
            if keep {
                let v = match subject {
                    Subject::Api => &mut out.api,
                    Subject::Bare => &mut out.bare,
                    Subject::Cli => &mut out.cli,
                    Subject::Virsh => &mut out.virsh,
                };
                v.push(took);
                out.order.push((subject.name(), previous, took));
            }
            previous = subject.name();
        }
    }
    Ok(())
}

fn print_starts(s: &Starts, lv_skip: Option<&str>, lv_ready: Option<(Duration, Duration)>) {
    println!(
        "start to QMP `running`: median (and min) of {} (API, bare script) and {} (CLI, virsh) after one warm-up each, subjects interleaved, each timed start after an untimed primer start ({SETTLE:?} pause):",
        s.api.len(),
        s.cli.len()
    );
    if s.bare.is_empty() {
        return;
    }
    if std::env::var_os("VIRTWASM_BENCH_SAMPLES").is_some() {
        let all: Vec<String> = s
            .order
            .iter()
            .map(|(what, after, d)| format!("{what} (after {after}) {}", fmt(*d)))
            .collect();
        println!("  samples in order: {}", all.join(", "));
    }
    let bare = median(s.bare.clone());
    let virsh = (!s.virsh.is_empty()).then(|| median(s.virsh.clone()));
    let ratio = |a: Duration, b: Option<Duration>| match b {
        Some(b) => format!("{:>7.2}", a.as_secs_f64() / b.as_secs_f64()),
        None => format!("{:>7}", "-"),
    };
    let min = |v: &[Duration]| v.iter().min().copied().map(fmt).unwrap_or_default();
    println!(
        "{:<58} {:>10} {:>10} {:>7} {:>7}",
        "", "median", "min", "/ bare", "/ virsh"
    );
    let row = |label: &str, v: &[Duration], goal: &str| {
        if v.is_empty() {
            println!("{label:<58} {:>10}", "SKIPPED");
            return;
        }
        let d = median(v.to_vec());
        println!(
            "{label:<58} {:>10} {:>10} {} {}{goal}",
            fmt(d),
            min(v),
            ratio(d, Some(bare)),
            ratio(d, virsh)
        );
    };
    row(
        "bare script: spawn QEMU, QMP caps, cont, answer",
        &s.bare,
        "",
    );
    row(
        "virtwasm start, API (in-process client -> virtwasmd)",
        &s.api,
        "   (goal: / virsh <= 0.3)",
    );
    // The goal's ratio: each round's API start over the same round's bare start, the two
    // run back to back, so a slow stretch of this shared machine weighs on both.
    let mut paired: Vec<f64> = s
        .api
        .iter()
        .zip(&s.bare)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    if !paired.is_empty() {
        paired.sort_by(f64::total_cmp);
        let mid = paired[paired.len() / 2];
        println!(
            "{:<58} {:>10.2} {:>10.2} {:>7}   (goal: <= 1.10)",
            "  API / bare, the same round's pair (median, min)", mid, paired[0], ""
        );
    }
    row(
        "virtwasm -c qemu+unix:///system start (process)",
        &s.cli,
        "",
    );
    row(
        "virsh -c qemu+unix:///system start (process), libvirtd",
        &s.virsh,
        "",
    );
    if !s.api_destroy.is_empty() {
        let vd = (!s.virsh_destroy.is_empty()).then(|| median(s.virsh_destroy.clone()));
        let ad = median(s.api_destroy.clone());
        println!(
            "{:<58} {:>10} {:>10} {:>7} {}",
            "destroy after it: virtwasm API / virsh (process)",
            fmt(ad),
            vd.map(fmt).unwrap_or_else(|| "SKIPPED".into()),
            "",
            ratio(ad, vd),
        );
    }
    if let Some((ready, define)) = lv_ready {
        println!(
            "  (libvirtd in its namespace: spawn to its test driver's first answer {}, then its QEMU driver's first call (`virsh define`) {};",
            fmt(ready),
            fmt(define)
        );
        println!(
            "   its qemu.conf: QEMU as root, no security driver, no namespaces, no cgroups, stdio_handler = \"file\" so no virtlogd; the XML adds <controller type='usb' model='none'/> and <memballoon model='none'/>)"
        );
    }
    println!(
        "  (the bare script polls the monitor socket every 1 ms, as virtwasm's host does for its driver; the process rows include process start and connection)"
    );
    if let Some(why) = lv_skip {
        println!("!!! SKIPPED the libvirtd numbers: {why}");
    }
}

/// Boots both guests, then [`ROUNDS`] rounds of: virtwasm save, raw save, virtwasm restore,
/// raw restore; then three raw saves (and untimed restores) with `max-bandwidth` raised.
fn measure_save_restore(
    client: &Client,
    guest: &Guest,
    argv: &[String],
    work: &Path,
    vw_root: &Path,
    out: &mut SaveRestore,
) -> Result<(), String> {
    let vw_console = work.join("vw.console");
    let raw_console = work.join("raw.console");
    let raw_monitor = work.join("raw.monitor");
    let raw_log = work.join("raw-qemu.log");
    // Built from the bare script's command line, before that becomes the raw guest's.
    let primer = Primer::new(argv, work);
    let argv = rewrite(argv, &pairs(work, "raw"));
    let mut incoming = argv.clone();
    incoming.extend(["-incoming".into(), "defer".into()]);
    // The daemon lets clients name save images under its images directory only.
    let images = vw_root.join("images");
    std::fs::create_dir_all(&images).map_err(|e| format!("create {}: {e}", images.display()))?;
    let vw_image = images.join("vwbench.save");
    let raw_image = work.join("raw.save");

    // Both guests boot at once, to their userspace.
    let t = Instant::now();
    client
        .start(NAME, false)
        .map_err(|e| format!("virtwasm start: {e}"))?;
    let mut raw = RawQemu::spawn(&argv, &raw_monitor, &raw_log, None)?;
    raw.qmp.execute("cont", None)?;
    wait_consoles(&[&vw_console, &raw_console], &guest.ready, BOOT_TIMEOUT)?;
    let booted = t.elapsed();
    out.default_bandwidth = bandwidth(&mut raw.qmp)?;

    let raw_save = |mut raw: RawQemu, limit: Option<u64>| -> Result<Duration, String> {
        let _ = std::fs::remove_file(&raw_image);
        if let Some(b) = limit {
            raw.qmp.execute(
                "migrate-set-parameters",
                Some(json!({ "max-bandwidth": b })),
            )?;
        }
        let t = Instant::now();
        raw.qmp.execute("stop", None)?;
        raw.qmp.execute(
            "migrate",
            Some(json!({ "uri": format!("exec:cat > {}", sh_quote(&raw_image)) })),
        )?;
        raw.qmp.wait_migration()?;
        raw.quit()?;
        Ok(t.elapsed())
    };
    let raw_restore = || -> Result<(Duration, RawQemu), String> {
        let t = Instant::now();
        let mut raw = RawQemu::spawn(&incoming, &raw_monitor, &raw_log, None)?;
        raw.qmp.execute(
            "migrate-incoming",
            Some(json!({ "uri": format!("exec:cat {}", sh_quote(&raw_image)) })),
        )?;
        raw.qmp.wait_migration()?;
        raw.qmp.execute("cont", None)?;
        Ok((t.elapsed(), raw))
    };

    for _ in 0..ROUNDS {
        std::thread::sleep(SETTLE);
        let _ = std::fs::remove_file(&vw_image);
        let t = Instant::now();
        client
            .save(NAME, &vw_image)
            .map_err(|e| format!("virtwasm save: {e}"))?;
        out.vw_save.push(t.elapsed());
        out.vw_size = std::fs::metadata(&vw_image).map_or(0, |m| m.len());

        std::thread::sleep(SETTLE);
        out.raw_save.push(raw_save(raw, None)?);
        out.raw_size = std::fs::metadata(&raw_image).map_or(0, |m| m.len());

        primer.run()?;
        let t = Instant::now();
        client
            .restore(&vw_image, false)
            .map_err(|e| format!("virtwasm restore: {e}"))?;
        out.vw_restore.push(t.elapsed());

        primer.run()?;
        let (took, q) = raw_restore()?;
        out.raw_restore.push(took);
        raw = q;
    }
    for _ in 0..3 {
        std::thread::sleep(SETTLE);
        out.raw_save_fast.push(raw_save(raw, Some(UNTHROTTLED))?);
        raw = raw_restore()?.1;
    }

    // Both guests go on counting (a restored QEMU truncated its console file: what is there
    // came after the restore), without booting again.
    let continued = |p: &Path| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = console_text(p);
            if text.contains("counter ") {
                return !text.contains(&guest.ready);
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    out.vw_continued = Some(continued(&vw_console));
    out.raw_continued = Some(continued(&raw_console));
    println!(
        "\nsave / restore: both guests reached their userspace ({}) {:.1} s after their start",
        guest.ready,
        booted.as_secs_f64()
    );
    Ok(())
}

/// QEMU's current `max-bandwidth`, bytes/s.
fn bandwidth(q: &mut Qmp) -> Result<Option<u64>, String> {
    Ok(q.execute("query-migrate-parameters", None)?
        .get("max-bandwidth")
        .and_then(Value::as_u64))
}

/// The rewrites that give a copy of the bare script's command line its own monitor socket
/// and console file, named after `tag`.
fn pairs(work: &Path, tag: &str) -> Vec<(String, String)> {
    vec![
        (
            work.join("bare.monitor").display().to_string(),
            work.join(format!("{tag}.monitor")).display().to_string(),
        ),
        (
            work.join("bare.console").display().to_string(),
            work.join(format!("{tag}.console")).display().to_string(),
        ),
    ]
}

/// Live migration of the running guest, everything inside the namespace `ns` (its own
/// loopback): virtwasm between two more `virtwasmd` started in it (`migrate` through the API,
/// back and forth), then raw QEMU: a source restored from the raw image migrating to a fresh
/// destination started with `-incoming tcp:127.0.0.1:PORT`, once at QEMU's default
/// `max-bandwidth`, then back and forth with it raised as virtwasm's driver does. Every timed
/// migration starts after the [`Primer`].
fn measure_migrations(
    bins: &Binaries,
    guest: &Guest,
    argv: &[String],
    work: &Path,
    ip: &Path,
    ns: &str,
) -> Result<Migrations, String> {
    let primer = Primer::new(argv, work);
    let virtwasm = measure_vw_migration(bins, guest, work, ip, ns, &primer);
    let (raw_default, raw) = measure_raw_migration(argv, work, ip, ns, &primer)?;
    Ok(Migrations {
        virtwasm,
        raw,
        raw_default: Some(raw_default),
    })
}

fn measure_vw_migration(
    bins: &Binaries,
    guest: &Guest,
    work: &Path,
    ip: &Path,
    ns: &str,
    primer: &Primer,
) -> Result<Vec<Duration>, String> {
    let config = files_config(work, guest);
    let (a, _) = Virtwasmd::start_in(
        &bins.virtwasmd,
        &work.join("ma"),
        Some(&config),
        Some((ip, ns)),
    )?;
    let (b, _) = Virtwasmd::start_in(
        &bins.virtwasmd,
        &work.join("mb"),
        Some(&config),
        Some((ip, ns)),
    )?;
    let uri = |d: &Virtwasmd| format!("qemu+unix:///system?socket={}", d.socket.display());
    let (ua, ub) = (uri(&a), uri(&b));
    let connect = |u: &str| {
        Client::connect(u, false, || {
            Err(virtwasm_host::Error::failed(
                "the bench reaches the daemon only",
            ))
        })
        .map_err(|e| format!("connect to {u}: {e}"))
    };
    let (ca, cb) = (connect(&ua)?, connect(&ub)?);
    let console = work.join("mig.console");
    let result = (|| {
        ca.define_xml(&virtwasm_xml(guest, &console), false)
            .map_err(|e| format!("define: {e}"))?;
        // Both daemons load (compile) their QEMU driver before anything is timed.
        cb.list_domains().map_err(|e| format!("list: {e}"))?;
        ca.start(NAME, false).map_err(|e| format!("start: {e}"))?;
        wait_consoles(&[&console], &guest.ready, BOOT_TIMEOUT)?;
        let mut times = Vec::new();
        for i in 0..=MIGRATIONS {
            let (from, to) = if i % 2 == 0 { (&ca, &ub) } else { (&cb, &ua) };
            primer.run()?;
            let t = Instant::now();
            from.migrate(NAME, to, false, None)
                .map_err(|e| format!("virtwasm migrate to {to}: {e}"))?;
            if i > 0 {
                times.push(t.elapsed());
            }
        }
        Ok(times)
    })();
    let _ = ca.destroy(NAME, false);
    let _ = cb.destroy(NAME, false);
    result
}

/// The raw migrations: `(at QEMU's default max-bandwidth, [raised; MIGRATIONS])`.
fn measure_raw_migration(
    argv: &[String],
    work: &Path,
    ip: &Path,
    ns: &str,
    primer: &Primer,
) -> Result<(Migration, Vec<Migration>), String> {
    let image = work.join("raw.save");
    if !image.exists() {
        return Err("no raw save image to start the source from".into());
    }
    let log = work.join("migration-qemu.log");
    let target = format!("tcp:127.0.0.1:{MIGRATION_PORT}");
    let spawn = |tag: &str, incoming: &str| {
        let mut a = rewrite(argv, &pairs(work, tag));
        a.extend(["-incoming".into(), incoming.into()]);
        RawQemu::spawn(
            &a,
            &work.join(format!("{tag}.monitor")),
            &log,
            Some((ip, ns)),
        )
    };

    let mut src = spawn("src0", "defer")?;
    src.qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("exec:cat {}", sh_quote(&image)) })),
    )?;
    src.qmp.wait_migration()?;
    src.qmp.execute("cont", None)?;
    std::thread::sleep(Duration::from_secs(1));

    // One migration: a new destination (tagged by parity, so the monitor and console of the
    // QEMU still running are never reused), the stream, the destination resumed, the source
    // ended. Returns the destination, now the source.
    let migrate_once =
        |mut src: RawQemu, i: usize, limit: Option<u64>| -> Result<(Migration, RawQemu), String> {
            if let Some(b) = limit {
                src.qmp.execute(
                    "migrate-set-parameters",
                    Some(json!({ "max-bandwidth": b })),
                )?;
            }
            let bandwidth = bandwidth(&mut src.qmp)?;
            primer.run()?;
            let t = Instant::now();
            let mut dst = spawn(&format!("dst{}", i % 2), &target)?;
            let m = Instant::now();
            src.qmp.execute("migrate", Some(json!({ "uri": target })))?;
            let info = src.qmp.wait_migration()?;
            let wall = m.elapsed();
            dst.qmp.wait_migration()?;
            dst.qmp.execute("cont", None)?;
            src.quit()?;
            let whole = t.elapsed();
            let status = dst.qmp.execute("query-status", None)?;
            if status["status"].as_str() != Some("running") {
                return Err(format!("the destination is not running: {status}"));
            }
            Ok((
                Migration {
                    bandwidth,
                    whole,
                    wall,
                    total_ms: info["total-time"].as_u64(),
                    downtime_ms: info["downtime"].as_u64(),
                    transferred: info["ram"]["transferred"].as_u64(),
                },
                dst,
            ))
        };

    let (default, next) = migrate_once(src, 0, None)?;
    src = next;
    let mut raised = Vec::new();
    for i in 1..=MIGRATIONS + 1 {
        let (m, next) = migrate_once(src, i, Some(UNTHROTTLED))?;
        src = next;
        if i > 1 {
            raised.push(m);
        }
    }
    drop(src);
    Ok((default, raised))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn rate(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) if b >= UNTHROTTLED => "raised to 1 TiB/s".into(),
        Some(b) => format!("{:.0} MiB/s", b as f64 / (1 << 20) as f64),
        None => "?".into(),
    }
}

fn print_save_restore(s: &SaveRestore, migration: &Result<Migrations, String>) {
    println!(
        "save / restore of the running guest: median (and min) of {} rounds, interleaved (virtwasm: API, image under the daemon's root; raw: QMP by hand):",
        s.vw_save.len()
    );
    println!(
        "{:<50} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "", "virtwasm", "(min)", "raw QEMU", "(min)", "ratio"
    );
    let min = |v: &[Duration]| v.iter().min().copied().map(fmt).unwrap_or_default();
    let row = |label: &str, a: &[Duration], b: &[Duration]| {
        if a.is_empty() || b.is_empty() {
            println!("{label:<50} {:>10} {:>10} {:>10}", "-", "", "-");
            return;
        }
        let (ma, mb) = (median(a.to_vec()), median(b.to_vec()));
        println!(
            "{label:<50} {:>10} {:>10} {:>10} {:>10} {:>7.2}",
            fmt(ma),
            min(a),
            fmt(mb),
            min(b),
            ma.as_secs_f64() / mb.as_secs_f64()
        );
    };
    row(
        "save (running -> image written, QEMU gone)",
        &s.vw_save,
        &s.raw_save,
    );
    row(
        "restore (image -> a new QEMU running)",
        &s.vw_restore,
        &s.raw_restore,
    );
    if !s.raw_save_fast.is_empty() {
        let fast = median(s.raw_save_fast.clone());
        println!(
            "{:<50} {:>10} {:>10} {:>10} {:>10} {:>7}",
            "  raw save, max-bandwidth raised (libvirt's way)",
            "",
            "",
            fmt(fast),
            min(&s.raw_save_fast),
            s.vw_save
                .first()
                .map(|_| format!(
                    "{:.2}",
                    median(s.vw_save.clone()).as_secs_f64() / fast.as_secs_f64()
                ))
                .unwrap_or_default()
        );
    }
    if s.vw_size > 0 {
        println!(
            "{:<50} {:>10} {:>10} {:>10} {:>10} {:>7.2}",
            "image size",
            mib(s.vw_size),
            "",
            mib(s.raw_size),
            "",
            s.vw_size as f64 / s.raw_size.max(1) as f64
        );
    }
    let yes = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "NO (!!!)",
        None => "-",
    };
    if s.vw_continued.is_some() {
        println!(
            "{:<50} {:>10} {:>10} {:>10}",
            "guest counts on after the last restore, no reboot",
            yes(s.vw_continued),
            "",
            yes(s.raw_continued)
        );
    }
    println!(
        "  (raw save = stop, migrate exec:cat > FILE, query-migrate polled every 2 ms until completed, quit, QEMU's exit; raw restore = spawn"
    );
    println!(
        "   with -incoming defer, monitor, migrate-incoming exec:cat FILE, polled until completed, cont. QEMU's default max-bandwidth: {};",
        rate(s.default_bandwidth)
    );
    println!(
        "   virtwasm's save keeps it, so do the raw rows; the \"raised\" row shows what that limit costs)"
    );
    print_migrations(migration);
}

fn print_migrations(migration: &Result<Migrations, String>) {
    println!(
        "live migration of the running guest over loopback TCP, all in the section's own network namespace: median (and min) of {MIGRATIONS}, back and forth, after one untimed:"
    );
    let m = match migration {
        Ok(m) => m,
        Err(e) => {
            println!("!!! {e}");
            return;
        }
    };
    println!(
        "{:<50} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "", "virtwasm", "(min)", "raw QEMU", "(min)", "ratio"
    );
    let min = |v: &[Duration]| v.iter().min().copied().map(fmt).unwrap_or_default();
    let whole: Vec<Duration> = m.raw.iter().map(|r| r.whole).collect();
    let wall: Vec<Duration> = m.raw.iter().map(|r| r.wall).collect();
    let label = "migrate (destination started .. source gone)";
    match (&m.virtwasm, whole.is_empty()) {
        (Ok(v), false) if !v.is_empty() => {
            let (a, b) = (median(v.clone()), median(whole.clone()));
            println!(
                "{label:<50} {:>10} {:>10} {:>10} {:>10} {:>7.2}",
                fmt(a),
                min(v),
                fmt(b),
                min(&whole),
                a.as_secs_f64() / b.as_secs_f64()
            );
        }
        (Err(e), false) => {
            println!(
                "{label:<50} {:>10} {:>10} {:>10} {:>10}",
                "FAILED",
                "",
                fmt(median(whole.clone())),
                min(&whole)
            );
            println!("!!! virtwasm's migration: {e}");
        }
        _ => println!("{label:<50} {:>10}", "-"),
    }
    if !wall.is_empty() {
        println!(
            "{:<50} {:>10} {:>10} {:>10} {:>10}",
            "  raw: `migrate` to completed only",
            "",
            "",
            fmt(median(wall)),
            ""
        );
    }
    for r in m.raw.iter().take(1).chain(m.raw_default.iter()) {
        println!(
            "  raw at max-bandwidth {:<18} whole {:>10}, migrate to completed {:>10}   (QEMU: total-time {} ms, downtime {} ms, {} sent)",
            rate(r.bandwidth),
            fmt(r.whole),
            fmt(r.wall),
            r.total_ms.map_or("?".into(), |v| v.to_string()),
            r.downtime_ms.map_or("?".into(), |v| v.to_string()),
            r.transferred.map_or("?".into(), mib),
        );
    }
    println!(
        "  (virtwasm: `migrate` through the API between two virtwasmd (--live --p2p semantics; the destination prepares a QEMU on -incoming defer, the source's host polls the"
    );
    println!(
        "   progress every 10 ms for a second, then every 100 ms); raw: spawn the destination with -incoming tcp:127.0.0.1:PORT, migrate, query-migrate polled every 2 ms, cont there, quit here)"
    );
}
