//! Durable state: a persistent driver's definitions and runtime records survive the process
//! that wrote them, in libvirt's layout, and nothing a definition says can write elsewhere.
//! The driver here is the hostile test plugin, whose harmless verbs behave like a plain
//! hypervisor; `hostile:///embed?root=DIR` keeps every file under DIR.

mod common;

use std::path::Path;

use common::{Run, command, with_plugin};

fn plugin_dir(home: &Path) -> std::path::PathBuf {
    let dir = home.join("plugins/hostile");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(virtwasm_bundle::HOSTILE_WASM, dir.join("hostile.wasm")).unwrap();
    std::fs::copy(virtwasm_bundle::HOSTILE_MANIFEST, dir.join("plugin.toml")).unwrap();
    home.join("plugins")
}

fn run(home: &Path, root: &Path, script: &str) -> Run {
    let uri = format!("hostile:///embed?root={}", root.display());
    with_plugin(home, &plugin_dir(home), &uri, script)
}

const VM: &str = "<domain type='qemu'>\n  <name>web1</name>\n  <uuid>0b5c0d67-5a56-4b0e-9b52-3c1d8a6e0f11</uuid>\n  <memory unit='MiB'>256</memory>\n  <vcpu>2</vcpu>\n  <os><type arch='x86_64'>hvm</type></os>\n  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>\n</domain>\n";

#[test]
fn definitions_and_running_state_survive_the_process() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("root");
    let xml = home.path().join("web1.xml");
    std::fs::write(&xml, VM).unwrap();

    let r = run(home.path(), &root, &format!("define {}", xml.display()));
    assert_eq!(
        r.ok(),
        format!("Domain 'web1' defined from {}\n\n", xml.display())
    );
    let def_file = root.join("etc/virtwasm/hostile/domains/web1.xml");
    let on_disk = std::fs::read_to_string(&def_file).unwrap();
    assert!(on_disk.starts_with("<domain type='qemu'>\n  <name>web1</name>\n  <uuid>0b5c0d67-5a56-4b0e-9b52-3c1d8a6e0f11</uuid>\n"), "{on_disk}");
    assert!(
        on_disk.contains("<memory unit='KiB'>262144</memory>"),
        "normalised to KiB: {on_disk}"
    );

    // A new process sees it, starts it, and a third one finds it running with its id.
    let r = run(home.path(), &root, "list --all; start web1; autostart web1");
    assert_eq!(
        r.ok(),
        " Id   Name   State\n-----------------------\n -    web1   shut off\n\nDomain 'web1' started\n\nDomain 'web1' marked as autostarted\n\n"
    );
    assert!(root.join("run/virtwasm/hostile/domains/web1.json").exists());
    assert!(
        root.join("etc/virtwasm/hostile/domains/autostart/web1")
            .exists()
    );
    let r = run(home.path(), &root, "list; domstate web1 --reason");
    assert_eq!(
        r.ok(),
        " Id   Name   State\n----------------------\n 1    web1   running\n\nrunning (booted)\n\n"
    );
    // A verb the driver lacks is reported plainly, naming the driver and the verb.
    let r = run(home.path(), &root, "dominfo web1");
    assert_eq!(
        r.failed(),
        "error: this function is not supported by the connection driver: virDomainGetInfo\n"
    );

    // Stopping removes the status file; undefining removes the definition.
    let r = run(
        home.path(),
        &root,
        "destroy web1; undefine web1; list --all",
    );
    assert_eq!(
        r.ok(),
        "Domain 'web1' destroyed\n\nDomain 'web1' has been undefined\n\n Id   Name   State\n--------------------\n\n"
    );
    assert!(!root.join("run/virtwasm/hostile/domains/web1.json").exists());
    assert!(!def_file.exists());
    assert!(
        !root
            .join("etc/virtwasm/hostile/domains/autostart/web1")
            .exists()
    );
}

#[test]
fn a_transient_domain_lives_only_in_the_runtime_directory() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("root");
    let xml = home.path().join("web1.xml");
    std::fs::write(&xml, VM).unwrap();
    let r = run(home.path(), &root, &format!("create {}", xml.display()));
    assert_eq!(
        r.ok(),
        format!("Domain 'web1' created from {}\n\n", xml.display())
    );
    assert!(!root.join("etc/virtwasm/hostile/domains/web1.xml").exists());
    let r = run(
        home.path(),
        &root,
        "list --all --persistent; list --transient --name",
    );
    assert_eq!(
        r.ok(),
        " Id   Name   State\n--------------------\n\nweb1\n\n"
    );
    // A hypervisor driver refuses to autostart or undefine a transient domain, as libvirt's
    // QEMU driver does (only the test driver's manifest asks for libvirt's test-driver
    // leniency), and nothing changes.
    let r = run(home.path(), &root, "autostart web1");
    assert_eq!(
        r.failed(),
        "error: Failed to mark domain 'web1' as autostarted\nerror: Requested operation is not valid: cannot set autostart for transient domain\n"
    );
    let r = run(home.path(), &root, "undefine web1");
    assert_eq!(
        r.failed(),
        "error: Failed to undefine domain 'web1'\nerror: Requested operation is not valid: cannot undefine transient domain\n"
    );
    let r = run(home.path(), &root, "list --transient --name");
    assert_eq!(r.ok(), "web1\n\n", "still there, still transient");
    let r = run(home.path(), &root, "destroy web1; list --all");
    assert_eq!(
        r.ok(),
        "Domain 'web1' destroyed\n\n Id   Name   State\n--------------------\n\n"
    );
}

#[test]
fn names_cannot_escape_the_config_directory() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("root");
    for (name, why) in [
        ("../../../../tmp/evil", "cannot contain '/'"),
        (".hidden", "it cannot start with '.'"),
        ("tab\tname", "it cannot contain control characters"),
    ] {
        let xml = home.path().join("bad.xml");
        let text = VM.replace("<name>web1</name>", &format!("<name>{name}</name>"));
        std::fs::write(&xml, text).unwrap();
        let r = run(home.path(), &root, &format!("define {}", xml.display()));
        let err = r.failed();
        assert!(
            err.starts_with(&format!(
                "error: Failed to define domain from {}\nerror: ",
                xml.display()
            )),
            "{err}"
        );
        assert!(err.contains(why), "{err}");
        assert_eq!(err.lines().count(), 2, "{err}");
    }
    let long = "x".repeat(201);
    let xml = home.path().join("long.xml");
    std::fs::write(
        &xml,
        VM.replace("<name>web1</name>", &format!("<name>{long}</name>")),
    )
    .unwrap();
    let r = run(home.path(), &root, &format!("define {}", xml.display()));
    assert!(
        r.failed()
            .contains("it is 201 bytes long, the limit is 200"),
        "{}",
        r.stderr
    );
    let domains = root.join("etc/virtwasm/hostile/domains");
    let files: Vec<_> = std::fs::read_dir(&domains)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        files,
        vec![std::ffi::OsString::from("autostart")],
        "nothing was written"
    );
    assert!(!Path::new("/tmp/evil.xml").exists());
}

#[test]
fn duplicate_names_and_uuids_are_refused_and_change_nothing() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("root");
    let xml = home.path().join("web1.xml");
    std::fs::write(&xml, VM).unwrap();
    run(home.path(), &root, &format!("define {}", xml.display())).ok();
    let before =
        std::fs::read_to_string(root.join("etc/virtwasm/hostile/domains/web1.xml")).unwrap();
    let other_uuid = home.path().join("same-name.xml");
    std::fs::write(
        &other_uuid,
        VM.replace(
            "0b5c0d67-5a56-4b0e-9b52-3c1d8a6e0f11",
            "11111111-2222-4333-8444-555555555555",
        ),
    )
    .unwrap();
    let r = run(
        home.path(),
        &root,
        &format!("define {}", other_uuid.display()),
    );
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to define domain from {}\nerror: operation failed: domain 'web1' already exists with uuid 0b5c0d67-5a56-4b0e-9b52-3c1d8a6e0f11\n",
            other_uuid.display()
        )
    );
    let other_name = home.path().join("same-uuid.xml");
    std::fs::write(
        &other_name,
        VM.replace("<name>web1</name>", "<name>web2</name>"),
    )
    .unwrap();
    let r = run(
        home.path(),
        &root,
        &format!("define {}", other_name.display()),
    );
    assert_eq!(
        r.failed(),
        format!(
            "error: Failed to define domain from {}\nerror: operation failed: domain 'web1' is already defined with uuid 0b5c0d67-5a56-4b0e-9b52-3c1d8a6e0f11\n",
            other_name.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/virtwasm/hostile/domains/web1.xml")).unwrap(),
        before
    );
    assert!(!root.join("etc/virtwasm/hostile/domains/web2.xml").exists());
}

#[test]
fn malformed_xml_is_refused_with_its_position() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("root");
    let xml = home.path().join("bad.xml");
    std::fs::write(
        &xml,
        VM.replace(
            "<memory unit='MiB'>256</memory>",
            "<memory unit='furlongs'>256</memory>",
        ),
    )
    .unwrap();
    let r = run(home.path(), &root, &format!("define {}", xml.display()));
    let err = r.failed();
    assert!(err.contains("line 4, column"), "{err}");
    assert!(err.contains("unknown unit 'furlongs'"), "{err}");
    std::fs::write(&xml, "<domain type='qemu'><name>x</name>").unwrap();
    let r = run(home.path(), &root, &format!("define {}", xml.display()));
    assert!(r.failed().contains("XML error at line 1"), "{}", r.stderr);
    let r = run(home.path(), &root, "list --all --name");
    assert_eq!(r.ok(), "\n", "nothing was stored");
}

#[test]
fn embed_without_a_root_and_system_paths_are_explained() {
    let home = tempfile::tempdir().unwrap();
    let out = command(home.path())
        .args([
            "--plugin-dir",
            plugin_dir(home.path()).to_str().unwrap(),
            "-c",
            "hostile:///embed",
            "list",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hostile:///embed needs a root directory: hostile:///embed?root=/path/to/dir"),
        "{err}"
    );
    let out = command(home.path())
        .args([
            "--plugin-dir",
            plugin_dir(home.path()).to_str().unwrap(),
            "-c",
            "hostile:///elsewhere",
            "list",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "unexpected hostile URI path '/elsewhere', try hostile:///system, hostile:///session"
        ),
        "{err}"
    );
}

/// The test driver installed as a persistent driver (`ptest`), so storage and networks,
/// which the hostile plugin does not serve, go through the same store.
fn run_ptest(home: &Path, root: &Path, script: &str) -> Run {
    let uri = format!("ptest:///embed?root={}", root.display());
    with_plugin(home, &common::persistent_test_driver(home), &uri, script)
}

#[test]
fn pools_volumes_and_networks_survive_the_process() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("root");
    let net = home.path().join("net1.xml");
    std::fs::write(&net, "<network><name>net1</name><uuid>11111111-2222-3333-4444-555555555555</uuid><bridge name='virbr9'/><forward mode='nat'/><ip address='10.9.0.1' prefix='24'/></network>").unwrap();
    let r = run_ptest(
        home.path(),
        &root,
        &format!(
            "pool-define-as p1 dir --target /srv/p1; pool-start p1; pool-autostart p1; vol-create-as p1 disk.qcow2 1G --format qcow2; net-define {}; net-start net1",
            net.display()
        ),
    );
    r.ok();
    assert!(root.join("etc/virtwasm/ptest/storage/p1.xml").exists());
    assert!(
        root.join("etc/virtwasm/ptest/storage/autostart/p1")
            .exists()
    );
    assert!(root.join("etc/virtwasm/ptest/networks/net1.xml").exists());
    let net_xml =
        std::fs::read_to_string(root.join("etc/virtwasm/ptest/networks/net1.xml")).unwrap();
    assert!(net_xml.contains("<bridge name='virbr9'"), "{net_xml}");
    // A new process finds them active, with the volume.
    let r = run_ptest(
        home.path(),
        &root,
        "pool-list --all; vol-list p1; net-list --all",
    );
    assert_eq!(
        r.ok(),
        concat!(
            " Name   State    Autostart\n----------------------------\n p1     active   yes\n\n",
            " Name         Path\n----------------------------------\n disk.qcow2   /srv/p1/disk.qcow2\n\n",
            " Name   State    Autostart   Persistent\n-----------------------------------------\n net1   active   no          yes\n\n",
        )
    );
    // Stopping and undefining remove their files.
    let r = run_ptest(
        home.path(),
        &root,
        "pool-destroy p1; pool-undefine p1; net-destroy net1; net-undefine net1",
    );
    r.ok();
    assert!(!root.join("etc/virtwasm/ptest/storage/p1.xml").exists());
    assert!(!root.join("run/virtwasm/ptest/storage/p1.json").exists());
    assert!(!root.join("etc/virtwasm/ptest/networks/net1.xml").exists());
    let r = run_ptest(
        home.path(),
        &root,
        "pool-list --all --name; net-list --all --name",
    );
    assert_eq!(r.ok(), "\n\n");
}

/// A save image in virtwasm's format carrying `xml` (no memory stream: the test driver's).
fn image(path: &Path, xml: &str) {
    let mut head = Vec::new();
    head.extend_from_slice(b"VirtwasmSaveImg\0");
    head.extend_from_slice(&1u32.to_le_bytes());
    head.extend_from_slice(&(xml.len() as u32).to_le_bytes());
    head.extend_from_slice(&[0u8; 8]);
    head.extend_from_slice(xml.as_bytes());
    head.resize(head.len().div_ceil(4096) * 4096, 0);
    std::fs::write(path, head).unwrap();
}

#[test]
fn a_save_image_cannot_name_a_path() {
    let home = tempfile::tempdir().unwrap();
    let root = home.path().join("root");
    let img = home.path().join("evil.sav");
    image(
        &img,
        &VM.replace("<name>web1</name>", "<name>../../../../tmp/escape</name>"),
    );
    let r = run(home.path(), &root, &format!("restore {}", img.display()));
    let err = r.failed();
    assert!(err.starts_with(&format!("error: Failed to restore domain from {}\nerror: invalid domain name '../../../../tmp/escape'", img.display())), "{err}");
    assert!(!Path::new("/tmp/escape.json").exists());
    // A well-formed image restores (through the persistent test driver, which restores).
    image(&img, &VM.replace("type='qemu'", "type='test'"));
    let r = run_ptest(
        home.path(),
        &root,
        &format!("restore {}; domstate web1 --reason", img.display()),
    );
    assert_eq!(
        r.ok(),
        format!(
            "Domain restored from {}\n\nrunning (restored)\n\n",
            img.display()
        )
    );
}

#[test]
fn edit_passes_the_file_name_as_data() {
    // A domain name with shell syntax must not run anything when the editor is started.
    let home = tempfile::tempdir().unwrap();
    let work = home.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let xml = home.path().join("odd.xml");
    std::fs::write(
        &xml,
        VM.replace("<name>web1</name>", "<name>x;touch${IFS}pwned;</name>")
            .replace("type='qemu'", "type='test'"),
    )
    .unwrap();
    let out = command(home.path())
        .current_dir(&work)
        .env("EDITOR", "true")
        .args([
            "-c",
            "test:///default",
            &format!("define {}; edit 'x;touch${{IFS}}pwned;'", xml.display()),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Domain 'x;touch${IFS}pwned;' XML configuration not changed."),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !work.join("pwned").exists(),
        "the name was executed by the shell"
    );
}
