//! The host library's API as the daemon will use it: lifecycle events on the bus, and
//! device attach/detach in the persistent definition.

mod common;

use std::sync::mpsc::Receiver;
use std::time::Duration;

use virtwasm_host::bindings::types::{Device, Disk, DiskDevice, DiskSourceType};
use virtwasm_host::connect::Dirs;
use virtwasm_host::devices::DeviceSelector;
use virtwasm_host::events::{DomainEvent, Event};
use virtwasm_host::tuning::Scope;
use virtwasm_host::{BundledPlugin, ErrorKind, Host, HostConfig};

fn host(root: &std::path::Path) -> Host {
    let bundled = virtwasm_bundle::BUNDLED
        .iter()
        .map(|b| BundledPlugin {
            manifest: b.manifest,
            wasm: b.wasm,
            sha256: b.sha256,
        })
        .collect();
    let mut config = HostConfig::for_current_user(bundled);
    config.plugin_dirs = vec![];
    config.cache_dir = Some(common::cache_dir());
    config.session_dirs = Dirs::under(&root.join("session"));
    config.system_dirs = Dirs::under(&root.join("system"));
    Host::new(config).unwrap()
}

fn drain(rx: &Receiver<Event>) -> Vec<String> {
    let mut v = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_millis(50)) {
        if let Event::Domain { name, event, .. } = e {
            v.push(format!("{name}: {}", event.describe()));
        }
    }
    v
}

#[test]
fn lifecycle_verbs_emit_libvirts_events_to_every_subscriber() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path());
    let a = host.open("test:///default", false).unwrap();
    let b = host.open("test:///default", true).unwrap();
    let rx_a = a.state().events.subscribe();
    let rx_b = b.state().events.subscribe();
    a.suspend("test").unwrap();
    a.resume("test").unwrap();
    a.destroy("test", false).unwrap();
    a.start("test", false).unwrap();
    a.shutdown("test", Default::default()).unwrap();
    let expected = vec![
        "test: Suspended Paused",
        "test: Resumed Unpaused",
        "test: Stopped Destroyed",
        "test: Started Booted",
        "test: Shutdown Finished",
        "test: Stopped Shutdown",
    ];
    assert_eq!(drain(&rx_a), expected);
    assert_eq!(
        drain(&rx_b),
        expected,
        "a second connection to the same URI sees them too"
    );
    // A read-only connection refuses, and nothing is emitted.
    let e = b.start("test", false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    assert!(drain(&rx_a).is_empty());
    assert!(matches!(
        DomainEvent::Started("Booted").describe().as_str(),
        "Started Booted"
    ));
}

#[test]
fn devices_attach_and_detach_in_the_persistent_definition() {
    let tmp = tempfile::tempdir().unwrap();
    let host = host(tmp.path());
    let conn = host.open("test:///default", false).unwrap();
    let disk = Disk {
        source_type: DiskSourceType::File,
        device: DiskDevice::Disk,
        driver_name: None,
        format: Some("qcow2".into()),
        cache: None,
        io: None,
        source: Some("/images/data.qcow2".into()),
        source_pool: None,
        source_volume: None,
        target_dev: "vdb".into(),
        target_bus: None,
        readonly: false,
        shareable: false,
        boot_order: None,
        address: vec![],
    };
    let config = Some(Scope {
        live: false,
        config: true,
    });
    conn.attach_device("test", Device::Disk(disk.clone()), config)
        .unwrap();
    let rec = conn.domain("test").unwrap();
    assert_eq!(rec.def.disks.len(), 2, "added to the persistent definition");
    assert_eq!(
        rec.def.disks[1].target_bus.as_deref(),
        Some("virtio"),
        "defaults filled through the driver"
    );
    assert_eq!(
        rec.live.as_ref().unwrap().disks.len(),
        1,
        "the running guest is untouched"
    );
    let e = conn
        .attach_device("test", Device::Disk(disk.clone()), config)
        .unwrap_err();
    assert_eq!(e.message, "operation failed: target vdb already exists");
    // Live hotplug is the driver's; the test driver has none, as libvirt's.
    // Asked again (the host remembers a verb the plugin lacks), the answer is the same.
    for _ in 0..2 {
        let e = conn
            .attach_device("test", Device::Disk(disk.clone()), None)
            .unwrap_err();
        assert_eq!(
            e.message,
            "this function is not supported by the connection driver: virDomainAttachDevice"
        );
        assert_eq!(e.kind, virtwasm_host::ErrorKind::Unsupported);
    }
    let gone = conn
        .detach_device(
            "test",
            &DeviceSelector::Disk("/images/data.qcow2".into()),
            config,
        )
        .unwrap();
    assert!(gone.is_some());
    assert_eq!(conn.domain("test").unwrap().def.disks.len(), 1);
    assert!(
        conn.detach_device("test", &DeviceSelector::Disk("vdz".into()), config)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_save_image_swapped_after_its_check_is_not_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let h = host(tmp.path());
    let conn = h.open("test:///default", false).unwrap();
    let image = tmp.path().join("test.save");
    conn.save("test", &image).unwrap();
    let (checked, _) = virtwasm_host::savefile::read_header(&image).unwrap();
    // A front end checked another definition than the one the file now holds.
    let e = conn
        .restore_checked(
            &image,
            false,
            "<domain type='test'><name>other</name></domain>",
        )
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "save image '{}' changed while it was being restored",
            image.display()
        )
    );
    assert!(
        !conn.domain("test").unwrap().is_active(),
        "nothing was restored"
    );
    // With the definition it holds, the restore goes ahead.
    conn.restore_checked(&image, false, &checked).unwrap();
    assert!(conn.domain("test").unwrap().is_active());
}
