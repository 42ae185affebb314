//! libvirt's XML formats (domain, storage pool, storage volume, network) to and from the typed
//! model in `wit/types.wit`.
//!
//! This is the one place that reads and writes libvirt XML: drivers only see the model. Three
//! promises shape it:
//!
//! * **Nothing is lost.** libvirt's vocabulary is far larger than the model. Every element or
//!   attribute the model does not cover is kept in [`Extras`], keyed by the path of the element
//!   it was found in, and written back inside that same element: where libvirt writes it when
//!   libvirt has a place for it (`<metadata>` after `<uuid>`), else after the modelled children.
//!   So `parse -> format` never silently drops configuration, and `--validate`
//!   ([`ParseOptions::strict`]) can name what virtwasm would not interpret.
//! * **Errors say where.** Every error names the line, the column, the element and what was
//!   expected, e.g. `XML error at line 3, column 11: <memory unit='furlongs'>: unknown unit ...`.
//! * **Output is `virsh dumpxml`'s.** Element order, two-space indentation, single-quoted
//!   attributes and escaping follow libvirt, so output can be diffed against the real thing.
//!
//! Parsing normalises as libvirt does (memory to KiB, sizes to bytes, canonical uuids and MACs)
//! and, unless told not to, fills the defaults libvirt fills when it defines an object.

mod domain;
mod network;
mod order;
mod pool;
mod reader;
mod units;
mod values;
mod volume;
mod writer;

#[cfg(test)]
mod tests;

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

pub use domain::{
    ParsedDomain, fill_domain_defaults, format_domain, parse_domain, parse_domain_strict,
    parse_domain_with,
};
pub use network::{
    ParsedNetwork, fill_network_defaults, format_network, parse_network, parse_network_strict,
    parse_network_with,
};
pub use pool::{
    ParsedPool, fill_pool_defaults, format_pool, parse_pool, parse_pool_strict, parse_pool_with,
    pool_type_from_name, pool_type_name, pool_type_names,
};
pub use units::{UNIT_NAMES, unit_scale};
pub use volume::{
    ParsedVolume, format_volume, parse_volume, parse_volume_strict, parse_volume_with,
};

use crate::Error;
use reader::{El, Sink, Source, parse_document};

/// How to read a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Refuse any element or attribute outside the modelled subset (`virsh define --validate`
    /// in spirit): a user who asked for validation must not have settings silently ignored.
    pub strict: bool,
    /// Fill the defaults libvirt fills on define (uuid, MACs, current memory, disk buses...).
    /// Off only for callers that need to know what the document itself said.
    pub fill_defaults: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            strict: false,
            fill_defaults: true,
        }
    }
}

/// How to write a document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FormatOptions {
    /// The id of a running domain; libvirt writes `<domain type='..' id='N'>` for live domains.
    pub id: Option<i32>,
    /// Write the persistent definition only (`dumpxml --inactive`): no id, and no live-only
    /// values such as the pty path a running domain's console got.
    pub inactive: bool,
}

/// What a document contained beyond the model, kept for the round trip.
///
/// Paths are XPath-like and absolute: `/domain/devices/disk[2]` is the second modelled disk,
/// `/domain/os/@firmware` an attribute. List items carry their 1-based position in the model's
/// list, so code that removes a device from the model should drop the extras under its path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    /// Attributes the model does not cover, with the element that carried them.
    pub attributes: Vec<ExtraAttribute>,
    /// Elements the model does not cover, as XML text, with the element that contained them.
    pub elements: Vec<ExtraElement>,
}

/// An attribute outside the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraAttribute {
    /// Path of the element carrying the attribute, e.g. `/domain/os`.
    pub element: String,
    /// The attribute's name as written (a namespace prefix included).
    pub name: String,
    /// The attribute's value, unescaped.
    pub value: String,
}

/// An element outside the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraElement {
    /// Path of the parent element it is written back into, e.g. `/domain/devices`.
    pub parent: String,
    /// What to call it in reports: its own path, with the reason in a predicate when a known
    /// element was kept whole because of a value the model lacks
    /// (`/domain/devices/disk[@type='nvme']`).
    pub path: String,
    /// The element as XML, indented from column 0; re-indented when written.
    pub xml: String,
}

impl Extras {
    /// Whether the document held nothing beyond the model.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.elements.is_empty()
    }

    /// Forgets the extras of list item `index` (0-based) under `list`, e.g.
    /// `("/domain/devices/disk", 1)` after the second disk was removed from the model, and
    /// renumbers those of the items after it, so extras stay with their devices.
    pub fn remove_list_item(&mut self, list: &str, index: usize) {
        let renumber = |path: &str| renumber_path(path, list, index + 1);
        self.attributes.retain_mut(|a| match renumber(&a.element) {
            Some(element) => {
                a.element = element;
                true
            }
            None => false,
        });
        self.elements
            .retain_mut(|e| match (renumber(&e.parent), renumber(&e.path)) {
                (Some(parent), Some(path)) => {
                    e.parent = parent;
                    e.path = path;
                    true
                }
                _ => false,
            });
    }

    /// The paths of everything outside the model, sorted: elements as
    /// `/domain/devices/hostdev`, attributes as `/domain/os/@firmware`.
    pub fn unknown_items(&self) -> Vec<String> {
        let mut items: Vec<String> = self
            .attributes
            .iter()
            .map(|a| format!("{}/@{}", a.element, a.name))
            .chain(self.elements.iter().map(|e| e.path.clone()))
            .collect();
        items.sort();
        items
    }
}

/// `path` with item `removed` (1-based) of `list` gone: `None` for paths inside that item,
/// the following items' paths shifted down by one, other paths unchanged.
fn renumber_path(path: &str, list: &str, removed: usize) -> Option<String> {
    let Some(rest) = path.strip_prefix(list).and_then(|r| r.strip_prefix('[')) else {
        return Some(path.to_string());
    };
    let Some((number, tail)) = rest.split_once(']') else {
        return Some(path.to_string());
    };
    match number.parse::<usize>() {
        Ok(n) if n == removed => None,
        Ok(n) if n > removed => Some(format!("{list}[{}]{tail}", n - 1)),
        _ => Some(path.to_string()),
    }
}

/// Reads a document whose root must be `root_name` and builds a value from it, collecting
/// extras; in strict mode the first extra (in document order) is an error naming it.
fn parse_root<T>(
    xml: &str,
    root_name: &str,
    options: &ParseOptions,
    build: impl FnOnce(&mut El<'_>) -> Result<T, Error>,
) -> Result<(T, Extras), Error> {
    let src = Source::new(xml);
    let root = parse_document(&src)?;
    if root.name != root_name {
        return Err(src.error(
            root.offset,
            &format!("<{}>", root.name),
            &format!("wrong root element (expected <{root_name}>)"),
        ));
    }
    let sink = RefCell::new(Sink::default());
    let value = {
        let mut el = El::root(&root, &src, &sink);
        build(&mut el)?
    };
    let mut sink = sink.into_inner();
    // Extras are recorded in walk order; only the order among siblings matters (and is kept
    // by the stable sort), so sorting by parent makes equal documents give equal extras.
    sink.extras.elements.sort_by(|a, b| a.parent.cmp(&b.parent));
    sink.extras
        .attributes
        .sort_by(|a, b| a.element.cmp(&b.element));
    if options.strict
        && let Some((offset, context, path)) = sink.first_unknown
    {
        let what = if path.contains("/@") {
            "attribute"
        } else {
            "element"
        };
        return Err(src.error(
            offset,
            &context,
            &format!("{what} {path} is not supported by virtwasm (refused by strict validation)"),
        ));
    }
    Ok((value, sink.extras))
}

/// The strict options, for the `*_strict` shorthands.
const STRICT: ParseOptions = ParseOptions {
    strict: true,
    fill_defaults: true,
};
