//! The CLI on the built-in test driver: every lifecycle verb and every error path, through
//! the real binary, checked against virsh's exact output.

mod common;

use common::{test_driver, virtwasm, with_stdin};

const LIST_RUNNING: &str = " Id   Name   State\n----------------------\n 1    test   running\n\n";

#[test]
fn list_all_prints_libvirts_table() {
    let r = test_driver("list --all");
    assert_eq!(r.ok(), LIST_RUNNING);
    assert_eq!(r.stderr, "");
}

#[test]
fn dominfo_matches_virsh_layout() {
    let out = test_driver("dominfo test").ok().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Id:             1");
    assert_eq!(lines[1], "Name:           test");
    assert_eq!(
        lines[2],
        "UUID:           6695eb01-f6a4-8304-79aa-97f2502e193f"
    );
    assert_eq!(lines[3], "OS Type:        linux");
    assert_eq!(lines[4], "State:          running");
    assert_eq!(lines[5], "CPU(s):         2");
    assert!(
        lines[6].starts_with("CPU time:       ") && lines[6].ends_with('s'),
        "{}",
        lines[6]
    );
    let secs: f64 = lines[6]["CPU time:       ".len()..lines[6].len() - 1]
        .parse()
        .unwrap();
    assert!(
        secs > 1.0e9,
        "the test driver reports the time of day as CPU time: {secs}"
    );
    assert_eq!(
        &lines[7..],
        &[
            "Max memory:     8388608 KiB",
            "Used memory:    2097152 KiB",
            "Persistent:     yes",
            "Autostart:      disable",
            "Managed save:   no",
            "Security model: testSecurity",
            "Security DOI:   ",
            "Security label: libvirt-test (enforcing)",
            "",
        ]
    );
}

#[test]
fn suspend_and_resume_walk_the_state_machine() {
    let r = test_driver(
        "suspend test; domstate test --reason; list; resume test; domstate --reason test",
    );
    assert_eq!(
        r.ok(),
        "Domain 'test' suspended\n\npaused (user)\n\n Id   Name   State\n---------------------\n 1    test   paused\n\nDomain 'test' resumed\n\nrunning (unpaused)\n\n"
    );
}

#[test]
fn destroy_then_start_gives_a_new_id() {
    let r = test_driver(
        "destroy test; domid test; domstate --reason test; start test; domid test; domstate --reason test",
    );
    assert_eq!(
        r.ok(),
        "Domain 'test' destroyed\n\n-\n\nshut off (destroyed)\n\nDomain 'test' started\n\n2\n\nrunning (booted)\n\n"
    );
}

#[test]
fn start_paused_is_refused_as_libvirts_test_driver_refuses_it() {
    // libvirt's test driver rejects VIR_DOMAIN_START_PAUSED; the plugin's own words pass
    // through the host unchanged, and the domain stays shut off.
    let r = test_driver("destroy test; start test --paused; domstate --reason test");
    assert_eq!(
        r.stderr,
        "error: Failed to start domain 'test'\nerror: unsupported flags (0x1) in function testDomainCreateWithFlags\n"
    );
    assert_eq!(
        r.ok(),
        "Domain 'test' destroyed\n\n\nshut off (destroyed)\n\n"
    );
}

#[test]
fn shutdown_reboot_and_reset() {
    let r = test_driver(
        "reboot test; domstate --reason test; reset test; domstate test; shutdown test --mode acpi; domstate --reason test",
    );
    assert_eq!(
        r.ok(),
        "Domain 'test' is being rebooted\n\nrunning (booted)\n\nDomain 'test' was reset\n\nrunning\n\nDomain 'test' is being shutdown\n\nshut off (shutdown)\n\n"
    );
}

#[test]
fn lookups_by_id_name_and_uuid() {
    let r = test_driver(
        "domname 1; domuuid test; domid 6695eb01-f6a4-8304-79aa-97f2502e193f; domid 6695EB01F6A4830479AA97F2502E193F; domstate 1",
    );
    assert_eq!(
        r.ok(),
        "test\n\n6695eb01-f6a4-8304-79aa-97f2502e193f\n\n1\n\n1\n\nrunning\n\n"
    );
}

#[test]
fn autostart_is_shown_by_dominfo_and_filters_list() {
    let r = test_driver(
        "autostart test; list --autostart --name; autostart --disable test; list --autostart --name; list --no-autostart --name",
    );
    assert_eq!(
        r.ok(),
        "Domain 'test' marked as autostarted\n\ntest\n\nDomain 'test' unmarked as autostarted\n\n\ntest\n\n"
    );
}

#[test]
fn undefining_a_running_domain_leaves_it_transient_until_it_stops() {
    let r = test_driver("undefine test; list --all; dominfo test; destroy test; list --all");
    let out = r.ok();
    assert!(out.starts_with("Domain 'test' has been undefined\n\n Id   Name   State\n----------------------\n 1    test   running\n\n"), "{out}");
    assert!(out.contains("Persistent:     no\n"), "{out}");
    assert!(
        out.ends_with("Domain 'test' destroyed\n\n Id   Name   State\n--------------------\n\n"),
        "{out}"
    );
}

#[test]
fn list_filters_and_quiet_mode() {
    let r = test_driver(
        "list --inactive; list --state-paused --name; list --state-running --uuid; list --all --name --uuid; list --name --id",
    );
    assert_eq!(
        r.ok(),
        " Id   Name   State\n--------------------\n\n\n6695eb01-f6a4-8304-79aa-97f2502e193f\n\n6695eb01-f6a4-8304-79aa-97f2502e193f test\n\n1 test\n\n"
    );
    let home = tempfile::tempdir().unwrap();
    let q = virtwasm(
        home.path(),
        &["-q", "-c", "test:///default", "list --all; domid test"],
    );
    // Under -q, virsh sizes columns from the rows alone.
    assert_eq!(q.ok(), " 1   test   running\n1\n");
    let r = test_driver("list --table --name");
    assert_eq!(
        r.failed(),
        "error: Options --table and --name are mutually exclusive\n"
    );
}

#[test]
fn json_listing_answers_in_one_call() {
    let r = test_driver("list --all --json");
    let v: serde_json::Value = serde_json::from_str(r.ok().trim_end()).unwrap();
    let d = &v[0];
    assert_eq!(d["name"], "test");
    assert_eq!(d["id"], 1);
    assert_eq!(d["uuid"], "6695eb01-f6a4-8304-79aa-97f2502e193f");
    assert_eq!(d["state"], "running");
    assert_eq!(d["reason"], "unknown");
    assert_eq!(d["memory_kib"], 8388608);
    assert_eq!(d["current_memory_kib"], 2097152);
    assert_eq!(d["vcpus"], 2);
}

#[test]
fn state_errors_carry_libvirts_two_lines() {
    let r = test_driver("start test");
    assert_eq!(r.failed(), "error: Domain is already active\n");
    assert_eq!(
        r.stdout, "\n",
        "virsh prints its blank line after a failed command too"
    );
    let r = test_driver("destroy test; suspend test");
    assert_eq!(
        r.failed(),
        "error: Failed to suspend domain 'test'\nerror: internal error: domain 'test' not running\n"
    );
    let r = test_driver("resume test");
    assert_eq!(
        r.failed(),
        "error: Failed to resume domain 'test'\nerror: internal error: domain 'test' not paused\n"
    );
    let r = test_driver("suspend test; suspend test");
    assert_eq!(
        r.failed(),
        "error: Failed to suspend domain 'test'\nerror: internal error: domain 'test' not running\n"
    );
    // The driver words shutdown's refusal; the host's own check words the others.
    let r = test_driver("destroy test; shutdown test");
    assert_eq!(
        r.failed(),
        "error: Failed to shutdown domain 'test'\nerror: internal error: domain 'test' not running\n"
    );
    for verb in ["destroy", "reboot", "reset"] {
        let r = test_driver(&format!("destroy test; {verb} test"));
        let what = if verb == "destroy" { "destroy" } else { verb };
        assert_eq!(
            r.failed(),
            format!(
                "error: Failed to {what} domain 'test'\nerror: Requested operation is not valid: domain is not running\n"
            ),
            "{verb}"
        );
    }
    let r = test_driver("destroy test; undefine test; undefine test");
    assert_eq!(r.failed(), "error: failed to get domain 'test'\n");
}

#[test]
fn the_exit_status_is_the_last_commands() {
    let r = test_driver("dominfo nosuch; domid test");
    assert_eq!(r.code, 0);
    assert_eq!(r.stderr, "error: failed to get domain 'nosuch'\n");
    assert_eq!(r.stdout, "\n1\n\n");
    let r = test_driver("domid test; dominfo nosuch");
    assert_eq!(r.code, 1);
}

#[test]
fn parse_errors_run_nothing() {
    let r = test_driver("destroy test; bogus");
    assert_eq!(r.failed(), "error: unknown command: 'bogus'\n");
    assert_eq!(r.stdout, "", "nothing ran");
    let r = test_driver("list --bogus");
    assert_eq!(
        r.failed(),
        "error: command 'list' doesn't support option --bogus\n"
    );
    let r = test_driver("start");
    assert_eq!(
        r.failed(),
        "error: command 'start' requires <domain> option\n"
    );
    let r = test_driver("dominfo 'unterminated");
    assert_eq!(r.failed(), "error: missing closing '\n");
    let r = test_driver("shutdown test --mode bogus");
    assert_eq!(
        r.failed(),
        "error: Unknown mode bogus value, expecting 'acpi', 'agent', 'initctl', 'signal', or 'paravirt'\n"
    );
}

#[test]
fn connection_errors_name_the_cause() {
    let home = tempfile::tempdir().unwrap();
    let r = virtwasm(home.path(), &["-c", "qemu://example.com/system", "list"]);
    let e = r.failed();
    assert!(e.starts_with("error: failed to connect to the hypervisor\nerror: connection URI 'qemu://example.com/system' names host 'example.com' but no transport"), "{e}");
    assert!(
        e.contains("qemu+tls://example.com/system")
            && e.contains("qemu+ssh://user@example.com/system"),
        "{e}"
    );
    let r = virtwasm(home.path(), &["-c", "nosuch:///x", "list"]);
    assert_eq!(
        r.failed(),
        "error: failed to connect to the hypervisor\nerror: no connection driver available for 'nosuch' (drivers here serve: test, qemu)\n"
    );
    let r = virtwasm(home.path(), &["-c", "test:///nonexistent", "list"]);
    assert_eq!(
        r.failed(),
        "error: failed to connect to the hypervisor\nerror: cannot read node file '/nonexistent': No such file or directory (os error 2)\n"
    );
    // The default URI (qemu:///system as root) reaches the system daemon, which is not
    // running here: the error names the socket and how to start it.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let r = virtwasm(home.path(), &["list"]);
        assert_eq!(
            r.failed(),
            "error: failed to connect to the hypervisor\nerror: cannot connect to virtwasmd at '/run/virtwasm/virtwasm-sock': No such file or directory (os error 2) (is virtwasmd running? start it with `virtwasmd`, or `virtwasmd --session` for your own)\n"
        );
    }
    // A remote daemon over TLS needs this user's client certificate, and says where it looked.
    let r = virtwasm(
        home.path(),
        &["-c", "test+tls://127.0.0.1:1/default", "list"],
    );
    let e = r.failed();
    assert!(
        e.contains(&format!(
            "{}/.pki/virtwasm/cacert.pem",
            home.path().display()
        )) || e.contains("/etc/pki/virtwasm/cacert.pem"),
        "{e}"
    );
}

#[test]
fn the_default_uri_comes_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    let r = common::command(home.path())
        .env("VIRTWASM_DEFAULT_URI", "test:///default")
        .args(["uri"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "test:///default\n\n");
}

#[test]
fn readonly_connections_refuse_changes() {
    let home = tempfile::tempdir().unwrap();
    let r = virtwasm(
        home.path(),
        &["-r", "-c", "test:///default", "destroy test"],
    );
    assert_eq!(
        r.failed(),
        "error: Failed to destroy domain 'test'\nerror: operation forbidden: read only access prevents this operation\n"
    );
    let r = virtwasm(home.path(), &["-r", "-c", "test:///default", "list"]);
    assert_eq!(r.ok(), LIST_RUNNING);
}

#[test]
fn interactive_shell_reads_stdin() {
    let home = tempfile::tempdir().unwrap();
    let r = with_stdin(
        home.path(),
        &["-q", "-c", "test:///default"],
        "domid test\nsuspend test; domstate test\nquit\nlist\n",
    );
    // -q drops confirmation lines, as virsh's does; data stays.
    assert_eq!(r.ok(), "1\npaused\n");
    let r = with_stdin(home.path(), &["-c", "test:///default"], "domid test\n");
    let out = r.ok();
    assert!(out.starts_with("Welcome to virtwasm"), "{out}");
    assert!(out.contains("virtwasm # domid test\n1\n\n"), "{out}");
}

#[test]
fn node_pool_and_network_queries() {
    let r = test_driver(
        "nodeinfo; pool-list --all; pool-list --details; pool-info default-pool; vol-list default-pool; net-list --all; net-info default",
    );
    let expected = concat!(
        "CPU model:           i686\nCPU(s):              16\nCPU frequency:       1400 MHz\nCPU socket(s):       2\n",
        "Core(s) per socket:  2\nThread(s) per core:  2\nNUMA cell(s):        2\nMemory size:         3145728 KiB\n\n",
        " Name           State    Autostart\n------------------------------------\n default-pool   active   no\n\n",
        " Name           State     Autostart   Persistent   Capacity     Allocation   Available\n",
        "-----------------------------------------------------------------------------------------\n",
        " default-pool   running   no          yes          100.00 GiB   0.00 B       100.00 GiB\n\n",
        "Name:           default-pool\nUUID:           dfe224cb-28fb-8dd0-c4b2-64eb3f0f4566\nState:          running\n",
        "Persistent:     yes\nAutostart:      no\nCapacity:       100.00 GiB\nAllocation:     0.00 B\nAvailable:      100.00 GiB\n\n",
        " Name   Path\n--------------\n\n",
        " Name      State    Autostart   Persistent\n--------------------------------------------\n default   active   no          yes\n\n",
        "Name:           default\nUUID:           dd8fe884-6c02-601e-7551-cca97df1c5df\nActive:         yes\nPersistent:     yes\n",
        "Autostart:      no\nBridge:         virbr0\n\n",
    );
    assert_eq!(r.ok(), expected);
    let r = test_driver("pool-info nosuch");
    assert_eq!(
        r.failed(),
        "error: failed to get pool 'nosuch'\nerror: Storage pool not found: no storage pool with matching name 'nosuch'\n"
    );
    let r = test_driver("net-info nosuch");
    assert_eq!(
        r.failed(),
        "error: failed to get network 'nosuch'\nerror: Network not found: no network with matching name 'nosuch'\n"
    );
}

#[test]
fn plugin_list_and_info_show_grants_and_cache() {
    let r = test_driver("plugin-list; plugin-info test; plugin-info storage-dir");
    let out = r.ok();
    assert!(
        out.starts_with(concat!(
            " Name          Version   World                  Schemes   Source\n",
            "-------------------------------------------------------------------\n",
            " test          0.1.0     full-driver@0.1.0      test      bundled\n",
            " qemu          0.1.0     full-driver@0.1.0      qemu      bundled\n",
            " storage-dir   0.1.0     storage-driver@0.1.0             bundled\n\n",
        )),
        "{out}"
    );
    assert!(out.contains("Programs:       none\n"), "{out}");
    // The directory storage driver has no files of its own; it is given pool directories.
    assert!(
        out.contains("Programs:       qemu-img, df\nFiles:          none\nSockets:        none\nPool types:     dir\n"),
        "{out}"
    );
    assert!(out.contains("Memory limit:   32 MiB\n"), "{out}");
    assert!(
        out.contains("Cache:          hit") || out.contains("Cache:          miss"),
        "{out}"
    );
    let r = test_driver("plugin-info nosuch");
    assert_eq!(
        r.failed(),
        "error: failed to load plugin 'nosuch'\nerror: no plugin named 'nosuch' (known: test, qemu, storage-dir)\n"
    );
}

#[test]
fn help_lists_commands_and_explains_one() {
    let r = test_driver("help start");
    let out = r.ok();
    assert!(
        out.contains("    start - start a (previously defined) inactive domain\n"),
        "{out}"
    );
    assert!(out.contains("start <domain> [--paused]"), "{out}");
    let r = test_driver("help");
    assert!(r.ok().contains("    list                 list domains\n"));
}

#[test]
fn man_pages_and_completions_come_from_the_command_table() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("docs");
    let r = virtwasm(home.path(), &["gen-docs", out.to_str().unwrap()]);
    r.ok();
    let bash = std::fs::read_to_string(out.join("virtwasm.bash")).unwrap();
    let help = test_driver("help").stdout;
    // Every command `help` lists has a man page and appears in the bash completion.
    let names: Vec<&str> = help
        .lines()
        .filter(|l| l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() > 60, "{names:?}");
    for name in names {
        if name == "help" {
            continue;
        }
        assert!(bash.contains(name), "bash completion lacks {name}");
        let page = std::fs::read_to_string(out.join(format!("virtwasm-{name}.1")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.contains(".SH NAME"), "{name}");
    }
    let root = std::fs::read_to_string(out.join("virtwasm.1")).unwrap();
    assert!(
        root.contains("connect"),
        "the global options are documented"
    );
    assert!(out.join("_virtwasm").exists() && out.join("virtwasm.fish").exists());
}

/// A kernel CPU list (`0-3,8`), read here independently of the host's parser.
fn cpu_count(list: &str) -> u32 {
    list.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

#[test]
fn nodeinfo_of_a_driver_without_it_is_the_hosts_own() {
    // The QEMU driver does not implement get-node-info (a plugin gets no /proc): the host
    // answers from this machine's facts, which the test reads itself.
    let home = tempfile::tempdir().unwrap();
    let uri = format!("qemu:///embed?root={}", home.path().join("root").display());
    let r = virtwasm(home.path(), &["-c", &uri, "nodeinfo"]);
    let out = r.ok().to_string();
    let field = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
            .trim()
            .to_string()
    };
    let num = |key: &str| -> u64 {
        field(key)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let uname = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .unwrap();
    assert_eq!(
        field("CPU model:"),
        String::from_utf8_lossy(&uname.stdout).trim()
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mem_total: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(field("Memory size:"), format!("{mem_total} KiB"));
    let sys = std::path::Path::new("/sys/devices/system");
    let online = cpu_count(&std::fs::read_to_string(sys.join("cpu/online")).unwrap());
    let present = cpu_count(&std::fs::read_to_string(sys.join("cpu/present")).unwrap());
    assert_eq!(num("CPU(s):"), u64::from(online), "{out}");
    let (nodes, sockets, cores, threads) = (
        num("NUMA cell(s):"),
        num("CPU socket(s):"),
        num("Core(s) per socket:"),
        num("Thread(s) per core:"),
    );
    // libvirt's invariant: the topology multiplies out to every CPU, online or not (else
    // it is reported flat).
    assert_eq!(
        nodes * sockets * cores * threads,
        u64::from(present),
        "{out}"
    );
    let numa_dirs = std::fs::read_dir(sys.join("node"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("node"))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .count() as u64
        })
        .unwrap_or(0)
        .max(1);
    assert!(
        nodes == numa_dirs || (nodes, sockets, threads) == (1, 1, 1),
        "{out}"
    );
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    if field("CPU model:") == "x86_64" && cpuinfo.lines().any(|l| l.starts_with("cpu MHz")) {
        assert!(num("CPU frequency:") > 0, "{out}");
    }
    // capabilities, which wants node info too, now answers, with the same topology.
    let r = virtwasm(home.path(), &["-c", &uri, "capabilities"]);
    let caps = r.ok();
    assert!(
        caps.contains(&format!(
            "<topology sockets='{sockets}' dies='1' cores='{cores}' threads='{threads}'/>"
        )),
        "{caps}"
    );
    assert!(
        caps.contains(&format!("<arch>{}</arch>", field("CPU model:"))),
        "{caps}"
    );
}
