//! Output in `virsh dumpxml`'s layout: two-space indentation, single-quoted attributes,
//! libvirt's escaping, and the extras of every element put back where they were found.

use super::order::{attribute_order, child_order, rank};
use super::reader::{Element, Node, parse_fragment};
use super::{ExtraElement, Extras};

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
    escape(text)
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
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

struct Frame<'x> {
    name: String,
    /// Whether the start tag has been closed with `>` because content followed.
    open: bool,
    /// libvirt writes some empty elements as `<x>` `</x>` on two lines (`<source>` of a pool,
    /// `<ip>` of a network, `<devices>`); this keeps that quirk.
    never_empty: bool,
    /// libvirt's order of this element's children, if known.
    order: Option<&'static [&'static str]>,
    /// The extra children of this element, in the order they were read.
    extras: Vec<&'x ExtraElement>,
    /// How many of `extras` have been written.
    written: usize,
}

/// Writes a document element by element; each element is addressed by the same path the
/// parser used, so its extras (unknown attributes and children) are re-emitted inside it:
/// where libvirt puts them when it has a place for them, else after the modelled children.
/// Extras are never reordered among themselves, so a second round trip changes nothing.
pub(crate) struct Writer<'x> {
    out: String,
    extras: &'x Extras,
    stack: Vec<Frame<'x>>,
}

impl<'x> Writer<'x> {
    pub fn new(extras: &'x Extras) -> Self {
        Writer {
            out: String::new(),
            extras,
            stack: Vec::new(),
        }
    }

    /// Whether the element at `path` has extras, so that an element with nothing modelled
    /// is still written when it carries something the model does not know.
    pub fn has_extras(&self, path: &str) -> bool {
        self.extras.attributes.iter().any(|a| a.element == path)
            || self.extras.elements.iter().any(|e| e.parent == path)
    }

    /// Whether the element at `path` carries the extra attribute `name`.
    pub fn has_extra_attr(&self, path: &str, name: &str) -> bool {
        self.extras
            .attributes
            .iter()
            .any(|a| a.element == path && a.name == name)
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
        self.before_child(name);
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.write_attrs(path, attrs);
        let extras = self
            .extras
            .elements
            .iter()
            .filter(|e| e.parent == path)
            .collect();
        self.stack.push(Frame {
            name: name.to_string(),
            open: false,
            never_empty,
            order: child_order(path),
            extras,
            written: 0,
        });
        if never_empty {
            self.enter_child();
        }
    }

    /// Ends the innermost element, after writing its remaining extra children.
    pub fn close(&mut self) {
        self.write_extras_while(|_| true);
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
        let children: Vec<&str> = self
            .extras
            .elements
            .iter()
            .filter(|e| e.parent == path)
            .map(|e| e.xml.as_str())
            .collect();
        self.before_child(name);
        if !children.is_empty() {
            self.text_with_children(path, name, attrs, text, &children);
            return;
        }
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        self.write_attrs(path, attrs);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// A text element that also carries unknown children is mixed content: written inline so
    /// that neither the text nor the children change on the next read.
    fn text_with_children(
        &mut self,
        path: &str,
        name: &str,
        attrs: Attrs,
        text: &str,
        xml: &[&str],
    ) {
        let mut element = Element {
            name: name.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
            offset: 0,
        };
        for (name, value) in self.ordered_attrs(path, attrs) {
            element.attrs.push(super::reader::Attr {
                name,
                value,
                offset: 0,
            });
        }
        if !text.is_empty() {
            element.children.push(Node::Text {
                text: text.to_string(),
                offset: 0,
            });
        }
        for raw in xml {
            if let Some(child) = parse_fragment(raw) {
                element.children.push(Node::Element(child));
            }
        }
        let depth = self.stack.len();
        write_element(&mut self.out, &element, depth);
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// Before a modelled child: closes the parent's start tag and writes the parent's extras
    /// that libvirt puts before this child.
    fn before_child(&mut self, name: &str) {
        self.enter_child();
        let Some(order) = self.stack.last().and_then(|f| f.order) else {
            return;
        };
        let Some(limit) = rank(Some(order), name) else {
            return;
        };
        self.write_extras_while(|extra| {
            rank(Some(order), element_name(&extra.xml)).is_some_and(|r| r < limit)
        });
    }

    /// Writes the innermost element's pending extras, in order, while `take` agrees.
    fn write_extras_while(&mut self, take: impl Fn(&ExtraElement) -> bool) {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return;
            };
            let Some(extra) = frame.extras.get(frame.written).copied() else {
                return;
            };
            if !take(extra) {
                return;
            }
            frame.written += 1;
            self.enter_child();
            let depth = self.stack.len();
            match parse_fragment(&extra.xml) {
                Some(element) => write_element(&mut self.out, &element, depth),
                None => {
                    // Not written by us: keep it verbatim rather than lose it.
                    push_indent(&mut self.out, depth);
                    self.out.push_str(extra.xml.trim());
                    self.out.push('\n');
                }
            }
        }
    }

    /// The modelled attributes in their order, with the extras placed where libvirt puts them
    /// (else last), never reordered among themselves.
    fn ordered_attrs(&self, path: &str, attrs: Attrs) -> Vec<(String, String)> {
        let order = attribute_order(path);
        let mut extras = self
            .extras
            .attributes
            .iter()
            .filter(|a| a.element == path)
            .map(|a| (a.name.clone(), a.value.clone()))
            .peekable();
        let mut out = Vec::new();
        for (name, value) in attrs.0 {
            if let Some(limit) = rank(order, &name) {
                while let Some(extra) =
                    extras.next_if(|(n, _)| rank(order, n).is_some_and(|r| r < limit))
                {
                    out.push(extra);
                }
            }
            out.push((name, value));
        }
        out.extend(extras);
        out
    }

    fn write_attrs(&mut self, path: &str, attrs: Attrs) {
        for (name, value) in self.ordered_attrs(path, attrs) {
            self.out.push(' ');
            self.out.push_str(&name);
            self.out.push_str("='");
            self.out.push_str(&escape_attr(&value));
            self.out.push('\'');
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

/// The element name at the start of an extra's XML text.
fn element_name(xml: &str) -> &str {
    let rest = xml.trim_start().trim_start_matches('<');
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    &rest[..end]
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

/// How attribute values and text are quoted. libvirt writes its own elements with single
/// quotes, but hands the contents of `<metadata>` to libxml2, which uses double quotes and
/// escapes less.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Libvirt,
    Libxml,
}

impl Style {
    /// The style of an element's children.
    fn inside(self, element: &Element) -> Style {
        if element.name == "metadata" {
            Style::Libxml
        } else {
            self
        }
    }

    fn text(self, text: &str) -> String {
        match self {
            Style::Libvirt => escape(text),
            Style::Libxml => text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('\r', "&#13;"),
        }
    }

    fn attr(self, out: &mut String, name: &str, value: &str) {
        out.push(' ');
        out.push_str(name);
        match self {
            Style::Libvirt => {
                out.push_str("='");
                out.push_str(&escape_attr(value));
                out.push('\'');
            }
            Style::Libxml => {
                out.push_str("=\"");
                let escaped = value
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
                    .replace('\n', "&#10;")
                    .replace('\r', "&#13;")
                    .replace('\t', "&#9;");
                out.push_str(&escaped);
                out.push('"');
            }
        }
    }
}

fn write_element(out: &mut String, element: &Element, depth: usize) {
    write_styled(out, element, depth, Style::Libvirt);
}

fn write_styled(out: &mut String, element: &Element, depth: usize, style: Style) {
    push_indent(out, depth);
    write_start(out, element, style);
    let inner = style.inside(element);
    let has_elements = element
        .children
        .iter()
        .any(|n| matches!(n, Node::Element(_)));
    let has_text = element
        .children
        .iter()
        .any(|n| matches!(n, Node::Text { .. }));
    if element.children.is_empty() {
        out.push_str("/>\n");
    } else if has_elements && !has_text {
        out.push_str(">\n");
        for child in element.elements() {
            write_styled(out, child, depth + 1, inner);
        }
        push_indent(out, depth);
        write_end(out, element);
        out.push('\n');
    } else {
        out.push('>');
        write_inline_children(out, element, inner);
        write_end(out, element);
        out.push('\n');
    }
}

fn write_inline(out: &mut String, element: &Element, style: Style) {
    write_start(out, element, style);
    if element.children.is_empty() {
        out.push_str("/>");
    } else {
        out.push('>');
        write_inline_children(out, element, style.inside(element));
        write_end(out, element);
    }
}

fn write_inline_children(out: &mut String, element: &Element, style: Style) {
    for child in &element.children {
        match child {
            Node::Text { text, .. } => out.push_str(&style.text(text)),
            Node::Element(e) => write_inline(out, e, style),
        }
    }
}

fn write_start(out: &mut String, element: &Element, style: Style) {
    out.push('<');
    out.push_str(&element.name);
    for attr in &element.attrs {
        style.attr(out, &attr.name, &attr.value);
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
