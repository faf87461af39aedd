//! Files to text: plain text, Markdown, HTML, PDF (its text layer) and DOCX.
//!
//! Every format comes out as paragraphs separated by blank lines, so markings at the start of a
//! paragraph stay portion marks whatever the file was. A PDF also gives where each page starts,
//! so passages can cite their page.

use std::io::{Cursor, Read};
use std::panic::AssertUnwindSafe;

/// Largest file accepted. Larger ones are refused before any parsing.
pub const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;

/// Largest `word/document.xml` read out of a DOCX (a zip bomb stops here).
const MAX_DOCX_XML: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
}

impl Format {
    /// The format a file name (its extension) or media type names; `None` for what is not
    /// supported.
    pub fn detect(name: &str, media_type: Option<&str>) -> Option<Format> {
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let by_ext = match ext.as_str() {
            "txt" | "text" => Some(Format::Text),
            "md" | "markdown" => Some(Format::Markdown),
            "html" | "htm" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            "docx" => Some(Format::Docx),
            _ => None,
        };
        by_ext.or_else(|| {
            let media = media_type?.split(';').next()?.trim().to_ascii_lowercase();
            match media.as_str() {
                "text/plain" => Some(Format::Text),
                "text/markdown" => Some(Format::Markdown),
                "text/html" => Some(Format::Html),
                "application/pdf" => Some(Format::Pdf),
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
                    Some(Format::Docx)
                }
                _ => None,
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        [
            Format::Text,
            Format::Markdown,
            Format::Html,
            Format::Pdf,
            Format::Docx,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

/// A file's text and, for paged formats, the byte offset in `text` where each page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub text: String,
    pub pages: Vec<usize>,
}

impl Extracted {
    /// The 1-based page holding byte `offset`, if the format has pages.
    pub fn page_of(pages: &[usize], offset: usize) -> Option<u32> {
        if pages.is_empty() {
            return None;
        }
        let i = pages.partition_point(|&start| start <= offset);
        u32::try_from(i.max(1)).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the file is {size} bytes; the largest accepted is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("the file is not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
    #[error("cannot read the PDF: {0}")]
    Pdf(String),
    #[error("cannot read the DOCX: {0}")]
    Docx(String),
    #[error("cannot read the HTML: {0}")]
    Html(String),
    #[error("the file holds no text")]
    Empty,
}

/// The text of a file of `format`.
///
/// PDF parsing runs under `catch_unwind`: the parser panics on some malformed files, and one bad
/// file must fail alone, not take the ingestion worker down.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ExtractError::TooLarge {
            size: bytes.len(),
            max: MAX_FILE_BYTES,
        });
    }
    let out = match format {
        Format::Text => Extracted {
            text: utf8(bytes)?.replace("\r\n", "\n"),
            pages: Vec::new(),
        },
        Format::Markdown => Extracted {
            text: markdown(utf8(bytes)?),
            pages: Vec::new(),
        },
        Format::Html => Extracted {
            text: html2text::config::plain()
                .string_from_read(bytes, 10_000)
                .map_err(|e| ExtractError::Html(e.to_string()))?,
            pages: Vec::new(),
        },
        Format::Pdf => pdf(bytes)?,
        Format::Docx => Extracted {
            text: docx(bytes)?,
            pages: Vec::new(),
        },
    };
    if out.text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(out)
}

fn utf8(bytes: &[u8]) -> Result<&str, ExtractError> {
    let s = std::str::from_utf8(bytes).map_err(|e| ExtractError::NotUtf8(e.valid_up_to()))?;
    Ok(s.strip_prefix('\u{feff}').unwrap_or(s))
}

/// Markdown to its text, a blank line after every block, markup dropped.
fn markdown(src: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd};
    let mut out = String::with_capacity(src.len());
    let block_end = |out: &mut String| {
        let trimmed = out.trim_end_matches([' ', '\n']).len();
        out.truncate(trimmed);
        if !out.is_empty() {
            out.push_str("\n\n");
        }
    };
    for event in Parser::new(src) {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::SoftBreak => out.push(' '),
            Event::HardBreak => out.push('\n'),
            Event::Start(Tag::Item) => block_end(&mut out),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::TableRow
                | TagEnd::TableHead,
            ) => block_end(&mut out),
            Event::End(TagEnd::TableCell) => out.push(' '),
            _ => {}
        }
    }
    out.trim_end().to_string()
}

fn pdf(bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let pages = std::panic::catch_unwind(AssertUnwindSafe(|| {
        pdf_extract::extract_text_from_mem_by_pages(bytes)
    }))
    .map_err(|_| ExtractError::Pdf("the file is malformed".into()))?
    .map_err(|e| ExtractError::Pdf(e.to_string()))?;
    let mut text = String::new();
    let mut starts = Vec::with_capacity(pages.len());
    for page in pages {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        starts.push(text.len());
        text.push_str(page.trim_matches('\n'));
    }
    Ok(Extracted {
        text,
        pages: starts,
    })
}

/// DOCX: the text runs of `word/document.xml`, a blank line after each paragraph.
fn docx(bytes: &[u8]) -> Result<String, ExtractError> {
    use quick_xml::events::Event;
    let bad = |e: &dyn std::fmt::Display| ExtractError::Docx(e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(&e))?;
    let mut xml = Vec::new();
    archive
        .by_name("word/document.xml")
        .map_err(|_| ExtractError::Docx("no word/document.xml: not a Word document".into()))?
        .take(MAX_DOCX_XML)
        .read_to_end(&mut xml)
        .map_err(|e| bad(&e))?;
    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut out = String::new();
    let mut in_text = false;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| bad(&e))? {
            Event::Start(e) if e.local_name().as_ref() == b"t" => in_text = true,
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let trimmed = out.trim_end_matches([' ', '\n']).len();
                    out.truncate(trimmed);
                    if !out.is_empty() {
                        out.push_str("\n\n");
                    }
                }
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"tab" => out.push('\t'),
                b"br" | b"cr" => out.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => {
                let s = t.decode().map_err(|e| bad(&e))?;
                out.push_str(&quick_xml::escape::unescape(&s).map_err(|e| bad(&e))?);
            }
            Event::GeneralRef(r) if in_text => {
                let name = r.decode().map_err(|e| bad(&e))?;
                let entity = format!("&{name};");
                out.push_str(&quick_xml::escape::unescape(&entity).map_err(|e| bad(&e))?);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn formats_are_detected_by_extension_then_media_type() {
        assert_eq!(Format::detect("a/B.PDF", None), Some(Format::Pdf));
        assert_eq!(Format::detect("notes.md", None), Some(Format::Markdown));
        assert_eq!(
            Format::detect("upload", Some("text/html; charset=utf-8")),
            Some(Format::Html)
        );
        assert_eq!(
            Format::detect("x.exe", Some("application/x-msdownload")),
            None
        );
    }

    #[test]
    fn markdown_keeps_portion_marks_at_paragraph_starts() {
        let md = "# Report\n\n(S//NF) The *first* finding\nspans two lines.\n\n- (U) an item\n- (C) another";
        let text = extract(Format::Markdown, md.as_bytes()).unwrap().text;
        assert_eq!(
            text,
            "Report\n\n(S//NF) The first finding spans two lines.\n\n(U) an item\n\n(C) another"
        );
    }

    #[test]
    fn html_text_and_paragraphs() {
        let html = "<html><head><title>t</title><style>p{}</style></head><body><h1>Title</h1><p>(U) One &amp; two.</p><p>(S) Three.</p></body></html>";
        let text = extract(Format::Html, html.as_bytes()).unwrap().text;
        assert!(text.contains("(U) One & two."), "{text}");
        assert!(text.contains("\n\n(S) Three."), "{text}");
        assert!(!text.contains("p{}"), "{text}");
    }

    #[test]
    fn docx_paragraphs_and_entities() {
        let bytes = crate::testdata::docx(&["(U) Fish & chips", "(S//NF) <secret> plans"]);
        let text = extract(Format::Docx, &bytes).unwrap().text;
        assert_eq!(text, "(U) Fish & chips\n\n(S//NF) <secret> plans");
    }

    #[test]
    fn bad_files_fail_with_a_reason() {
        assert_eq!(
            extract(Format::Text, b"ok \xff\xfe"),
            Err(ExtractError::NotUtf8(3))
        );
        assert!(matches!(
            extract(Format::Pdf, b"%PDF-1.4 garbage"),
            Err(ExtractError::Pdf(_))
        ));
        assert!(matches!(
            extract(Format::Docx, b"PK not a zip"),
            Err(ExtractError::Docx(_))
        ));
        assert_eq!(extract(Format::Text, b"  \n "), Err(ExtractError::Empty));
    }

    #[test]
    fn pages_map_offsets() {
        let pages = [0, 10, 25];
        assert_eq!(Extracted::page_of(&pages, 0), Some(1));
        assert_eq!(Extracted::page_of(&pages, 9), Some(1));
        assert_eq!(Extracted::page_of(&pages, 10), Some(2));
        assert_eq!(Extracted::page_of(&pages, 99), Some(3));
        assert_eq!(Extracted::page_of(&[], 5), None);
    }

    #[test]
    fn pdf_text_layer_by_page() {
        let pdf = crate::testdata::pdf(&["(U) Page one text", "(S) Page two text"]);
        let out = extract(Format::Pdf, &pdf).unwrap();
        assert_eq!(out.pages.len(), 2);
        assert!(
            out.text[..out.pages[1]].contains("Page one text"),
            "{out:?}"
        );
        assert!(
            out.text[out.pages[1]..].contains("(S) Page two text"),
            "{out:?}"
        );
    }
}
