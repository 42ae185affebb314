//! `<volume>`: libvirt's storage volume XML (`formatstorage.rst`) to and from [`VolumeDef`].

use serde::{Deserialize, Serialize};

use super::domain::read_name;
use super::pool::{read_permissions, read_size, write_permissions};
use super::reader::El;
use super::values::{enum_name, parse_enum};
use super::writer::{Attrs, Writer};
use super::{Extras, FormatOptions, ParseOptions, STRICT, parse_root};
use crate::Error;
use crate::bindings::types::{VolumeDef, VolumeType};

/// A volume definition with what libvirt's dumps add and what the model does not cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedVolume {
    /// The modelled part.
    pub def: VolumeDef,
    /// `<volume type=...>`: set by the pool's driver, written in every `vol-dumpxml`.
    pub volume_type: Option<VolumeType>,
    /// `<physical>` in bytes: state reported by `vol-dumpxml`, never part of a definition.
    pub physical: Option<u64>,
    /// The rest, written back by [`format_volume`].
    pub extras: Extras,
}

impl ParsedVolume {
    /// A volume with nothing beyond the model.
    pub fn new(def: VolumeDef) -> Self {
        ParsedVolume {
            def,
            volume_type: None,
            physical: None,
            extras: Extras::default(),
        }
    }

    /// Paths of the elements and attributes virtwasm does not interpret, for `--validate`.
    pub fn unknown_items(&self) -> Vec<String> {
        self.extras.unknown_items()
    }
}

const VOLUME_TYPES: &[(&str, VolumeType)] = &[
    ("file", VolumeType::File),
    ("block", VolumeType::Block),
    ("dir", VolumeType::Dir),
    ("network", VolumeType::Network),
    ("netdir", VolumeType::Netdir),
    ("ploop", VolumeType::Ploop),
];

/// Reads a volume definition. Sizes are normalised to bytes. A missing `<capacity>` reads
/// as 0: cloning (`vol-create-from`) takes the source's, so only the verb can tell whether
/// it is required.
pub fn parse_volume(xml: &str) -> Result<ParsedVolume, Error> {
    parse_volume_with(xml, &ParseOptions::default())
}

/// Reads a volume definition and refuses anything outside the modelled subset, naming it.
pub fn parse_volume_strict(xml: &str) -> Result<ParsedVolume, Error> {
    parse_volume_with(xml, &STRICT)
}

/// Reads a volume definition with explicit options (volumes have no defaults of their own:
/// key, path and format come from the pool's driver).
pub fn parse_volume_with(xml: &str, options: &ParseOptions) -> Result<ParsedVolume, Error> {
    let (volume, extras) = parse_root(xml, "volume", options, read_volume)?;
    Ok(ParsedVolume { extras, ..volume })
}

/// Writes a volume as `virsh vol-dumpxml` does.
pub fn format_volume(v: &ParsedVolume, _options: &FormatOptions) -> String {
    let def = &v.def;
    let mut w = Writer::new(&v.extras);
    let kind = v.volume_type.map(|t| enum_name(VOLUME_TYPES, &t));
    w.open("/volume", "volume", Attrs::new().opt("type", kind));
    w.text("/volume/name", "name", Attrs::new(), &def.name);
    if let Some(key) = &def.key {
        w.text("/volume/key", "key", Attrs::new(), key);
    }
    if w.has_extras("/volume/source") {
        w.leaf("/volume/source", "source", Attrs::new());
    }
    let bytes = || Attrs::new().add("unit", "bytes");
    w.text(
        "/volume/capacity",
        "capacity",
        bytes(),
        &def.capacity.to_string(),
    );
    if let Some(allocation) = def.allocation {
        w.text(
            "/volume/allocation",
            "allocation",
            bytes(),
            &allocation.to_string(),
        );
    }
    if let Some(physical) = v.physical {
        w.text(
            "/volume/physical",
            "physical",
            bytes(),
            &physical.to_string(),
        );
    }
    write_target(&mut w, def);
    write_backing(&mut w, def);
    w.close();
    w.finish()
}

fn read_volume(root: &mut El<'_>) -> Result<ParsedVolume, Error> {
    let volume_type = root.attr_with("type", |v| parse_enum(v, VOLUME_TYPES, "volume type"))?;
    let name = read_name(root)?;
    let key = root.child_text("key");
    // `<source>` lists a volume's extents; it is reported, never configured: kept as is.
    drop(root.child("source"));
    let capacity = read_size(root, "capacity")?.unwrap_or(0);
    let allocation = read_size(root, "allocation")?;
    let physical = read_size(root, "physical")?;
    let (mut target_path, mut format, mut target_permissions) = (None, None, None);
    if let Some(mut target) = root.child("target") {
        target_path = target.child_text("path");
        format = read_format(&mut target)?;
        target_permissions = target
            .child("permissions")
            .map(read_permissions)
            .transpose()?;
    }
    let (mut backing_path, mut backing_format) = (None, None);
    if let Some(mut backing) = root.child("backingStore") {
        backing_path = backing.child_text("path");
        backing_format = read_format(&mut backing)?;
    }
    let def = VolumeDef {
        name,
        key,
        capacity,
        allocation,
        target_path,
        format,
        target_permissions,
        backing_path,
        backing_format,
    };
    Ok(ParsedVolume {
        def,
        volume_type,
        physical,
        extras: Extras::default(),
    })
}

fn read_format(parent: &mut El<'_>) -> Result<Option<String>, Error> {
    match parent.child("format") {
        Some(mut format) => Ok(Some(format.required_attr("type")?.value.to_string())),
        None => Ok(None),
    }
}

fn write_target(w: &mut Writer<'_>, def: &VolumeDef) {
    let path = "/volume/target";
    let any = def.target_path.is_some() || def.format.is_some() || def.target_permissions.is_some();
    if !any && !w.has_extras(path) {
        return;
    }
    w.open(path, "target", Attrs::new());
    if let Some(target_path) = &def.target_path {
        w.text("/volume/target/path", "path", Attrs::new(), target_path);
    }
    if let Some(format) = &def.format {
        w.leaf(
            "/volume/target/format",
            "format",
            Attrs::new().add("type", format),
        );
    }
    if let Some(perms) = &def.target_permissions {
        write_permissions(w, "/volume/target/permissions", perms);
    }
    w.close();
}

fn write_backing(w: &mut Writer<'_>, def: &VolumeDef) {
    let path = "/volume/backingStore";
    if def.backing_path.is_none() && def.backing_format.is_none() && !w.has_extras(path) {
        return;
    }
    w.open(path, "backingStore", Attrs::new());
    if let Some(backing) = &def.backing_path {
        w.text("/volume/backingStore/path", "path", Attrs::new(), backing);
    }
    if let Some(format) = &def.backing_format {
        w.leaf(
            "/volume/backingStore/format",
            "format",
            Attrs::new().add("type", format),
        );
    }
    w.close();
}
