//! Reading markings the way inspection must: quietly (no error sentence for each of the many
//! candidates a text holds) and failing closed (a level word raises the label whatever follows
//! it, and an item the scheme does not know is reported, never dropped).

use std::collections::BTreeSet;

use super::{Reading, Scheme, is_code, normalize_into, split, squash_into};
use crate::{Label, Level, Releasability};

impl Scheme {
    /// Reads a marking the way inspection must: fail closed. `None` only when the marking names
    /// no level at its start. Otherwise the label is at least that level — whatever follows the
    /// level word in its segment — raised by every item the scheme knows, and every item it does
    /// not know is returned as written, never dropped.
    pub fn read_marking(&self, input: &str) -> Option<Reading> {
        let body = input.trim();
        let body = match body.strip_prefix('(') {
            Some(inner) => inner.strip_suffix(')').unwrap_or(inner),
            None => body,
        };
        let mut segments = split(body, "//", 0);
        let (_, first) = segments.next()?;
        // One buffer for every word of the marking: inspection reads thousands of candidates.
        let mut scratch = String::with_capacity(body.len());
        let (level, exact) = match self.level_of_word_in(first, &mut scratch) {
            Some(l) => (l.0, true),
            None => (self.level_prefix(first, &mut scratch)?, false),
        };
        let mut label = Label::level(level);
        let mut unrecognized = Vec::new();
        for (_, segment) in segments {
            for (_, item) in split(segment, "/", 0) {
                if item.trim().is_empty() {
                    continue;
                }
                if !self.apply_item(item, &mut label, &mut scratch) {
                    unrecognized.push(item.trim().to_string());
                }
            }
        }
        Some(Reading {
            label,
            unrecognized,
            exact,
        })
    }

    /// Whether `text` could be one item the scheme knows, tested without allocating: a
    /// reader cutting prose off the end of a banner skips the cuts that cannot read. `false`
    /// means [`Scheme::read_marking`] would report `text` unrecognized; `true` promises nothing.
    pub fn may_be_item(&self, text: &str) -> bool {
        let t = text.trim_start();
        let after = |t: &str, word: &str| -> Option<usize> {
            let head = t.get(..word.len())?;
            let rest = &t[word.len()..];
            (head.eq_ignore_ascii_case(word) && rest.starts_with(char::is_whitespace))
                .then(|| t.len() - rest.trim_start().len())
        };
        if let Some(n) = after(t, "REL")
            && let Some(m) = after(&t[n..], "TO")
        {
            // Upper case never shortens a word (it may lengthen one: `ß` is `SS`), so a code
            // here has one to four letters.
            return t[n + m..].split(',').all(|code| {
                let code = code.trim();
                let letters = code.chars().count();
                (1..=4).contains(&letters) && code.chars().all(char::is_alphabetic)
            });
        }
        // Upper case never shortens a word either, so an item is no longer than the longest.
        t.chars().filter(|c| !c.is_whitespace()).count() <= self.longest_item
    }

    /// The level a segment starts with when it is more than a level word: a level word followed
    /// by something that is not a letter or digit (`S-1`, `TS and more`).
    fn level_prefix(&self, text: &str, scratch: &mut String) -> Option<u8> {
        normalize_into(text, scratch);
        let norm = scratch.as_str();
        self.levels.iter().find_map(|(word, level)| {
            let rest = norm.strip_prefix(word.as_str())?;
            rest.starts_with(|c: char| !c.is_alphanumeric())
                .then_some(*level)
        })
    }

    /// The level a marking word names, compared without case, white space, hyphens or dots
    /// (`vs-nfd`, `VS – NfD`, `Streng geheim`), with the scheme's suffixes allowed after it.
    pub fn level_of_word(&self, word: &str) -> Option<Level> {
        self.level_of_word_in(word, &mut String::new())
    }

    /// [`Scheme::level_of_word`], squashing into `scratch`.
    fn level_of_word_in(&self, word: &str, scratch: &mut String) -> Option<Level> {
        squash_into(word, scratch);
        let w = scratch.as_str();
        self.squashed_levels.iter().find_map(|(name, level)| {
            let rest = w.strip_prefix(name.as_str())?;
            (rest.is_empty() || self.squashed_suffixes.iter().any(|s| s == rest))
                .then_some(Level(*level))
        })
    }

    /// Applies one item to `label`; `false` when the scheme does not know it. The quiet twin of
    /// `parse_item` for inspection, which meets many candidates and needs no error sentence.
    fn apply_item(&self, text: &str, label: &mut Label, scratch: &mut String) -> bool {
        normalize_into(text, scratch);
        let norm = scratch.as_str();
        if let Some(list) = norm.strip_prefix("REL TO ") {
            if list == "NONE" {
                label.releasability = label
                    .releasability
                    .intersect(&Releasability::To(BTreeSet::new()));
                return true;
            }
            let mut set = BTreeSet::new();
            for code in list.split(',').map(str::trim) {
                if !is_code(code) || !(self.countries.is_empty() || self.countries.contains(code)) {
                    return false;
                }
                set.insert(code.to_string());
            }
            label.releasability = label.releasability.intersect(&Releasability::To(set));
            return true;
        }
        match self.items.get(norm) {
            Some(item) => {
                self.apply_known(*item, label);
                true
            }
            None => false,
        }
    }
}
