//! `<pool>`: libvirt's storage pool XML (`formatstorage.rst`) to and from [`PoolDef`].

use serde::{Deserialize, Serialize};

use super::domain::read_name;
use super::reader::El;
use super::units::parse_scaled;
use super::values::{canonical_uuid, enum_name, generate_uuid, octal_mode, owner_id, parse_enum};
use super::writer::{Attrs, Writer};
use super::{Extras, FormatOptions, ParseOptions, STRICT, parse_root};
use crate::Error;
use crate::bindings::types::{Permissions, PoolDef, PoolType};

/// A pool definition with its sizes and everything the model does not cover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedPool {
    /// The modelled part.
    pub def: PoolDef,
    /// `<capacity>` in bytes. libvirt writes the pool's sizes in every dump; they are state
    /// (set them from `pool-info` before formatting) and never part of a definition.
    pub capacity: u64,
    /// `<allocation>` in bytes.
    pub allocation: u64,
    /// `<available>` in bytes.
    pub available: u64,
    /// The rest, written back by [`format_pool`].
    pub extras: Extras,
}

impl ParsedPool {
    /// A pool with nothing beyond the model and zero sizes.
    pub fn new(def: PoolDef) -> Self {
        ParsedPool {
            def,
            capacity: 0,
            allocation: 0,
            available: 0,
            extras: Extras::default(),
        }
    }

    /// Paths of the elements and attributes virtwasm does not interpret, for `--validate`.
    pub fn unknown_items(&self) -> Vec<String> {
        self.extras.unknown_items()
    }
}

const POOL_TYPES: &[(&str, PoolType)] = &[
    ("dir", PoolType::Dir),
    ("fs", PoolType::Fs),
    ("netfs", PoolType::Netfs),
    ("logical", PoolType::Logical),
    ("disk", PoolType::Disk),
    ("iscsi", PoolType::Iscsi),
    ("scsi", PoolType::Scsi),
    ("mpath", PoolType::Mpath),
    ("rbd", PoolType::Rbd),
    ("sheepdog", PoolType::Sheepdog),
    ("gluster", PoolType::Gluster),
    ("zfs", PoolType::Zfs),
];
/// libvirt's pool type names, in the model's order.
pub fn pool_type_names() -> Vec<&'static str> {
    POOL_TYPES.iter().map(|(n, _)| *n).collect()
}

/// The pool type libvirt calls `name`.
pub fn pool_type_from_name(name: &str) -> Option<PoolType> {
    POOL_TYPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// libvirt's name for a pool type.
pub fn pool_type_name(t: PoolType) -> &'static str {
    enum_name(POOL_TYPES, &t)
}

/// Pool types libvirt has that the model cannot represent.
const POOL_TYPES_UNMODELLED: &[&str] = &["iscsi-direct", "vstorage"];

/// Reads a pool definition, filling libvirt's defaults.
pub fn parse_pool(xml: &str) -> Result<ParsedPool, Error> {
    parse_pool_with(xml, &ParseOptions::default())
}

/// Reads a pool definition and refuses anything outside the modelled subset, naming it.
pub fn parse_pool_strict(xml: &str) -> Result<ParsedPool, Error> {
    parse_pool_with(xml, &STRICT)
}

/// Reads a pool definition with explicit options.
pub fn parse_pool_with(xml: &str, options: &ParseOptions) -> Result<ParsedPool, Error> {
    let ((def, sizes), extras) = parse_root(xml, "pool", options, read_pool)?;
    let mut pool = ParsedPool {
        def,
        capacity: sizes[0],
        allocation: sizes[1],
        available: sizes[2],
        extras,
    };
    if options.fill_defaults {
        fill_pool_defaults(&mut pool.def);
    }
    Ok(pool)
}

/// Fills what libvirt fills on define: a uuid, and for a volume group its name and device
/// directory (`/dev/<vg>`); the filesystem format of fs/netfs/logical pools.
pub fn fill_pool_defaults(p: &mut PoolDef) {
    if p.uuid.is_empty() {
        p.uuid = generate_uuid();
    }
    match p.pool_type {
        PoolType::Logical => {
            let vg = p.source_name.get_or_insert_with(|| p.name.clone()).clone();
            p.target_path.get_or_insert_with(|| format!("/dev/{vg}"));
            p.source_format.get_or_insert_with(|| "lvm2".to_string());
        }
        PoolType::Fs | PoolType::Netfs => {
            p.source_format.get_or_insert_with(|| "auto".to_string());
        }
        _ => {}
    }
}

/// Writes a pool as `virsh pool-dumpxml` does.
pub fn format_pool(p: &ParsedPool, _options: &FormatOptions) -> String {
    let def = &p.def;
    let mut w = Writer::new(&p.extras);
    w.open(
        "/pool",
        "pool",
        Attrs::new().add("type", enum_name(POOL_TYPES, &def.pool_type)),
    );
    w.text("/pool/name", "name", Attrs::new(), &def.name);
    if !def.uuid.is_empty() {
        w.text("/pool/uuid", "uuid", Attrs::new(), &def.uuid);
    }
    for (name, value) in [
        ("capacity", p.capacity),
        ("allocation", p.allocation),
        ("available", p.available),
    ] {
        let path = format!("/pool/{name}");
        w.text(
            &path,
            name,
            Attrs::new().add("unit", "bytes"),
            &value.to_string(),
        );
    }
    write_source(&mut w, def);
    let target = "/pool/target";
    let has_target = def.target_path.is_some() || def.target_permissions.is_some();
    if has_target || w.has_extras(target) {
        w.open(target, "target", Attrs::new());
        if let Some(path) = &def.target_path {
            w.text("/pool/target/path", "path", Attrs::new(), path);
        }
        if let Some(perms) = &def.target_permissions {
            write_permissions(&mut w, "/pool/target/permissions", perms);
        }
        w.close();
    }
    w.close();
    w.finish()
}

fn read_pool(root: &mut El<'_>) -> Result<(PoolDef, [u64; 3]), Error> {
    let type_attr = root.required_attr("type")?;
    let pool_type = parse_enum(type_attr.value, POOL_TYPES, "pool type").map_err(|m| {
        if POOL_TYPES_UNMODELLED.contains(&type_attr.value) {
            root.attr_error(
                &type_attr,
                "this pool type is not supported by virtwasm yet",
            )
        } else {
            root.attr_error(&type_attr, &m)
        }
    })?;
    let mut def = PoolDef {
        pool_type,
        name: String::new(),
        uuid: String::new(),
        source_hosts: Vec::new(),
        source_devices: Vec::new(),
        source_dir: None,
        source_name: None,
        source_format: None,
        target_path: None,
        target_permissions: None,
    };
    if let Some(source) = root.child("source") {
        read_source(source, &mut def)?;
    }
    // libvirt names a volume-group pool after its group when `<name>` is missing.
    def.name = match (
        &def.source_name,
        root.el.elements().any(|e| e.name == "name"),
    ) {
        (Some(vg), false) if pool_type == PoolType::Logical => vg.clone(),
        _ => read_name(root)?,
    };
    if let Some(uuid) = root.child("uuid") {
        def.uuid = uuid.text_with(canonical_uuid)?;
    }
    let mut sizes = [0; 3];
    for (slot, name) in sizes
        .iter_mut()
        .zip(["capacity", "allocation", "available"])
    {
        *slot = read_size(root, name)?.unwrap_or(0);
    }
    if let Some(mut target) = root.child("target") {
        def.target_path = target.child_text("path");
        def.target_permissions = target
            .child("permissions")
            .map(read_permissions)
            .transpose()?;
    }
    Ok((def, sizes))
}

fn read_source(mut source: El<'_>, def: &mut PoolDef) -> Result<(), Error> {
    for mut host in source.children("host") {
        def.source_hosts
            .push(host.required_attr("name")?.value.to_string());
    }
    for mut device in source.children("device") {
        def.source_devices
            .push(device.required_attr("path")?.value.to_string());
    }
    if let Some(mut dir) = source.child("dir") {
        def.source_dir = Some(dir.required_attr("path")?.value.to_string());
    }
    def.source_name = source.child_text("name");
    if let Some(mut format) = source.child("format") {
        def.source_format = Some(format.required_attr("type")?.value.to_string());
    }
    Ok(())
}

fn write_source(w: &mut Writer<'_>, def: &PoolDef) {
    let path = "/pool/source";
    w.open_never_empty(path, "source", Attrs::new());
    for (i, host) in def.source_hosts.iter().enumerate() {
        w.leaf(
            &format!("{path}/host[{}]", i + 1),
            "host",
            Attrs::new().add("name", host),
        );
    }
    for (i, device) in def.source_devices.iter().enumerate() {
        w.leaf(
            &format!("{path}/device[{}]", i + 1),
            "device",
            Attrs::new().add("path", device),
        );
    }
    if let Some(dir) = &def.source_dir {
        w.leaf(&format!("{path}/dir"), "dir", Attrs::new().add("path", dir));
    }
    if let Some(name) = &def.source_name {
        w.text(&format!("{path}/name"), "name", Attrs::new(), name);
    }
    if let Some(format) = &def.source_format {
        w.leaf(
            &format!("{path}/format"),
            "format",
            Attrs::new().add("type", format),
        );
    }
    w.close();
}

/// A size in bytes (`<capacity unit='G'>5</capacity>`); the unit defaults to bytes.
pub(super) fn read_size(root: &mut El<'_>, name: &str) -> Result<Option<u64>, Error> {
    let Some(mut el) = root.child(name) else {
        return Ok(None);
    };
    let unit = el.attr("unit");
    let text = el.text();
    let unit_value = unit.as_ref().map(|u| u.value);
    parse_scaled(&text, unit_value, 1).map(Some).map_err(|e| {
        let message = e.message(&text, unit_value);
        match (&unit, e) {
            (Some(unit), super::units::ScaleError::Unit) => el.attr_error(unit, &message),
            _ => el.text_error(&message),
        }
    })
}

/// `<permissions>`: octal mode, numeric owner and group (`-1` for unset), security label.
pub(super) fn read_permissions(mut el: El<'_>) -> Result<Permissions, Error> {
    let mode = el
        .child("mode")
        .map(|m| m.text_with(octal_mode))
        .transpose()?;
    let owner = el
        .child("owner")
        .map(|o| o.text_with(owner_id))
        .transpose()?
        .flatten();
    let group = el
        .child("group")
        .map(|g| g.text_with(owner_id))
        .transpose()?
        .flatten();
    let label = el.child_text("label");
    Ok(Permissions {
        mode,
        owner,
        group,
        label,
    })
}

pub(super) fn write_permissions(w: &mut Writer<'_>, path: &str, perms: &Permissions) {
    w.open(path, "permissions", Attrs::new());
    if let Some(mode) = perms.mode {
        w.text(
            &format!("{path}/mode"),
            "mode",
            Attrs::new(),
            &format!("0{mode:o}"),
        );
    }
    if let Some(owner) = perms.owner {
        w.text(
            &format!("{path}/owner"),
            "owner",
            Attrs::new(),
            &owner.to_string(),
        );
    }
    if let Some(group) = perms.group {
        w.text(
            &format!("{path}/group"),
            "group",
            Attrs::new(),
            &group.to_string(),
        );
    }
    if let Some(label) = &perms.label {
        w.text(&format!("{path}/label"), "label", Attrs::new(), label);
    }
    w.close();
}
