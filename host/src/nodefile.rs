//! libvirt's test-driver node files (`test:///path/to/node.xml`): a `<node>` document holding
//! domains, networks and pools, inline or by `file='...'` reference, which a driver that
//! declares `node-files = true` starts from instead of its defaults.

use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::bindings::types::{InitialObjects, VolumeDef};
use crate::error::{Error, Result};
use crate::xml;

/// Reads a node file and everything it references.
pub fn load(path: &Path) -> Result<(InitialObjects, Vec<xml::Extras>)> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("cannot read node file", path, e))?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let mut objects = InitialObjects {
        domains: vec![],
        pools: vec![],
        networks: vec![],
    };
    let mut extras = Vec::new();
    for (name, fragment) in
        children(&text).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?
    {
        let body = match file_attribute(&fragment) {
            Some(file) => {
                let p = base.join(file);
                std::fs::read_to_string(&p).map_err(|e| Error::io("cannot read", &p, e))?
            }
            None => fragment,
        };
        let located =
            |e: Error| Error::invalid(format!("{}: <{name}>: {}", path.display(), e.message));
        match name.as_str() {
            "domain" => {
                let parsed = xml::parse_domain(&body).map_err(located)?;
                objects.domains.push((parsed.def, None));
                extras.push(parsed.extras);
            }
            "network" => objects
                .networks
                .push(xml::parse_network(&body).map_err(located)?.def),
            "pool" => {
                let parsed = xml::parse_pool(&body).map_err(located)?;
                objects.pools.push((parsed.def, Vec::<VolumeDef>::new()));
            }
            // <cpu>, <memory> and devices describe the fake node; the driver's own numbers stand.
            _ => {}
        }
    }
    Ok((objects, extras))
}

/// The top-level children of `<node>` as (name, exact source text).
fn children(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut name = String::new();
    let mut out = Vec::new();
    let mut saw_root = false;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth == 1 {
                    if e.name().as_ref() != "node" {
                        return Err(format!(
                            "root element is <{}>, expected <node>",
                            e.name().as_ref()
                        ));
                    }
                    saw_root = true;
                } else if depth == 2 {
                    start = before;
                    name = e.name().as_ref().to_string();
                }
            }
            Event::Empty(e) if depth == 0 => {
                if e.name().as_ref() != "node" {
                    return Err(format!(
                        "root element is <{}>, expected <node>",
                        e.name().as_ref()
                    ));
                }
                saw_root = true;
            }
            Event::Empty(e) if depth == 1 => {
                let end = reader.buffer_position() as usize;
                out.push((
                    e.name().as_ref().to_string(),
                    text[before..end].trim().to_string(),
                ));
            }
            Event::End(_) => {
                if depth == 2 {
                    let end = reader.buffer_position() as usize;
                    out.push((name.clone(), text[start..end].trim().to_string()));
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err("no <node> element".into());
    }
    Ok(out)
}

/// The `file='...'` of a reference element such as `<domain file='vm.xml'/>`.
fn file_attribute(fragment: &str) -> Option<String> {
    let mut reader = Reader::from_str(fragment);
    match reader.read_event().ok()? {
        Event::Empty(e) => e
            .attributes()
            .filter_map(|a| a.ok())
            .find(|a| a.key.as_ref() == "file")
            .and_then(|a| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.into_owned())
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_and_referenced_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vm2.xml"),
            "<domain type='test'><name>vm2</name><memory>1024</memory><os><type>hvm</type></os></domain>",
        )
        .unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(
            &node,
            "<node>\n <cpu><mhz>6000</mhz></cpu>\n <domain type='test'><name>vm1</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>\n <domain file='vm2.xml'/>\n <network><name>n1</name><bridge name='br9'/></network>\n</node>\n",
        )
        .unwrap();
        let (o, extras) = load(&node).unwrap();
        let names: Vec<_> = o.domains.iter().map(|(d, _)| d.name.clone()).collect();
        assert_eq!(names, vec!["vm1", "vm2"]);
        assert_eq!(o.domains[0].0.memory_kib, 65536);
        assert_eq!(o.networks[0].bridge.as_deref(), Some("br9"));
        assert_eq!(extras.len(), 2);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(&node, "<nodes/>").unwrap();
        assert!(load(&node).unwrap_err().message.contains("expected <node>"));
        std::fs::write(&node, "<node><domain file='missing.xml'/></node>").unwrap();
        let e = load(&node).unwrap_err();
        assert!(e.message.contains("missing.xml"), "{e}");
        std::fs::write(
            &node,
            "<node><domain type='test'><memory>1</memory></domain></node>",
        )
        .unwrap();
        let e = load(&node).unwrap_err();
        assert!(e.message.contains("<domain>"), "{e}");
    }
}
