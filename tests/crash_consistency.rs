//! Crash consistency: a `virtwasm` process killed with SIGKILL at any moment leaves every
//! state file of a persistent driver whole, either the version before the write or the one
//! after it, never a torn file and never no file at all.
//!
//! The driver is the hostile test plugin under `hostile:///embed?root=DIR`, whose harmless
//! verbs (define, start, destroy) behave like a plain hypervisor's. `web1` is defined first;
//! then, many times over, a process redefines it with a new version (and starts or destroys
//! it, so the status file is created and removed too) and is killed after a delay that sweeps
//! the whole length of an uninterrupted run. After each kill the files are checked, and a fresh
//! process must load them and still list `web1`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::command;

/// Kills spread evenly over the whole run.
const SWEEP_KILLS: usize = 120;
/// Kills then concentrated where the sweep found the writes.
const FOCUS_KILLS: usize = 80;
/// The focused kills stop early past this (the sweep always runs whole).
const TIME_BUDGET: Duration = Duration::from_secs(35);
/// The sweep runs from 0 to this multiple of the uninterrupted run's duration.
const SWEEP_SPAN: f64 = 1.3;
/// Uninterrupted runs timed before the sweep (each also commits a version).
const CALIBRATION_RUNS: usize = 6;

fn plugin_dir(home: &Path) -> PathBuf {
    let dir = home.join("plugins/hostile");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(virtwasm_bundle::HOSTILE_WASM, dir.join("hostile.wasm")).unwrap();
    std::fs::copy(virtwasm_bundle::HOSTILE_MANIFEST, dir.join("plugin.toml")).unwrap();
    home.join("plugins")
}

/// Version `v` of web1, as given to `define`: its memory and its description both carry `v`,
/// so every version's file differs from every other one's.
fn source_xml(v: usize) -> String {
    format!(
        "<domain type='qemu'>\n  <name>web1</name>\n  <uuid>0b5c0d67-5a56-4b0e-9b52-3c1d8a6e0f11</uuid>\n  <description>crash-consistency version {v}</description>\n  <memory unit='MiB'>{}</memory>\n  <vcpu>2</vcpu>\n  <os><type arch='x86_64'>hvm</type></os>\n  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>\n</domain>\n",
        mem_mib(v)
    )
}

/// Version 0 is the first definition (256 MiB); version v > 0 has (300 + v) MiB.
fn mem_mib(v: usize) -> usize {
    if v == 0 { 256 } else { 300 + v }
}

/// How to run `virtwasm` on the test's root, and where its files are.
struct Harness {
    home: PathBuf,
    plugins: PathBuf,
    uri: String,
    def_dir: PathBuf,
    status_dir: PathBuf,
    /// The file version 0 left on disk, from which every other version's file is derived.
    template: String,
}

impl Harness {
    fn def_file(&self) -> PathBuf {
        self.def_dir.join("web1.xml")
    }

    fn status_file(&self) -> PathBuf {
        self.status_dir.join("web1.json")
    }

    /// Writes version `v`'s source file and returns the script that defines it, then `tail`.
    fn script(&self, v: usize, tail: &str) -> String {
        let src = self.home.join(format!("web1-v{v}.xml"));
        std::fs::write(&src, source_xml(v)).unwrap();
        format!("define {}{tail}", src.display())
    }

    fn spawn(&self, script: &str) -> std::process::Child {
        command(&self.home)
            .args([
                "--plugin-dir",
                self.plugins.to_str().unwrap(),
                "-c",
                &self.uri,
                script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn virtwasm")
    }

    /// Runs `script` to completion; returns its output and how long it took from spawn.
    fn run(&self, script: &str) -> (Output, Duration) {
        let t0 = Instant::now();
        let out = self.spawn(script).wait_with_output().unwrap();
        (out, t0.elapsed())
    }

    /// The exact file version `v` leaves on disk: the stored form of version 0 with its
    /// memory (both `<memory>` and `<currentMemory>`) and description changed.
    fn expected(&self, v: usize) -> String {
        let kib0 = format!(">{}<", mem_mib(0) * 1024);
        assert_eq!(
            self.template.matches(&kib0).count(),
            2,
            "version 0 on disk should hold its memory twice (memory and currentMemory):\n{}",
            self.template
        );
        self.template
            .replace(&kib0, &format!(">{}<", mem_mib(v) * 1024))
            .replace(
                "crash-consistency version 0<",
                &format!("crash-consistency version {v}<"),
            )
    }

    /// Which version the definition file holds, if it is one of those ever written.
    fn version_on_disk(&self, text: &str, written: usize) -> Option<usize> {
        (0..=written).find(|&v| self.expected(v) == text)
    }

    /// `(file name, bytes)` of the temporary files in `dir` (`.NAME.tmp-PID-N`).
    fn temp_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.starts_with('.').then(|| {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    (name, bytes)
                })
            })
            .collect()
    }

    /// Every name in `dir`, for failure messages.
    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Has a fresh process load the files and list web1: true when it lists it running, false
    /// shut off; panics with what it printed when it fails or lists anything else.
    fn fresh_list(&self, context: &str) -> bool {
        let (out, _) = self.run("list --all");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{context}: a fresh `list --all` failed ({:?}); the files left behind do not load.\n\
             stdout:\n{stdout}\nstderr:\n{stderr}\ndefinitions dir: {:?}\nstatus dir: {:?}",
            out.status,
            Self::listing(&self.def_dir),
            Self::listing(&self.status_dir),
        );
        let rows: Vec<&str> = stdout
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("web1"))
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "{context}: a fresh `list --all` should list web1 exactly once, it printed:\n{stdout}"
        );
        let state = rows[0]
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
            .join(" ");
        match state.as_str() {
            "running" => true,
            "shut off" => false,
            other => panic!(
                "{context}: web1 is listed in state '{other}', expected running or shut off:\n{stdout}"
            ),
        }
    }
}

/// A small deterministic generator for the jitter (xorshift64*), seeded per run and printed.
struct Jitter(u64);

impl Jitter {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How one kill ended for the definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Def {
    Old,
    New,
}

struct Kill {
    delay: Duration,
    /// Whether SIGKILL ended the process (false: it had finished already).
    signalled: bool,
    def: Def,
    /// Whether the status file existed before and after.
    status: (bool, bool),
    /// Temporary files this kill left: (definition dir, status dir).
    temps: (usize, usize),
}

/// What the files held after the last run, as the checks expect it.
struct State {
    /// The highest version any run was given.
    written: usize,
    /// The version the definition file holds.
    committed: usize,
    status_present: bool,
    /// Temporary files already there (definition dir, status dir).
    seen_temps: (BTreeMap<String, Vec<u8>>, BTreeMap<String, Vec<u8>>),
}

/// Runs the next version's script, kills it after `delay`, and checks every file it may have
/// touched; `i` numbers the kill for messages.
fn kill_once(h: &Harness, state: &mut State, i: usize, delay: Duration) -> Kill {
    state.written += 1;
    let v = state.written;
    let committed = state.committed;
    let status_present = state.status_present;
    // Redefine, and start or destroy so the status file is created and removed; one run in
    // four only redefines (rewriting the status file too when web1 runs).
    let tail = match (i % 4, status_present) {
        (3, _) => "",
        (_, true) => "; destroy web1",
        (_, false) => "; start web1",
    };
    let script = h.script(v, tail);

    let t0 = Instant::now();
    let mut child = h.spawn(&script);
    let pid = child.id();
    if let Some(rest) = delay.checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
    child.kill().expect("SIGKILL the writer");
    let out = child.wait_with_output().unwrap();
    let signalled = out.status.signal() == Some(libc::SIGKILL);
    let context = format!(
        "kill {i} (version {v} over committed version {committed}, script 'define{tail}', pid {pid}, \
         delay {:.3} ms, {})",
        delay.as_secs_f64() * 1e3,
        if signalled {
            "killed"
        } else {
            "had already exited"
        }
    );
    assert!(
        signalled || out.status.success(),
        "{context}: the run failed on its own ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // The definition: present, a whole <domain> document, exactly the old or the new version.
    let def_text = match std::fs::read(h.def_file()) {
        Ok(bytes) => String::from_utf8(bytes).unwrap_or_else(|e| {
            panic!(
                "{context}: the definition file is not UTF-8 ({e}): {:?}",
                String::from_utf8_lossy(e.as_bytes())
            )
        }),
        Err(e) => panic!(
            "{context}: the definition file {} is gone ({e}); the directory holds {:?}",
            h.def_file().display(),
            Harness::listing(&h.def_dir)
        ),
    };
    assert!(
        def_text.starts_with("<domain type='qemu'>\n  <name>web1</name>\n")
            && def_text.ends_with("</domain>\n"),
        "{context}: the definition file is not a whole <domain> document:\n{def_text}"
    );
    let def = if def_text == h.expected(committed) {
        Def::Old
    } else if def_text == h.expected(v) {
        Def::New
    } else {
        panic!(
            "{context}: the definition file is neither the committed version {committed} nor the \
             new version {v}{}:\n{def_text}",
            match h.version_on_disk(&def_text, v) {
                Some(other) => format!(" but version {other}"),
                None => ", nor any version ever written (torn?)".into(),
            }
        )
    };
    if !signalled {
        assert_eq!(
            def,
            Def::New,
            "{context}: a run that finished must have committed"
        );
    }

    // The status file, when present: whole JSON describing web1 at a written version.
    let status_now = h.status_file().exists();
    if status_now {
        let bytes = std::fs::read(h.status_file()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{context}: the status file is not valid JSON ({e}):\n{}",
                String::from_utf8_lossy(&bytes)
            )
        });
        let live = &json["live"];
        let live_v = live["description"]
            .as_str()
            .and_then(|d| d.strip_prefix("crash-consistency version "))
            .and_then(|n| n.parse::<usize>().ok());
        assert!(
            live["name"] == "web1"
                && json["persistent"] == true
                && live_v
                    .is_some_and(|lv| lv <= v && live["memory_kib"] == (mem_mib(lv) * 1024) as u64),
            "{context}: the status file does not describe web1 at a written version:\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let status_new = match tail {
        "; start web1" => true,
        "; destroy web1" => false,
        _ => status_present,
    };
    let word = |b: bool| if b { "present" } else { "absent" };
    assert!(
        status_now == status_present || status_now == status_new,
        "{context}: the status file is {} but was {} before and the script leaves it {}",
        word(status_now),
        word(status_present),
        word(status_new),
    );
    if !signalled {
        assert_eq!(
            status_now, status_new,
            "{context}: status file after a finished run"
        );
    }

    // Temporary files: only a killed process leaves them, named after its pid; a definition's
    // holds a prefix of the new version (it was being written).
    let temps = (
        Harness::temp_files(&h.def_dir),
        Harness::temp_files(&h.status_dir),
    );
    let mut left = (0, 0);
    for (k, (now, before)) in [
        (&temps.0, &state.seen_temps.0),
        (&temps.1, &state.seen_temps.1),
    ]
    .into_iter()
    .enumerate()
    {
        for (name, bytes) in now.iter().filter(|(n, _)| !before.contains_key(*n)) {
            assert!(
                signalled,
                "{context}: a run that finished left the temporary file {name}"
            );
            let base = if k == 0 { ".web1.xml" } else { ".web1.json" };
            assert!(
                name.starts_with(&format!("{base}.tmp-{pid}-")),
                "{context}: unexpected new file {name} (the killed writer was pid {pid})"
            );
            if k == 0 {
                assert!(
                    h.expected(v).as_bytes().starts_with(bytes),
                    "{context}: the temporary file {name} is not a prefix of version {v}:\n{}",
                    String::from_utf8_lossy(bytes)
                );
                left.0 += 1;
            } else {
                left.1 += 1;
            }
        }
    }
    state.seen_temps = temps;

    // A fresh process loads what is there, temporary files included, and agrees with it.
    let listed_running = h.fresh_list(&context);
    assert_eq!(
        listed_running,
        status_now,
        "{context}: a fresh process lists web1 as {} but the status file is {}",
        if listed_running {
            "running"
        } else {
            "shut off"
        },
        word(status_now)
    );

    if def == Def::New {
        state.committed = v;
    }
    state.status_present = status_now;
    Kill {
        delay,
        signalled,
        def,
        status: (status_present, status_now),
        temps: left,
    }
}

#[test]
fn sigkill_at_any_point_leaves_old_or_new_files_never_torn_or_lost() {
    let started = Instant::now();
    // Under the target directory rather than /tmp: a real disk filesystem, where fsync costs
    // something and the write takes long enough to be hit.
    let home = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = home.path().join("root");
    let mut h = Harness {
        home: home.path().to_path_buf(),
        plugins: plugin_dir(home.path()),
        uri: format!("hostile:///embed?root={}", root.display()),
        def_dir: root.join("etc/virtwasm/hostile/domains"),
        status_dir: root.join("run/virtwasm/hostile/domains"),
        template: String::new(),
    };

    // Version 0, uninterrupted: web1 exists before the first kill.
    let script = h.script(0, "");
    let (out, _) = h.run(&script);
    assert!(
        out.status.success(),
        "defining version 0 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.template = std::fs::read_to_string(h.def_file()).unwrap();
    assert!(
        h.template
            .starts_with("<domain type='qemu'>\n  <name>web1</name>\n")
            && h.template.contains("crash-consistency version 0<"),
        "version 0 on disk: {}",
        h.template
    );

    // Calibration: uninterrupted runs of both kinds of script, timed; each commits a version,
    // and its file must be exactly what `expected` predicts.
    let mut written = 0;
    let mut running = false;
    let mut durations = Vec::new();
    for _ in 0..CALIBRATION_RUNS {
        written += 1;
        let tail = if running {
            "; destroy web1"
        } else {
            "; start web1"
        };
        let script = h.script(written, tail);
        let (out, took) = h.run(&script);
        assert!(
            out.status.success(),
            "uninterrupted run of version {written} ({tail}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        running = !running;
        durations.push(took);
        let on_disk = std::fs::read_to_string(h.def_file()).unwrap();
        assert_eq!(
            on_disk,
            h.expected(written),
            "after an uninterrupted define of version {written}, the file should be exactly the predicted one"
        );
        assert_eq!(
            h.status_file().exists(),
            running,
            "status file after version {written}"
        );
        assert!(
            Harness::temp_files(&h.def_dir).is_empty()
                && Harness::temp_files(&h.status_dir).is_empty(),
            "an uninterrupted run left temporary files: {:?} {:?}",
            Harness::listing(&h.def_dir),
            Harness::listing(&h.status_dir)
        );
    }
    durations.sort();
    // The slowest but one: robust to a single hiccup, yet covering the slow runs.
    let full = durations[durations.len() - 2];
    let span = full.mul_f64(SWEEP_SPAN);
    let step = span.as_secs_f64() / SWEEP_KILLS as f64;
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = (u64::from(std::process::id()) << 32) ^ clock.as_nanos() as u64 | 1;
    let mut jitter = Jitter(seed);
    println!(
        "uninterrupted runs took {:?}; killing {SWEEP_KILLS} runs at delays from 0 to {span:?} (step {:.2} ms, jitter seed {seed:#x})",
        durations,
        step * 1e3
    );

    let mut state = State {
        written,
        committed: written,
        status_present: h.status_file().exists(),
        seen_temps: (
            Harness::temp_files(&h.def_dir),
            Harness::temp_files(&h.status_dir),
        ),
    };
    let mut kills: Vec<Kill> = Vec::new();
    for i in 0..SWEEP_KILLS {
        // In order over the span, each delay moved by up to one step either way.
        let d = (i as f64 + 0.5) * step + (jitter.next_f64() * 2.0 - 1.0) * step;
        kills.push(kill_once(
            &h,
            &mut state,
            i,
            Duration::from_secs_f64(d.max(0.0)),
        ));
    }

    // Then denser where the writes happen: from a little before the first kill that found
    // the new version to the last kill that still found the process alive, a straggler alive
    // past the calibrated length excepted. Should the sweep have seen no commit, or no run
    // finish, the machine slowed down since calibration: look further on.
    let first_new = kills
        .iter()
        .filter(|k| k.def == Def::New)
        .map(|k| k.delay)
        .min()
        .unwrap_or(span);
    let last_alive = kills
        .iter()
        .filter(|k| k.signalled)
        .map(|k| k.delay)
        .max()
        .unwrap_or_default();
    let lo = first_new.saturating_sub(span / 10);
    let hi = last_alive.min(full).max(first_new) + span / 20;
    let slowed = !kills.iter().any(|k| k.def == Def::New) || kills.iter().all(|k| k.signalled);
    let hi = if slowed { span * 3 } else { hi };
    let focus_step = (hi - lo).as_secs_f64() / FOCUS_KILLS as f64;
    println!(
        "focusing {FOCUS_KILLS} more kills on {:.2} - {:.2} ms (step {:.3} ms)",
        lo.as_secs_f64() * 1e3,
        hi.as_secs_f64() * 1e3,
        focus_step * 1e3
    );
    let mut cut_short = false;
    for j in 0..FOCUS_KILLS {
        if started.elapsed() > TIME_BUDGET {
            cut_short = true;
            break;
        }
        let d = lo.as_secs_f64()
            + (j as f64 + 0.5) * focus_step
            + (jitter.next_f64() * 2.0 - 1.0) * focus_step;
        let delay = Duration::from_secs_f64(d.max(0.0));
        kills.push(kill_once(&h, &mut state, SWEEP_KILLS + j, delay));
    }
    if cut_short {
        println!(
            "time budget of {TIME_BUDGET:?} spent: stopped after {} kills",
            kills.len()
        );
    }

    // The distribution, by delay: where the kills landed relative to the definition's rename.
    let buckets = 12;
    let width = span.as_secs_f64() / buckets as f64;
    println!(
        "\n delay (ms)        kills   killed before rename   killed after rename   already exited   left a temp file"
    );
    for b in 0..=buckets {
        let in_bucket: Vec<&Kill> = kills
            .iter()
            .filter(|k| ((k.delay.as_secs_f64() / width) as usize).min(buckets) == b)
            .collect();
        if in_bucket.is_empty() {
            continue;
        }
        let count = |f: &dyn Fn(&Kill) -> bool| in_bucket.iter().filter(|k| f(k)).count();
        let range = if b == buckets {
            format!(">= {:.2}", b as f64 * width * 1e3)
        } else {
            format!(
                "{:.2} - {:.2}",
                b as f64 * width * 1e3,
                (b + 1) as f64 * width * 1e3
            )
        };
        println!(
            " {range:<15}   {:>5}   {:>20}   {:>19}   {:>14}   {:>16}",
            in_bucket.len(),
            count(&|k| k.signalled && k.def == Def::Old),
            count(&|k| k.signalled && k.def == Def::New),
            count(&|k| !k.signalled),
            count(&|k| k.temps.0 + k.temps.1 > 0),
        );
    }
    let before = kills
        .iter()
        .filter(|k| k.signalled && k.def == Def::Old)
        .count();
    let after = kills
        .iter()
        .filter(|k| k.signalled && k.def == Def::New)
        .count();
    let exited = kills.iter().filter(|k| !k.signalled).count();
    let mid_def = kills.iter().filter(|k| k.temps.0 > 0).count();
    let mid_status = kills.iter().filter(|k| k.temps.1 > 0).count();
    let created = kills.iter().filter(|k| k.status == (false, true)).count();
    let removed = kills.iter().filter(|k| k.status == (true, false)).count();
    let kept = kills.iter().filter(|k| k.status.0 == k.status.1).count();
    println!(
        "\n{} kills: {before} before the definition's rename (old version kept), {after} after it \
         (new version committed), {exited} after the process had exited;\n\
         {mid_def} left a temporary definition file and {mid_status} a temporary status file \
         (killed between creating the temporary file and renaming it);\n\
         status file: created {created} times, removed {removed} times, unchanged {kept} times; \
         total time {:?}",
        kills.len(),
        started.elapsed()
    );
    assert!(
        before > 0 && after > 0,
        "the sweep did not straddle the write: {before} kills before the rename, {after} after, \
         {exited} after exit (uninterrupted runs took {durations:?})"
    );
}
