//! The guest's PCI topology as libvirt lays it out: `<controller type='pci'>` root ports
//! (q35) and bridges (pc) become QEMU buses named `pci.INDEX`, and a device with an
//! `<address type='pci'>` goes to that bus and slot.
//!
//! Where a device sits is guest-visible: a Linux guest names its NIC after the slot
//! (`enp1s0`), so a domain moved from libvirt must find its devices where libvirt put them.
//! A device without an address is left to QEMU, which takes the root bus's first free slot.

use virtwasm_sdk::types::*;
use virtwasm_sdk::{VerbResult, error};

/// Whether `machine` is a q35 (PCI Express) machine.
pub fn is_q35(machine: &str) -> bool {
    machine == "q35" || machine.starts_with("pc-q35")
}

/// The QEMU id of the root bus.
fn root_bus(machine: &str) -> &'static str {
    if is_q35(machine) { "pcie.0" } else { "pci.0" }
}

/// The QEMU id of the bus behind PCI controller `index` (0: the root bus).
fn bus_id(index: u32, machine: &str) -> String {
    if index == 0 {
        root_bus(machine).to_string()
    } else {
        format!("pci.{index}")
    }
}

/// A PCI address as libvirt writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PciAddress {
    /// The index of the controller whose bus it is on.
    pub bus: u32,
    /// The slot on that bus.
    pub slot: u32,
    /// The function in that slot.
    pub function: u32,
    /// `multifunction='on'`: the slot's other functions are in use too.
    pub multifunction: bool,
}

/// A number as libvirt's addresses write them: `0x1f` or `31`.
fn number(what: &str, text: &str) -> VerbResult<u32> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| {
        error(
            ErrorKind::InvalidArgument,
            format!("PCI address {what} '{text}' is not a number (0x1f or 31)"),
        )
    })
}

/// The PCI address in `address` (a device's `<address>` attributes), if it is one.
pub fn address(attrs: &[Attribute]) -> VerbResult<Option<PciAddress>> {
    let get = |n: &str| crate::attribute(attrs, n);
    if get("type") != Some("pci") {
        return Ok(None);
    }
    if let Some(d) = get("domain")
        && number("domain", d)? != 0
    {
        return Err(error(
            ErrorKind::Unsupported,
            format!("unsupported configuration: PCI domain '{d}' (only domain 0 exists)"),
        ));
    }
    let field = |n: &str, max: u32| -> VerbResult<u32> {
        let v = get(n).map(|t| number(n, t)).transpose()?.unwrap_or(0);
        if v > max {
            return Err(error(
                ErrorKind::InvalidArgument,
                format!("PCI address {n} {v:#x} is above {max:#x}"),
            ));
        }
        Ok(v)
    };
    Ok(Some(PciAddress {
        bus: field("bus", 0xff)?,
        slot: field("slot", 0x1f)?,
        function: field("function", 7)?,
        multifunction: get("multifunction") == Some("on"),
    }))
}

/// `,bus=…,addr=…` for a PCI address.
fn placement_of(a: PciAddress, machine: &str) -> String {
    let mut out = format!(
        ",bus={},addr={:#x}.{:#x}",
        bus_id(a.bus, machine),
        a.slot,
        a.function
    );
    if a.multifunction {
        out.push_str(",multifunction=on");
    }
    out
}

/// Where each PCI device of a definition goes. Devices with an `<address type='pci'>` keep
/// theirs; the others get the root bus's lowest slot nobody asked for, given here rather
/// than by QEMU, which would hand out slots in command-line order and could take one a
/// later device names.
pub struct Slots {
    machine: String,
    /// `(bus, slot)` pairs taken, by an address or by an earlier placement.
    taken: std::collections::BTreeSet<(u32, u32)>,
    /// The indexes of the definition's PCI Express root ports (q35), lowest first.
    root_ports: Vec<u32>,
    /// Placements set aside for the devices the model gives no address (video, virtio
    /// input, rng), handed out in the order the command line asks for them.
    set_aside: std::collections::VecDeque<String>,
}

impl Slots {
    /// The slots `def`'s addresses take; refuses an address on a bus no PCI controller of
    /// the definition makes (libvirt would add a bridge; this driver says so instead).
    pub fn new(def: &DomainDef, machine: &str) -> VerbResult<Slots> {
        let buses: std::collections::BTreeSet<u32> = std::iter::once(0)
            .chain(
                def.controllers
                    .iter()
                    .filter(|c| is_topology(c))
                    .map(|c| c.index.unwrap_or(0)),
            )
            .collect();
        let mut taken = std::collections::BTreeSet::new();
        let addressed = def
            .disks
            .iter()
            .map(|d| (format!("disk '{}'", d.target_dev), &d.address))
            .chain(def.interfaces.iter().enumerate().map(|(i, n)| {
                (
                    format!(
                        "interface {}",
                        n.mac.clone().unwrap_or_else(|| i.to_string())
                    ),
                    &n.address,
                )
            }))
            .chain(def.controllers.iter().map(|c| {
                (
                    format!("controller {} {}", c.controller_type, c.index.unwrap_or(0)),
                    &c.address,
                )
            }))
            .chain(
                def.memballoon
                    .iter()
                    .map(|b| ("the memory balloon".to_string(), &b.address)),
            );
        for (what, attrs) in addressed {
            if let Some(a) = address(attrs)? {
                if !buses.contains(&a.bus) {
                    return Err(error(
                        ErrorKind::Unsupported,
                        format!(
                            "unsupported configuration: {what} is on PCI bus {:#x}, which no <controller type='pci' index='{}'> makes",
                            a.bus, a.bus
                        ),
                    ));
                }
                taken.insert((a.bus, a.slot));
            }
        }
        let mut root_ports: Vec<u32> = def
            .controllers
            .iter()
            .filter(|c| c.controller_type == "pci" && c.model.as_deref() == Some("pcie-root-port"))
            .filter_map(|c| c.index)
            .collect();
        root_ports.sort_unstable();
        Ok(Slots {
            machine: machine.to_string(),
            taken,
            root_ports,
            set_aside: std::collections::VecDeque::new(),
        })
    }

    /// Sets aside `count` root-bus slots, before any device with an address field is
    /// placed, for the devices the model gives no address (which [`Slots::set_aside`] then
    /// hands out). They come first so that where they land depends only on the addresses
    /// fixed in the definition: a device added later (hot-plugged, its address then recorded)
    /// never takes a slot one of them holds in the running guest, and a restart or an
    /// incoming migration rebuilds the same layout.
    pub fn set_aside_first(&mut self, count: usize) -> VerbResult<()> {
        for _ in 0..count {
            let place = self.next_root("a device without an address")?;
            self.set_aside.push_back(place);
        }
        Ok(())
    }

    /// The next placement set aside by [`Slots::set_aside_first`].
    pub fn set_aside(&mut self, what: &str) -> VerbResult<String> {
        match self.set_aside.pop_front() {
            Some(place) => Ok(place),
            None => self.next_root(what),
        }
    }

    /// The root bus's slots free for devices: 0 is the host bridge; on pc slot 1 is the
    /// PIIX3 (ISA, IDE, USB), on q35 0x1f is the ICH9 (LPC, SATA, SMBus).
    fn root_slots(&self) -> std::ops::RangeInclusive<u32> {
        if is_q35(&self.machine) {
            1..=0x1e
        } else {
            2..=0x1f
        }
    }

    /// `,bus=…,addr=…` for a device with `<address>` attributes `attrs`: its own address, or
    /// (on q35) the first empty root port, as libvirt places an endpoint, which keeps it
    /// hot-unpluggable; else the next free root slot.
    pub fn place(&mut self, attrs: &[Attribute], what: &str) -> VerbResult<String> {
        if let Some(a) = address(attrs)? {
            return Ok(placement_of(a, &self.machine));
        }
        let free_port = self
            .root_ports
            .iter()
            .copied()
            .find(|p| !self.taken.contains(&(*p, 0)));
        match free_port {
            Some(port) => {
                self.taken.insert((port, 0));
                Ok(placement_of(
                    PciAddress {
                        bus: port,
                        slot: 0,
                        function: 0,
                        multifunction: false,
                    },
                    &self.machine,
                ))
            }
            None => self.next_root(what),
        }
    }

    /// [`Slots::place`] on the root bus only: for root ports and bridges, which make buses
    /// rather than sit behind one.
    pub fn place_on_root(&mut self, attrs: &[Attribute], what: &str) -> VerbResult<String> {
        match address(attrs)? {
            Some(a) => Ok(placement_of(a, &self.machine)),
            None => self.next_root(what),
        }
    }

    /// The root bus's next free slot, taken whole for a set of functions placed with
    /// [`Slots::root_function`] (the ICH9 USB2 set, which libvirt puts in one slot).
    pub fn take_root_slot(&mut self, what: &str) -> VerbResult<u32> {
        let slot = self
            .root_slots()
            .find(|s| !self.taken.contains(&(0, *s)))
            .ok_or_else(|| {
                error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: no PCI slot left on the root bus for {what} (add pcie-root-port controllers on q35, or a pci-bridge on pc, and place devices behind them)"
                    ),
                )
            })?;
        self.taken.insert((0, slot));
        Ok(slot)
    }

    /// `,bus=…,addr=…` for function `function` of root-bus slot `slot` (one
    /// [`Slots::take_root_slot`] gave); function 0 of a set says the slot has others.
    pub fn root_function(&self, slot: u32, function: u32, multifunction: bool) -> String {
        placement_of(
            PciAddress {
                bus: 0,
                slot,
                function,
                multifunction,
            },
            &self.machine,
        )
    }

    /// `,bus=…,addr=…` on the root bus's next free slot.
    fn next_root(&mut self, what: &str) -> VerbResult<String> {
        let slot = self.take_root_slot(what)?;
        Ok(self.root_function(slot, 0, false))
    }
}

/// Whether controller `c` is part of the PCI topology this module builds.
pub fn is_topology(c: &Controller) -> bool {
    c.controller_type == "pci"
}

/// `-device` arguments for the definition's PCI controllers: the root is the machine's own;
/// root ports on q35 and bridges on pc each make the bus `pci.INDEX`, in index order so a
/// bus exists before what sits on it.
pub fn controllers(def: &DomainDef, machine: &str, slots: &mut Slots) -> VerbResult<Vec<String>> {
    let mut pci: Vec<&Controller> = def.controllers.iter().filter(|c| is_topology(c)).collect();
    pci.sort_by_key(|c| c.index.unwrap_or(0));
    let mut out = Vec::new();
    for c in pci {
        let index = c.index.unwrap_or(0);
        let model = c.model.as_deref();
        let at = address(&c.address)?;
        let dev = match model {
            Some("pci-root") | None if index == 0 && !is_q35(machine) => continue,
            Some("pcie-root") | None if index == 0 && is_q35(machine) => continue,
            Some("pcie-root-port") if is_q35(machine) && index > 0 => {
                // The port number a guest sees, as libvirt numbers it: slot * 8 + function
                // of the port's own place (given, or just picked), so no two ports share one.
                let place = slots.place_on_root(&c.address, &format!("PCI controller {index}"))?;
                let port = match at {
                    Some(a) => a.slot * 8 + a.function,
                    None => built_placement(&format!("id=x{place}"))
                        .map_or(0x10 + index - 1, |(_, a)| a.slot * 8 + a.function),
                };
                format!("pcie-root-port,port={port:#x},chassis={index},id=pci.{index}{place}")
            }
            Some("pci-bridge") if !is_q35(machine) && index > 0 => {
                let place = slots.place_on_root(&c.address, &format!("PCI controller {index}"))?;
                format!("pci-bridge,chassis_nr={index},id=pci.{index}{place}")
            }
            _ => {
                return Err(error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: PCI controller {index} of model '{}' on machine '{machine}' (pcie-root-port on q35, pci-bridge on pc)",
                        model.unwrap_or("pci-root")
                    ),
                ));
            }
        };
        out.extend(["-device".to_string(), dev]);
    }
    Ok(out)
}

/// The PCI address in a `-device` value built here (`…,id=X,…,bus=pci.N,addr=0xS.0xF`): its
/// id and where it sits; `None` for a device off the PCI buses.
fn built_placement(value: &str) -> Option<(String, PciAddress)> {
    let field = |key: &str| {
        value
            .split(',')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let id = field("id")?.to_string();
    let bus = match field("bus")? {
        "pci.0" | "pcie.0" => 0,
        other => other.strip_prefix("pci.")?.parse().ok()?,
    };
    let (slot, function) = field("addr")?.split_once('.')?;
    let hex = |t: &str| u32::from_str_radix(t.trim_start_matches("0x"), 16).ok();
    Some((
        id,
        PciAddress {
            bus,
            slot: hex(slot)?,
            function: hex(function)?,
            multifunction: field("multifunction") == Some("on"),
        },
    ))
}

/// `<address type='pci' …>` attributes as libvirt writes them.
fn attributes(a: PciAddress) -> Vec<Attribute> {
    let mut out: Vec<Attribute> = [
        ("type", "pci".to_string()),
        ("domain", "0x0000".to_string()),
        ("bus", format!("{:#04x}", a.bus)),
        ("slot", format!("{:#04x}", a.slot)),
        ("function", format!("{:#x}", a.function)),
    ]
    .into_iter()
    .map(|(name, value)| Attribute {
        name: name.to_string(),
        value,
    })
    .collect();
    if a.multifunction {
        out.push(Attribute {
            name: "multifunction".into(),
            value: "on".into(),
        });
    }
    out
}

/// Writes into `def` the PCI address each device with an address field got in `args`, the
/// command line built from it, as libvirt fills every device's address when a definition
/// is made: from then on the definition says where the guest has each device, so a restart,
/// a restore or an incoming migration puts it there again, and a device hot-plugged later
/// is placed around it (its address recorded the same way).
pub fn record_placements(def: &mut DomainDef, args: &[String]) {
    let placed: std::collections::HashMap<String, PciAddress> = args
        .windows(2)
        .filter(|w| w[0] == "-device")
        .filter_map(|w| built_placement(&w[1]))
        .collect();
    let fill = |attrs: &mut Vec<Attribute>, id: &str| {
        if attrs.is_empty()
            && let Some(a) = placed.get(id)
        {
            *attrs = attributes(*a);
        }
    };
    for d in &mut def.disks {
        fill(&mut d.address, &format!("disk-{}", d.target_dev));
    }
    let ids: Vec<String> = (0..def.interfaces.len())
        .map(|i| crate::cmdline::nic_id(&def.interfaces, i))
        .collect();
    for (n, id) in def.interfaces.iter_mut().zip(&ids) {
        fill(&mut n.address, id);
    }
    for c in &mut def.controllers {
        let index = c.index.unwrap_or(0);
        let id = match c.controller_type.as_str() {
            "pci" => format!("pci.{index}"),
            "usb" => crate::cmdline::usb_controller_id(index, c.model.as_deref()),
            "virtio-serial" => format!("virtio-serial{index}"),
            "scsi" => format!("scsi{index}"),
            _ => continue,
        };
        fill(&mut c.address, &id);
    }
    if let Some(b) = &mut def.memballoon {
        fill(&mut b.address, "balloon0");
    }
}

/// Where a hot-plugged device goes, from its `<address type='pci'>` (filled in by the host
/// through `fill-defaults` before the attach): `device_add`'s `bus` and `addr`. On q35 it
/// must be behind a root port, since the root bus takes no hot-plug.
pub fn hotplug_placement(
    attrs: &[Attribute],
    machine: &str,
) -> VerbResult<Option<(String, String)>> {
    let Some(a) = address(attrs)? else {
        return Ok(None);
    };
    if is_q35(machine) && a.bus == 0 {
        return Err(error(
            ErrorKind::OperationFailed,
            "no free pcie-root-port to hot-plug into: on q35 each hot-plugged device needs an empty one (add <controller type='pci' model='pcie-root-port'/> to the definition; it takes effect at the next start)",
        ));
    }
    Ok(Some((
        bus_id(a.bus, machine),
        format!("{:#x}.{:#x}", a.slot, a.function),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tests::attrs;

    fn pci(bus: &str, slot: &str, function: &str) -> Vec<Attribute> {
        attrs(&[
            ("type", "pci"),
            ("domain", "0x0000"),
            ("bus", bus),
            ("slot", slot),
            ("function", function),
        ])
    }

    fn root_port(index: u32, address: Vec<Attribute>) -> Controller {
        Controller {
            controller_type: "pci".into(),
            index: Some(index),
            model: Some("pcie-root-port".into()),
            address,
        }
    }

    #[test]
    fn addresses_read_as_libvirt_writes_them() {
        let a = address(&pci("0x02", "0x1f", "0x7")).unwrap().unwrap();
        assert_eq!((a.bus, a.slot, a.function), (2, 31, 7));
        assert_eq!(address(&pci("2", "31", "7")).unwrap(), Some(a));
        assert_eq!(address(&attrs(&[("type", "drive")])).unwrap(), None);
        assert!(
            address(&pci("0x00", "0x20", "0x0")).is_err(),
            "slot above 0x1f"
        );
        assert!(
            address(&pci("0x00", "0x02", "0x8")).is_err(),
            "function above 7"
        );
        assert!(address(&attrs(&[("type", "pci"), ("domain", "0x0001")])).is_err());
        assert!(address(&pci("zz", "0x02", "0x0")).is_err());
    }

    #[test]
    fn unaddressed_devices_take_free_slots_around_the_fixed_ones() {
        let mut def = crate::tests::empty_def();
        def.os.machine = Some("pc".into());
        def.memballoon = Some(Memballoon {
            model: "virtio".into(),
            address: pci("0x00", "0x02", "0x0"),
        });
        let mut slots = Slots::new(&def, "pc").unwrap();
        // Devices without an address field first, then the others: slot 2 is taken.
        slots.set_aside_first(1).unwrap();
        assert_eq!(slots.set_aside("video").unwrap(), ",bus=pci.0,addr=0x3.0x0");
        assert_eq!(slots.place(&[], "disk").unwrap(), ",bus=pci.0,addr=0x4.0x0");
        assert_eq!(
            slots.place(&pci("0x00", "0x09", "0x1"), "nic").unwrap(),
            ",bus=pci.0,addr=0x9.0x1"
        );
    }

    #[test]
    fn on_q35_endpoints_go_behind_empty_root_ports_and_ports_stay_on_the_root() {
        let mut def = crate::tests::empty_def();
        def.os.machine = Some("q35".into());
        def.controllers = vec![
            root_port(1, pci("0x00", "0x02", "0x0")),
            root_port(2, pci("0x00", "0x02", "0x1")),
            root_port(3, vec![]),
        ];
        // Something already behind port 1.
        def.memballoon = Some(Memballoon {
            model: "virtio".into(),
            address: pci("0x01", "0x00", "0x0"),
        });
        let mut slots = Slots::new(&def, "q35").unwrap();
        let out = controllers(&def, "q35", &mut slots).unwrap();
        assert_eq!(
            out.iter().filter(|a| *a != "-device").collect::<Vec<_>>(),
            [
                "pcie-root-port,port=0x10,chassis=1,id=pci.1,bus=pcie.0,addr=0x2.0x0",
                "pcie-root-port,port=0x11,chassis=2,id=pci.2,bus=pcie.0,addr=0x2.0x1",
                // Numbered from the slot it got, so it shares no number with the others.
                "pcie-root-port,port=0x8,chassis=3,id=pci.3,bus=pcie.0,addr=0x1.0x0",
            ]
        );
        assert_eq!(slots.place(&[], "disk").unwrap(), ",bus=pci.2,addr=0x0.0x0");
        assert_eq!(slots.place(&[], "nic").unwrap(), ",bus=pci.3,addr=0x0.0x0");
        // No empty port left: the root bus.
        assert_eq!(slots.place(&[], "rng").unwrap(), ",bus=pcie.0,addr=0x3.0x0");
        // Which a hot-plug refuses, naming what to add.
        let e = hotplug_placement(&pci("0x00", "0x03", "0x0"), "q35").unwrap_err();
        assert!(
            e.message.contains("no free pcie-root-port"),
            "{}",
            e.message
        );
        assert_eq!(
            hotplug_placement(&pci("0x03", "0x00", "0x0"), "q35").unwrap(),
            Some(("pci.3".to_string(), "0x0.0x0".to_string()))
        );
    }

    #[test]
    fn an_address_on_a_bus_nothing_makes_is_refused() {
        let mut def = crate::tests::empty_def();
        def.memballoon = Some(Memballoon {
            model: "virtio".into(),
            address: pci("0x04", "0x00", "0x0"),
        });
        let e = Slots::new(&def, "pc").err().expect("refused");
        assert!(
            e.message
                .contains("the memory balloon is on PCI bus 0x4, which no <controller type='pci' index='4'> makes"),
            "{}",
            e.message
        );
    }

    #[test]
    fn placements_built_are_written_back_as_libvirt_writes_addresses() {
        let mut def = crate::tests::empty_def();
        def.memballoon = Some(Memballoon {
            model: "virtio".into(),
            address: vec![],
        });
        let args: Vec<String> = [
            "-device",
            "virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x5.0x0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        record_placements(&mut def, &args);
        let written: Vec<(String, String)> = def
            .memballoon
            .unwrap()
            .address
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect();
        assert_eq!(
            written,
            [
                ("type", "pci"),
                ("domain", "0x0000"),
                ("bus", "0x00"),
                ("slot", "0x05"),
                ("function", "0x0")
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(built_placement("floppy,unit=0,id=disk-fda"), None);
    }
}
