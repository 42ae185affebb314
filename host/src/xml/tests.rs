//! Tests of the XML layer: normalisation, defaults, every error path, extras, strict mode,
//! byte-for-byte agreement with libvirt's test driver, the project's fixtures, and the
//! round trip over libvirt's own test data in `../shared/conformance/libvirt`.

use std::path::{Path, PathBuf};

use super::*;
use crate::bindings::types::{
    BootDevice, ChardevKind, DiskSourceType, ForwardMode, LifecycleAction, PoolType,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/xml")
}

fn fixture(name: &str) -> String {
    let path = fixtures().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A minimal domain with `body` spliced in after the memory element.
fn domain(body: &str) -> String {
    format!(
        "<domain type='kvm'>\n  <name>t</name>\n  <memory unit='KiB'>1024</memory>\n{body}\n  <os>\n    <type>hvm</type>\n  </os>\n</domain>\n"
    )
}

fn domain_err(xml: &str) -> String {
    match parse_domain(xml) {
        Ok(d) => panic!("expected an error, parsed {:?}", d.def),
        Err(e) => {
            assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
            e.message
        }
    }
}

// ------------------------------------------------------------------ normalisation

#[test]
fn memory_is_normalised_to_kib_rounding_up() {
    let cases = [
        ("<memory unit='MiB'>1024</memory>", 1_048_576),
        ("<memory unit='G'>2</memory>", 2_097_152),
        ("<memory unit='GB'>1</memory>", 976_563), // 10^9 bytes, rounded up
        ("<memory unit='b'>1025</memory>", 2),
        ("<memory unit='bytes'>2048</memory>", 2),
        ("<memory unit='KB'>1024</memory>", 1000),
        ("<memory>512</memory>", 512), // KiB by default
        ("<memory unit='k'>7</memory>", 7),
    ];
    for (memory, kib) in cases {
        let xml =
            format!("<domain type='kvm'><name>m</name>{memory}<os><type>hvm</type></os></domain>");
        let d = parse_domain(&xml).unwrap();
        assert_eq!(d.def.memory_kib, kib, "{memory}");
        assert_eq!(
            d.def.current_memory_kib, kib,
            "currentMemory defaults to memory for {memory}"
        );
    }
}

#[test]
fn current_memory_is_capped_to_memory() {
    let xml = domain("  <currentMemory unit='GiB'>4</currentMemory>");
    assert_eq!(parse_domain(&xml).unwrap().def.current_memory_kib, 1024);
    let xml = domain("  <currentMemory unit='b'>2000</currentMemory>");
    assert_eq!(parse_domain(&xml).unwrap().def.current_memory_kib, 2);
}

#[test]
fn volume_sizes_are_normalised_to_bytes() {
    let xml = "<volume><name>v</name><capacity unit='G'>5</capacity><allocation unit='KB'>3</allocation></volume>";
    let v = parse_volume(xml).unwrap();
    assert_eq!(v.def.capacity, 5 << 30);
    assert_eq!(v.def.allocation, Some(3000));
    let v = parse_volume("<volume><name>v</name><capacity>123</capacity></volume>").unwrap();
    assert_eq!(v.def.capacity, 123, "bytes by default");
    assert_eq!(v.def.allocation, None);
}

#[test]
fn uuids_and_macs_are_canonicalised() {
    let xml = domain(
        "  <uuid>C7A5FDBDEDAF9455926AD65C16DB1809</uuid>\n  <devices><interface type='user'><mac address='52:54:00:AB:c:1'/></interface></devices>",
    );
    let d = parse_domain(&xml).unwrap();
    assert_eq!(d.def.uuid, "c7a5fdbd-edaf-9455-926a-d65c16db1809");
    assert_eq!(
        d.def.interfaces[0].mac.as_deref(),
        Some("52:54:00:ab:0c:01")
    );
}

#[test]
fn vcpu_current_equal_to_maximum_is_dropped_as_libvirt_does() {
    let d = parse_domain(&domain("  <vcpu current='2'>2</vcpu>")).unwrap();
    assert_eq!((d.def.vcpus, d.def.current_vcpus), (2, None));
    let d = parse_domain(&domain("  <vcpu placement='auto' current='1'>3</vcpu>")).unwrap();
    assert_eq!((d.def.vcpus, d.def.current_vcpus), (3, Some(1)));
    assert_eq!(d.def.vcpu_placement.as_deref(), Some("auto"));
}

#[test]
fn features_are_sorted_in_libvirts_order() {
    let d = parse_domain(&domain(
        "  <features><pae/><vmport/><acpi/><acpi/><apic/></features>",
    ))
    .unwrap();
    assert_eq!(d.def.features, ["acpi", "apic", "pae", "vmport"]);
}

#[test]
fn chardevs_are_grouped_by_kind_in_libvirts_order() {
    let xml = domain(
        "  <devices><console type='pty'/><channel type='pty'/><serial type='pty'/><parallel type='pty'/><serial/></devices>",
    );
    let kinds: Vec<ChardevKind> = parse_domain(&xml)
        .unwrap()
        .def
        .chardevs
        .iter()
        .map(|c| c.kind)
        .collect();
    use ChardevKind::*;
    assert_eq!(kinds, [Serial, Serial, Parallel, Console, Channel]);
}

#[test]
fn network_netmask_becomes_a_prefix_and_is_written_back_as_written() {
    let xml = "<network><name>n</name><ip address='10.0.0.1' netmask='255.255.0.0'/><ip family='ipv6' address='fd00::1' prefix='64'/></network>";
    let n = parse_network(xml).unwrap();
    assert_eq!(n.def.ips[0].prefix, Some(16));
    assert_eq!(n.def.ips[0].netmask.as_deref(), Some("255.255.0.0"));
    assert_eq!(
        (n.def.ips[1].prefix, n.def.ips[1].netmask.as_deref()),
        (Some(64), None)
    );
    let out = format_network(&n, &FormatOptions::default());
    assert!(
        out.contains("<ip address='10.0.0.1' netmask='255.255.0.0'>\n  </ip>"),
        "{out}"
    );
    assert!(
        out.contains("<ip family='ipv6' address='fd00::1' prefix='64'>"),
        "{out}"
    );
}

#[test]
fn network_forward_defaults_to_nat_and_takes_its_device_from_the_first_interface() {
    let n = parse_network("<network><name>n</name><forward/></network>").unwrap();
    assert_eq!(n.def.forward, Some(ForwardMode::Nat));
    let xml = "<network><name>n</name><forward mode='bridge'><interface dev='eth10'/><interface dev='eth11'/></forward></network>";
    let n = parse_network(xml).unwrap();
    assert_eq!(n.def.forward_dev.as_deref(), Some("eth10"));
    assert_eq!(n.unknown_items(), ["/network/forward/interface"]);
    let out = format_network(&n, &FormatOptions::default());
    assert!(
        out.contains("<forward dev='eth10' mode='bridge'>\n    <interface dev='eth10'/>\n    <interface dev='eth11'/>\n  </forward>"),
        "{out}"
    );
    let n = parse_network("<network><name>n</name><forward mode='none'/></network>").unwrap();
    assert_eq!(n.def.forward, None);
}

// ------------------------------------------------------------------ defaults

#[test]
fn domain_defaults_are_libvirts() {
    let xml = domain(
        "  <devices>\n    <disk><source file='/a'/><target dev='hda'/></disk>\n    <disk><target dev='sdb'/></disk>\n    <disk><target dev='vdc'/></disk>\n    <disk><target dev='xvdd'/></disk>\n    <disk><target dev='fda'/></disk>\n    <disk device='floppy'><target dev='x'/></disk>\n    <disk><target dev='ubda'/></disk>\n    <disk><target dev='nvme0n1'/></disk>\n    <disk><target dev='sdz' bus='usb'/></disk>\n    <interface type='network'><source network='default'/></interface>\n  </devices>",
    );
    let d = parse_domain(&xml).unwrap().def;
    assert_eq!(
        values::canonical_uuid(&d.uuid).unwrap(),
        d.uuid,
        "generated uuid is canonical"
    );
    let buses: Vec<_> = d
        .disks
        .iter()
        .map(|d| d.target_bus.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        buses,
        [
            "ide", "scsi", "virtio", "xen", "fdc", "fdc", "uml", "ide", "usb"
        ]
    );
    assert_eq!(
        d.disks[0].source_type,
        DiskSourceType::File,
        "type defaults to file"
    );
    let mac = d.interfaces[0].mac.as_deref().unwrap();
    assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
    assert_eq!(d.vcpus, 1);
    assert_eq!(d.vcpu_placement.as_deref(), Some("static"));
    assert_eq!(d.current_memory_kib, d.memory_kib);
    assert_eq!(d.on_poweroff, Some(LifecycleAction::Destroy));
    assert_eq!(d.on_reboot, Some(LifecycleAction::Restart));
    assert_eq!(d.on_crash, Some(LifecycleAction::Destroy));
    assert_eq!(d.clock.as_ref().map(|c| c.offset.as_str()), Some("utc"));
    assert_eq!(
        d.os.boot,
        [BootDevice::Hd],
        "an hvm guest boots from disk by default"
    );
}

#[test]
fn defaults_can_be_left_out_and_filled_later() {
    let options = ParseOptions {
        strict: false,
        fill_defaults: false,
    };
    let mut d = parse_domain_with(&domain(""), &options).unwrap().def;
    assert_eq!(
        (
            d.uuid.as_str(),
            d.current_memory_kib,
            d.vcpu_placement.clone()
        ),
        ("", 0, None)
    );
    assert!(d.os.boot.is_empty());
    fill_domain_defaults(&mut d);
    assert_eq!(d.uuid.len(), 36);
    assert_eq!(d.current_memory_kib, 1024);
    // A second fill changes nothing: defaults never overwrite.
    let before = d.clone();
    fill_domain_defaults(&mut d);
    assert_eq!(d, before);
}

#[test]
fn no_default_boot_device_when_a_disk_has_a_boot_order() {
    let xml = domain("  <devices><disk><target dev='vda'/><boot order='1'/></disk></devices>");
    let d = parse_domain(&xml).unwrap().def;
    assert!(d.os.boot.is_empty());
    assert_eq!(d.disks[0].boot_order, Some(1));
}

#[test]
fn a_nic_boot_order_also_rules_out_the_default_boot_device() {
    let xml = domain(
        "  <devices><interface type='network'><source network='default'/><boot order='1'/></interface></devices>",
    );
    let d = parse_domain(&xml).unwrap();
    assert!(d.def.os.boot.is_empty(), "{:?}", d.def.os.boot);
    let xml = "<domain type='kvm'><name>t</name><memory>1</memory><os><type>hvm</type><boot dev='hd'/></os><devices><interface type='user'><boot order='1'/></interface></devices></domain>";
    assert_eq!(
        domain_err(xml),
        "XML error at line 1, column 1: <domain>: per-device boot elements cannot be used together with os/boot elements"
    );
}

#[test]
fn pool_and_network_defaults_are_libvirts() {
    let p = parse_pool("<pool type='logical'><source><name>vg0</name></source></pool>").unwrap();
    assert_eq!(
        p.def.name, "vg0",
        "a volume group pool is named after its group"
    );
    assert_eq!(p.def.target_path.as_deref(), Some("/dev/vg0"));
    assert_eq!(p.def.source_format.as_deref(), Some("lvm2"));
    assert_eq!(p.def.uuid.len(), 36);
    let p = parse_pool("<pool type='netfs'><name>n</name></pool>").unwrap();
    assert_eq!(p.def.source_format.as_deref(), Some("auto"));
    let n = parse_network("<network><name>n</name></network>").unwrap();
    assert_eq!(n.def.uuid.len(), 36);
    assert_eq!((n.def.stp, n.def.delay), (Some(true), Some(0)));
    let n = parse_network(
        "<network><name>n</name><forward mode='bridge'/><bridge name='br0'/></network>",
    )
    .unwrap();
    assert_eq!(
        (n.def.stp, n.def.delay),
        (None, None),
        "libvirt does not manage a host bridge"
    );
}

// ------------------------------------------------------------------ errors

#[test]
fn unknown_memory_unit_names_the_units() {
    let xml =
        "<domain type='kvm'>\n  <name>t</name>\n  <memory unit='furlongs'>4</memory>\n</domain>";
    assert_eq!(
        domain_err(xml),
        "XML error at line 3, column 11: <memory unit='furlongs'>: unknown unit 'furlongs' (expected one of b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB)"
    );
}

#[test]
fn bad_numbers_are_reported_at_the_text() {
    let xml = "<domain type='kvm'>\n  <name>t</name>\n  <memory>lots</memory>\n</domain>";
    assert_eq!(
        domain_err(xml),
        "XML error at line 3, column 11: <memory>: invalid value 'lots' (expected a non-negative integer)"
    );
    let xml = "<domain type='kvm'>\n  <name>t</name>\n  <memory unit='EiB'>16</memory>\n</domain>";
    assert_eq!(
        domain_err(xml),
        "XML error at line 3, column 22: <memory>: value '16' EiB is too large (at most 18446744073709551615 bytes)"
    );
    assert_eq!(
        domain_err(&domain("  <vcpu>0</vcpu>")),
        "XML error at line 4, column 9: <vcpu>: invalid value '0' (expected an integer from 1 to 4294967295)"
    );
    assert_eq!(
        domain_err(&domain("  <vcpu current='3'>2</vcpu>")),
        "XML error at line 4, column 9: <vcpu current='3'>: current vCPUs (3) exceed the maximum (2)"
    );
    assert_eq!(
        domain_err(&domain(
            "  <devices><controller type='usb' index='4294967296'/></devices>"
        )),
        "XML error at line 4, column 35: <controller index='4294967296'>: invalid value '4294967296' (expected an integer from 0 to 4294967295)"
    );
}

#[test]
fn malformed_xml_is_reported_with_line_and_column() {
    let xml = "<domain type='kvm'>\n  <name>t</name>\n  <memory>1</memory>\n";
    assert_eq!(
        domain_err(xml),
        "XML error at line 4, column 1: malformed XML: unexpected end of document, <domain> opened at line 1, column 1 is not closed"
    );
    let xml = "<domain type='kvm'>\n  <name>t</nmae>\n</domain>";
    assert_eq!(
        domain_err(xml),
        "XML error at line 2, column 10: malformed XML: ill-formed document: expected `</name>`, but `</nmae>` was found"
    );
    let xml = "<domain type=kvm>\n</domain>";
    assert!(
        domain_err(xml).starts_with("XML error at line 1, column 14: <domain>: malformed XML: "),
        "{}",
        domain_err(xml)
    );
    let xml = "<domain type='kvm' type='xen'/>";
    assert!(
        domain_err(xml).starts_with("XML error at line 1, column 20: <domain>: malformed XML: ")
    );
}

#[test]
fn missing_required_parts_are_named() {
    assert_eq!(
        domain_err("<domain type='kvm'>\n  <memory>1</memory>\n</domain>"),
        "XML error at line 1, column 1: <domain>: missing required element <name>"
    );
    assert_eq!(
        domain_err("<domain type='kvm'><name>t</name></domain>"),
        "XML error at line 1, column 1: <domain>: missing required element <os>"
    );
    assert_eq!(
        domain_err("<domain type='kvm'><name>t</name><os><type>hvm</type></os></domain>"),
        "XML error at line 1, column 1: <domain>: missing memory size (expected <memory> with a non-zero size, or NUMA cells in <cpu>)"
    );
    assert_eq!(
        domain_err(&domain("  <devices><rng model='virtio'/></devices>")),
        "XML error at line 4, column 12: <rng>: missing required element <backend>"
    );
    assert_eq!(
        domain_err("<domain type='kvm'><name>t</name><os><type>hvm</type><boot/></os></domain>"),
        "XML error at line 1, column 54: <boot>: missing required attribute 'dev'"
    );
    assert_eq!(
        domain_err("<domain>\n  <name>t</name>\n</domain>"),
        "XML error at line 1, column 1: <domain>: missing required attribute 'type'"
    );
    assert_eq!(
        domain_err(&domain(
            "  <devices>\n    <disk type='file'><source file='/a'/></disk>\n  </devices>"
        )),
        "XML error at line 5, column 5: <disk>: missing required element <target>"
    );
    assert_eq!(
        domain_err("<domain type='kvm'><name>  </name><os><type>hvm</type></os></domain>"),
        "XML error at line 1, column 26: <name>: empty name (a name is required)"
    );
    assert_eq!(
        parse_network("<network><uuid>81ff0d90-c91e-6742-64da-4a736edb9a9b</uuid></network>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 1: <network>: missing required element <name>"
    );
}

#[test]
fn wrong_root_element_is_named() {
    assert_eq!(
        domain_err("<network><name>n</name></network>"),
        "XML error at line 1, column 1: <network>: wrong root element (expected <domain>)"
    );
    assert_eq!(
        parse_pool("\n\n  <volume/>").unwrap_err().message,
        "XML error at line 3, column 3: <volume>: wrong root element (expected <pool>)"
    );
}

#[test]
fn invalid_enum_values_list_the_allowed_ones() {
    assert_eq!(
        domain_err(&domain("  <on_crash>explode</on_crash>")),
        "XML error at line 4, column 13: <on_crash>: unknown lifecycle action 'explode' (expected one of destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart)"
    );
    assert_eq!(
        domain_err(
            "<domain type='kvm'><name>t</name><os><type>hvm</type><boot dev='usb'/></os></domain>"
        ),
        "XML error at line 1, column 60: <boot dev='usb'>: unknown boot device 'usb' (expected one of fd, cdrom, hd, network)"
    );
    assert_eq!(
        domain_err(&domain(
            "  <devices><disk type='floppy'><target dev='fda'/></disk></devices>"
        )),
        "XML error at line 4, column 18: <disk type='floppy'>: unknown disk type 'floppy' (expected one of file, block, dir, network, volume, nvme, vhostuser)"
    );
    assert_eq!(
        domain_err(&domain(
            "  <devices><disk><target dev='vda' bus='pci'/></disk></devices>"
        )),
        "XML error at line 4, column 36: <target bus='pci'>: unknown disk bus 'pci' (expected one of ide, fdc, scsi, virtio, xen, usb, uml, sata, sd)"
    );
    assert_eq!(
        domain_err("<domain type='vmx'><name>t</name></domain>"),
        "XML error at line 1, column 9: <domain type='vmx'>: unknown domain type 'vmx' (expected one of none, qemu, kqemu, kvm, xen, lxc, uml, openvz, test, vmware, hyperv, vbox, phyp, parallels, bhyve, vz, hvf)"
    );
    assert_eq!(
        parse_pool("<pool type='nfs'><name>p</name></pool>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 7: <pool type='nfs'>: unknown pool type 'nfs' (expected one of dir, fs, netfs, logical, disk, iscsi, scsi, mpath, rbd, sheepdog, gluster, zfs)"
    );
    assert_eq!(
        parse_pool("<pool type='vstorage'><name>p</name></pool>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 7: <pool type='vstorage'>: this pool type is not supported by virtwasm yet"
    );
    assert_eq!(
        parse_network("<network><name>n</name><forward mode='tunnel'/></network>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 33: <forward mode='tunnel'>: unknown forward mode 'tunnel' (expected one of none, nat, route, open, bridge, private, vepa, passthrough, hostdev)"
    );
}

#[test]
fn invalid_identifiers_are_refused() {
    assert_eq!(
        domain_err(&domain("  <uuid>6695eb01-f6a4-8304-79aa</uuid>")),
        "XML error at line 4, column 9: <uuid>: invalid uuid '6695eb01-f6a4-8304-79aa' (expected 32 hexadecimal digits, as in 6695eb01-f6a4-8304-79aa-97f2502e193f)"
    );
    assert_eq!(
        domain_err(&domain(
            "  <devices><interface type='user'><mac address='52:54:00:zz:00:01'/></interface></devices>"
        )),
        "XML error at line 4, column 40: <mac address='52:54:00:zz:00:01'>: invalid MAC address '52:54:00:zz:00:01' (expected six hexadecimal bytes separated by ':', as in 52:54:00:12:34:56)"
    );
    assert_eq!(
        parse_network("<network><name>n</name><ip address='10.0.0.300'/></network>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 28: <ip address='10.0.0.300'>: invalid IP address '10.0.0.300'"
    );
    assert_eq!(
        parse_network(
            "<network><name>n</name><ip address='10.0.0.1' netmask='255.0.255.0'/></network>"
        )
        .unwrap_err()
        .message,
        "XML error at line 1, column 47: <ip netmask='255.0.255.0'>: invalid netmask '255.0.255.0' (expected contiguous ones, as in 255.255.255.0)"
    );
    assert_eq!(
        parse_network("<network><name>n</name><ip address='10.0.0.1' prefix='8' netmask='255.0.0.0'/></network>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 58: <ip netmask='255.0.0.0'>: an address cannot have both a prefix and a netmask"
    );
    assert_eq!(
        parse_network("<network><name>n</name><ip family='ipv6' address='10.0.0.1'/></network>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 42: <ip address='10.0.0.1'>: address does not belong to family 'ipv6'"
    );
    assert_eq!(
        parse_network(
            "<network><name>n</name><ip address='fd00::1' netmask='255.0.0.0'/></network>"
        )
        .unwrap_err()
        .message,
        "XML error at line 1, column 46: <ip netmask='255.0.0.0'>: a netmask is not supported for IPv6 (use prefix)"
    );
    assert_eq!(
        parse_pool("<pool type='dir'><name>p</name><target><permissions><mode>0999</mode></permissions></target></pool>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 59: <mode>: invalid mode '0999' (expected an octal number from 0 to 0777)"
    );
    assert_eq!(
        parse_volume("<volume><name>v</name><capacity unit='parsecs'>1</capacity></volume>")
            .unwrap_err()
            .message,
        "XML error at line 1, column 33: <capacity unit='parsecs'>: unknown unit 'parsecs' (expected one of b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB)"
    );
}

#[test]
fn per_device_boot_and_os_boot_cannot_be_mixed() {
    let xml = "<domain type='kvm'><name>t</name><memory>1</memory><os><type>hvm</type><boot dev='hd'/></os><devices><disk><target dev='vda'/><boot order='1'/></disk></devices></domain>";
    assert_eq!(
        domain_err(xml),
        "XML error at line 1, column 1: <domain>: per-device boot elements cannot be used together with os/boot elements"
    );
}

// ------------------------------------------------------------------ extras and strict mode

#[test]
fn unknown_content_is_listed_and_survives_a_round_trip() {
    let xml = fixture("domain-extras.xml");
    let d = parse_domain(&xml).unwrap();
    assert_eq!(
        d.unknown_items(),
        [
            "/domain/@xmlns:qemu",
            "/domain/devices/disk[1]/driver/@discard",
            "/domain/devices/disk[1]/serial",
            "/domain/devices/disk[@type='nvme']",
            "/domain/devices/hostdev",
            "/domain/devices/interface[1]/alias",
            "/domain/devices/interface[1]/link",
            "/domain/devices/memballoon/stats",
            "/domain/features/hyperv",
            "/domain/metadata",
            "/domain/os/loader",
            "/domain/qemu:commandline",
        ]
    );
    assert_eq!(
        d.def.disks.len(),
        1,
        "the nvme disk is kept whole, outside the model"
    );
    assert_eq!(d.def.features, ["acpi"]);
    let out = format_domain(&d, &FormatOptions::default());
    assert_eq!(
        out, xml,
        "extras are written back inside their parents, where libvirt puts them"
    );
    assert_eq!(parse_domain(&out).unwrap(), d);
}

#[test]
fn extras_follow_their_list_item() {
    let xml = domain(
        "  <devices>\n    <interface type='network'><mac address='52:54:00:00:00:01'/><source network='a'/></interface>\n    <interface type='vhostuser'><source type='unix' path='/x' mode='client'/></interface>\n    <interface type='network'><mac address='52:54:00:00:00:02'/><source network='b' portgroup='pg'/><link state='down'/></interface>\n  </devices>",
    );
    let d = parse_domain(&xml).unwrap();
    assert_eq!(d.def.interfaces.len(), 2);
    assert_eq!(
        d.unknown_items(),
        [
            "/domain/devices/interface[2]/link",
            "/domain/devices/interface[2]/source/@portgroup",
            "/domain/devices/interface[@type='vhostuser']",
        ]
    );
    let out = format_domain(&d, &FormatOptions::default());
    assert!(
        out.contains("      <source network='b' portgroup='pg'/>\n      <link state='down'/>\n    </interface>"),
        "{out}"
    );
    assert_eq!(parse_domain(&out).unwrap(), d);
}

#[test]
fn extras_follow_their_device_when_one_is_removed() {
    let xml = domain(
        "  <devices>\n    <disk><target dev='vda'/><serial>A</serial></disk>\n    <disk><target dev='vdb'/><serial>B</serial></disk>\n    <disk><target dev='vdc'/><serial>C</serial><iotune/></disk>\n  </devices>",
    );
    let mut d = parse_domain(&xml).unwrap();
    d.def.disks.remove(1);
    d.extras.remove_list_item("/domain/devices/disk", 1);
    assert_eq!(
        d.unknown_items(),
        [
            "/domain/devices/disk[1]/serial",
            "/domain/devices/disk[2]/iotune",
            "/domain/devices/disk[2]/serial",
        ]
    );
    let out = format_domain(&d, &FormatOptions::default());
    assert!(
        out.contains("<target dev='vdc' bus='virtio'/>\n      <serial>C</serial>\n      <iotune/>"),
        "{out}"
    );
    assert!(!out.contains("<serial>B</serial>"), "{out}");
    // A path that only shares a prefix with the list is left alone.
    assert_eq!(
        renumber_path("/domain/devices/diskx[3]", "/domain/devices/disk", 1).as_deref(),
        Some("/domain/devices/diskx[3]")
    );
}

#[test]
fn strict_mode_refuses_the_first_unknown_item_naming_it() {
    let err = parse_domain_strict(&fixture("domain-extras.xml")).unwrap_err();
    assert_eq!(
        err.message,
        "XML error at line 1, column 20: <domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>: attribute /domain/@xmlns:qemu is not supported by virtwasm (refused by strict validation)"
    );
    let xml = domain("  <devices>\n    <hostdev mode='subsystem' type='usb'/>\n  </devices>");
    assert_eq!(
        parse_domain_strict(&xml).unwrap_err().message,
        "XML error at line 5, column 5: <hostdev>: element /domain/devices/hostdev is not supported by virtwasm (refused by strict validation)"
    );
    let xml = "<domain type='kvm'><name>t</name><memory>1</memory><os firmware='efi'><type>hvm</type></os></domain>";
    assert_eq!(
        parse_domain_strict(xml).unwrap_err().message,
        "XML error at line 1, column 56: <os firmware='efi'>: attribute /domain/os/@firmware is not supported by virtwasm (refused by strict validation)"
    );
    let err =
        parse_network_strict("<network><name>n</name><portgroup name='p'/></network>").unwrap_err();
    assert!(
        err.message
            .contains("element /network/portgroup is not supported"),
        "{}",
        err.message
    );
    let err = parse_pool_strict(
        "<pool type='rbd'><name>p</name><source><auth type='ceph'/></source></pool>",
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("element /pool/source/auth is not supported"),
        "{}",
        err.message
    );
    let err =
        parse_volume_strict("<volume><name>v</name><target><compat>1.1</compat></target></volume>")
            .unwrap_err();
    assert!(
        err.message
            .contains("element /volume/target/compat is not supported"),
        "{}",
        err.message
    );
}

#[test]
fn strict_mode_accepts_everything_modelled_and_libvirts_own_dumps() {
    for name in [
        "domain-full.xml",
        "domain-container.xml",
        "libvirt-test-domain-running.xml",
    ] {
        let d = parse_domain_strict(&fixture(name));
        assert!(d.is_ok(), "{name}: {:?}", d.err());
    }
    for name in [
        "pool-dir.xml",
        "pool-fs.xml",
        "pool-logical.xml",
        "pool-iscsi.xml",
        "libvirt-test-pool.xml",
    ] {
        assert!(parse_pool_strict(&fixture(name)).is_ok(), "{name}");
    }
    assert!(parse_volume_strict(&fixture("volume-qcow2-backing.xml")).is_ok());
    for name in ["network-nat.xml", "libvirt-test-network.xml"] {
        assert!(parse_network_strict(&fixture(name)).is_ok(), "{name}");
    }
}

// ------------------------------------------------------------------ output

#[test]
fn test_driver_objects_are_written_byte_for_byte_as_virsh_does() {
    let running = fixture("libvirt-test-domain-running.xml");
    let d = parse_domain(&running).unwrap();
    assert_eq!(
        format_domain(
            &d,
            &FormatOptions {
                id: Some(1),
                inactive: false
            }
        ),
        running
    );
    let inactive = fixture("libvirt-test-domain-inactive.xml");
    assert_eq!(
        format_domain(
            &d,
            &FormatOptions {
                id: Some(1),
                inactive: true
            }
        ),
        inactive
    );
    let network = fixture("libvirt-test-network.xml");
    assert_eq!(
        format_network(&parse_network(&network).unwrap(), &FormatOptions::default()),
        network
    );
    let pool = fixture("libvirt-test-pool.xml");
    let p = parse_pool(&pool).unwrap();
    assert_eq!(
        (p.capacity, p.allocation, p.available),
        (107_374_182_400, 0, 107_374_182_400)
    );
    assert_eq!(format_pool(&p, &FormatOptions::default()), pool);
}

/// Compares with the installed virsh when there is one; the fixtures above hold the same
/// outputs for machines without libvirt.
#[test]
fn test_driver_objects_match_the_installed_virsh() {
    let run = |args: &[&str]| {
        std::process::Command::new("virsh")
            .args(["-q", "-c", "test:///default"])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string() + "\n")
    };
    let Some(live) = run(&["dumpxml", "test"]) else {
        eprintln!("SKIPPED: virsh with the test driver is not available");
        return;
    };
    let d = parse_domain(&live).unwrap();
    assert_eq!(
        format_domain(
            &d,
            &FormatOptions {
                id: Some(1),
                inactive: false
            }
        ),
        live
    );
    if let Some(net) = run(&["net-dumpxml", "default"]) {
        assert_eq!(
            format_network(&parse_network(&net).unwrap(), &FormatOptions::default()),
            net
        );
    }
    if let Some(pool) = run(&["pool-dumpxml", "default-pool"]) {
        assert_eq!(
            format_pool(&parse_pool(&pool).unwrap(), &FormatOptions::default()),
            pool
        );
    }
}

#[test]
fn inactive_output_drops_live_only_values() {
    let xml = domain(
        "  <devices><serial type='pty'><source path='/dev/pts/4'/><target port='0'/></serial><graphics type='vnc' port='5901' autoport='yes'/></devices>",
    );
    let d = parse_domain(&xml).unwrap();
    let live = format_domain(
        &d,
        &FormatOptions {
            id: Some(3),
            inactive: false,
        },
    );
    assert!(live.starts_with("<domain type='kvm' id='3'>"), "{live}");
    assert!(live.contains("<source path='/dev/pts/4'/>"), "{live}");
    assert!(
        live.contains("<graphics type='vnc' port='5901' autoport='yes'/>"),
        "{live}"
    );
    let inactive = format_domain(
        &d,
        &FormatOptions {
            id: Some(3),
            inactive: true,
        },
    );
    assert!(inactive.starts_with("<domain type='kvm'>"), "{inactive}");
    assert!(!inactive.contains("/dev/pts/4"), "{inactive}");
    assert!(
        inactive.contains("<graphics type='vnc' port='-1' autoport='yes'/>"),
        "{inactive}"
    );
}

#[test]
fn graphics_ports_follow_libvirts_autoport_rules() {
    let xml = domain(
        "  <devices><graphics type='vnc'/><graphics type='vnc' port='5905'/><graphics type='spice' port='-1'/><graphics type='vnc' listen='0.0.0.0'><listen type='address' address='0.0.0.0'/></graphics></devices>",
    );
    let d = parse_domain(&xml).unwrap();
    let g: Vec<_> = d
        .def
        .graphics
        .iter()
        .map(|g| (g.port, g.autoport, g.listen.as_deref()))
        .collect();
    assert_eq!(
        g,
        [
            (Some(-1), true, None),
            (Some(5905), false, None),
            (None, true, None),
            (Some(-1), true, Some("0.0.0.0"))
        ]
    );
    assert!(d.unknown_items().is_empty(), "{:?}", d.unknown_items());
    let out = format_domain(&d, &FormatOptions::default());
    assert!(
        out.contains("<graphics type='vnc' port='-1' autoport='yes'/>"),
        "{out}"
    );
    assert!(
        out.contains("<graphics type='vnc' port='5905' autoport='no'/>"),
        "{out}"
    );
    assert!(
        out.contains("<graphics type='spice' autoport='yes'/>"),
        "{out}"
    );
}

#[test]
fn elements_holding_only_extras_are_still_written() {
    let xml = domain(
        "  <devices><graphics type='vnc'><listen type='address' keep='1'/></graphics></devices>",
    );
    let d = parse_domain(&xml).unwrap();
    assert_eq!(d.def.graphics[0].listen, None);
    let out = format_domain(&d, &FormatOptions::default());
    assert!(out.contains("<listen type='address' keep='1'/>"), "{out}");
    assert_eq!(parse_domain(&out).unwrap(), d);
    let xml = "<network><name>n</name><mtu/><domain localOnly='yes'/><bridge zone='z'/></network>";
    let n = parse_network(xml).unwrap();
    let out = format_network(&n, &FormatOptions::default());
    assert!(
        out.contains("<bridge zone='z' stp='on' delay='0'/>"),
        "{out}"
    );
    assert!(out.contains("<domain localOnly='yes'/>"), "{out}");
    assert_eq!(parse_network(&out).unwrap(), n);
    let v =
        parse_volume("<volume><name>v</name><source><device path='/dev/sda'/></source></volume>")
            .unwrap();
    let out = format_volume(&v, &FormatOptions::default());
    assert!(
        out.contains("<source>\n    <device path='/dev/sda'/>\n  </source>"),
        "{out}"
    );
}

#[test]
fn escaping_matches_libvirt() {
    let xml = domain("  <description>a &amp; b &lt;c&gt; \"d\" 'e'</description>");
    let out = format_domain(&parse_domain(&xml).unwrap(), &FormatOptions::default());
    assert!(
        out.contains("<description>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</description>"),
        "{out}"
    );
}

#[test]
fn a_model_built_in_code_formats_and_parses_back() {
    let mut d = parse_domain(&domain("")).unwrap();
    d.def.name = "built".into();
    let again = parse_domain(&format_domain(&d, &FormatOptions::default())).unwrap();
    assert_eq!(again.def, d.def);
    let pool = ParsedPool::new(crate::bindings::types::PoolDef {
        pool_type: PoolType::Dir,
        name: "p".into(),
        uuid: "70a7eb15-6c34-ee9c-bf57-69e8e5ff3fb2".into(),
        source_hosts: vec![],
        source_devices: vec![],
        source_dir: None,
        source_name: None,
        source_format: None,
        target_path: Some("/p".into()),
        target_permissions: None,
    });
    assert_eq!(
        parse_pool(&format_pool(&pool, &FormatOptions::default())).unwrap(),
        pool
    );
}

// ------------------------------------------------------------------ fixtures

#[test]
fn project_fixtures_round_trip_byte_for_byte() {
    let options = FormatOptions::default();
    for name in [
        "domain-full.xml",
        "domain-container.xml",
        "domain-extras.xml",
    ] {
        let xml = fixture(name);
        let d = parse_domain(&xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format_domain(&d, &options), xml, "{name}");
        assert_eq!(
            parse_domain(&format_domain(&d, &options)).unwrap(),
            d,
            "{name}"
        );
    }
    for name in [
        "pool-dir.xml",
        "pool-fs.xml",
        "pool-logical.xml",
        "pool-iscsi.xml",
    ] {
        let xml = fixture(name);
        let p = parse_pool(&xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format_pool(&p, &options), xml, "{name}");
    }
    let xml = fixture("volume-qcow2-backing.xml");
    let v = parse_volume(&xml).unwrap();
    assert_eq!(
        v.def.backing_path.as_deref(),
        Some("/var/lib/libvirt/images/base.qcow2")
    );
    assert_eq!(v.def.capacity, 10 << 30);
    assert_eq!(format_volume(&v, &options), xml);
    let xml = fixture("network-nat.xml");
    let n = parse_network(&xml).unwrap();
    assert_eq!(n.def.ips[0].dhcp_hosts.len(), 2);
    assert_eq!(
        n.def.dns_hosts[0],
        (
            "192.168.150.1".to_string(),
            vec!["gateway".into(), "router".into()]
        )
    );
    assert_eq!(format_network(&n, &options), xml);
}

#[test]
fn the_full_fixture_uses_every_modelled_field() {
    let d = parse_domain(&fixture("domain-full.xml")).unwrap().def;
    let os = &d.os;
    assert!(os.arch.is_some() && os.machine.is_some() && os.kernel.is_some());
    assert!(os.initrd.is_some() && os.cmdline.is_some() && os.boot.len() == 3);
    assert!(d.title.is_some() && d.description.is_some() && d.cpuset.is_some());
    assert!(d.current_vcpus.is_some() && d.cpu.is_some() && d.clock.is_some());
    assert!(d.emulator.is_some() && d.memballoon.is_some() && !d.rngs.is_empty());
    assert!(d.disks.iter().any(|x| x.readonly) && d.disks.iter().any(|x| x.shareable));
    assert!(d.disks.iter().any(|x| x.cache.is_some() && x.io.is_some()));
    assert!(
        d.disks
            .iter()
            .any(|x| x.source_pool.is_some() && x.source_volume.is_some())
    );
    assert_eq!(d.disks.len(), 5);
    assert_eq!(d.interfaces.len(), 5);
    assert_eq!(d.chardevs.len(), 6);
    assert!(!d.controllers.is_empty() && d.inputs.len() == 2 && d.graphics.len() == 2);
    assert_eq!(d.videos[0].vram, Some(65536));
    let c = parse_domain(&fixture("domain-container.xml")).unwrap().def;
    assert_eq!(c.os.init.as_deref(), Some("/bin/systemd"));
    assert_eq!(c.os.init_args, ["--unit", "emergency.service"]);
}

// ------------------------------------------------------------------ libvirt's own test data

#[derive(Clone, Copy, Debug)]
enum Kind {
    Domain,
    Pool,
    Volume,
    Network,
}

/// Parses with the parser for `kind` and returns (model as JSON, unknown items); JSON so the
/// four model types compare the same way.
fn parse_any(kind: Kind, xml: &str) -> Result<(String, Vec<String>, String), Error> {
    let options = FormatOptions::default();
    Ok(match kind {
        Kind::Domain => {
            let d = parse_domain(xml)?;
            (json(&d), d.unknown_items(), format_domain(&d, &options))
        }
        Kind::Pool => {
            let p = parse_pool(xml)?;
            (json(&p), p.unknown_items(), format_pool(&p, &options))
        }
        Kind::Volume => {
            let v = parse_volume(xml)?;
            (json(&v), v.unknown_items(), format_volume(&v, &options))
        }
        Kind::Network => {
            let n = parse_network(xml)?;
            (json(&n), n.unknown_items(), format_network(&n, &options))
        }
    })
}

/// Serialises a parsed object so the four kinds compare the same way.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

struct Corpus {
    dir: &'static str,
    kind: Kind,
    /// The share of files that must parse, in percent; the rest must fail cleanly.
    min_percent: usize,
    /// For libvirt's own outputs (`*xml2xmlout`): the share of parsed files we must write
    /// back byte for byte, which checks our formatting against libvirt's.
    min_identical_percent: usize,
}

const CORPORA: &[Corpus] = &[
    Corpus {
        dir: "qemuxml2argv",
        kind: Kind::Domain,
        min_percent: 100,
        min_identical_percent: 0,
    },
    Corpus {
        dir: "domain-generic/genericxml2xmlindata",
        kind: Kind::Domain,
        min_percent: 95,
        min_identical_percent: 0,
    },
    Corpus {
        dir: "lxc/lxcxml2xmldata",
        kind: Kind::Domain,
        min_percent: 100,
        min_identical_percent: 0,
    },
    Corpus {
        dir: "network/networkxml2xmlin",
        kind: Kind::Network,
        min_percent: 100,
        min_identical_percent: 0,
    },
    Corpus {
        dir: "network/networkxml2xmlout",
        kind: Kind::Network,
        min_percent: 100,
        min_identical_percent: 100,
    },
    Corpus {
        dir: "storage/storagepoolxml2xmlin",
        kind: Kind::Pool,
        min_percent: 90,
        min_identical_percent: 0,
    },
    Corpus {
        dir: "storage/storagepoolxml2xmlout",
        kind: Kind::Pool,
        min_percent: 90,
        min_identical_percent: 100,
    },
    Corpus {
        dir: "storage/storagevolxml2xmlin",
        kind: Kind::Volume,
        min_percent: 100,
        min_identical_percent: 0,
    },
    Corpus {
        dir: "storage/storagevolxml2xmlout",
        kind: Kind::Volume,
        min_percent: 100,
        min_identical_percent: 95,
    },
];

fn conformance_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/libvirt")
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "xml"));
    files.sort();
    files
}

/// Reads a file; libvirt's tests have symlinks that a copy may have turned into one-line
/// files holding the link target, which are followed here.
fn read_following_links(file: &Path) -> String {
    let mut path = file.to_path_buf();
    for _ in 0..4 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let target = text.trim();
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if target.starts_with('<') || !target.ends_with(".xml") || !parent.join(target).is_file() {
            return text;
        }
        path = parent.join(target);
    }
    String::new()
}

/// parse -> format -> parse must give the same model and the same unknown items, and the
/// output must be stable; a file we cannot read must fail with a positioned error.
#[test]
fn libvirt_conformance_round_trip() {
    let root = conformance_root();
    if !root.is_dir() {
        eprintln!(
            "SKIPPED: ../shared/conformance not found (looked in {})",
            root.display()
        );
        return;
    }
    let mut report = String::new();
    let mut shortfalls = Vec::new();
    for corpus in CORPORA {
        let files = xml_files(&root.join(corpus.dir));
        let mut parsed = 0;
        let mut exact = 0;
        let mut failures = Vec::new();
        for file in &files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let xml = read_following_links(file);
            match parse_any(corpus.kind, &xml) {
                Ok((model, unknown, out)) => {
                    let (model2, unknown2, out2) =
                        parse_any(corpus.kind, &out).unwrap_or_else(|e| {
                            panic!(
                                "{}/{name}: our own output does not parse: {e}\n{out}",
                                corpus.dir
                            )
                        });
                    assert_eq!(
                        model, model2,
                        "{}/{name}: model changed in the round trip\n{out}",
                        corpus.dir
                    );
                    assert_eq!(
                        unknown, unknown2,
                        "{}/{name}: unknown items changed\n{out}",
                        corpus.dir
                    );
                    assert_eq!(out, out2, "{}/{name}: output is not stable", corpus.dir);
                    parsed += 1;
                    if out == xml {
                        exact += 1;
                    }
                }
                Err(e) => {
                    assert!(
                        e.message.starts_with("XML error at line "),
                        "{}/{name}: unclear error: {e}",
                        corpus.dir
                    );
                    failures.push(format!("    {name}: {}", e.message));
                }
            }
        }
        let total = files.len();
        report.push_str(&format!(
            "{:<40} parsed {parsed:>3}/{total:<3} ({:>3}%), written back byte-identical {exact}\n",
            corpus.dir,
            parsed * 100 / total.max(1)
        ));
        for failure in &failures {
            report.push_str(failure);
            report.push('\n');
        }
        if parsed * 100 < corpus.min_percent * total {
            shortfalls.push(format!(
                "{}: {parsed}/{total} < {}%",
                corpus.dir, corpus.min_percent
            ));
        }
        if exact * 100 < corpus.min_identical_percent * parsed {
            shortfalls.push(format!(
                "{}: {exact}/{parsed} written back identical < {}%",
                corpus.dir, corpus.min_identical_percent
            ));
        }
    }
    eprintln!("libvirt conformance (parse -> format -> parse):\n{report}");
    assert!(
        shortfalls.is_empty(),
        "below threshold: {shortfalls:?}\n{report}"
    );
}

#[test]
fn controllers_without_an_index_get_the_lowest_their_type_leaves() {
    let xml = domain(
        "  <devices><controller type='pci' index='0' model='pcie-root'/><controller type='pci' model='pcie-root-port'/><controller type='usb' model='qemu-xhci'/><controller type='pci' index='1' model='pcie-root-port'/><controller type='pci' model='pcie-root-port'/></devices>",
    );
    let d = parse_domain(&xml).unwrap();
    let got: Vec<(&str, Option<u32>)> = d
        .def
        .controllers
        .iter()
        .map(|c| (c.controller_type.as_str(), c.index))
        .collect();
    assert_eq!(
        got,
        [
            ("pci", Some(0)),
            ("pci", Some(2)),
            ("usb", Some(0)),
            ("pci", Some(1)),
            ("pci", Some(3))
        ]
    );
}
