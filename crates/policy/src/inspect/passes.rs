//! The anchored passes beside the one-pass scan: markings at line starts, portion marks opening
//! in lower case, and banners in any case at a `//`. Each tries a small pattern only where its
//! marking can start, so the one automaton stays small.

use regex_automata::{Anchored, Input};

use super::{Finding, Inspector, Kind, Pattern};

impl Inspector {
    /// Markings found apart from the one-pass scan, in order: those standing at the start of a
    /// line, and portion marks opening in lower case.
    pub(super) fn side_findings(&self, text: &str) -> Vec<Finding> {
        let mut out = self.headings(text);
        out.extend(self.banners_any_case(text));
        for (open, _) in text.match_indices('(') {
            let rest = text.as_bytes().get(open + 1..).unwrap_or_default();
            let first = rest
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
            if !first.is_some_and(|b| b.is_ascii_lowercase() || *b >= 0x80) {
                continue;
            }
            let input = Input::new(text).range(open..).anchored(Anchored::Yes);
            if let Some(m) = self.lower_portion.search(&input)
                && let Some(f) = self.confirm(Pattern::Portion, text, open, m.start(), m.end())
            {
                out.push(f);
            }
        }
        out.sort_by_key(|f| f.start);
        out
    }

    /// Banners in any case anywhere (`the file is top secret//si`): at each `//` (not a URL's)
    /// that a level word of the scheme ends just before, in any case, read as a banner from that
    /// word. `//` is rare in prose, so this costs next to nothing.
    fn banners_any_case(&self, text: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        for (slash, _) in text.match_indices("//") {
            let head = text[..slash].trim_end_matches([' ', '\t']);
            if head.ends_with([':', '/']) {
                continue;
            }
            let Some(start) = self.level_word_ending(head) else {
                continue;
            };
            let end = text[slash..].find('\n').map_or(text.len(), |n| slash + n);
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
        out
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
                (clean && tail.to_uppercase() == *w).then_some(at)
            })
            .min()
    }

    /// Markings standing at the start of a line: each line start where a letter follows is
    /// tried with [`Pattern::Heading`], anchored.
    fn headings(&self, text: &str) -> Vec<Finding> {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut out = Vec::new();
        for start in starts {
            let rest = text.as_bytes().get(start..).unwrap_or_default();
            let first = rest.iter().find(|b| !matches!(b, b' ' | b'\t'));
            if !first.is_some_and(|b| b.is_ascii_alphabetic() || *b >= 0x80) {
                continue;
            }
            let input = Input::new(text).range(start..).anchored(Anchored::Yes);
            if let Some(m) = self.heading.search(&input)
                && let Some(f) = self.confirm(Pattern::Heading, text, start, m.start(), m.end())
            {
                out.push(f);
            }
        }
        out
    }
}
