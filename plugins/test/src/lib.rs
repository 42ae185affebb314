//! The `test:///default` driver: libvirt's mock hypervisor, as a plugin like any other.
//!
//! It reproduces libvirt's default test connection (`src/test/test_driver.c`,
//! `defaultConnXML`): the running domain `test`, the dir pool `default-pool`, the NAT network
//! `default`, and libvirt's fixed node numbers. It touches no system resource and needs no
//! capability but logging. The host checks the generic state machine before each verb (a
//! running domain cannot start twice) and keeps every record, so each verb here only decides
//! the state a real hypervisor would reach.

use virtwasm_sdk::types::*;
use virtwasm_sdk::{Hypervisor, Network, Storage, VerbResult, error, export_driver};

/// The test driver.
struct TestDriver;

/// libvirt's `test:///default` pool capacity: 100 GiB.
const POOL_CAPACITY: u64 = 100 * 1024 * 1024 * 1024;

fn runtime(state: DomainState) -> DomainRuntime {
    DomainRuntime {
        state,
        driver_data: String::new(),
    }
}

fn pci(bus: &str, slot: &str) -> Vec<Attribute> {
    [
        ("type", "pci"),
        ("domain", "0x0000"),
        ("bus", bus),
        ("slot", slot),
        ("function", "0x0"),
    ]
    .into_iter()
    .map(|(name, value)| Attribute {
        name: name.into(),
        value: value.into(),
    })
    .collect()
}

/// The domain `test` exactly as libvirt's test driver defines it.
fn default_domain() -> DomainDef {
    DomainDef {
        domain_type: "test".into(),
        name: "test".into(),
        uuid: "6695eb01-f6a4-8304-79aa-97f2502e193f".into(),
        title: None,
        description: None,
        memory_kib: 8_388_608,
        current_memory_kib: 2_097_152,
        vcpus: 2,
        current_vcpus: None,
        vcpu_placement: Some("static".into()),
        cpuset: None,
        os: Os {
            os_type: "hvm".into(),
            arch: Some("i686".into()),
            machine: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            boot: vec![BootDevice::Hd],
            init: None,
            init_args: vec![],
        },
        features: vec![],
        clock: Some(Clock {
            offset: "utc".into(),
            timezone: None,
            adjustment: None,
            basis: None,
        }),
        cpu: None,
        on_poweroff: Some(LifecycleAction::Destroy),
        on_reboot: Some(LifecycleAction::Restart),
        on_crash: Some(LifecycleAction::Destroy),
        emulator: None,
        disks: vec![Disk {
            source_type: DiskSourceType::File,
            device: DiskDevice::Disk,
            driver_name: None,
            format: None,
            cache: None,
            io: None,
            source: Some("/guest/diskimage1".into()),
            source_pool: None,
            source_volume: None,
            target_dev: "vda".into(),
            target_bus: Some("virtio".into()),
            readonly: false,
            shareable: false,
            boot_order: None,
            address: pci("0x01", "0x00"),
        }],
        controllers: vec![],
        interfaces: vec![Interface {
            interface_type: InterfaceType::Network,
            source: Some("default".into()),
            mac: Some("aa:bb:cc:dd:ee:ff".into()),
            model: None,
            target_dev: Some("testnet0".into()),
            address: pci("0x00", "0x01"),
        }],
        chardevs: vec![],
        inputs: vec![],
        graphics: vec![],
        videos: vec![],
        memballoon: Some(Memballoon {
            model: "virtio".into(),
            address: pci("0x00", "0x02"),
        }),
        rngs: vec![],
    }
}

fn default_pool() -> PoolDef {
    PoolDef {
        pool_type: PoolType::Dir,
        name: "default-pool".into(),
        uuid: "dfe224cb-28fb-8dd0-c4b2-64eb3f0f4566".into(),
        source_hosts: vec![],
        source_devices: vec![],
        source_dir: None,
        source_name: None,
        source_format: None,
        target_path: Some("/default-pool".into()),
        target_permissions: None,
    }
}

fn default_network() -> NetworkDef {
    NetworkDef {
        name: "default".into(),
        uuid: "dd8fe884-6c02-601e-7551-cca97df1c5df".into(),
        forward: Some(ForwardMode::Nat),
        forward_dev: None,
        bridge: Some("virbr0".into()),
        stp: Some(true),
        delay: Some(0),
        mac: None,
        mtu: None,
        domain_name: None,
        ips: vec![NetworkIp {
            family: None,
            address: "192.168.122.1".into(),
            prefix: None,
            netmask: Some("255.255.255.0".into()),
            dhcp_ranges: vec![("192.168.122.2".into(), "192.168.122.254".into())],
            dhcp_hosts: vec![],
        }],
        dns_hosts: vec![],
    }
}

/// Nanoseconds since the epoch: libvirt's test driver reports the time of day as a running
/// domain's CPU time, so `virsh dominfo` shows a large, growing number.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn is_active(state: &DomainState) -> bool {
    !matches!(state, DomainState::Shutoff(_) | DomainState::Nostate(_))
}

/// libvirt's test driver's refusal: `internal error: domain 'vm' not running`.
fn not_in_state(dom: &DomainRef, wanted: &str) -> Error {
    error(
        ErrorKind::Internal,
        format!("domain '{}' not {wanted}", dom.def.name),
    )
}

fn current_state(dom: &DomainRef) -> DomainState {
    dom.runtime
        .as_ref()
        .map(|r| r.state)
        .unwrap_or(DomainState::Shutoff(ShutoffReason::Unknown))
}

impl Hypervisor for TestDriver {
    fn open(path: String, _params: Vec<(String, String)>) -> VerbResult<InitialObjects> {
        match path.as_str() {
            "/default" => Ok(InitialObjects {
                domains: vec![(
                    default_domain(),
                    Some(runtime(DomainState::Running(RunningReason::Unknown))),
                )],
                pools: vec![(default_pool(), vec![])],
                networks: vec![default_network()],
            }),
            // Installed with `state = "persistent"` the host keeps the objects on disk; the
            // mock backend starts empty.
            "/system" | "/session" | "/embed" => Ok(InitialObjects {
                domains: vec![],
                pools: vec![],
                networks: vec![],
            }),
            other => Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "the test driver serves 'test:///default' and node files; '{other}' is neither"
                ),
            )),
        }
    }

    fn get_node_info() -> VerbResult<NodeInfo> {
        Ok(NodeInfo {
            cpu_model: "i686".into(),
            memory_kib: 3_145_728,
            cpus: 16,
            mhz: 1400,
            nodes: 2,
            sockets: 2,
            cores: 2,
            threads: 2,
        })
    }

    fn capabilities() -> VerbResult<DriverCapabilities> {
        let guest = |os_type: &str, arch: &str| GuestCapability {
            os_type: os_type.into(),
            arch: arch.into(),
            emulator: None,
            machines: vec![],
            domain_types: vec!["test".into()],
        };
        Ok(DriverCapabilities {
            host_arch: "i686".into(),
            guests: vec![guest("hvm", "i686"), guest("xen", "i686")],
            security_model: Some("testSecurity".into()),
            security_doi: Some(String::new()),
        })
    }

    fn fill_defaults(mut def: DomainDef) -> VerbResult<DomainDef> {
        if def.domain_type != "test" {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!(
                    "the test driver runs domains of type 'test', not '{}'",
                    def.domain_type
                ),
            ));
        }
        def.on_poweroff.get_or_insert(LifecycleAction::Destroy);
        def.on_reboot.get_or_insert(LifecycleAction::Restart);
        def.on_crash.get_or_insert(LifecycleAction::Destroy);
        if def.os.arch.is_none() {
            def.os.arch = Some("i686".into());
        }
        Ok(def)
    }

    fn start(_dom: DomainRef, paused: bool) -> VerbResult<DomainRuntime> {
        if paused {
            // libvirt's test driver refuses the flag; so does this one, word for word.
            return Err(error(
                ErrorKind::Unsupported,
                "unsupported flags (0x1) in function testDomainCreateWithFlags",
            ));
        }
        Ok(runtime(DomainState::Running(RunningReason::Booted)))
    }

    fn shutdown(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        if !is_active(&current_state(&dom)) {
            return Err(not_in_state(&dom, "running"));
        }
        // The mock guest always cooperates and powers off at once.
        Ok(runtime(DomainState::Shutoff(ShutoffReason::Shutdown)))
    }

    fn reboot(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        // As libvirt's test driver: the guest goes down, then on_reboot decides what follows.
        Ok(runtime(match dom.def.on_reboot {
            Some(LifecycleAction::Destroy) => DomainState::Shutoff(ShutoffReason::Shutdown),
            _ => DomainState::Running(RunningReason::Booted),
        }))
    }

    fn reset(dom: DomainRef) -> VerbResult<DomainRuntime> {
        Ok(runtime(current_state(&dom)))
    }

    fn destroy(_dom: DomainRef, _graceful: bool) -> VerbResult<DomainRuntime> {
        Ok(runtime(DomainState::Shutoff(ShutoffReason::Destroyed)))
    }

    fn suspend(dom: DomainRef) -> VerbResult<DomainRuntime> {
        if !matches!(current_state(&dom), DomainState::Running(_)) {
            return Err(not_in_state(&dom, "running"));
        }
        Ok(runtime(DomainState::Paused(PausedReason::User)))
    }

    fn resume(dom: DomainRef) -> VerbResult<DomainRuntime> {
        if !matches!(current_state(&dom), DomainState::Paused(_)) {
            return Err(not_in_state(&dom, "paused"));
        }
        Ok(runtime(DomainState::Running(RunningReason::Unpaused)))
    }

    fn info(dom: DomainRef) -> VerbResult<DomainInfo> {
        let state = current_state(&dom);
        Ok(DomainInfo {
            state,
            os_type: "linux".into(),
            max_memory_kib: dom.def.memory_kib,
            memory_kib: dom.def.current_memory_kib,
            vcpus: dom.def.current_vcpus.unwrap_or(dom.def.vcpus),
            // libvirt's test driver reports the time of day as CPU time, even when shut off.
            cpu_time_ns: now_ns(),
            security_label: is_active(&state).then(|| "libvirt-test".to_string()),
            security_enforcing: true,
        })
    }

    fn interface_addresses(dom: DomainRef, _source: String) -> VerbResult<Vec<GuestInterface>> {
        // libvirt's test driver makes addresses up the same way: NAT'd interfaces get
        // 192.168.122.(3 + 20 * (id - 1) + n), others 192.168.0.(1 + n), all named testnetN.
        let id = dom.id.unwrap_or(1).max(1) as u32;
        Ok(dom
            .def
            .interfaces
            .iter()
            .enumerate()
            .map(|(n, iface)| {
                let n = n as u32;
                let address = match iface.interface_type {
                    InterfaceType::Network => format!("192.168.122.{}", 3 + 20 * (id - 1) + n),
                    _ => format!("192.168.0.{}", 1 + n),
                };
                GuestInterface {
                    name: format!("testnet{n}"),
                    mac: iface.mac.clone(),
                    addresses: vec![InterfaceAddress {
                        family: "ipv4".into(),
                        address,
                        prefix: 24,
                    }],
                }
            })
            .collect())
    }

    fn save(_dom: DomainRef, _path: String) -> VerbResult<DomainRuntime> {
        // The mock guest has no memory to stream: the host's header (its XML) is the image.
        Ok(runtime(DomainState::Shutoff(ShutoffReason::Saved)))
    }

    fn restore(
        _dom: DomainRef,
        _path: String,
        _offset: u64,
        paused: bool,
    ) -> VerbResult<DomainRuntime> {
        Ok(runtime(if paused {
            DomainState::Paused(PausedReason::User)
        } else {
            DomainState::Running(RunningReason::Restored)
        }))
    }

    fn snapshot_create(dom: DomainRef, mut snapshot: SnapshotDef) -> VerbResult<SnapshotDef> {
        snapshot.state = current_state(&dom);
        Ok(snapshot)
    }

    fn snapshot_revert(_dom: DomainRef, snapshot: SnapshotDef) -> VerbResult<DomainRuntime> {
        // The mock guest goes back to the state the snapshot captured.
        Ok(runtime(match snapshot.state {
            DomainState::Running(_) => DomainState::Running(RunningReason::FromSnapshot),
            DomainState::Paused(_) => DomainState::Paused(PausedReason::FromSnapshot),
            _ => DomainState::Shutoff(ShutoffReason::FromSnapshot),
        }))
    }

    fn snapshot_delete(_dom: DomainRef, _snapshot: SnapshotDef) -> VerbResult<()> {
        Ok(())
    }

    fn set_vcpus(dom: DomainRef, _count: u32) -> VerbResult<DomainRuntime> {
        Ok(runtime(current_state(&dom)))
    }

    fn set_memory(dom: DomainRef, _kib: u64) -> VerbResult<DomainRuntime> {
        Ok(runtime(current_state(&dom)))
    }
}

impl Storage for TestDriver {
    fn pool_build(_pool: PoolDef, _overwrite: bool) -> VerbResult<()> {
        Ok(())
    }
    fn pool_start(pool: PoolDef) -> VerbResult<PoolInfo> {
        Self::get_pool_info(pool, vec![])
    }
    fn pool_stop(_pool: PoolDef) -> VerbResult<()> {
        Ok(())
    }
    fn pool_delete(_pool: PoolDef) -> VerbResult<()> {
        Ok(())
    }
    fn pool_refresh(_pool: PoolDef, known: Vec<VolumeDef>) -> VerbResult<Vec<VolumeDef>> {
        // Nothing behind the mock pool: what the host has on record is all there is.
        Ok(known)
    }
    fn get_pool_info(_pool: PoolDef, volumes: Vec<VolumeDef>) -> VerbResult<PoolInfo> {
        // As libvirt's test driver: a fixed 100 GiB pool whose allocation is its volumes'.
        let allocation: u64 = volumes
            .iter()
            .map(|v| v.allocation.unwrap_or(v.capacity))
            .sum();
        Ok(PoolInfo {
            state: PoolState::Running,
            capacity: POOL_CAPACITY,
            allocation,
            available: POOL_CAPACITY.saturating_sub(allocation),
        })
    }
    fn vol_create(pool: PoolDef, mut vol: VolumeDef) -> VerbResult<VolumeDef> {
        let dir = pool.target_path.unwrap_or_default();
        let path = format!("{dir}/{}", vol.name);
        vol.target_path = Some(path.clone());
        vol.key = Some(path);
        vol.allocation.get_or_insert(vol.capacity);
        vol.format.get_or_insert_with(|| "raw".into());
        Ok(vol)
    }
    fn vol_clone(pool: PoolDef, source: VolumeDef, mut vol: VolumeDef) -> VerbResult<VolumeDef> {
        vol.capacity = source.capacity;
        vol.allocation = source.allocation;
        vol.format = vol.format.or(source.format);
        Self::vol_create(pool, vol)
    }
    fn vol_delete(_pool: PoolDef, _vol: VolumeDef) -> VerbResult<()> {
        Ok(())
    }
    fn vol_info(_pool: PoolDef, vol: VolumeDef) -> VerbResult<VolumeInfo> {
        Ok(VolumeInfo {
            volume_type: VolumeType::File,
            capacity: vol.capacity,
            allocation: vol.allocation.unwrap_or(vol.capacity),
        })
    }
}

impl Network for TestDriver {
    fn net_start(_net: NetworkDef) -> VerbResult<()> {
        Ok(())
    }
    fn net_stop(_net: NetworkDef) -> VerbResult<()> {
        Ok(())
    }
}

export_driver!(TestDriver);
