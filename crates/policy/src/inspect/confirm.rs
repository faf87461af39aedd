//! Confirming a candidate the scan found: reading markings (portion marks, banners cut back from
//! the prose that runs on after them) and checking personal data against its checksum or the
//! words around it.

use std::net::{Ipv4Addr, Ipv6Addr};

use enclave_label::Label;

use super::{Finding, Inspector, Kind, Pattern};
use crate::checks::{
    card_valid, de_tax_id_valid, document_valid, iban_valid, longest_valid, preceding, ssn_valid,
};

impl Inspector {
    /// Checks a candidate at `start..end`; `floor` is where this search began (nothing before it
    /// may be claimed).
    pub(super) fn confirm(
        &self,
        p: Pattern,
        text: &str,
        floor: usize,
        start: usize,
        end: usize,
    ) -> Option<Finding> {
        // Patterns that start at a rare character take back what comes before it.
        let before = text.get(floor..start)?.bytes().rev();
        let start = match p {
            Pattern::Ipv6 => start - before.take(5).take_while(u8::is_ascii_hexdigit).count(),
            Pattern::Email => {
                let local = |b: &u8| b.is_ascii_alphanumeric() || b"._%+-".contains(b);
                let n = before.take(65).take_while(local).count();
                if n == 0 || n > 64 {
                    return None;
                }
                start - n
            }
            _ => start,
        };
        let s = text.get(start..end)?;
        let found = |kind, len: usize| {
            Some(Finding {
                kind,
                start,
                end: start + len,
                label: None,
                unrecognized: Vec::new(),
            })
        };
        let marking = |label: Label, len: usize, unrecognized: Vec<String>| {
            Some(Finding::marking(start, len, label, unrecognized))
        };
        match p {
            Pattern::Portion => {
                // A portion mark opens a paragraph, a sentence or a list item: never glued to a
                // word (`item(s)`, `f(x)`).
                if text[..start]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric)
                {
                    return None;
                }
                // In lower case it must also open a line or a sentence: `Anlage (c) und (5)`
                // refers to an annex, `(s) The site` is a mark.
                if !s.chars().any(char::is_uppercase) && !opens_sentence(&text[..start]) {
                    return None;
                }
                let reading = self.scheme.read_marking(s)?;
                // `(U.S. Code)` names the lowest level and raises nothing: not a marking.
                if !reading.exact
                    && reading.unrecognized.is_empty()
                    && reading.label == self.scheme.lowest()
                {
                    return None;
                }
                marking(reading.label, s.len(), reading.unrecognized)
            }
            Pattern::Banner => {
                let (label, len, unrecognized) = self.banner(s, opens_line(&text[..start]))?;
                marking(label, len, unrecognized)
            }
            Pattern::Heading if s.contains("//") => {
                let lead = s.len() - s.trim_start().len();
                let (label, len, unrecognized) = self.banner(&s[lead..], true)?;
                marking(label, lead + len, unrecognized)
            }
            Pattern::LevelWord | Pattern::LevelWordAnyCase | Pattern::Heading => {
                let word = s.trim().trim_end_matches(':').trim_end();
                let level = self.scheme.level_of_word(word)?;
                marking(Label::level(level.0), s.len(), Vec::new())
            }
            Pattern::Email => found(Kind::Email, s.len()),
            Pattern::Iban => longest_valid(s, iban_valid).and_then(|n| found(Kind::Iban, n)),
            Pattern::Ssn => ssn_valid(s)
                .then_some(())
                .and_then(|()| found(Kind::UsSsn, s.len())),
            Pattern::Card => longest_valid(s, card_valid).and_then(|n| found(Kind::PaymentCard, n)),
            Pattern::TaxId => de_tax_id_valid(s)
                .then_some(())
                .and_then(|()| found(Kind::DeTaxId, s.len())),
            Pattern::Document => {
                let kind = if s.starts_with(['C', 'F', 'G', 'H', 'J', 'K']) {
                    Kind::DePassport
                } else {
                    Kind::DeIdCard
                };
                document_valid(s, &text[..start], &self.document_words)
                    .then_some(())
                    .and_then(|()| found(kind, s.len()))
            }
            Pattern::PhoneBare => {
                let context = preceding(text, start, 32);
                let tail = context.trim_end().as_bytes();
                let joined = JOINS.iter().any(|j| {
                    tail.len() >= j.len() && tail[tail.len() - j.len()..].eq_ignore_ascii_case(j)
                });
                // Contact phrases are context too: `mail jane@example.org or 5550109999`.
                let contact = || {
                    let wide = preceding(text, start, 64);
                    wide.contains('@') || self.contact_words.starts_a_word(wide)
                };
                (self.phone_words.starts_a_word(context) || (joined && contact()))
                    .then_some(())
                    .and_then(|()| found(Kind::Phone, s.len()))
            }
            Pattern::PhoneIntl | Pattern::PhoneNational | Pattern::PhoneUs => {
                // An extension (`x123`) is not part of the number's length.
                let number = s.split(['x', 'e']).next().unwrap_or(s);
                let digits = number.bytes().filter(u8::is_ascii_digit).count();
                (7..=15)
                    .contains(&digits)
                    .then_some(())
                    .and_then(|()| found(Kind::Phone, s.len()))
            }
            Pattern::Ipv4 => s
                .parse::<Ipv4Addr>()
                .ok()
                .and_then(|_| found(Kind::IpAddress, s.len())),
            Pattern::Ipv6 => {
                let t = s.trim_end_matches(':');
                let hexish = t.bytes().filter(u8::is_ascii_hexdigit).count();
                (t.matches(':').count() >= 2 && hexish >= 2)
                    .then(|| t.parse::<Ipv6Addr>().ok())
                    .flatten()
                    .and_then(|_| found(Kind::IpAddress, t.len()))
            }
        }
    }

    /// Reads a banner candidate. It may run on into ordinary text, so it is cut back a word at a
    /// time until it parses. When no cut parses, a banner that names a level still counts, with
    /// its unknown controls reported — but only when it is written as a banner is (an upper-case
    /// level, or a level's full name): `s//x/g` in a sed command is not a marking.
    pub(super) fn banner(&self, s: &str, line_start: bool) -> Option<(Label, usize, Vec<String>)> {
        // A whole reading: an exact level word and every item known.
        // A whole reading: an exact level word and every item known. Its last item is tested
        // cheaply first, so cutting a long line back word by word reads only the cuts that can
        // end in an item (the rest would cost a full reading each, quadratic in the line).
        let reads = |t: &str| {
            let last = &t[t.rfind('/').map_or(0, |i| i + 1)..];
            if !self.scheme.may_be_item(last.trim_end_matches(')')) {
                return None;
            }
            self.scheme
                .read_marking(t)
                .filter(|r| r.exact && r.unrecognized.is_empty())
        };
        if let Some(r) = reads(s) {
            return Some((r.label, s.len(), Vec::new()));
        }
        // Only prose runs on, after a space: `S//ORCON//XYZ` is not `S//ORCON` and more. The
        // candidate ends at the line, so this is at most one try per word of it.
        let first_separator = s.find("//").unwrap_or(s.len());
        let mut cut = s.trim_end_matches([' ', ',', '/', '.', '-']);
        while let Some(at) = cut.rfind(' ') {
            // `S // ORCON // XYZ`, `SI - X`: a space beside `/` or `-` is inside the marking,
            // not prose after it.
            if cut[..at].trim_end().ends_with(['/', '-'])
                || cut[at..].trim_start().starts_with(['/', '-'])
            {
                break;
            }
            cut = cut[..at].trim_end_matches([' ', ',', '/', '.', '-']);
            if cut.len() < first_separator + 2 {
                break;
            }
            if let Some(r) = reads(cut) {
                return Some((r.label, cut.len(), Vec::new()));
            }
        }
        let level_part = s.split("//").next().unwrap_or_default().trim();
        let deliberate = level_part.chars().any(char::is_alphabetic)
            && (line_start
                || !level_part.chars().any(char::is_lowercase)
                || self
                    .scheme
                    .def()
                    .levels
                    .iter()
                    .any(|l| l.name.eq_ignore_ascii_case(level_part)));
        if !deliberate {
            return None;
        }
        let mut reading = self.scheme.read_marking(s)?;
        // What ran on into prose after an unknown control is prose: keep its first word.
        for u in &mut reading.unrecognized {
            if let Some(first) = u.split_whitespace().next() {
                *u = first.to_string();
            }
        }
        Some((reading.label, s.len(), reading.unrecognized))
    }
}

/// Whether what comes before a mark ends a line (or is nothing), ignoring spaces and tabs.
fn opens_line(before: &str) -> bool {
    before
        .trim_end_matches([' ', '\t'])
        .chars()
        .next_back()
        .is_none_or(|c| c == '\n' || c == '\r')
}

/// Whether what comes before a mark ends a line or a sentence.
fn opens_sentence(before: &str) -> bool {
    before
        .trim_end_matches([' ', '\t', '\n', '\r'])
        .chars()
        .next_back()
        .is_none_or(|c| matches!(c, '.' | '!' | '?' | ':' | ';' | '"' | '\'' | '>'))
        || opens_line(before)
}

/// Words that make a number after them a phone number.
pub(super) const PHONE_WORDS: [&str; 8] = [
    "tel",
    "phone",
    "call",
    "fax",
    "mobil",
    "erreichbar",
    "ruf",
    "cell",
];

/// Words that make what follows a way to reach someone.
pub(super) const CONTACT_WORDS: [&str; 8] = [
    "contact",
    "kontakt",
    "reach",
    "erreichen",
    "text",
    "sms",
    "whatsapp",
    "signal",
];

/// What joins a number to a contact phrase before it: `jane@example.org or 5550109999`.
const JOINS: [&[u8]; 10] = [
    b"or", b"oder", b",", b"/", b";", b":", b"und", b"and", b"at", b"unter",
];
