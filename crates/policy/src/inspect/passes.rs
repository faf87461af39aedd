//! The anchored passes beside the one-pass scan: markings at line starts, portion marks opening
//! in lower case, and banners in any case at a `//`. Each tries a small pattern only where its
//! marking can start, so the one automaton stays small.

use regex_automata::{Anchored, Input};

use super::{Finding, Inspector, Kind, Pattern};

impl Inspector {
    /// Markings found apart from the one-pass scan, in order: those standing at the start of a
    /// line, portion marks opening in lower case, and banners in any case. One sweep over the
    /// text finds every place they can start (`\n`, `(`, `//`).
    pub(super) fn side_findings(&self, text: &str) -> Vec<Finding> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        self.heading_at(text, 0, &mut out);
        // `//` is taken as `str::match_indices` would: `////` is two, `///` one.
        let mut next_slashes = 0;
        for at in memchr::memchr3_iter(b'\n', b'(', b'/', bytes) {
            match bytes[at] {
                b'\n' => self.heading_at(text, at + 1, &mut out),
                b'(' => self.lower_portion_at(text, at, &mut out),
                _ if at >= next_slashes && bytes.get(at + 1) == Some(&b'/') => {
                    next_slashes = at + 2;
                    self.banner_at(text, at, &mut out);
                }
                _ => {}
            }
        }
        out.sort_by_key(|f| f.start);
        out
    }

    /// A portion mark opening in lower case at the `(` at `open`.
    fn lower_portion_at(&self, text: &str, open: usize, out: &mut Vec<Finding>) {
        let rest = text.as_bytes().get(open + 1..).unwrap_or_default();
        let first = rest
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        if !first.is_some_and(|b| b.is_ascii_lowercase() || *b >= 0x80) {
            return;
        }
        let input = Input::new(text).range(open..).anchored(Anchored::Yes);
        if let Some(m) = self.lower_portion.search(&input)
            && let Some(f) = self.confirm(Pattern::Portion, text, open, m.start(), m.end())
        {
            out.push(f);
        }
    }

    /// A banner in any case anywhere (`the file is top secret//si`) at the `//` at `slash`
    /// (not a URL's), when a level word of the scheme ends just before it, in any case: read as
    /// a banner from that word.
    fn banner_at(&self, text: &str, slash: usize, out: &mut Vec<Finding>) {
        let head = text[..slash].trim_end_matches([' ', '\t']);
        if head.ends_with([':', '/']) {
            return;
        }
        let Some(start) = self.level_word_ending(head) else {
            return;
        };
        let mut end = text[slash..].find('\n').map_or(text.len(), |n| slash + n);
        // Opened by a parenthesis, it ends at the one closing it: `(ts//si) The site` is
        // read as `ts//si`, not with the rest of the line run on.
        if text[..start].ends_with('(')
            && let Some(close) = text[slash..end].find(')')
        {
            end = slash + close;
        }
        if let Some((label, len, unrecognized)) = self.banner(&text[start..end], true) {
            out.push(Finding {
                kind: Kind::Marking,
                start,
                end: start + len,
                label: Some(label),
                unrecognized,
            });
        }
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
    /// anchored, when what follows the line's white space can start one.
    fn heading_at(&self, text: &str, start: usize, out: &mut Vec<Finding>) {
        let rest = text.as_bytes().get(start..).unwrap_or_default();
        let first = rest.iter().find(|b| !matches!(b, b' ' | b'\t'));
        if !first.is_some_and(|b| self.heading_first[usize::from(*b)]) {
            return;
        }
        let input = Input::new(text).range(start..).anchored(Anchored::Yes);
        if let Some(m) = self.heading.search(&input)
            && let Some(f) = self.confirm(Pattern::Heading, text, start, m.start(), m.end())
        {
            out.push(f);
        }
    }
}
