//! Output in `virsh dumpxml`'s layout: two-space indentation, single-quoted attributes,
//! libvirt's escaping, and the extras of every element put back where they were found.

use super::Extras;
use super::reader::{Element, Node, parse_fragment};

/// Escapes text and attribute values the way libvirt's `virBufferEscapeString` does, so our
/// output matches `virsh dumpxml` byte for byte.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Attribute values also keep their line breaks and tabs, which a parser would otherwise
/// normalise to spaces.
fn escape_attr(text: &str) -> String {
    escape(text).replace('\n', "&#10;").replace('\r', "&#13;").replace('\t', "&#9;")
}

/// Attributes of an element being written, in libvirt's order; `None` values are skipped.
#[derive(Default)]
pub(crate) struct Attrs(Vec<(String, String)>);

impl Attrs {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an attribute.
    pub fn add(mut self, name: &str, value: impl ToString) -> Self {
        self.0.push((name.to_string(), value.to_string()));
        self
    }
    /// Adds an attribute when there is a value.
    pub fn opt(self, name: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.add(name, v),
            None => self,
        }
    }
}

struct Frame {
    path: String,
    name: String,
    /// Whether the start tag has been closed with `>` because content followed.
    open: bool,
    /// libvirt writes some empty elements as `<x>` `</x>` on two lines (`<source>` of a pool,
    /// `<ip>` of a network, `<devices>`); this keeps that quirk.
    never_empty: bool,
}

/// Writes a document element by element; each element is addressed by the same path the
/// parser used, so its extras (unknown attributes and children) are re-emitted inside it.
pub(crate) struct Writer<'x> {
    out: String,
    extras: &'x Extras,
    stack: Vec<Frame>,
}

impl<'x> Writer<'x> {
    pub fn new(extras: &'x Extras) -> Self {
        Writer { out: String::new(), extras, stack: Vec::new() }
    }

    /// Whether the element at `path` has extras, so that an element with nothing modelled
    /// is still written when it carries something the model does not know.
    pub fn has_extras(&self, path: &str) -> bool {
        self.extras.attributes.iter().any(|a| a.element == path)
            || self.extras.elements.iter().any(|e| e.parent == path)
    }

    /// Starts element `name` at `path`.
    pub fn open(&mut self, path: &str, name: &str, attrs: Attrs) {
        self.start(path, name, attrs, false);
    }

    /// Starts an element that libvirt never writes in the self-closing form.
    pub fn open_never_empty(&mut self, path: &str, name: &str, attrs: Attrs) {
        self.start(path, name, attrs, true);
    }

    fn start(&mut self, path: &str, name: &str, attrs: Attrs, never_empty: bool) {
        self.enter_child();
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.write_attrs(path, &attrs);
        self.stack.push(Frame {
            path: path.to_string(),
            name: name.to_string(),
            open: false,
            never_empty,
        });
        if never_empty {
            self.enter_child();
        }
    }

    /// Ends the innermost element, after writing its extra children.
    pub fn close(&mut self) {
        let Some(path) = self.stack.last().map(|f| f.path.clone()) else {
            return;
        };
        self.write_extra_children(&path);
        let Some(frame) = self.stack.pop() else {
            return;
        };
        if frame.open || frame.never_empty {
            self.indent();
            self.out.push_str("</");
            self.out.push_str(&frame.name);
            self.out.push_str(">\n");
        } else {
            self.out.push_str("/>\n");
        }
    }

    /// Writes an element with no modelled children.
    pub fn leaf(&mut self, path: &str, name: &str, attrs: Attrs) {
        self.open(path, name, attrs);
        self.close();
    }

    /// Writes `<name attrs>text</name>`.
    pub fn text(&mut self, path: &str, name: &str, attrs: Attrs, text: &str) {
        let children: Vec<&str> = self.extra_children(path).collect();
        if !children.is_empty() {
            self.text_with_children(path, name, attrs, text, &children);
            return;
        }
        self.enter_child();
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.write_attrs(path, &attrs);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// A text element that also carries unknown children is mixed content: written inline so
    /// that neither the text nor the children change on the next read.
    fn text_with_children(&mut self, path: &str, name: &str, attrs: Attrs, text: &str, xml: &[&str]) {
        let mut element = Element {
            name: name.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
            offset: 0,
        };
        let mut all = attrs.0;
        all.extend(self.extra_attrs(path));
        for (name, value) in all {
            element.attrs.push(super::reader::Attr { name, value, offset: 0 });
        }
        if !text.is_empty() {
            element.children.push(Node::Text { text: text.to_string(), offset: 0 });
        }
        for raw in xml {
            if let Some(child) = parse_fragment(raw) {
                element.children.push(Node::Element(child));
            }
        }
        self.enter_child();
        let depth = self.stack.len();
        write_element(&mut self.out, &element, depth);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn extra_attrs(&self, path: &str) -> Vec<(String, String)> {
        self.extras
            .attributes
            .iter()
            .filter(|a| a.element == path)
            .map(|a| (a.name.clone(), a.value.clone()))
            .collect()
    }

    fn extra_children<'p>(&self, path: &'p str) -> impl Iterator<Item = &'x str> + 'p
    where
        'x: 'p,
    {
        self.extras.elements.iter().filter(move |e| e.parent == path).map(|e| e.xml.as_str())
    }

    fn write_attrs(&mut self, path: &str, attrs: &Attrs) {
        let extra = self.extra_attrs(path);
        for (name, value) in attrs.0.iter().chain(extra.iter()) {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("='");
            self.out.push_str(&escape_attr(value));
            self.out.push('\'');
        }
    }

    fn write_extra_children(&mut self, path: &str) {
        let children: Vec<&str> = self.extra_children(path).collect();
        for xml in children {
            self.enter_child();
            let depth = self.stack.len();
            match parse_fragment(xml) {
                Some(element) => write_element(&mut self.out, &element, depth),
                None => {
                    // Not written by us: keep it verbatim rather than lose it.
                    push_indent(&mut self.out, depth);
                    self.out.push_str(xml.trim());
                    self.out.push('\n');
                }
            }
        }
    }

    /// Closes the parent's start tag before its first child.
    fn enter_child(&mut self) {
        if let Some(frame) = self.stack.last_mut()
            && !frame.open
        {
            frame.open = true;
            self.out.push_str(">\n");
        }
    }

    fn indent(&mut self) {
        push_indent(&mut self.out, self.stack.len());
    }
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// The canonical text of an element kept as an extra: what [`super::ExtraElement::xml`] holds.
pub(crate) fn serialize_element(element: &Element) -> String {
    let mut out = String::new();
    write_element(&mut out, element, 0);
    out.truncate(out.trim_end().len());
    out
}

fn write_element(out: &mut String, element: &Element, depth: usize) {
    push_indent(out, depth);
    write_inline_start(out, element);
    let has_elements = element.children.iter().any(|n| matches!(n, Node::Element(_)));
    let has_text = element.children.iter().any(|n| matches!(n, Node::Text { .. }));
    if element.children.is_empty() {
        out.push_str("/>\n");
    } else if has_elements && !has_text {
        out.push_str(">\n");
        for child in element.elements() {
            write_element(out, child, depth + 1);
        }
        push_indent(out, depth);
        write_end(out, element);
        out.push('\n');
    } else {
        out.push('>');
        write_inline_children(out, element);
        write_end(out, element);
        out.push('\n');
    }
}

fn write_inline(out: &mut String, element: &Element) {
    write_inline_start(out, element);
    if element.children.is_empty() {
        out.push_str("/>");
    } else {
        out.push('>');
        write_inline_children(out, element);
        write_end(out, element);
    }
}

fn write_inline_children(out: &mut String, element: &Element) {
    for child in &element.children {
        match child {
            Node::Text { text, .. } => out.push_str(&escape(text)),
            Node::Element(e) => write_inline(out, e),
        }
    }
}

fn write_inline_start(out: &mut String, element: &Element) {
    out.push('<');
    out.push_str(&element.name);
    for attr in &element.attrs {
        out.push(' ');
        out.push_str(&attr.name);
        out.push_str("='");
        out.push_str(&escape_attr(&attr.value));
        out.push('\'');
    }
}

fn write_end(out: &mut String, element: &Element) {
    out.push_str("</");
    out.push_str(&element.name);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::super::reader::{Source, parse_document};
    use super::*;
    use crate::xml::{ExtraAttribute, ExtraElement};

    #[test]
    fn escaping_matches_libvirt() {
        assert_eq!(escape(r#"a&b<c>d'e"f"#), "a&amp;b&lt;c&gt;d&apos;e&quot;f");
    }

    #[test]
    fn extras_are_written_inside_their_element_after_modelled_children() {
        let extras = Extras {
            attributes: vec![ExtraAttribute {
                element: "/a/b".into(),
                name: "x".into(),
                value: "1".into(),
            }],
            elements: vec![ExtraElement {
                parent: "/a".into(),
                path: "/a/z".into(),
                xml: "<z>\n  <y/>\n</z>".into(),
            }],
        };
        let mut w = Writer::new(&extras);
        w.open("/a", "a", Attrs::new().add("k", "v").opt("n", None::<&str>));
        w.leaf("/a/b", "b", Attrs::new());
        w.text("/a/c", "c", Attrs::new(), "t'");
        w.close();
        assert_eq!(
            w.finish(),
            "<a k='v'>\n  <b x='1'/>\n  <c>t&apos;</c>\n  <z>\n    <y/>\n  </z>\n</a>\n"
        );
    }

    #[test]
    fn never_empty_elements_keep_libvirts_two_line_form() {
        let extras = Extras::default();
        let mut w = Writer::new(&extras);
        w.open("/p", "p", Attrs::new());
        w.open_never_empty("/p/source", "source", Attrs::new());
        w.close();
        w.close();
        assert_eq!(w.finish(), "<p>\n  <source>\n  </source>\n</p>\n");
    }

    #[test]
    fn mixed_content_is_kept_inline() {
        let root = parse_document(&Source::new("<a>x <b>y</b> z</a>")).unwrap();
        assert_eq!(serialize_element(&root), "<a>x <b>y</b> z</a>");
        let root = parse_document(&Source::new("<a>\n <b/>\n</a>")).unwrap();
        assert_eq!(serialize_element(&root), "<a>\n  <b/>\n</a>");
    }
}
