//! The daemon section: `virtwasmd` next to `libvirtd`, both serving their test driver
//! (`test:///default`) over a unix socket, measured in the same run.
//!
//! What it measures, in order:
//!
//! 1. Each daemon's time from spawn to its first successful answer, twice: on fresh state
//!    directories (virtwasmd compiles its test plugin into an empty cache; libvirtd creates
//!    its state) and on a second start over the state the first left.
//! 2. One client over one connection listing domains: the CLI-to-CLI comparison, `virtwasm
//!    -c test+unix:///default?socket=… "list; …; list"` against `virsh` doing the same on
//!    `libvirtd` (one process, one connection, 500 calls; per call = total / 500), and the
//!    raw HTTP/1.1 keep-alive client below against `virtwasmd` alone, with two floors under
//!    its number: `GET /v1` (answered without a host call) and the same list in-process.
//! 3. Both daemons' resident memory after those runs.
//! 4. A bounded load test on `virtwasmd`: `VIRTWASM_BENCH_CLIENTS` clients (100) each making
//!    `VIRTWASM_BENCH_CALLS` calls (1,000) on its own keep-alive connection; errors, p50 and
//!    p99 latency and the total rate. If any call failed, the same load runs again on a
//!    daemon whose `max_requests_per_client` admits every client, to tell the daemon's
//!    capacity apart from that limit.
//!
//! `libvirtd` runs as root inside a network namespace this section creates and removes
//! (`vwbench-PID`), and, in the mount namespace `ip netns exec` gives it, over private
//! bind mounts of `/run`, `/var/lib`, `/var/cache`, `/var/log` and `/etc/libvirt` (plus an
//! `/etc/passwd` with the `libvirt-qemu` user Debian's QEMU driver insists on), so neither
//! the host's network nor its files see it. Without root, `ip`, `virsh` or `libvirtd` the
//! peer's numbers are reported as SKIPPED.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use virtwasm_api::wire::URI_HEADER;
use virtwasm_host::connect::Dirs;
use virtwasm_host::{Host, HostConfig};

use crate::fmt;

/// The URI both daemons serve in this section.
const URI: &str = "test:///default";
/// `list` calls in one CLI invocation.
const CLI_CALLS: usize = 500;
/// CLI invocations per client (after one warm-up each); the median is reported.
const CLI_RUNS: usize = 5;
/// Calls of the single raw client (after as many warm-up calls again).
const RAW_CALLS: usize = 5_000;
/// How long a daemon may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts libvirtd inside the network namespace: private bind mounts over the directories
/// a root libvirtd writes, the `libvirt-qemu` user its QEMU driver needs to initialize,
/// then libvirtd itself (exec'd, so the pid `ip` was spawned with is libvirtd's).
/// `$1` is the directory holding `libvirtd.conf` and the mount sources.
const LIBVIRTD_WRAPPER: &str = r#"set -e
d="$1"
cp /etc/passwd "$d/passwd"
cp /etc/group "$d/group"
grep -q '^libvirt-qemu:' "$d/passwd" || echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/nonexistent:/usr/sbin/nologin' >> "$d/passwd"
grep -q '^libvirt-qemu:' "$d/group" || echo 'libvirt-qemu:x:64055:' >> "$d/group"
grep -q '^kvm:' "$d/group" || echo 'kvm:x:64056:' >> "$d/group"
mount --bind "$d/passwd" /etc/passwd
mount --bind "$d/group" /etc/group
for p in run var/lib var/cache var/log etc/libvirt; do
    mkdir -p "$d/fs/$p"
    mount --bind "$d/fs/$p" "/$p"
done
exec /usr/sbin/libvirtd -f "$d/libvirtd.conf" -p "$d/libvirtd.pid"
"#;

/// Runs the daemon section and prints its tables.
pub fn run() {
    println!(
        "\n== daemons over unix sockets: virtwasmd vs libvirtd, {URI} (`cargo run --release -p virtwasm-bench`) =="
    );
    let bins = match Binaries::find() {
        Ok(b) => b,
        Err(e) => {
            println!("!!! SKIPPED the daemon section: {e}");
            return;
        }
    };
    let work = tempfile::Builder::new()
        .prefix("vwbench-daemon")
        .tempdir()
        .expect("temp dir");
    let env = client_env(work.path());

    // 1. Spawn to first answer: fresh state, then a second start over the first's state.
    let vw_dir = work.path().join("virtwasmd");
    let (cold, vw_cold) = match Virtwasmd::start(&bins.virtwasmd, &vw_dir, None) {
        Ok(v) => v,
        Err(e) => {
            println!("!!! FAILED: virtwasmd did not answer: {e}");
            return;
        }
    };
    drop(cold);
    let (vw, vw_warm) = match Virtwasmd::start(&bins.virtwasmd, &vw_dir, None) {
        Ok(v) => v,
        Err(e) => {
            println!("!!! FAILED: virtwasmd did not answer on its second start: {e}");
            return;
        }
    };

    let mut peer = Peer::skipped(bins.peer_missing());
    // Declared before the libvirtd guards so that it is dropped (removed) after them.
    let mut netns: Option<Netns> = None;
    let mut lv: Option<Libvirtd> = None;
    if peer.skipped.is_none() {
        match start_libvirtd_twice(&bins, work.path(), &env) {
            Ok((ns, daemon, cold, warm)) => {
                netns = Some(ns);
                lv = Some(daemon);
                peer.first_cold = Some(cold);
                peer.first_warm = Some(warm);
            }
            Err(e) => peer.skipped = Some(e),
        }
    }

    // 2. One client, one connection.
    let raw = raw_single_client(&vw.socket, "/v1/domains");
    let raw_info = raw_single_client(&vw.socket, "/v1");
    let floor = in_process_list(work.path());
    let vw_uri = format!("test+unix:///default?socket={}", vw.socket.display());
    let vw_script = list_script(CLI_CALLS);
    let vw_args = ["-c", vw_uri.as_str(), vw_script.as_str()];
    let virsh_uri = lv
        .as_ref()
        .map(|l| format!("test+unix:///default?socket={}", l.socket.display()));
    let virsh_args = virsh_uri
        .as_ref()
        .map(|u| ["-c".to_string(), u.clone(), vw_script.clone()]);
    let one_vw_args = ["-c", vw_uri.as_str(), "list"];
    // One warm-up each, then alternate so both see the same noise.
    let mut vw_cli = Vec::new();
    let mut virsh_cli = Vec::new();
    let mut vw_one = Vec::new();
    let mut virsh_one = Vec::new();
    for i in 0..=CLI_RUNS {
        let t = run_cli(&bins.virtwasm, &vw_args, &env, CLI_CALLS);
        let o = run_cli(&bins.virtwasm, &one_vw_args, &env, 1);
        if i > 0 {
            vw_cli.push(t);
            vw_one.push(o);
        }
        if let (Some(args), Some(virsh)) = (&virsh_args, &bins.virsh) {
            let t = run_cli(virsh, args, &env, CLI_CALLS);
            let one = [args[0].as_str(), args[1].as_str(), "list"];
            let o = run_cli(virsh, &one, &env, 1);
            if i > 0 {
                virsh_cli.push(t);
                virsh_one.push(o);
            }
        }
    }
    let vw_cli = median(vw_cli);
    let vw_one = median(vw_one);
    if !virsh_cli.is_empty() {
        peer.cli_total = Some(median(virsh_cli));
        peer.one_list = Some(median(virsh_one));
    }

    // 3. Memory after the throughput runs.
    let vw_rss = rss_kib(vw.pid(), "virtwasmd");
    peer.rss = lv.as_ref().and_then(|l| rss_kib(l.pid(), "libvirtd"));

    print_table(vw_cold, vw_warm, vw_one, vw_cli, vw_rss, &peer);
    print_raw(&raw, &raw_info, &floor);

    // 4. Load.
    let clients = env_usize("VIRTWASM_BENCH_CLIENTS", 100);
    let calls = env_usize("VIRTWASM_BENCH_CALLS", 1000);
    println!(
        "\n== load: {clients} clients x {calls} GET /v1/domains, each on its own keep-alive connection (VIRTWASM_BENCH_CLIENTS / VIRTWASM_BENCH_CALLS) =="
    );
    let errors = load_test(&vw.socket, clients, calls, "default config");
    let after = rss_kib(vw.pid(), "virtwasmd");
    let hwm = hwm_kib(vw.pid());
    println!(
        "virtwasmd memory after the load test: VmRSS {}   VmHWM (peak) {}",
        kib(after),
        kib(hwm)
    );
    if errors > 0 {
        // Tell the daemon's capacity apart from its per-identity limit: the same load on a
        // daemon whose limit lets every client have a request in flight.
        let limit = clients.max(64) * 2;
        let config = format!("[limits]\nmax_requests_per_client = {limit}\n");
        match Virtwasmd::start(
            &bins.virtwasmd,
            &work.path().join("virtwasmd-lifted"),
            Some(&config),
        ) {
            Ok((lifted, _)) => {
                load_test(
                    &lifted.socket,
                    clients,
                    calls,
                    &format!("diagnostic re-run, max_requests_per_client = {limit}"),
                );
            }
            Err(e) => println!("!!! the diagnostic re-run could not start virtwasmd: {e}"),
        }
    }

    drop(lv);
    drop(netns);
    drop(vw);
}

/// The programs this section runs.
pub(crate) struct Binaries {
    pub(crate) virtwasmd: PathBuf,
    pub(crate) virtwasm: PathBuf,
    pub(crate) virsh: Option<PathBuf>,
    pub(crate) libvirtd: Option<PathBuf>,
    pub(crate) ip: Option<PathBuf>,
}

impl Binaries {
    pub(crate) fn find() -> Result<Binaries, String> {
        let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let beside = |name: &str| -> Result<PathBuf, String> {
            let p = me.with_file_name(name);
            if p.exists() {
                Ok(p)
            } else {
                Err(format!(
                    "{} is missing: run `cargo build --release -p virtwasm-cli` first",
                    p.display()
                ))
            }
        };
        let first = |names: &[&str]| names.iter().map(PathBuf::from).find(|p| p.exists());
        Ok(Binaries {
            virtwasmd: beside("virtwasmd")?,
            virtwasm: beside("virtwasm")?,
            virsh: first(&["/usr/bin/virsh", "/usr/local/bin/virsh"]),
            libvirtd: first(&["/usr/sbin/libvirtd", "/usr/local/sbin/libvirtd"]),
            ip: first(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]),
        })
    }

    /// Why libvirtd cannot be measured here, if it cannot.
    pub(crate) fn peer_missing(&self) -> Option<String> {
        if self.virsh.is_none() {
            return Some("virsh not found (Debian's libvirt-clients)".into());
        }
        if self.libvirtd.as_deref() != Some(Path::new("/usr/sbin/libvirtd")) {
            return Some("/usr/sbin/libvirtd not found (Debian's libvirt-daemon)".into());
        }
        if self.ip.is_none() {
            return Some("`ip` not found (iproute2): no network namespace for libvirtd".into());
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root: libvirtd needs a network namespace, which needs root".into());
        }
        None
    }
}

/// The environment every program of this section gets: a private home and caches.
pub(crate) fn client_env(work: &Path) -> Vec<(String, String)> {
    let home = work.join("home");
    for d in [".config", ".local/share", ".local/state", ".cache", "run"] {
        std::fs::create_dir_all(home.join(d)).expect("create the private home");
    }
    let p = |sub: &str| home.join(sub).to_string_lossy().into_owned();
    vec![
        ("HOME".into(), p("")),
        ("XDG_CONFIG_HOME".into(), p(".config")),
        ("XDG_DATA_HOME".into(), p(".local/share")),
        ("XDG_STATE_HOME".into(), p(".local/state")),
        ("XDG_CACHE_HOME".into(), p(".cache")),
        ("XDG_RUNTIME_DIR".into(), p("run")),
        (
            "VIRTWASM_CACHE_DIR".into(),
            work.join("plugin-cache").to_string_lossy().into_owned(),
        ),
    ]
}

/// A running `virtwasmd --root DIR`, stopped (SIGTERM) when dropped.
pub(crate) struct Virtwasmd {
    child: Child,
    pub(crate) socket: PathBuf,
}

impl Virtwasmd {
    /// Spawns the daemon over `dir` and waits for its first `GET /v1/domains` to succeed,
    /// polling every millisecond with the raw client; returns it and that time.
    /// `config`, if any, becomes its `virtwasmd.toml`.
    pub(crate) fn start(
        bin: &Path,
        dir: &Path,
        config: Option<&str>,
    ) -> Result<(Virtwasmd, Duration), String> {
        Virtwasmd::start_in(bin, dir, config, None)
    }

    /// [`Virtwasmd::start`], inside the network namespace `netns` (`ip`, name) when given:
    /// `ip netns exec` execs the daemon, so the child's pid is the daemon's, and the QEMUs it
    /// starts are in the namespace too. Its unix socket is reachable from outside.
    pub(crate) fn start_in(
        bin: &Path,
        dir: &Path,
        config: Option<&str>,
        netns: Option<(&Path, &str)>,
    ) -> Result<(Virtwasmd, Duration), String> {
        let root = dir.join("root");
        let etc = root.join("etc/virtwasm");
        std::fs::create_dir_all(&etc).map_err(|e| format!("create {}: {e}", etc.display()))?;
        if let Some(c) = config {
            std::fs::write(etc.join("virtwasmd.toml"), c)
                .map_err(|e| format!("write virtwasmd.toml: {e}"))?;
        }
        let log = dir.join("virtwasmd.log");
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        let env = client_env(dir);
        let t = Instant::now();
        let mut cmd = match netns {
            Some((ip, name)) => {
                let mut c = Command::new(ip);
                c.args(["netns", "exec", name]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("--root")
            .arg(&root)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut daemon = Virtwasmd {
            child,
            socket: root.join("run/virtwasm/virtwasm-sock"),
        };
        let rt = current_thread();
        let mut last = String::new();
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!("virtwasmd exited ({status}): {}", tail(&log)));
            }
            if t.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "no answer within {START_TIMEOUT:?} (last error: {last}); its log: {}",
                    tail(&log)
                ));
            }
            let answer = rt.block_on(async {
                let mut c = Client::connect(&daemon.socket).await?;
                c.list().await
            });
            match answer {
                Ok(body) => {
                    let took = t.elapsed();
                    check_list(&body)?;
                    return Ok((daemon, took));
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Virtwasmd {
    fn drop(&mut self) {
        stop(&mut self.child, "virtwasmd");
    }
}

/// A network namespace this section created, removed when dropped.
pub(crate) struct Netns {
    ip: PathBuf,
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn create(ip: &Path) -> Result<Netns, String> {
        Netns::create_named(ip, format!("vwbench-{}", std::process::id()))
    }

    /// Creates the namespace `name` (which must not exist yet).
    pub(crate) fn create_named(ip: &Path, name: String) -> Result<Netns, String> {
        let out = Command::new(ip)
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("run ip netns add: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip netns add {name}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Netns {
            ip: ip.to_path_buf(),
            name,
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let ok = Command::new(&self.ip)
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "warning: could not remove network namespace {}: run `ip netns del {}`",
                self.name, self.name
            );
        }
    }
}

/// A running `libvirtd` inside the section's network namespace, stopped when dropped.
pub(crate) struct Libvirtd {
    child: Child,
    pub(crate) socket: PathBuf,
}

impl Libvirtd {
    /// Spawns libvirtd over `dir` (its config, sockets and private mounts) and polls `virsh
    /// list` until it exits 0; returns it and the time from spawn to that answer.
    pub(crate) fn start(
        bins: &Binaries,
        ns: &Netns,
        dir: &Path,
        env: &[(String, String)],
    ) -> Result<(Libvirtd, Duration), String> {
        let sockets = dir.join("sock");
        std::fs::create_dir_all(&sockets)
            .map_err(|e| format!("create {}: {e}", sockets.display()))?;
        let conf = format!(
            "unix_sock_dir = \"{}\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
            sockets.display()
        );
        std::fs::write(dir.join("libvirtd.conf"), conf).map_err(|e| format!("write conf: {e}"))?;
        let log = dir.join("libvirtd.log");
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("open {}: {e}", log.display()))?;
        let ip = bins.ip.as_ref().expect("ip");
        let virsh = bins.virsh.as_ref().expect("virsh");
        let socket = sockets.join("libvirt-sock");
        let uri = format!("test+unix:///default?socket={}", socket.display());
        let t = Instant::now();
        let child = Command::new(ip)
            .args(["netns", "exec", &ns.name, "/bin/sh", "-c", LIBVIRTD_WRAPPER])
            .arg("libvirtd-wrapper")
            .arg(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn ip netns exec: {e}"))?;
        let mut daemon = Libvirtd { child, socket };
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!("libvirtd exited ({status}): {}", tail(&log)));
            }
            if t.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "libvirtd gave no answer within {START_TIMEOUT:?}: {}",
                    tail(&log)
                ));
            }
            if daemon.socket.exists() {
                let ok = Command::new(virsh)
                    .args(["-c", &uri, "list"])
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    return Ok((daemon, t.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        stop(&mut self.child, "libvirtd");
    }
}

/// Creates the namespace and starts libvirtd on fresh state, stops it, and starts it again
/// over that state; returns the namespace, the running second daemon and both start times.
fn start_libvirtd_twice(
    bins: &Binaries,
    work: &Path,
    env: &[(String, String)],
) -> Result<(Netns, Libvirtd, Duration, Duration), String> {
    let ns = Netns::create(bins.ip.as_ref().expect("ip"))?;
    let dir = work.join("libvirtd");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let (first, cold) = Libvirtd::start(bins, &ns, &dir, env)?;
    drop(first);
    let (daemon, warm) = Libvirtd::start(bins, &ns, &dir, env)?;
    Ok((ns, daemon, cold, warm))
}

/// Sends SIGTERM to a child this section started and waits for it (SIGKILL after 10 s).
fn stop(child: &mut Child, what: &str) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child,
    // so it cannot have been reused by another process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("warning: {what} (pid {pid}) ignored SIGTERM for 10 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of a log, for error messages.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n    ")
}

/// A keep-alive HTTP/1.1 connection to virtwasmd's unix socket.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
}

impl Client {
    async fn connect(socket: &Path) -> Result<Client, String> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client { sender })
    }

    /// `GET /v1/domains` on the test driver: the body of a 200, or what went wrong.
    async fn list(&mut self) -> Result<Bytes, String> {
        self.get("/v1/domains").await
    }

    /// `GET path` for the test driver: the body of a 200, or what went wrong.
    async fn get(&mut self, path: &str) -> Result<Bytes, String> {
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, "virtwasm")
            .header(URI_HEADER, URI)
            .body(Empty::new())
            .expect("static request");
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if status != hyper::StatusCode::OK {
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(body)
    }

    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// Checks that a list answer is JSON naming the test driver's domain `test`.
fn check_list(body: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the list is not JSON: {e}"))?;
    if v.to_string().contains("\"test\"") {
        Ok(())
    } else {
        Err(format!("the list does not name domain 'test': {v}"))
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The single raw client's results.
struct Raw {
    calls: usize,
    total: Duration,
    p50: Duration,
    p99: Duration,
}

/// One raw client, one connection: `RAW_CALLS` calls of `GET path` after as many warm-up
/// calls.
fn raw_single_client(socket: &Path, path: &str) -> Raw {
    current_thread().block_on(async {
        let mut c = Client::connect(socket).await.expect("connect to virtwasmd");
        for _ in 0..RAW_CALLS {
            c.get(path).await.expect("GET (warm-up)");
        }
        let mut lat = Vec::with_capacity(RAW_CALLS);
        let t = Instant::now();
        for _ in 0..RAW_CALLS {
            let s = Instant::now();
            c.get(path).await.expect("GET");
            lat.push(s.elapsed());
        }
        let total = t.elapsed();
        lat.sort();
        Raw {
            calls: RAW_CALLS,
            total,
            p50: percentile(&lat, 50.0),
            p99: percentile(&lat, 99.0),
        }
    })
}

/// The floor under the daemon: the same list in this process, no socket, no thread hop:
/// `Host::open` + `list_domains` + JSON, as the daemon's handler does per request.
fn in_process_list(work: &Path) -> Raw {
    let bundled = virtwasm_bundle::BUNDLED
        .iter()
        .map(|b| virtwasm_host::BundledPlugin {
            manifest: b.manifest,
            wasm: b.wasm,
            sha256: b.sha256,
        })
        .collect();
    let mut config = HostConfig::for_current_user(bundled);
    config.cache_dir = Some(work.join("in-process-cache"));
    config.plugin_dirs = Vec::new();
    config.system_dirs = Dirs::under(&work.join("in-process"));
    config.session_dirs = config.system_dirs.clone();
    let host = Host::new(config).expect("in-process host");
    let once = || {
        let conn = host.open(URI, false).expect("open test:///default");
        serde_json::to_vec(&conn.list_domains()).expect("JSON")
    };
    check_list(&once()).expect("in-process list");
    for _ in 0..RAW_CALLS {
        once();
    }
    let mut lat = Vec::with_capacity(RAW_CALLS);
    let t = Instant::now();
    for _ in 0..RAW_CALLS {
        let s = Instant::now();
        std::hint::black_box(once());
        lat.push(s.elapsed());
    }
    let total = t.elapsed();
    lat.sort();
    Raw {
        calls: RAW_CALLS,
        total,
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
    }
}

/// `list; list; …` with `n` calls.
fn list_script(n: usize) -> String {
    vec!["list"; n].join("; ")
}

/// Runs a client program once and returns its wall time; panics (with its stderr) if it
/// fails or does not print the test domain `n` times.
fn run_cli<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    args: &[S],
    env: &[(String, String)],
    n: usize,
) -> Duration {
    let t = Instant::now();
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run the client");
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows = stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("test"))
        .count();
    assert!(
        out.status.success() && rows == n,
        "{} failed ({}; {rows} of {n} lists answered): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    took
}

/// What was measured of libvirtd, or why it was not.
struct Peer {
    skipped: Option<String>,
    first_cold: Option<Duration>,
    first_warm: Option<Duration>,
    one_list: Option<Duration>,
    cli_total: Option<Duration>,
    rss: Option<u64>,
}

impl Peer {
    fn skipped(why: Option<String>) -> Peer {
        Peer {
            skipped: why,
            first_cold: None,
            first_warm: None,
            one_list: None,
            cli_total: None,
            rss: None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn print_table(
    vw_cold: Duration,
    vw_warm: Duration,
    vw_one: Duration,
    vw_cli: Duration,
    vw_rss: Option<u64>,
    peer: &Peer,
) {
    let per = |d: Duration| d / CLI_CALLS as u32;
    let rate = |d: Duration| CLI_CALLS as f64 / d.as_secs_f64();
    let ratio = |a: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:>8.2}", a / b),
        _ => format!("{:>8}", "-"),
    };
    let dur = |d: Option<Duration>| d.map(fmt).unwrap_or_else(|| "SKIPPED".into());
    if let Some(why) = &peer.skipped {
        println!("!!! SKIPPED the libvirtd numbers: {why}");
    }
    println!(
        "{:<52} {:>12} {:>12} {:>8}",
        "", "virtwasmd", "libvirtd", "ratio"
    );
    let row = |label: &str, ours: Duration, theirs: Option<Duration>, goal: &str| {
        println!(
            "{label:<52} {:>12} {:>12} {}{goal}",
            fmt(ours),
            dur(theirs),
            ratio(ours.as_secs_f64(), theirs.map(|d| d.as_secs_f64()))
        );
    };
    row(
        "spawn to first answer, fresh state (cold)",
        vw_cold,
        peer.first_cold,
        "",
    );
    row(
        "spawn to first answer, second start (warm)",
        vw_warm,
        peer.first_warm,
        "",
    );
    row(
        "one `list` process on the ready daemon (CLIs)",
        vw_one,
        peer.one_list,
        "",
    );
    row(
        &format!("CLI \"list; ...\" x{CLI_CALLS}, one connection: per call"),
        per(vw_cli),
        peer.cli_total.map(per),
        "   (goal <= 0.33)",
    );
    println!(
        "{:<52} {:>12.0} {:>12} {}   (goal >= 3)",
        "  = list calls/s, one client (CLI vs CLI)",
        rate(vw_cli),
        peer.cli_total
            .map(|d| format!("{:.0}", rate(d)))
            .unwrap_or_else(|| "SKIPPED".into()),
        ratio(rate(vw_cli), peer.cli_total.map(rate)),
    );
    println!(
        "{:<52} {:>12} {:>12} {}",
        "resident memory (VmRSS) after the runs above",
        kib(vw_rss),
        peer.skipped
            .as_ref()
            .map(|_| "SKIPPED".to_string())
            .unwrap_or_else(|| kib(peer.rss)),
        ratio(vw_rss.unwrap_or(0) as f64, peer.rss.map(|r| r as f64))
    );
    println!(
        "  (ratio = virtwasmd / libvirtd; CLI rows: median of {CLI_RUNS} runs after one warm-up, per call = the process's wall time / {CLI_CALLS}, nothing subtracted;"
    );
    println!(
        "   first answer: virtwasmd polled every 1 ms with the raw client, libvirtd with a `virsh list` process every 2 ms once its socket exists, so its number includes about one `list` process)"
    );
    if let Some(why) = &peer.skipped {
        println!("!!! SKIPPED the libvirtd numbers: {why}");
    }
}

/// virtwasmd alone, one raw client on one connection, with the floors under a list call.
fn print_raw(list: &Raw, info: &Raw, floor: &Raw) {
    println!(
        "\nvirtwasmd alone, one raw HTTP/1.1 keep-alive client (hyper) on one connection, {} calls each (no libvirt RPC client here):",
        list.calls
    );
    for (label, r) in [
        ("GET /v1/domains (a host call, on the I/O thread)", list),
        ("GET /v1 (answered on the I/O thread, no host call)", info),
        ("in this process, no daemon: open + list + JSON", floor),
    ] {
        println!(
            "  {label:<52} {:>8.0} calls/s   p50 {:>9}   p99 {:>9}",
            r.calls as f64 / r.total.as_secs_f64(),
            fmt(r.p50),
            fmt(r.p99)
        );
    }
}

/// The load test: clients on their own keep-alive connections, all released at once.
/// Prints the results under `label`; returns the number of failed calls.
fn load_test(socket: &Path, clients: usize, calls: usize, label: &str) -> usize {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let socket = socket.to_path_buf();
    let (lat, errors, wall) = rt.block_on(async move {
        // Connect everyone first; the clock starts when all are connected.
        let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
        let mut tasks = Vec::with_capacity(clients);
        for _ in 0..clients {
            let barrier = barrier.clone();
            let socket = socket.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(calls);
                let mut errors: HashMap<String, usize> = HashMap::new();
                let mut client = Client::connect(&socket).await;
                barrier.wait().await;
                let mut left = calls;
                while left > 0 {
                    let c = match &mut client {
                        Ok(c) if !c.is_closed() => c,
                        _ => {
                            // Reconnect once per call; a refused connect counts as that call's
                            // error.
                            client = Client::connect(&socket).await;
                            match &mut client {
                                Ok(c) => c,
                                Err(e) => {
                                    *errors.entry(e.clone()).or_default() += 1;
                                    left -= 1;
                                    continue;
                                }
                            }
                        }
                    };
                    let t = Instant::now();
                    match c.list().await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(e) => *errors.entry(e).or_default() += 1,
                    }
                    left -= 1;
                }
                (lat, errors)
            }));
        }
        barrier.wait().await;
        let t = Instant::now();
        let mut lat = Vec::with_capacity(clients * calls);
        let mut errors: HashMap<String, usize> = HashMap::new();
        for task in tasks {
            let (l, e) = task.await.expect("client task");
            lat.extend(l);
            for (k, v) in e {
                *errors.entry(k).or_default() += v;
            }
        }
        (lat, errors, t.elapsed())
    });
    let mut lat = lat;
    lat.sort();
    let failed: usize = errors.values().sum();
    let ok = lat.len();
    println!(
        "{label}: calls ok {ok}   errors {failed}{}   wall {:.2} s   {:.0} calls/s   p50 {}   p99 {}   max {}",
        if failed == 0 { "" } else { " (!!! must be 0)" },
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64(),
        lat.first()
            .map(|_| fmt(percentile(&lat, 50.0)))
            .unwrap_or_default(),
        lat.first()
            .map(|_| fmt(percentile(&lat, 99.0)))
            .unwrap_or_default(),
        lat.last().copied().map(fmt).unwrap_or_default(),
    );
    println!(
        "  (latency of successful calls, measured by each client around its request; rate = successful calls / wall time)"
    );
    let mut errors: Vec<(String, usize)> = errors.into_iter().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    for (msg, n) in errors.iter().take(5) {
        println!("!!! error x{n}: {msg}");
    }
    if errors.len() > 5 {
        println!("!!! ... and {} other distinct errors", errors.len() - 5);
    }
    failed
}

pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("warning: {name}={v:?} is not a count; using {default}");
            default
        }),
        Err(_) => default,
    }
}

/// The `p`th percentile of sorted durations (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A `/proc/PID/status` field in KiB, for a process whose name is `comm`.
fn status_kib(pid: u32, field: &str, comm: Option<&str>) -> Option<u64> {
    if let Some(c) = comm {
        let actual = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if actual.trim() != c {
            return None;
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn rss_kib(pid: u32, comm: &str) -> Option<u64> {
    status_kib(pid, "VmRSS:", Some(comm))
}

fn hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:", None)
}

fn kib(v: Option<u64>) -> String {
    v.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}
