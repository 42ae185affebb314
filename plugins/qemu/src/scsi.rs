//! libvirt's SCSI disks: controllers (`virtio-scsi`, and `lsilogic`, libvirt's default model
//! on x86) and where a disk sits on one: its `<address type='drive'>`, or the place libvirt
//! gives a disk without one (from the target name: `sda` unit 0 of controller 0, seven units
//! a controller, since an LSI bus keeps id 7 for itself).

use virtwasm_sdk::types::*;
use virtwasm_sdk::{VerbResult, error};

/// The model a SCSI controller without one gets, as libvirt on x86.
pub const DEFAULT_MODEL: &str = "lsilogic";

/// Units libvirt puts on one controller before it moves to the next.
const UNITS_PER_CONTROLLER: u32 = 7;

/// Where a SCSI disk sits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spot {
    /// The controller's index.
    pub controller: u32,
    /// The bus on it (virtio-scsi's channel).
    pub bus: u32,
    /// The target (virtio-scsi's scsi-id).
    pub target: u32,
    /// The unit (virtio-scsi's LUN; an LSI controller's scsi-id).
    pub unit: u32,
}

/// The index a target name gives (`sda` 0, `sdz` 25, `sdaa` 26), as libvirt reads it.
fn name_index(dev: &str) -> Option<u32> {
    let letters = dev.strip_prefix("sd").or_else(|| dev.strip_prefix("hd"))?;
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    let mut n: u32 = 0;
    for b in letters.bytes() {
        n = n.checked_mul(26)?.checked_add(u32::from(b - b'a') + 1)?;
    }
    Some(n - 1)
}

/// Where disk `d` sits: its drive address, or libvirt's default for its target name.
pub fn spot(d: &Disk) -> VerbResult<Spot> {
    let get = |n: &str| crate::attribute(&d.address, n);
    if get("type") == Some("drive") {
        let field = |n: &str| -> VerbResult<u32> {
            get(n).map_or(Ok(0), |v| {
                v.parse().map_err(|_| {
                    error(
                        ErrorKind::InvalidArgument,
                        format!(
                            "disk '{}': drive address {n} '{v}' is not a number",
                            d.target_dev
                        ),
                    )
                })
            })
        };
        return Ok(Spot {
            controller: field("controller")?,
            bus: field("bus")?,
            target: field("target")?,
            unit: field("unit")?,
        });
    }
    let index = name_index(&d.target_dev).ok_or_else(|| {
        error(
            ErrorKind::InvalidArgument,
            format!(
                "disk '{}' on bus 'scsi' has no drive address and a name that gives none (sda, sdb, ...)",
                d.target_dev
            ),
        )
    })?;
    Ok(Spot {
        controller: index / UNITS_PER_CONTROLLER,
        bus: 0,
        target: 0,
        unit: index % UNITS_PER_CONTROLLER,
    })
}

/// The QEMU device of a SCSI controller of libvirt model `model`.
pub fn controller_device(model: Option<&str>, index: u32) -> VerbResult<String> {
    let driver = match model.unwrap_or(DEFAULT_MODEL) {
        "virtio-scsi" => "virtio-scsi-pci",
        // QEMU's own name; `lsi` is only an alias, which probing does not list.
        "lsilogic" => "lsi53c895a",
        other => {
            return Err(error(
                ErrorKind::Unsupported,
                format!(
                    "unsupported configuration: SCSI controller model '{other}' (virtio-scsi and lsilogic are built)"
                ),
            ));
        }
    };
    Ok(format!("{driver},id=scsi{index}"))
}

/// The model of the definition's SCSI controller `index`, or an error naming the disk that
/// wants a controller the definition lacks.
pub fn controller_model<'a>(def: &'a DomainDef, index: u32, disk: &str) -> VerbResult<&'a str> {
    def.controllers
        .iter()
        .find(|c| c.controller_type == "scsi" && c.index.unwrap_or(0) == index)
        .map(|c| c.model.as_deref().unwrap_or(DEFAULT_MODEL))
        .ok_or_else(|| {
            error(
                ErrorKind::InvalidArgument,
                format!(
                    "disk '{disk}' is on SCSI controller {index}, which the definition does not have"
                ),
            )
        })
}

/// The `-device` value (without `drive=` and `id=`, which the caller adds) of a disk at
/// `spot` on a controller of `model`.
pub fn disk_device(d: &Disk, spot: Spot, model: &str) -> VerbResult<String> {
    let driver = match d.device {
        DiskDevice::Disk => "scsi-hd",
        DiskDevice::Cdrom => "scsi-cd",
        other => {
            return Err(error(
                ErrorKind::Unsupported,
                format!(
                    "unsupported configuration: disk '{}' of device '{}' on bus 'scsi' (disks and cdroms are built; a lun is SCSI passthrough to a host device)",
                    d.target_dev,
                    match other {
                        DiskDevice::Lun => "lun",
                        _ => "floppy",
                    }
                ),
            ));
        }
    };
    let bus = format!("scsi{}.0", spot.controller);
    Ok(match model {
        "virtio-scsi" => format!(
            "{driver},bus={bus},channel={},scsi-id={},lun={}",
            spot.bus, spot.target, spot.unit
        ),
        // An LSI controller has one bus of targets without LUNs: the unit is the target.
        _ => {
            if spot.bus != 0 || spot.target != 0 {
                return Err(error(
                    ErrorKind::Unsupported,
                    format!(
                        "unsupported configuration: disk '{}' at bus {} target {} of an LSI controller (it has bus 0 and target 0; the unit picks the device)",
                        d.target_dev, spot.bus, spot.target
                    ),
                ));
            }
            format!("{driver},bus={bus},scsi-id={}", spot.unit)
        }
    })
}

/// The SCSI controllers `def` lacks for its SCSI disks, as libvirt adds them when a
/// definition is parsed (the default model, one per controller index a disk sits on).
pub fn missing_controllers(def: &DomainDef) -> VerbResult<Vec<Controller>> {
    let mut missing: Vec<u32> = Vec::new();
    for d in def
        .disks
        .iter()
        .filter(|d| d.target_bus.as_deref() == Some("scsi"))
    {
        let c = spot(d)?.controller;
        let present = def
            .controllers
            .iter()
            .any(|x| x.controller_type == "scsi" && x.index.unwrap_or(0) == c);
        if !present && !missing.contains(&c) {
            missing.push(c);
        }
    }
    missing.sort_unstable();
    Ok(missing
        .into_iter()
        .map(|index| Controller {
            controller_type: "scsi".into(),
            index: Some(index),
            model: Some(DEFAULT_MODEL.into()),
            address: vec![],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(dev: &str, address: &[(&str, &str)]) -> Disk {
        crate::tests::disk(dev, "scsi", address)
    }

    #[test]
    fn target_names_give_libvirts_units_seven_to_a_controller() {
        assert_eq!(name_index("sda"), Some(0));
        assert_eq!(name_index("sdz"), Some(25));
        assert_eq!(name_index("sdaa"), Some(26));
        assert_eq!(name_index("vda"), None);
        assert_eq!(name_index("sd1"), None);
        let at = |dev: &str| spot(&disk(dev, &[])).unwrap();
        assert_eq!((at("sda").controller, at("sda").unit), (0, 0));
        assert_eq!((at("sdg").controller, at("sdg").unit), (0, 6));
        assert_eq!((at("sdh").controller, at("sdh").unit), (1, 0));
        // A drive address wins over the name.
        let d = disk(
            "sda",
            &[
                ("type", "drive"),
                ("controller", "2"),
                ("bus", "0"),
                ("target", "1"),
                ("unit", "3"),
            ],
        );
        assert_eq!(
            spot(&d).unwrap(),
            Spot {
                controller: 2,
                bus: 0,
                target: 1,
                unit: 3
            }
        );
        assert!(spot(&disk("sda", &[("type", "drive"), ("unit", "x")])).is_err());
    }

    #[test]
    fn a_disk_sits_on_its_controllers_bus_by_model() {
        let d = disk("sdb", &[]);
        let s = spot(&d).unwrap();
        assert_eq!(
            disk_device(&d, s, "virtio-scsi").unwrap(),
            "scsi-hd,bus=scsi0.0,channel=0,scsi-id=0,lun=1"
        );
        assert_eq!(
            disk_device(&d, s, "lsilogic").unwrap(),
            "scsi-hd,bus=scsi0.0,scsi-id=1"
        );
        let mut lun = d.clone();
        lun.device = DiskDevice::Lun;
        assert!(disk_device(&lun, s, "virtio-scsi").is_err());
        // The controllers a definition lacks for its disks: one per index, libvirt's model.
        let def_disks = vec![disk("sda", &[]), disk("sdh", &[]), disk("sdi", &[])];
        let missing: Vec<(Option<u32>, Option<String>)> = missing_controllers(&DomainDef {
            disks: def_disks,
            ..crate::tests::empty_def()
        })
        .unwrap()
        .into_iter()
        .map(|c| (c.index, c.model))
        .collect();
        assert_eq!(
            missing,
            [
                (Some(0), Some("lsilogic".to_string())),
                (Some(1), Some("lsilogic".to_string()))
            ]
        );
    }
}
