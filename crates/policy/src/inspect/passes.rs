//! The anchored passes beside the one-pass scan: markings at line starts, portion marks opening
//! in lower case, and banners in any case at a `//`. Each tries a small pattern only where its
//! marking can start, so the one automaton stays small.
//!
//! The sweep only notes where each may start; a place is read when the merge in
//! [`Inspector::inspect`](super::Inspector::inspect) reaches it. Most never are: a `(TS//SI)`
//! is taken whole by the scan's portion mark before the banner inside it comes up, and reading
//! it twice was a twentieth of inspection's time.

use regex_automata::{Anchored, Input};

use super::{Caches, Finding, Inspector, Pattern};

/// A place where a marking may start, found by the sweep and read only when reached.
#[derive(Debug, Clone, Copy)]
pub(super) struct Side {
    /// Where the marking would start.
    pub(super) start: usize,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    /// A marking standing at the start of a line.
    Heading,
    /// A portion mark opening in lower case at `start`.
    LowerPortion,
    /// A banner whose `//` is at `slash`, its level word starting at `start`.
    Banner { slash: usize },
}

impl Inspector {
    /// The places, in order, where a marking the one-pass scan does not find may start: at line
    /// starts, portion marks opening in lower case, and banners in any case. One sweep over the
    /// text finds every such place (`\n`, `(`, `//`); each is cheap to test and read later.
    pub(super) fn side_places(&self, text: &str) -> Vec<Side> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        self.heading_place(text, 0, &mut out);
        // `//` is taken as `str::match_indices` would: `////` is two, `///` one.
        let mut next_slashes = 0;
        for at in memchr::memchr3_iter(b'\n', b'(', b'/', bytes) {
            match bytes[at] {
                b'\n' => self.heading_place(text, at + 1, &mut out),
                b'(' => lower_portion_place(text, at, &mut out),
                _ if at >= next_slashes && bytes.get(at + 1) == Some(&b'/') => {
                    next_slashes = at + 2;
                    self.banner_place(text, at, &mut out);
                }
                _ => {}
            }
        }
        out.sort_by_key(|s| s.start);
        out
    }

    /// Reads the marking at a place the sweep noted, if there is one.
    pub(super) fn read_side(&self, text: &str, side: Side, caches: &mut Caches) -> Option<Finding> {
        match side.what {
            What::Heading => self.heading_at(text, side.start, &mut caches.heading),
            What::LowerPortion => {
                self.lower_portion_at(text, side.start, &mut caches.lower_portion)
            }
            What::Banner { slash } => self.banner_at(text, side.start, slash),
        }
    }

    /// A line start at `start` where what follows the line's white space can start a heading.
    fn heading_place(&self, text: &str, start: usize, out: &mut Vec<Side>) {
        let rest = text.as_bytes().get(start..).unwrap_or_default();
        let first = rest.iter().find(|b| !matches!(b, b' ' | b'\t'));
        if first.is_some_and(|b| self.heading_first[usize::from(*b)]) {
            out.push(Side {
                start,
                what: What::Heading,
            });
        }
    }

    /// A `//` (not a URL's) that a level word of the scheme ends just before, in any case.
    fn banner_place(&self, text: &str, slash: usize, out: &mut Vec<Side>) {
        let head = text[..slash].trim_end_matches([' ', '\t']);
        if head.ends_with([':', '/']) {
            return;
        }
        if let Some(start) = self.level_word_ending(head) {
            out.push(Side {
                start,
                what: What::Banner { slash },
            });
        }
    }

    /// A portion mark opening in lower case at the `(` at `open`.
    fn lower_portion_at(
        &self,
        text: &str,
        open: usize,
        cache: &mut regex_automata::meta::Cache,
    ) -> Option<Finding> {
        let input = Input::new(text).range(open..).anchored(Anchored::Yes);
        let m = self.lower_portion.search_with(cache, &input)?;
        self.confirm(Pattern::Portion, text, open, m.start(), m.end())
    }

    /// A banner in any case anywhere (`the file is top secret//si`) at the `//` at `slash`,
    /// read as a banner from the level word at `start`.
    fn banner_at(&self, text: &str, start: usize, slash: usize) -> Option<Finding> {
        let mut end = text[slash..].find('\n').map_or(text.len(), |n| slash + n);
        // Opened by a parenthesis, it ends at the one closing it: `(ts//si) The site` is
        // read as `ts//si`, not with the rest of the line run on.
        if text[..start].ends_with('(')
            && let Some(close) = text[slash..end].find(')')
        {
            end = slash + close;
        }
        let (label, len, unrecognized) = self.banner(&text[start..end], true)?;
        Some(Finding::marking(start, len, label, unrecognized))
    }

    /// Where the longest level word of the scheme that `head` ends with (in any case, after
    /// white space or an opening mark) starts.
    fn level_word_ending(&self, head: &str) -> Option<usize> {
        self.level_words
            .iter()
            .filter_map(|w| {
                let at = head.len().checked_sub(w.len())?;
                let tail = head.get(at..)?;
                // After white space or an opening mark, not inside a word, path or URL.
                let clean = head[..at]
                    .chars()
                    .next_back()
                    .is_none_or(|c| c.is_whitespace() || "\"'([<>*_".contains(c));
                let same = if tail.is_ascii() {
                    tail.eq_ignore_ascii_case(w)
                } else {
                    tail.to_uppercase() == *w
                };
                (clean && same).then_some(at)
            })
            .min()
    }

    /// A marking standing at the start of the line at `start`: tried with [`Pattern::Heading`],
    /// anchored.
    fn heading_at(
        &self,
        text: &str,
        start: usize,
        cache: &mut regex_automata::meta::Cache,
    ) -> Option<Finding> {
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        let m = self.heading.search_with(cache, &input)?;
        self.confirm(Pattern::Heading, text, start, m.start(), m.end())
    }
}

/// A `(` at `open` that a lower-case letter (or a letter outside ASCII) follows, past white
/// space: where a portion mark in lower case may open.
fn lower_portion_place(text: &str, open: usize, out: &mut Vec<Side>) {
    let rest = text.as_bytes().get(open + 1..).unwrap_or_default();
    let first = rest
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if first.is_some_and(|b| b.is_ascii_lowercase() || *b >= 0x80) {
        out.push(Side {
            start: open,
            what: What::LowerPortion,
        });
    }
}
