//! A small element tree with source positions, built from quick-xml events.
//!
//! The model builders need random access (libvirt's XML allows children in any order) and
//! every error must name a line and column, so the document is read once into this tree
//! and then walked with [`El`], which also records whatever the walk did not consume.

use std::cell::RefCell;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use super::writer::serialize_element;
use super::{ExtraAttribute, ExtraElement, Extras};
use crate::Error;

/// One element: its name as written (prefix included), attributes and children.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
    /// Byte offset of the element's `<` in the source.
    pub offset: usize,
}

/// One attribute with its unescaped value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Attr {
    pub name: String,
    pub value: String,
    /// Byte offset of the attribute's name in the source.
    pub offset: usize,
}

/// A child of an element. Comments and processing instructions are dropped, as libvirt does.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Element(Element),
    /// Text with entities resolved; `offset` is where it starts.
    Text {
        text: String,
        offset: usize,
    },
}

impl Element {
    /// The element children, in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text { .. } => None,
        })
    }

    /// The concatenated text children.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text { text, .. } => Some(text.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// Where the text content starts (the element itself when there is none).
    pub fn text_offset(&self) -> usize {
        self.children
            .iter()
            .find_map(|n| match n {
                Node::Text { offset, .. } => Some(*offset),
                Node::Element(_) => None,
            })
            .unwrap_or(self.offset)
    }
}

/// The source text, kept to turn byte offsets into line and column numbers.
pub(crate) struct Source<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
}

impl<'t> Source<'t> {
    pub fn new(text: &'t str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source { text, line_starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    /// The error every XML problem becomes: where, what was being read, what is wrong.
    pub fn error(&self, offset: usize, context: &str, message: &str) -> Error {
        let (line, column) = self.line_col(offset);
        if context.is_empty() {
            Error::invalid(format!(
                "XML error at line {line}, column {column}: {message}"
            ))
        } else {
            Error::invalid(format!(
                "XML error at line {line}, column {column}: {context}: {message}"
            ))
        }
    }
}

/// How deep elements may nest (libxml2's default limit): the tree is walked recursively, and
/// a hostile document must not exhaust the stack of the daemon.
const MAX_DEPTH: usize = 256;

/// Reads a whole document into its root element.
pub(crate) fn parse_document(src: &Source<'_>) -> Result<Element, Error> {
    let mut reader = Reader::from_str(src.text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.allow_dangling_amp = false;

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let offset = pos(reader.buffer_position());
        let event = reader.read_event().map_err(|e| {
            src.error(
                pos(reader.error_position()),
                "",
                &format!("malformed XML: {e}"),
            )
        })?;
        match event {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(src.error(
                        offset,
                        "",
                        &format!("malformed XML: elements nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                stack.push(open_element(src, &start, offset)?);
            }
            Event::Empty(start) => {
                let element = open_element(src, &start, offset)?;
                attach(src, &mut stack, &mut root, element)?;
            }
            Event::End(_) => {
                let element = stack.pop().ok_or_else(|| {
                    src.error(
                        offset,
                        "",
                        "malformed XML: closing tag without an opening tag",
                    )
                })?;
                attach(src, &mut stack, &mut root, finish_element(element))?;
            }
            Event::Text(text) => {
                let text = text.xml10_content().into_owned();
                push_text(src, &mut stack, &text, offset)?;
            }
            Event::CData(data) => {
                let text = data.xml10_content().into_owned();
                push_text(src, &mut stack, &text, offset)?;
            }
            Event::GeneralRef(reference) => {
                let text = resolve_reference(&reference).ok_or_else(|| {
                    src.error(
                        offset,
                        "",
                        &format!("malformed XML: unknown entity '&{};'", &*reference),
                    )
                })?;
                push_text(src, &mut stack, &text, offset)?;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(src.error(
            src.text.len(),
            "",
            &format!(
                "malformed XML: unexpected end of document, <{}> opened at {} is not closed",
                open.name,
                describe_position(src, open.offset)
            ),
        ));
    }
    root.ok_or_else(|| {
        src.error(
            src.text.len(),
            "",
            "malformed XML: the document has no root element",
        )
    })
}

/// Reads a fragment written by this module back into a tree (used to re-indent extras).
pub(crate) fn parse_fragment(xml: &str) -> Option<Element> {
    parse_document(&Source::new(xml)).ok()
}

fn pos(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

fn describe_position(src: &Source<'_>, offset: usize) -> String {
    let (line, column) = src.line_col(offset);
    format!("line {line}, column {column}")
}

fn open_element(src: &Source<'_>, start: &BytesStart<'_>, offset: usize) -> Result<Element, Error> {
    let name = start.name().as_ref().to_string();
    let raw = start.attributes_raw();
    // `attributes_raw` starts right after the name; the tag itself starts one byte after `<`.
    let raw_offset = offset + 1 + name.len();
    let mut attrs = Vec::new();
    let mut cursor = 0;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| {
            let at = offset + 1 + attr_error_offset(&e);
            src.error(at, &format!("<{name}>"), &format!("malformed XML: {e}"))
        })?;
        let key = attr.key.as_ref().to_string();
        let found = find_attribute(raw, cursor, &key);
        cursor = found.map_or(cursor, |at| at + key.len());
        let at = raw_offset + found.unwrap_or(0);
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| src.error(at, &format!("<{name}>"), &format!("malformed XML: {e}")))?
            .into_owned();
        attrs.push(Attr {
            name: key,
            value,
            offset: at,
        });
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        offset,
    })
}

fn attr_error_offset(error: &quick_xml::events::attributes::AttrError) -> usize {
    use quick_xml::events::attributes::AttrError;
    match *error {
        AttrError::ExpectedEq(at)
        | AttrError::ExpectedValue(at)
        | AttrError::UnquotedValue(at)
        | AttrError::ExpectedQuote(at, _) => at,
        AttrError::Duplicated(at, _) => at,
    }
}

/// Finds where attribute `key` is written in the raw attribute text, after `from`.
fn find_attribute(raw: &str, from: usize, key: &str) -> Option<usize> {
    let bytes = raw.as_bytes();
    let mut search = from;
    while let Some(found) = raw.get(search..).and_then(|rest| rest.find(key)) {
        let at = search + found;
        let before_ok = at == 0 || bytes[at - 1].is_ascii_whitespace();
        let after = raw[at + key.len()..].trim_start();
        if before_ok && after.starts_with('=') {
            return Some(at);
        }
        search = at + key.len();
    }
    None
}

/// Drops whitespace-only text between child elements: indentation is not content.
fn finish_element(mut element: Element) -> Element {
    if element
        .children
        .iter()
        .any(|n| matches!(n, Node::Element(_)))
    {
        element.children.retain(|n| match n {
            Node::Text { text, .. } => !text.trim().is_empty(),
            Node::Element(_) => true,
        });
    }
    element
}

fn attach(
    src: &Source<'_>,
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), Error> {
    if let Some(parent) = stack.last_mut() {
        parent.children.push(Node::Element(element));
        return Ok(());
    }
    if root.is_some() {
        return Err(src.error(
            element.offset,
            &format!("<{}>", element.name),
            "malformed XML: a second root element (a document has exactly one)",
        ));
    }
    *root = Some(finish_element(element));
    Ok(())
}

fn push_text(
    src: &Source<'_>,
    stack: &mut [Element],
    text: &str,
    offset: usize,
) -> Result<(), Error> {
    let Some(parent) = stack.last_mut() else {
        if text.trim().is_empty() {
            return Ok(());
        }
        return Err(src.error(offset, "", "malformed XML: text outside the root element"));
    };
    if let Some(Node::Text { text: previous, .. }) = parent.children.last_mut() {
        previous.push_str(text);
    } else {
        parent.children.push(Node::Text {
            text: text.to_string(),
            offset,
        });
    }
    Ok(())
}

fn resolve_reference(reference: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    if let Ok(Some(ch)) = reference.resolve_char_ref() {
        return Some(ch.to_string());
    }
    quick_xml::escape::resolve_predefined_entity(reference).map(str::to_string)
}

// ------------------------------------------------------------------ walking the tree

/// Where unconsumed attributes and elements go while a document is walked.
#[derive(Default)]
pub(crate) struct Sink {
    pub extras: Extras,
    /// The first unknown item in document order: (offset, context, path), for strict mode.
    pub first_unknown: Option<(usize, String, String)>,
}

impl Sink {
    fn note(&mut self, offset: usize, context: String, path: String) {
        if self
            .first_unknown
            .as_ref()
            .is_none_or(|(first, _, _)| offset < *first)
        {
            self.first_unknown = Some((offset, context, path));
        }
    }
}

/// A cursor over one element that remembers which attributes and children the model took.
/// When it is dropped, everything left over is recorded as an extra under the element's path,
/// so no walk can forget to preserve what it did not understand.
pub(crate) struct El<'a> {
    pub el: &'a Element,
    pub path: String,
    /// The path without a list index, from which [`El::set_index`] builds the indexed one.
    base: String,
    src: &'a Source<'a>,
    sink: &'a RefCell<Sink>,
    used_attrs: Vec<bool>,
    used_children: Vec<bool>,
    kept_whole: bool,
}

/// An attribute the model took, with what is needed to report a bad value.
pub(crate) struct AttrRef<'a> {
    pub value: &'a str,
    name: &'a str,
    offset: usize,
}

impl<'a> El<'a> {
    pub fn root(el: &'a Element, src: &'a Source<'a>, sink: &'a RefCell<Sink>) -> Self {
        Self::new(el, format!("/{}", el.name), src, sink)
    }

    fn new(el: &'a Element, path: String, src: &'a Source<'a>, sink: &'a RefCell<Sink>) -> Self {
        El {
            el,
            base: path.clone(),
            path,
            src,
            sink,
            used_attrs: vec![false; el.attrs.len()],
            used_children: vec![false; el.children.len()],
            kept_whole: false,
        }
    }

    /// The element name as written.
    pub fn name(&self) -> &'a str {
        &self.el.name
    }

    /// Gives a list item its position in the model, which is how the writer finds its extras.
    pub fn set_index(&mut self, index: usize) {
        self.path = format!("{}[{}]", self.base, index + 1);
    }

    /// Looks at an attribute without taking it (to decide whether the model can hold the
    /// element at all).
    pub fn peek_attr(&self, name: &str) -> Option<&'a str> {
        self.el
            .attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Takes attribute `name`.
    pub fn attr(&mut self, name: &str) -> Option<AttrRef<'a>> {
        let index = self.el.attrs.iter().position(|a| a.name == name)?;
        self.used_attrs[index] = true;
        let attr = &self.el.attrs[index];
        Some(AttrRef {
            value: &attr.value,
            name: &attr.name,
            offset: attr.offset,
        })
    }

    /// Takes attribute `name` as an owned string.
    pub fn attr_string(&mut self, name: &str) -> Option<String> {
        self.attr(name).map(|a| a.value.to_string())
    }

    /// Takes attribute `name`, which must be present.
    pub fn required_attr(&mut self, name: &str) -> Result<AttrRef<'a>, Error> {
        self.attr(name)
            .ok_or_else(|| self.error(&format!("missing required attribute '{name}'")))
    }

    /// Takes attribute `name` and converts it, reporting a bad value at the attribute.
    pub fn attr_with<T>(
        &mut self,
        name: &str,
        convert: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        match self.attr(name) {
            None => Ok(None),
            Some(attr) => convert(attr.value)
                .map(Some)
                .map_err(|m| self.attr_error(&attr, &m)),
        }
    }

    /// Takes the first unused child element called `name`.
    pub fn child(&mut self, name: &str) -> Option<El<'a>> {
        let index = self.el.children.iter().enumerate().position(|(i, n)| {
            !self.used_children[i] && matches!(n, Node::Element(e) if e.name == name)
        })?;
        self.used_children[index] = true;
        match &self.el.children[index] {
            Node::Element(e) => Some(El::new(
                e,
                format!("{}/{name}", self.path),
                self.src,
                self.sink,
            )),
            Node::Text { .. } => None,
        }
    }

    /// Takes every unused child element called `name`, in document order, each indexed by its
    /// position (`name[1]`, `name[2]`...) because the model holds them as a list.
    pub fn children(&mut self, name: &str) -> Vec<El<'a>> {
        let mut list: Vec<El<'a>> = std::iter::from_fn(|| self.child(name)).collect();
        for (i, el) in list.iter_mut().enumerate() {
            el.set_index(i);
        }
        list
    }

    /// Takes every unused child element, in document order.
    pub fn all_children(&mut self) -> Vec<El<'a>> {
        let mut out = Vec::new();
        for (i, node) in self.el.children.iter().enumerate() {
            if let Node::Element(e) = node
                && !self.used_children[i]
            {
                self.used_children[i] = true;
                out.push(El::new(
                    e,
                    format!("{}/{}", self.path, e.name),
                    self.src,
                    self.sink,
                ));
            }
        }
        out
    }

    /// The element's text content.
    pub fn text(&self) -> String {
        self.el.text()
    }

    /// Converts the text content, reporting a bad value where the text starts.
    pub fn text_with<T>(
        &self,
        convert: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, Error> {
        let text = self.text();
        convert(&text).map_err(|m| self.text_error(&m))
    }

    /// Takes child `name` and returns its text; the child's own extras are kept.
    pub fn child_text(&mut self, name: &str) -> Option<String> {
        self.child(name).map(|c| c.text())
    }

    /// Keeps the whole element as an extra of its parent: the model cannot represent it.
    /// `path` is what [`Extras::unknown_items`] reports, e.g. `/domain/devices/disk[@type='nvme']`.
    pub fn keep_whole(mut self, parent: &str, path: String) {
        self.kept_whole = true;
        let mut sink = self.sink.borrow_mut();
        sink.note(self.el.offset, format!("<{}>", self.el.name), path.clone());
        sink.extras.elements.push(ExtraElement {
            parent: parent.to_string(),
            path,
            xml: serialize_element(self.el),
        });
    }

    /// An error about the element as a whole.
    pub fn error(&self, message: &str) -> Error {
        self.src
            .error(self.el.offset, &format!("<{}>", self.el.name), message)
    }

    /// An error about one attribute's value.
    pub fn attr_error(&self, attr: &AttrRef<'_>, message: &str) -> Error {
        let context = format!("<{} {}='{}'>", self.el.name, attr.name, attr.value);
        self.src.error(attr.offset, &context, message)
    }

    /// An error about the text content.
    pub fn text_error(&self, message: &str) -> Error {
        self.src.error(
            self.el.text_offset(),
            &format!("<{}>", self.el.name),
            message,
        )
    }

    /// An error about a missing child.
    pub fn missing(&self, child: &str) -> Error {
        self.error(&format!("missing required element <{child}>"))
    }
}

impl Drop for El<'_> {
    fn drop(&mut self) {
        if self.kept_whole {
            return;
        }
        let mut sink = self.sink.borrow_mut();
        for (attr, used) in self.el.attrs.iter().zip(&self.used_attrs) {
            if !used {
                let context = format!("<{} {}='{}'>", self.el.name, attr.name, attr.value);
                sink.note(
                    attr.offset,
                    context,
                    format!("{}/@{}", self.path, attr.name),
                );
                sink.extras.attributes.push(ExtraAttribute {
                    element: self.path.clone(),
                    name: attr.name.clone(),
                    value: attr.value.clone(),
                });
            }
        }
        for (node, used) in self.el.children.iter().zip(&self.used_children) {
            if let Node::Element(child) = node
                && !used
            {
                let path = format!("{}/{}", self.path, child.name);
                sink.note(child.offset, format!("<{}>", child.name), path.clone());
                sink.extras.elements.push(ExtraElement {
                    parent: self.path.clone(),
                    path,
                    xml: serialize_element(child),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<Element, Error> {
        parse_document(&Source::new(xml))
    }

    #[test]
    fn line_and_column_count_characters() {
        let src = Source::new("ab\ncdé\nf");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(3), (2, 1));
        assert_eq!(src.line_col(7), (2, 4)); // after the two-byte é
        assert_eq!(src.line_col(8), (3, 1));
    }

    #[test]
    fn tree_keeps_text_and_attributes_unescaped() {
        let root = parse("<a x='1 &amp; 2'>\n  <b>t&lt;&#65;<![CDATA[<c>]]></b>\n</a>").unwrap();
        assert_eq!(root.attrs[0].value, "1 & 2");
        assert_eq!(root.attrs[0].offset, 3);
        let b = root.elements().next().unwrap();
        assert_eq!(b.text(), "t<A<c>");
        assert_eq!(root.children.len(), 1, "indentation is dropped");
    }

    #[test]
    fn unclosed_element_is_reported_with_where_it_opened() {
        let err = parse("<a>\n  <b>\n</a>").unwrap_err();
        assert_eq!(
            err.message,
            "XML error at line 3, column 1: malformed XML: ill-formed document: expected `</b>`, but `</a>` was found"
        );
        let err = parse("<a>\n  <b></b>\n").unwrap_err();
        assert_eq!(
            err.message,
            "XML error at line 3, column 1: malformed XML: unexpected end of document, <a> opened at line 1, column 1 is not closed"
        );
    }

    #[test]
    fn bad_attribute_quoting_is_reported_at_the_attribute() {
        let err = parse("<a>\n  <b x=1/>\n</a>").unwrap_err();
        assert!(
            err.message
                .starts_with("XML error at line 2, column 8: <b>: malformed XML: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn second_root_and_stray_text_are_refused() {
        let err = parse("<a/>\n<b/>").unwrap_err();
        assert_eq!(
            err.message,
            "XML error at line 2, column 1: <b>: malformed XML: a second root element (a document has exactly one)"
        );
        let err = parse("<a/>x").unwrap_err();
        assert_eq!(
            err.message,
            "XML error at line 1, column 5: malformed XML: text outside the root element"
        );
        let err = parse("").unwrap_err();
        assert_eq!(
            err.message,
            "XML error at line 1, column 1: malformed XML: the document has no root element"
        );
    }

    #[test]
    fn nesting_is_limited() {
        let deep = "<a>".repeat(300) + &"</a>".repeat(300);
        let err = parse(&deep).unwrap_err();
        assert_eq!(
            err.message,
            "XML error at line 1, column 769: malformed XML: elements nested deeper than 256 levels"
        );
        let fine = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn unknown_entity_is_refused() {
        let err = parse("<a>&nbsp;</a>").unwrap_err();
        assert!(err.message.contains("line 1, column 4"), "{}", err.message);
    }
}
