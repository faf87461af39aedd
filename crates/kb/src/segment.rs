//! Markings to labels: a document's banner, each paragraph's portion mark, and any marking
//! quoted inside a paragraph; then passages for the index that never straddle two labels.

use enclave_label::{Label, Scheme};
use enclave_policy::{Inspector, label_request};

/// One paragraph of the source, its label, and where its text lies in the source (byte offsets,
/// after any portion mark).
#[derive(Debug, Clone, PartialEq)]
pub struct Paragraph {
    pub text: String,
    pub label: Label,
    pub start: usize,
    pub end: usize,
}

/// A document as labelled paragraphs.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmented {
    /// The document's label: the join of its banner, the given label and every paragraph's.
    pub label: Label,
    pub paragraphs: Vec<Paragraph>,
    /// Whether the document carried any marking of its own.
    pub marked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error(
        "the document carries no classification marking and no label was given: give one at upload"
    )]
    Unlabelled,
    /// A paragraph carries a marking with controls the scheme does not know: the document is
    /// refused rather than stored with them ignored.
    #[error(
        "paragraph {paragraph} carries the marking `{marking}` with `{controls}`, which the scheme does not know; a marking Enclave cannot read is refused rather than ignored"
    )]
    Unrecognized {
        paragraph: usize,
        marking: String,
        controls: String,
    },
}

/// Blank-line separated paragraphs with their byte spans, trimmed.
fn paragraphs(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        if content.trim().is_empty() {
            if let Some(s) = start.take() {
                out.push((s, end));
            }
        } else {
            let lead = content.len() - content.trim_start().len();
            if start.is_none() {
                start = Some(at + lead);
            }
            end = at + content.trim_end().len();
        }
        at += line.len();
    }
    if let Some(s) = start {
        out.push((s, end));
    }
    out
}

/// A whole line that is a banner marking (not a portion mark in parentheses).
fn banner(scheme: &Scheme, para: &str) -> Option<Label> {
    if para.contains('\n') || para.starts_with('(') {
        return None;
    }
    scheme.parse(para).ok()
}

/// A leading portion mark: its label and the length of the mark with the space after it.
fn portion(scheme: &Scheme, para: &str) -> Option<(Label, usize)> {
    let rest = para.strip_prefix('(')?;
    let close = rest.find(')')?;
    if close > 80 {
        return None;
    }
    let label = scheme.parse(&para[..close + 2]).ok()?;
    let after = &para[close + 2..];
    let skip = close + 2 + (after.len() - after.trim_start().len());
    Some((label, skip))
}

/// Reads a document's markings. `given` is the label from the upload, used for paragraphs that
/// carry none of their own and no banner covers.
pub fn segment(
    scheme: &Scheme,
    inspector: &Inspector,
    text: &str,
    given: Option<&Label>,
) -> Result<Segmented, SegmentError> {
    let spans = paragraphs(text);
    let mut banner_label: Option<Label> = None;
    let mut marked: Vec<(Option<Label>, usize, usize)> = Vec::new();
    for (n, &(s, e)) in spans.iter().enumerate() {
        let para = &text[s..e];
        // Every marking in the paragraph, however spelled, read fail-closed first.
        if let Some(f) = inspector
            .inspect(para)
            .into_iter()
            .find(|f| !f.unrecognized.is_empty())
        {
            return Err(SegmentError::Unrecognized {
                paragraph: n + 1,
                marking: para
                    .get(f.start..f.end)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                controls: f.unrecognized.join("`, `"),
            });
        }
        if let Some(b) = banner(scheme, para) {
            banner_label = Some(banner_label.map_or(b.clone(), |l| l.join(&b)));
            continue;
        }
        match portion(scheme, para) {
            Some((label, skip)) => marked.push((Some(label), s + skip, e)),
            None => marked.push((None, s, e)),
        }
    }
    let portions: Option<Label> = marked
        .iter()
        .filter_map(|(l, _, _)| l.clone())
        .reduce(|a, b| a.join(&b));
    let any_marking = banner_label.is_some() || portions.is_some();
    // An unmarked paragraph is covered by the banner; else by the label given; else, in a
    // portion-marked document, by the highest portion (never lower than what is known).
    let fallback = banner_label
        .clone()
        .or_else(|| given.cloned())
        .or_else(|| portions.clone());
    let mut out = Vec::with_capacity(marked.len());
    for (label, s, e) in marked {
        let base = match label.or_else(|| fallback.clone()) {
            Some(l) => l,
            None => return Err(SegmentError::Unlabelled),
        };
        let body = &text[s..e];
        // A marking quoted inside the paragraph raises its label, as it does a request's.
        let raised = label_request(inspector, &base, [body]).label;
        out.push(Paragraph {
            text: body.to_string(),
            label: raised,
            start: s,
            end: e,
        });
    }
    let mut label = match (&banner_label, given) {
        (Some(b), Some(g)) => b.join(g),
        (Some(b), None) => b.clone(),
        (None, Some(g)) => g.clone(),
        (None, None) => portions.ok_or(SegmentError::Unlabelled)?,
    };
    for p in &out {
        label = label.join(&p.label);
    }
    Ok(Segmented {
        label,
        paragraphs: out,
        marked: any_marking,
    })
}

/// A passage for the index: text from consecutive paragraphs of one label.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub text: String,
    pub label: Label,
    /// Byte span in the source covering the passage.
    pub start: usize,
    pub end: usize,
    /// Index of the first paragraph it comes from.
    pub paragraph: usize,
}

/// Pieces of one paragraph of at most `max_words` words, cut after a sentence where one ends in
/// time, else between words; with their byte spans relative to the paragraph.
fn pieces(text: &str, max_words: usize) -> Vec<(usize, usize)> {
    let words: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (c.is_whitespace(), start) {
                (true, Some(s)) => {
                    v.push((s, i));
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            v.push((s, text.len()));
        }
        v
    };
    if words.len() <= max_words {
        return vec![(0, text.len())];
    }
    let mut out = Vec::new();
    let mut first = 0;
    while first < words.len() {
        let limit = (first + max_words).min(words.len());
        let mut cut = limit;
        if limit < words.len() {
            // The last sentence end in the second half of the window, if any.
            for w in (first + max_words / 2..limit).rev() {
                let word = &text[words[w].0..words[w].1];
                if word.ends_with(['.', '!', '?', ';']) {
                    cut = w + 1;
                    break;
                }
            }
        }
        out.push((words[first].0, words[cut - 1].1));
        first = cut;
    }
    out
}

/// Packs paragraphs into passages of at most `max_words` words; a passage never holds text of two
/// different labels, and a long paragraph is cut into several.
pub fn chunk(paragraphs: &[Paragraph], max_words: usize) -> Vec<Chunk> {
    let max_words = max_words.max(1);
    let mut out: Vec<Chunk> = Vec::new();
    let mut open: Option<(Chunk, usize)> = None; // (chunk, words in it)
    for (i, p) in paragraphs.iter().enumerate() {
        for (s, e) in pieces(&p.text, max_words) {
            let piece = &p.text[s..e];
            let words = piece.split_whitespace().count();
            let fits = open
                .as_ref()
                .is_some_and(|(c, n)| c.label == p.label && n + words <= max_words);
            if fits {
                if let Some((c, n)) = open.as_mut() {
                    c.text.push_str("\n\n");
                    c.text.push_str(piece);
                    c.end = p.start + e;
                    *n += words;
                }
            } else {
                if let Some((c, _)) = open.take() {
                    out.push(c);
                }
                open = Some((
                    Chunk {
                        text: piece.to_string(),
                        label: p.label.clone(),
                        start: p.start + s,
                        end: p.start + e,
                        paragraph: i,
                    },
                    words,
                ));
            }
        }
    }
    if let Some((c, _)) = open {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn us() -> (Scheme, Inspector) {
        let s = Scheme::builtin("US").unwrap();
        let i = Inspector::new(s.clone()).unwrap();
        (s, i)
    }

    #[test]
    fn a_banner_labels_the_document_and_portions_label_paragraphs() {
        let (s, i) = us();
        let doc = "SECRET//NOFORN\n\n(U) The weather was fair.\n\n(S//NF) The source is in place.\n\nNo mark here.\n\nSECRET//NOFORN\n";
        let seg = segment(&s, &i, doc, None).unwrap();
        assert!(seg.marked);
        assert_eq!(s.banner(&seg.label), "SECRET//NOFORN");
        let got: Vec<(String, &str)> = seg
            .paragraphs
            .iter()
            .map(|p| (s.banner(&p.label), p.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("UNCLASSIFIED".to_string(), "The weather was fair."),
                ("SECRET//NOFORN".to_string(), "The source is in place."),
                ("SECRET//NOFORN".to_string(), "No mark here."),
            ]
        );
        for p in &seg.paragraphs {
            assert_eq!(&doc[p.start..p.end], p.text);
        }
    }

    #[test]
    fn an_unmarked_document_needs_a_given_label() {
        let (s, i) = us();
        let doc = "Plain text.\n\nMore plain text.";
        assert_eq!(segment(&s, &i, doc, None), Err(SegmentError::Unlabelled));
        let cui = s.parse("CUI").unwrap();
        let seg = segment(&s, &i, doc, Some(&cui)).unwrap();
        assert!(!seg.marked);
        assert!(seg.paragraphs.iter().all(|p| p.label == cui));
    }

    #[test]
    fn a_quoted_marking_raises_its_paragraph_and_the_document() {
        let (s, i) = us();
        let doc = "(U) Public summary.\n\n(U) The annex reads (TS) launch codes follow.";
        let seg = segment(&s, &i, doc, None).unwrap();
        assert_eq!(s.banner(&seg.paragraphs[0].label), "UNCLASSIFIED");
        assert!(s.banner(&seg.paragraphs[1].label).starts_with("TOP SECRET"));
        assert!(s.banner(&seg.label).starts_with("TOP SECRET"));
    }

    #[test]
    fn german_portion_marks_are_read() {
        let s = Scheme::builtin("DE").unwrap();
        let i = Inspector::new(s.clone()).unwrap();
        let doc = "(OFFEN) Allgemeines.\n\n(VS-NfD) Nur für den Dienstgebrauch.";
        let seg = segment(&s, &i, doc, None).unwrap();
        assert_ne!(seg.paragraphs[0].label, seg.paragraphs[1].label);
        assert_eq!(seg.label, seg.paragraphs[1].label);
    }

    #[test]
    fn long_paragraphs_are_cut_at_sentences() {
        let (s, i) = us();
        let sentence = "one two three four five six seven.";
        let doc = format!("(U) {}", [sentence; 6].join(" "));
        let seg = segment(&s, &i, &doc, None).unwrap();
        let chunks = chunk(&seg.paragraphs, 16);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|c| c.text.ends_with('.')));
        for c in &chunks {
            assert_eq!(&doc[c.start..c.end], c.text);
        }
    }

    proptest::proptest! {
        /// Whatever the mix of labels and lengths, a chunk holds text of exactly one label (its
        /// own), no word is lost or repeated, and chunks respect the size.
        #[test]
        fn chunks_never_straddle_labels(paras in proptest::collection::vec((0usize..3, 1usize..40), 1..20), max in 4usize..30) {
            let (s, i) = us();
            let marks = ["(U)", "(C)", "(S//NF)"];
            let mut doc = String::new();
            for (n, (m, words)) in paras.iter().enumerate() {
                doc.push_str(marks[*m]);
                for w in 0..*words {
                    doc.push_str(&format!(" p{n}w{w}"));
                }
                doc.push_str(".\n\n");
            }
            let seg = segment(&s, &i, &doc, None).unwrap();
            let chunks = chunk(&seg.paragraphs, max);
            let mut seen = Vec::new();
            for c in &chunks {
                proptest::prop_assert!(c.text.split_whitespace().count() <= max);
                for w in c.text.split_whitespace() {
                    let n: usize = w.trim_start_matches('p').split('w').next().unwrap().parse().unwrap();
                    proptest::prop_assert_eq!(&seg.paragraphs[n].label, &c.label);
                    seen.push(w.to_string());
                }
            }
            let all: Vec<String> = seg.paragraphs.iter().flat_map(|p| p.text.split_whitespace().map(str::to_string)).collect();
            proptest::prop_assert_eq!(seen, all);
        }
    }
}
