//! `virtwasm-bench`: what a plugin costs to load, instantiate and call, and what `list --all`
//! costs end to end, next to `virsh` on libvirt's test driver in the same run.
//!
//! Run it from a release build: `cargo run --release -p virtwasm-bench`. It builds nothing
//! itself; it expects `target/release/virtwasm` (the `cargo run` above builds the workspace's
//! default members, which include the CLI). The machines this runs on are shared and noisy:
//! read the ratios, which compare runs made seconds apart, rather than the absolute numbers.
//!
//! The daemon section (`daemon.rs`) starts `virtwasmd` (also expected beside this program, from
//! `cargo build --release -p virtwasm-cli`) and, as root, `libvirtd` inside a network
//! namespace of its own, and compares them over their unix sockets. `VIRTWASM_BENCH_ONLY`
//! (a comma-separated list of `plugins`, `e2e`, `define`, `daemon`, `qemu`) runs only those
//! sections.
//!
//! The QEMU section (`qemu.rs`) boots the test guest under TCG (built by
//! `cargo test -p virtwasm-cli --test guest_selftest`) through `virtwasmd`, a bare script and,
//! as root, `libvirtd`'s QEMU driver, and compares start, save, restore and migration.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtwasm_host::engine::Runtime;
use virtwasm_host::manifest::Manifest;
use virtwasm_host::plugin::{Plugin, PluginSource};

mod daemon;
mod qemu;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 {
        format!("{:.0} ns", us * 1e3)
    } else if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

struct Subject {
    name: String,
    manifest: Manifest,
    wasm: Vec<u8>,
}

/// The bundled plugins and the hostile fixture, their granted paths expanded under `dir` (as
/// the host expands them under its own directories).
fn subjects(dir: &std::path::Path) -> Vec<Subject> {
    let vars = virtwasm_host::manifest::PathVars {
        vars: ["config_dir", "runtime_dir", "state_dir", "cache_dir"]
            .iter()
            .map(|v| (v.to_string(), dir.join(v)))
            .collect(),
    };
    let mut v: Vec<Subject> = virtwasm_bundle::BUNDLED
        .iter()
        .map(|b| {
            let mut manifest = Manifest::parse(b.manifest, "bundled").expect("bundled manifest");
            manifest
                .expand_paths(&vars, "bundled")
                .expect("bundled manifest paths");
            Subject {
                name: manifest.plugin.name.clone(),
                manifest,
                wasm: b.wasm.to_vec(),
            }
        })
        .collect();
    let hostile =
        std::fs::read_to_string(virtwasm_bundle::HOSTILE_MANIFEST).expect("hostile manifest");
    let mut manifest = Manifest::parse(&hostile, "hostile").expect("hostile manifest");
    manifest
        .expand_paths(&vars, "hostile")
        .expect("hostile manifest paths");
    v.push(Subject {
        name: "hostile (test fixture)".into(),
        manifest,
        wasm: std::fs::read(virtwasm_bundle::HOSTILE_WASM).expect("hostile wasm"),
    });
    v
}

fn load(runtime: &Arc<Runtime>, s: &Subject) -> Plugin {
    Plugin::load(
        runtime.clone(),
        s.manifest.clone(),
        &s.wasm,
        None,
        PluginSource::Bundled,
    )
    .expect("plugin loads")
}

fn plugin_costs() {
    println!("== plugin load, instantiation and calls (in-process) ==");
    let cache = tempfile::tempdir().expect("temp dir");
    let dirs = tempfile::tempdir().expect("temp dir");
    let cold_rt = Arc::new(Runtime::new(None).expect("runtime"));
    for s in subjects(dirs.path()) {
        let cold: Vec<Duration> = (0..5).map(|_| load(&cold_rt, &s).report.compile).collect();
        // Populate the cache once, then load from it with fresh runtimes (a new process).
        let rt = Arc::new(Runtime::new(Some(cache.path().to_path_buf())).expect("runtime"));
        load(&rt, &s);
        let warm: Vec<Duration> = (0..20)
            .map(|_| {
                let rt = Arc::new(Runtime::new(Some(cache.path().to_path_buf())).expect("runtime"));
                let p = load(&rt, &s);
                assert!(matches!(
                    p.report.cache,
                    virtwasm_host::engine::CacheState::Hit
                ));
                p.report.compile
            })
            .collect();
        let (cold, warm) = (median(cold), median(warm));
        println!(
            "{:<24} cold compile {:>10}   warm cached load {:>10}   warm/cold {:.2} %  (goal <= 1 %)",
            s.name,
            fmt(cold),
            fmt(warm),
            warm.as_secs_f64() / cold.as_secs_f64() * 100.0
        );
    }
    let rt = Arc::new(Runtime::new(Some(cache.path().to_path_buf())).expect("runtime"));
    let test = subjects(dirs.path())
        .into_iter()
        .next()
        .expect("the test plugin");
    let plugin = load(&rt, &test);
    // Instantiation: a fresh store and instance from the pooling allocator.
    for _ in 0..200 {
        plugin.probe().expect("instantiate");
    }
    let inst: Vec<Duration> = (0..2000)
        .map(|_| plugin.probe().expect("instantiate"))
        .collect();
    println!(
        "fresh pooled instantiation (store + instance), median of 2000: {:>10}   (goal < 50 µs)",
        fmt(median(inst))
    );
    // What a verb pays before its own work: a slot, an idle (or new) instance, the exports.
    let verb: Vec<Duration> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            plugin.hypervisor("noop", |_, _| Ok(Ok(()))).expect("call");
            t.elapsed()
        })
        .collect();
    println!(
        "per-verb sandbox overhead (idle instance reused), median of 2000: {:>10}",
        fmt(median(verb))
    );
    // A typed call round trip on a live instance: a record with a string in and out.
    let per_call: Vec<Duration> = (0..20)
        .map(|_| {
            plugin
                .hypervisor("get-node-info", |g, s| {
                    let n = 10_000u32;
                    let t = Instant::now();
                    for _ in 0..n {
                        g.call_get_node_info(&mut *s)?.expect("node info");
                    }
                    Ok(Ok(t.elapsed() / n))
                })
                .expect("calls")
        })
        .collect();
    println!(
        "typed call round trip (get-node-info), median per call: {:>10}   (goal < 1 µs)",
        fmt(median(per_call))
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    println!("peak RSS of this benchmark process: {rss} KiB");
}

fn time_command(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Duration {
    let t = Instant::now();
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{} {:?} failed: {}",
        program.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn virtwasm_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    let bin = me.with_file_name("virtwasm");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace in release mode first",
        bin.display()
    );
    bin
}

fn end_to_end() {
    println!("\n== `list --all` end to end (process start to exit), median of 30 ==");
    let bin = virtwasm_binary();
    let cache = tempfile::tempdir().expect("temp dir");
    let cache_env = cache.path().to_string_lossy().into_owned();
    let env = [("VIRTWASM_CACHE_DIR", cache_env.as_str())];
    let virsh = ["/usr/bin/virsh", "/usr/local/bin/virsh"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if virsh.is_none() {
        println!("NOTE: virsh not found (Debian's libvirt-clients): measuring virtwasm alone");
    }
    let node = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(node.path(), node_xml(1000)).expect("write node file");
    let node_uri = format!("test://{}", node.path().display());
    let cases: Vec<(&str, String)> = vec![
        ("1 domain", "test:///default".into()),
        ("1,000 domains", node_uri),
    ];
    for (label, uri) in cases {
        let args = ["-c", uri.as_str(), "list", "--all"];
        // Warm the plugin cache and the page cache first.
        time_command(&bin, &args, &env);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..30 {
            ours.push(time_command(&bin, &args, &env));
            if let Some(v) = &virsh {
                theirs.push(time_command(v, &args, &[]));
            }
        }
        let ours = median(ours);
        match &virsh {
            Some(_) => {
                let theirs = median(theirs);
                println!(
                    "{label:<14} virtwasm {:>10}   virsh {:>10}   ratio {:.2}  (goal <= 0.5)",
                    fmt(ours),
                    fmt(theirs),
                    ours.as_secs_f64() / theirs.as_secs_f64()
                );
            }
            None => println!("{label:<14} virtwasm {:>10}", fmt(ours)),
        }
    }
}

fn define_many() {
    println!("\n== define 1,000 domains then `list --all`, one invocation each, median of 5 ==");
    let bin = virtwasm_binary();
    let cache = tempfile::tempdir().expect("temp dir");
    let cache_env = cache.path().to_string_lossy().into_owned();
    let env = [("VIRTWASM_CACHE_DIR", cache_env.as_str())];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut script = String::new();
    for i in 0..1000 {
        let path = dir.path().join(format!("vm{i:04}.xml"));
        let xml = format!(
            "<domain type='test'><name>def{i:04}</name><uuid>11111111-0000-4000-8000-{i:012x}</uuid><memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        );
        std::fs::write(&path, xml).expect("write domain XML");
        script.push_str(&format!("define {}; ", path.display()));
    }
    script.push_str("list --all");
    let args = ["-q", "-c", "test:///default", script.as_str()];
    time_command(&bin, &args, &env);
    let virsh = ["/usr/bin/virsh", "/usr/local/bin/virsh"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..5 {
        ours.push(time_command(&bin, &args, &env));
        if let Some(v) = &virsh {
            theirs.push(time_command(v, &args, &[]));
        }
    }
    let ours = median(ours);
    match virsh {
        Some(_) => {
            let theirs = median(theirs);
            println!(
                "define x1000 + list   virtwasm {:>10}   virsh {:>10}   ratio {:.2}  (goal <= 0.5)",
                fmt(ours),
                fmt(theirs),
                ours.as_secs_f64() / theirs.as_secs_f64()
            );
        }
        None => println!("define x1000 + list   virtwasm {:>10}", fmt(ours)),
    }
}

/// A libvirt test-driver node file with `n` domains, readable by both virsh and virtwasm.
fn node_xml(n: usize) -> String {
    let mut s = String::from("<node>\n");
    for i in 0..n {
        s.push_str(&format!(
            "  <domain type='test'>\n    <name>vm{i:04}</name>\n    <uuid>00000000-0000-4000-8000-{i:012x}</uuid>\n    <memory>65536</memory>\n    <vcpu>1</vcpu>\n    <os><type>hvm</type></os>\n  </domain>\n"
        ));
    }
    s.push_str("</node>\n");
    s
}

/// Whether the section `name` is to run (`VIRTWASM_BENCH_ONLY` unset, or naming it).
fn selected(name: &str) -> bool {
    match std::env::var("VIRTWASM_BENCH_ONLY") {
        Ok(only) => only.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

fn main() {
    if selected("plugins") {
        plugin_costs();
    }
    if selected("e2e") {
        end_to_end();
    }
    if selected("define") {
        define_many();
    }
    if selected("daemon") {
        daemon::run();
    }
    if selected("qemu") {
        qemu::run();
    }
}
