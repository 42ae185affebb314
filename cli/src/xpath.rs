//! `dumpxml --xpath`: evaluates an XPath expression over the XML virtwasm prints and writes
//! the matching nodes as virsh does (re-indented by two spaces, attributes in double quotes),
//! optionally wrapped in `<nodes>`. Only node sets are accepted, as in virsh.

use sxd_document::dom::{ChildOfElement, Element};
use sxd_xpath::Value;

/// The nodes of `xml` that `expr` selects, serialized; `Err` carries virsh's message.
pub fn select(xml: &str, expr: &str, wrap: bool) -> Result<String, String> {
    let incorrect = || format!("internal error: Incorrect xpath '{expr}'");
    let package = sxd_document::parser::parse(xml)
        .map_err(|e| format!("internal error: cannot parse the XML: {e}"))?;
    let doc = package.as_document();
    let value = sxd_xpath::evaluate_xpath(&doc, expr).map_err(|_| incorrect())?;
    let Value::Nodeset(nodes) = value else {
        return Err(incorrect());
    };
    let order = AttributeOrder::new(xml, doc.root());
    let mut out = String::new();
    let depth = usize::from(wrap);
    if wrap {
        out.push_str("<nodes>\n");
    }
    for node in nodes.document_order() {
        use sxd_xpath::nodeset::Node;
        match node {
            Node::Element(e) => write_element(e, depth, &order, &mut out),
            Node::Attribute(a) => {
                out.push_str(&"  ".repeat(depth));
                out.push_str(&format!(
                    "{}=\"{}\"\n",
                    a.name().local_part(),
                    escape(a.value(), true)
                ));
            }
            Node::Text(t) => {
                out.push_str(&"  ".repeat(depth));
                out.push_str(&escape(t.text(), false));
                out.push('\n');
            }
            _ => {}
        }
    }
    if wrap {
        out.push_str("</nodes>\n");
    }
    Ok(out)
}

fn escape(s: &str, attribute: bool) -> String {
    let s = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    if attribute {
        s.replace('"', "&quot;")
    } else {
        s
    }
}

/// The attributes' order in the source text, which sxd does not keep: the n-th start tag in
/// the text is the n-th element in document order.
struct AttributeOrder<'d> {
    elements: Vec<Element<'d>>,
    names: Vec<Vec<String>>,
}

impl<'d> AttributeOrder<'d> {
    fn new(xml: &str, root: sxd_document::dom::Root<'d>) -> Self {
        fn walk<'d>(e: Element<'d>, out: &mut Vec<Element<'d>>) {
            out.push(e);
            for c in e.children() {
                if let ChildOfElement::Element(child) = c {
                    walk(child, out);
                }
            }
        }
        let mut elements = Vec::new();
        for c in root.children() {
            if let sxd_document::dom::ChildOfRoot::Element(e) = c {
                walk(e, &mut elements);
            }
        }
        let mut names = Vec::new();
        let mut reader = quick_xml::Reader::from_str(xml);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Start(t)) | Ok(quick_xml::events::Event::Empty(t)) => {
                    names.push(
                        t.attributes()
                            .filter_map(|a| a.ok())
                            .map(|a| a.key.as_ref().to_string())
                            .collect(),
                    );
                }
                Ok(quick_xml::events::Event::Eof) | Err(_) => break,
                Ok(_) => {}
            }
        }
        AttributeOrder { elements, names }
    }

    /// `e`'s attributes in source order.
    fn of(&self, e: Element<'d>) -> Vec<sxd_document::dom::Attribute<'d>> {
        let mut attrs = e.attributes();
        if let Some(order) = self
            .elements
            .iter()
            .position(|x| *x == e)
            .and_then(|i| self.names.get(i))
        {
            attrs.sort_by_key(|a| {
                order
                    .iter()
                    .position(|n| n == a.name().local_part())
                    .unwrap_or(usize::MAX)
            });
        }
        attrs
    }
}

fn write_element<'d>(e: Element<'d>, depth: usize, order: &AttributeOrder<'d>, out: &mut String) {
    let pad = "  ".repeat(depth);
    out.push_str(&pad);
    out.push('<');
    out.push_str(e.name().local_part());
    for a in order.of(e) {
        out.push_str(&format!(
            " {}=\"{}\"",
            a.name().local_part(),
            escape(a.value(), true)
        ));
    }
    // Whitespace between elements is layout, not content: it is re-created by indentation.
    let children: Vec<ChildOfElement<'_>> = e
        .children()
        .into_iter()
        .filter(|c| !matches!(c, ChildOfElement::Text(t) if t.text().trim().is_empty()))
        .collect();
    if children.is_empty() {
        out.push_str("/>\n");
        return;
    }
    if children
        .iter()
        .all(|c| matches!(c, ChildOfElement::Text(_)))
    {
        out.push('>');
        for c in &children {
            if let ChildOfElement::Text(t) = c {
                out.push_str(&escape(t.text(), false));
            }
        }
        out.push_str(&format!("</{}>\n", e.name().local_part()));
        return;
    }
    out.push_str(">\n");
    for c in children {
        match c {
            ChildOfElement::Element(child) => write_element(child, depth + 1, order, out),
            ChildOfElement::Text(t) => {
                out.push_str(&"  ".repeat(depth + 1));
                out.push_str(&escape(t.text().trim(), false));
                out.push('\n');
            }
            _ => {}
        }
    }
    out.push_str(&format!("{pad}</{}>\n", e.name().local_part()));
}

#[cfg(test)]
mod tests {
    use super::select;

    #[test]
    fn selects_nodes_as_virsh_prints_them() {
        let xml = "<domain type='test'>\n  <name>a &amp; b</name>\n  <os>\n    <type arch='i686'>hvm</type>\n    <boot dev='hd'/>\n  </os>\n</domain>\n";
        assert_eq!(
            select(xml, "//name", false).unwrap(),
            "<name>a &amp; b</name>\n"
        );
        assert_eq!(
            select(xml, "//os", false).unwrap(),
            "<os>\n  <type arch=\"i686\">hvm</type>\n  <boot dev=\"hd\"/>\n</os>\n"
        );
        assert_eq!(
            select(xml, "//boot", true).unwrap(),
            "<nodes>\n  <boot dev=\"hd\"/>\n</nodes>\n"
        );
        assert_eq!(select(xml, "//nosuch", false).unwrap(), "");
        assert_eq!(
            select(xml, "count(//os)", false).unwrap_err(),
            "internal error: Incorrect xpath 'count(//os)'"
        );
        assert_eq!(
            select(xml, "//[", false).unwrap_err(),
            "internal error: Incorrect xpath '//['"
        );
    }
}
