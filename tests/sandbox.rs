//! The sandbox against a deliberately hostile plugin (`plugins/hostile`, built by the test
//! build and never bundled). Each attack is refused or stopped with a clear error naming the
//! plugin, the verb and the cause, and the same host answers the next call.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtwasm_host::bindings::types::{DomainDef, Os};
use virtwasm_host::connect::Dirs;
use virtwasm_host::{Connection, ErrorKind, Host, HostConfig};

/// Installs the hostile plugin into `dir` under `manifest` (its text), returning the dir.
fn install(dir: &Path, name: &str, manifest: &str) -> PathBuf {
    let plugin_dir = dir.join(name);
    std::fs::create_dir_all(&plugin_dir).unwrap();
    std::fs::copy(
        virtwasm_bundle::HOSTILE_WASM,
        plugin_dir.join(format!("{name}.wasm")),
    )
    .unwrap();
    std::fs::write(plugin_dir.join("plugin.toml"), manifest).unwrap();
    dir.to_path_buf()
}

fn hostile_manifest() -> String {
    std::fs::read_to_string(virtwasm_bundle::HOSTILE_MANIFEST).unwrap()
}

/// A host whose every directory is under `root`: nothing touches the user's own.
fn config_in(root: &Path, plugins: PathBuf, cache: Option<PathBuf>) -> HostConfig {
    let mut config = HostConfig::for_current_user(vec![]);
    config.plugin_dirs = vec![plugins];
    config.cache_dir = cache;
    config.session_dirs = Dirs::under(&root.join("session"));
    config.system_dirs = Dirs::under(&root.join("system"));
    config
}

struct Fixture {
    _tmp: tempfile::TempDir,
    host: Arc<Host>,
    preopen: PathBuf,
    outside: PathBuf,
}

/// A host with the hostile plugin granted `/bin/true` and one read-only directory.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let preopen = tmp.path().join("granted");
    std::fs::create_dir(&preopen).unwrap();
    std::fs::write(preopen.join("inside.txt"), "fine").unwrap();
    let outside = tmp.path().join("secret.txt");
    std::fs::write(&outside, "top secret").unwrap();
    let manifest = hostile_manifest().replace(
        "[limits]",
        &format!(
            "files = [{{ host = \"{}\", access = \"read-only\" }}]\n\n[limits]",
            preopen.display()
        ),
    );
    let plugins = install(&tmp.path().join("plugins"), "hostile", &manifest);
    let host =
        Arc::new(Host::new(config_in(tmp.path(), plugins, Some(common::cache_dir()))).unwrap());
    Fixture {
        _tmp: tmp,
        host,
        preopen,
        outside,
    }
}

fn domain(name: &str, target: &str) -> DomainDef {
    DomainDef {
        domain_type: "qemu".into(),
        name: name.into(),
        uuid: format!(
            "00000000-0000-4000-8000-{:012x}",
            name.len() as u64 * 7919 + name.bytes().map(u64::from).sum::<u64>()
        ),
        title: None,
        description: Some(target.into()),
        memory_kib: 1024,
        current_memory_kib: 1024,
        vcpus: 1,
        current_vcpus: None,
        vcpu_placement: None,
        cpuset: None,
        os: Os {
            os_type: "hvm".into(),
            arch: None,
            machine: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            boot: vec![],
            init: None,
            init_args: vec![],
        },
        features: vec![],
        clock: None,
        cpu: None,
        on_poweroff: None,
        on_reboot: None,
        on_crash: None,
        emulator: None,
        disks: vec![],
        controllers: vec![],
        interfaces: vec![],
        chardevs: vec![],
        inputs: vec![],
        graphics: vec![],
        videos: vec![],
        memballoon: None,
        rngs: vec![],
    }
}

/// The host still answers: a harmless call on the same connection works.
#[track_caller]
fn still_serving(conn: &Connection) {
    let info = conn.node_info().expect("the host answers the next call");
    assert_eq!(info.cpu_model, "hostile");
}

/// Defines and starts `name` (the hostile plugin starts normally without `read:`).
fn running(conn: &Connection, name: &str, target: &str) -> String {
    let (def, _) = conn.define(domain(name, target)).unwrap();
    conn.start(&def.uuid, false).unwrap();
    def.uuid
}

#[test]
fn reading_outside_the_preopen_is_refused() {
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    let (def, _) = conn
        .define(domain("reader", &format!("read:{}", f.outside.display())))
        .unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert!(
        e.message
            .starts_with(&format!("reading {}:", f.outside.display())),
        "{e}"
    );
    assert!(!e.message.contains("SANDBOX ESCAPE"), "{e}");
    // A relative escape from inside the preopen fails the same way.
    let sneaky = format!("read:{}/../secret.txt", f.preopen.display());
    let (def, _) = conn.define(domain("sneaky", &sneaky)).unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert!(!e.message.contains("SANDBOX ESCAPE"), "{e}");
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    // Inside the preopen, reading works: the refusal above is the sandbox, not a broken plugin.
    let inside = f.preopen.join("inside.txt");
    let (def, _) = conn
        .define(domain("inside", &format!("read:{}", inside.display())))
        .unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert!(
        e.message.contains("SANDBOX ESCAPE: read 4 bytes"),
        "the granted file is readable: {e}"
    );
    still_serving(&conn);
}

#[test]
fn taps_go_only_on_granted_bridges_and_only_vnet_taps_are_deleted() {
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    // The manifest grants `vwgranted*`: any other bridge is refused before anything is made.
    let (def, _) = conn.define(domain("tapper", "tap:br0")).unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert_eq!(
        e.message,
        "plugin 'hostile' may not attach taps to bridge 'br0' (its manifest grants: vwgranted*)"
    );
    // A granted name that is no bridge on this host is refused by the host, not the kernel.
    let (def, _) = conn.define(domain("tapper2", "tap:vwgranted0")).unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert_eq!(
        e.message,
        "operation failed: 'vwgranted0' is not a bridge on this host"
    );
    // Deleting is limited to taps the host made for this plugin: not the loopback, not a
    // path, not libvirt's vnet0.
    for victim in ["lo", "vwnet0/../lo", "eth0", "vnet0"] {
        let (def, _) = conn
            .define(domain(
                &format!("untap-{}", victim.len()),
                &format!("untap:{victim}"),
            ))
            .unwrap();
        let e = conn.start(&def.uuid, false).unwrap_err();
        assert!(
            e.message
                .contains("is not a tap device this host created for plugin 'hostile'"),
            "{victim}: {e}"
        );
    }
    still_serving(&conn);
}

#[test]
fn running_a_program_outside_the_allowlist_is_refused() {
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    let uuid = running(&conn, "runner", "run:/bin/sh");
    let e = conn.shutdown(&uuid, Default::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert_eq!(
        e.message,
        "plugin 'hostile': program '/bin/sh' is not in the plugin's allowlist (allowed: /bin/true)"
    );
    let uuid2 = running(&conn, "runner2", "run:cat");
    let e = conn.shutdown(&uuid2, Default::default()).unwrap_err();
    assert_eq!(
        e.message,
        "plugin 'hostile': program 'cat' is not in the plugin's allowlist (allowed: /bin/true)"
    );
    // The granted program does run (the plugin then reports it, proving the path works).
    let uuid3 = running(&conn, "runner3", "run:/bin/true");
    let e = conn.shutdown(&uuid3, Default::default()).unwrap_err();
    assert!(e.message.contains("ran /bin/true, exit Some(0)"), "{e}");
    still_serving(&conn);
}

#[test]
fn an_infinite_loop_is_stopped_at_its_time_limit() {
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    let uuid = running(&conn, "looper", "");
    let t = Instant::now();
    let e = conn.suspend(&uuid).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert_eq!(
        e.message,
        "plugin 'hostile' exceeded its time limit of 300 ms in 'suspend' and was stopped"
    );
    assert!(
        took >= Duration::from_millis(300),
        "stopped only after its budget: {took:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "stopped, not left spinning: {took:?}"
    );
    still_serving(&conn);
    assert_eq!(
        conn.domain(&uuid).unwrap().state(),
        virtwasm_host::bindings::types::DomainState::Running(
            virtwasm_host::bindings::types::RunningReason::Booted
        ),
        "a failed verb changes nothing"
    );
}

#[test]
fn allocating_past_the_memory_cap_is_stopped() {
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    let uuid = running(&conn, "hog", "");
    let e = conn.reset(&uuid).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PluginCrashed, "{e}");
    assert!(
        e.message
            .starts_with("plugin 'hostile' ran out of memory in 'reset': it asked for "),
        "{e}"
    );
    assert!(e.message.ends_with("MiB, its limit is 64 MiB"), "{e}");
    still_serving(&conn);
}

#[test]
fn a_panic_in_a_verb_is_reported_with_its_message() {
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    let uuid = running(&conn, "panicker", "");
    let e = conn.reboot(&uuid, Default::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PluginCrashed, "{e}");
    assert!(
        e.message
            .starts_with("plugin 'hostile' crashed in 'reboot': panicked at "),
        "{e}"
    );
    assert!(
        e.message
            .contains("hostile plugin panicked while rebooting 'panicker'"),
        "{e}"
    );
    // The trapped instance is gone; the next verb on the same domain gets a fresh one.
    conn.destroy(&uuid, false)
        .expect("next call on a fresh instance");
    still_serving(&conn);
}

#[test]
fn an_ungranted_import_is_refused_at_load_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = hostile_manifest()
        .replace("name = \"hostile\"", "name = \"ungranted\"")
        .replace("schemes = [\"hostile\"]", "schemes = [\"ungranted\"]")
        .replace("process = { programs = [\"/bin/true\"] }\n", "");
    let plugins = install(&tmp.path().join("plugins"), "ungranted", &manifest);
    let host = Host::new(config_in(tmp.path(), plugins, Some(common::cache_dir()))).unwrap();
    let e = host.open("ungranted:///session", false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PluginLoad, "{e}");
    assert_eq!(
        e.message,
        "plugin 'ungranted': imports virtwasm:plugin/process@0.1.0, which its manifest does not grant (grant it with [capabilities] process = { programs = [...] })"
    );
}

#[test]
fn a_plugin_for_another_wit_version_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = hostile_manifest().replace("@0.1.0", "@0.2.0");
    let plugins = install(&tmp.path().join("plugins"), "hostile", &manifest);
    let host = Host::new(config_in(tmp.path(), plugins, Some(common::cache_dir()))).unwrap();
    assert!(
        host.registry()
            .problems()
            .iter()
            .any(|p| p.message.contains(
                "built for virtwasm:plugin@0.2.0, but this host implements virtwasm:plugin@0.1.0"
            )),
        "{:?}",
        host.registry().problems()
    );
    let e = host.open("hostile:///session", false).unwrap_err();
    assert!(
        e.message
            .contains("no connection driver available for 'hostile'"),
        "{e}"
    );
}

#[test]
fn a_tampered_component_fails_its_sha256_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = hostile_manifest().replace("schemes = [\"hostile\"]", "schemes = [\"hostile\"]\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"");
    let plugins = install(&tmp.path().join("plugins"), "hostile", &manifest);
    let host = Host::new(config_in(tmp.path(), plugins, None)).unwrap();
    let e = host.open("hostile:///session", false).unwrap_err();
    assert!(
        e.message.contains("but the manifest pins 0000000000000000"),
        "{e}"
    );
}

#[test]
fn concurrent_calls_on_different_domains_run_in_parallel() {
    let f = fixture();
    let conn = Arc::new(f.host.open("hostile:///session", false).unwrap());
    let looper = running(&conn, "par-loop", "");
    let other = running(&conn, "par-other", "");
    let c2 = conn.clone();
    let spinning = std::thread::spawn(move || c2.suspend(&looper).unwrap_err());
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    conn.destroy(&other, false)
        .expect("another domain's verb is not blocked by the spinning one");
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "destroy waited for the loop: {:?}",
        t.elapsed()
    );
    assert_eq!(spinning.join().unwrap().kind, ErrorKind::Timeout);
}

#[test]
fn a_reused_instance_gets_a_fresh_budget_for_every_call() {
    // Idle instances serve later calls. Wall time between calls, and the sum of many calls,
    // must never count against one call's budget (300 ms for this plugin).
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(120));
        still_serving(&conn);
    }
    for _ in 0..600 {
        still_serving(&conn);
    }
    // And a runaway call on a reused instance is still stopped at its own limit.
    let uuid = running(&conn, "late-loop", "");
    let t = Instant::now();
    let e = conn.suspend(&uuid).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    still_serving(&conn);
}

#[test]
fn a_spawned_child_outlives_the_call_and_only_its_plugin_can_adopt_it() {
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    // /bin/true is the only granted program; sleep is refused even as a long-lived child.
    let (def, _) = conn
        .define(domain("sleeper", "spawn:/bin/sleep 60"))
        .unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert_eq!(
        e.message,
        "plugin 'hostile': program '/bin/sleep' is not in the plugin's allowlist (allowed: /bin/true)"
    );

    // A granted child: its pid is the driver's record, kept by the host between calls.
    let (def, _) = conn.define(domain("child", "spawn:/bin/true")).unwrap();
    conn.start(&def.uuid, false).unwrap();
    let rec = conn.domain(&def.uuid).unwrap();
    let pid: u32 = rec.runtime.as_ref().unwrap().driver_data.parse().unwrap();
    assert!(pid > 1);
    assert!(
        f.host
            .registry()
            .runtime()
            .children()
            .pids_of("hostile")
            .contains(&pid),
        "the host owns the child"
    );
    // A later call (a new or reused instance) adopts it by pid, kills and reaps it.
    conn.destroy(&def.uuid, false).unwrap();

    // Adopting a process the plugin did not start is refused, naming it.
    let (def, _) = conn.define(domain("thief", "adopt:1")).unwrap();
    conn.start(&def.uuid, false).unwrap();
    let e = conn.destroy(&def.uuid, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert_eq!(
        e.message,
        "plugin 'hostile': process 1 was not started by this plugin"
    );
    still_serving(&conn);
}

#[test]
fn a_plugin_directory_others_can_write_is_ignored() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let plugins = install(&tmp.path().join("plugins"), "hostile", &hostile_manifest());
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = Host::new(config_in(tmp.path(), plugins.clone(), None)).unwrap();
    let problem = host
        .registry()
        .problems()
        .iter()
        .map(|p| p.message.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        problem.contains(&format!(
            "ignoring plugin directory {}: writable by others (mode 777)",
            plugins.display()
        )),
        "{problem}"
    );
    assert!(
        host.open("hostile:///session", false).is_err(),
        "its plugins are not loaded"
    );
}

#[test]
fn a_missing_read_write_grant_is_created_private_and_a_missing_read_only_one_is_left_out() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // Neither directory exists yet: the read-write one (two levels, like `{cache_dir}/qemu`
    // on a fresh host) is the plugin's own; the read-only one is something the host lacks.
    let own = tmp.path().join("cache").join("hostile");
    let absent = tmp.path().join("absent");
    let manifest = hostile_manifest().replace(
        "[limits]",
        &format!(
            "files = [{{ host = \"{}\", access = \"read-write\" }}, {{ host = \"{}\", access = \"read-only\" }}]\n\n[limits]",
            own.display(),
            absent.display()
        ),
    );
    let plugins = install(&tmp.path().join("plugins"), "hostile", &manifest);
    let host =
        Arc::new(Host::new(config_in(tmp.path(), plugins, Some(common::cache_dir()))).unwrap());
    let conn = host.open("hostile:///session", false).unwrap();
    // The plugin serves: neither grant broke its preopens.
    still_serving(&conn);
    let mode = std::fs::metadata(&own).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode,
        0o700,
        "{} is private to the host's user",
        own.display()
    );
    // The created directory is really the plugin's: a file put there is readable through it.
    std::fs::write(own.join("note.txt"), "mine").unwrap();
    let (def, _) = conn
        .define(domain(
            "own",
            &format!("read:{}", own.join("note.txt").display()),
        ))
        .unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert!(e.message.contains("SANDBOX ESCAPE: read 4 bytes"), "{e}");
    // The missing read-only grant is left out, and said so.
    assert_eq!(conn.plugin().grants().skipped_files, vec![absent.clone()]);
    assert!(
        !conn
            .plugin()
            .grants()
            .files
            .iter()
            .any(|(h, _, _)| h == &absent)
    );
    // Made after load, it stays out of reach: the grant was dropped, not deferred.
    std::fs::create_dir(&absent).unwrap();
    std::fs::write(absent.join("later.txt"), "late").unwrap();
    let (def, _) = conn
        .define(domain(
            "late",
            &format!("read:{}", absent.join("later.txt").display()),
        ))
        .unwrap();
    let e = conn.start(&def.uuid, false).unwrap_err();
    assert!(!e.message.contains("SANDBOX ESCAPE"), "{e}");
    still_serving(&conn);
}

#[test]
fn identifying_a_program_is_checked_against_the_allowlist() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture();
    let conn = f.host.open("hostile:///session", false).unwrap();
    let identify = |name: &str, program: &str| {
        let (def, _) = conn
            .define(domain(name, &format!("identify:{program}")))
            .unwrap();
        conn.start(&def.uuid, false).unwrap_err()
    };
    // Outside the allowlist: refused as running it would be, naming the allowlist, and
    // nothing about the file is told (not even whether it exists).
    for program in ["/bin/sh", "cat", "/no/such/program"] {
        let e = identify(&format!("id-{}", program.len()), program);
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        assert!(
            e.message.starts_with("plugin 'hostile': program '")
                && e.message.ends_with("(allowed: /bin/true)"),
            "{e}"
        );
        assert!(!e.message.contains("identified"), "{e}");
    }
    // The granted program: its identity is the file the host would run, as stat(2) sees it.
    let e = identify("id-true", "/bin/true");
    let real = std::fs::canonicalize("/bin/true").unwrap();
    let meta = std::fs::metadata(&real).unwrap();
    assert_eq!(
        e.message,
        format!(
            "internal error: identified /bin/true: path /bin/true resolved {} size {} mtime {}.{:09} inode {} device {}",
            real.display(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino(),
            meta.dev()
        )
    );
    still_serving(&conn);
}

#[test]
fn a_manifest_whose_paths_were_not_expanded_is_refused_and_creates_nothing() {
    // A `{variable}` left in a grant would make directories relative to the current one.
    let manifest = hostile_manifest().replace(
        "[limits]",
        "sockets = [\"{runtime_dir}/hostile-test\"]\n\n[limits]",
    );
    let m = virtwasm_host::manifest::Manifest::parse(&manifest, "hostile").unwrap();
    let wasm = std::fs::read(virtwasm_bundle::HOSTILE_WASM).unwrap();
    let runtime = Arc::new(virtwasm_host::engine::Runtime::new(None).unwrap());
    let e = virtwasm_host::plugin::Plugin::load(
        runtime,
        m,
        &wasm,
        None,
        virtwasm_host::plugin::PluginSource::Bundled,
    )
    .unwrap_err();
    assert!(
        e.message.contains(
            "granted path '{runtime_dir}/hostile-test' is not absolute (were the manifest's variables expanded?)"
        ),
        "{e}"
    );
    assert!(!Path::new("{runtime_dir}").exists(), "nothing was created");
}
