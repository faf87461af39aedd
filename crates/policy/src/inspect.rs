//! Content inspection: classification markings and personal data, found in one pass.
//!
//! Every pattern is compiled into one multi-pattern regex (`regex-automata`'s meta regex), so the
//! text is scanned once whatever the number of kinds; each candidate is then confirmed by a cheap
//! check on the matched span alone — a marking must parse in the scheme in force, an IBAN must pass
//! ISO 13616's mod-97, a card number Luhn and an issuer prefix, a tax id its ISO 7064 check digit.
//! The checks are what keep the false-positive rate low: a detector that cries wolf gets switched
//! off.
//!
//! Inspection fails closed on markings. It reads a [`View`](crate::normalize::View) of the text
//! (entities decoded, invisible characters dropped, NFKC, look-alike letters folded) and maps
//! what it finds back to the original's byte offsets. Portion marks and banners match in any
//! case and with white space inside; a mark that names a level raises the text to at least that
//! level whatever follows it, and any control the scheme does not know is reported in
//! [`Finding::unrecognized`] for the caller to refuse — never dropped.

use std::collections::BTreeMap;
use std::fmt;

use enclave_label::{Label, Scheme};

use self::confirm::{CONTACT_WORDS, PHONE_WORDS};
use crate::checks::{DOCUMENT_WORDS, Words};
pub use crate::checks::{card_valid, de_tax_id_valid, iban_valid, ssn_valid};
use crate::normalize::View;

mod confirm;
mod passes;
use regex_automata::meta::Regex;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind};
use serde::Serialize;

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A banner or portion marking of the scheme in force.
    Marking,
    Email,
    Phone,
    Iban,
    PaymentCard,
    UsSsn,
    DeTaxId,
    DeIdCard,
    DePassport,
    IpAddress,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Marking,
        Kind::Email,
        Kind::Phone,
        Kind::Iban,
        Kind::PaymentCard,
        Kind::UsSsn,
        Kind::DeTaxId,
        Kind::DeIdCard,
        Kind::DePassport,
        Kind::IpAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Marking => "marking",
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Iban => "iban",
            Kind::PaymentCard => "payment_card",
            Kind::UsSsn => "us_ssn",
            Kind::DeTaxId => "de_tax_id",
            Kind::DeIdCard => "de_id_card",
            Kind::DePassport => "de_passport",
            Kind::IpAddress => "ip_address",
        }
    }

    /// Whether this kind is personal data (everything but markings).
    pub fn is_personal(self) -> bool {
        self != Kind::Marking
    }

    /// The word placeholders of this kind use, such as `IBAN` in `[IBAN_1]`.
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Marking => "MARKING",
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::Iban => "IBAN",
            Kind::PaymentCard => "CARD",
            Kind::UsSsn => "SSN",
            Kind::DeTaxId => "TAX_ID",
            Kind::DeIdCard => "ID_CARD",
            Kind::DePassport => "PASSPORT",
            Kind::IpAddress => "IP",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing found, as a byte range of the inspected text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
    /// For markings: the label it denotes (at least the level it names).
    pub label: Option<Label>,
    /// For markings: controls the scheme does not know, as written. Non-empty means the caller
    /// must refuse the text unless the operator maps them in the scheme.
    pub unrecognized: Vec<String>,
}

/// What inspecting a whole request found: never the matched text, only what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The join of every marking found.
    pub label: Option<Label>,
    /// How many of each kind.
    pub counts: BTreeMap<Kind, usize>,
    /// Markings carrying controls the scheme does not know: the marking's controls as written.
    pub unrecognized: Vec<String>,
}

impl Summary {
    pub fn add(&mut self, findings: &[Finding]) {
        for f in findings {
            *self.counts.entry(f.kind).or_default() += 1;
            self.unrecognized.extend(f.unrecognized.iter().cloned());
            if let Some(l) = &f.label {
                self.label = Some(match self.label.take() {
                    Some(prev) => prev.join(l),
                    None => l.clone(),
                });
            }
        }
    }

    pub fn personal_data(&self) -> bool {
        self.counts.keys().any(|k| k.is_personal())
    }
}

/// The patterns, in priority order: where two start at the same place, the earlier wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Portion,
    Banner,
    LevelWord,
    /// Hyphenated level words (`VS-NfD`, `R-UE`) in any case and spacing.
    LevelWordAnyCase,
    /// A level word alone at the start of a line, ending the line or followed by a colon
    /// (`Streng geheim:`, `Secret:`), in any case.
    Heading,
    Email,
    Iban,
    Ssn,
    Card,
    TaxId,
    Document,
    PhoneIntl,
    PhoneNational,
    PhoneUs,
    PhoneBare,
    Ipv4,
    Ipv6,
}

const PATTERNS: [Pattern; 16] = [
    Pattern::Portion,
    Pattern::Banner,
    Pattern::LevelWord,
    Pattern::LevelWordAnyCase,
    Pattern::Email,
    Pattern::Iban,
    Pattern::Ssn,
    Pattern::Card,
    Pattern::TaxId,
    Pattern::Document,
    Pattern::PhoneIntl,
    Pattern::PhoneNational,
    Pattern::PhoneUs,
    Pattern::PhoneBare,
    Pattern::Ipv4,
    Pattern::Ipv6,
];

/// Finds markings of one scheme and personal data. Build once, share; `inspect` takes `&self`.
#[derive(Debug)]
pub struct Inspector {
    scheme: Scheme,
    regex: Regex,
    /// [`Pattern::Heading`], tried anchored at each line start apart from `regex`: a line anchor
    /// inside the one-pass automaton doubled its states and cost the scan a fifth of its speed.
    heading: Regex,
    /// Words of context that confirm a number: a phone word, a contact phrase, a document.
    phone_words: Words,
    contact_words: Words,
    document_words: Words,
    /// The bytes a [`Pattern::Heading`] can start with after its leading white space.
    heading_first: [bool; 256],
    /// Portion marks opening in lower case (`(s)`, `(ts//si)`), tried anchored at each `(` that
    /// a lower-case letter follows, for the same reason.
    lower_portion: Regex,
    /// Every level word of the scheme (names, portions, aliases), upper case.
    level_words: Vec<String>,
    /// The patterns compiled into `regex`, in its pattern-id order.
    active: Vec<Pattern>,
    /// For each pattern of `regex`, the bytes a match of it can start with: a refused candidate
    /// is retried only with the later patterns that can start where it did.
    first_bytes: Vec<[bool; 256]>,
}

/// Errors building an inspector (a scheme whose words do not make a valid pattern).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the content inspector: {0}")]
pub struct BuildError(pub(crate) String);

/// `w` as a pattern matching any case, letter by letter (`[vV][sS]`). Not `(?i)`: Unicode case
/// folding adds look-alikes such as the Kelvin sign to every `k`, which the normaliser has
/// already folded, and the larger automaton halved the scan's speed.
fn any_case(w: &str) -> String {
    let mut out = String::with_capacity(w.len() * 4);
    for c in w.chars() {
        let upper: String = c.to_uppercase().collect();
        let lower: String = c.to_lowercase().collect();
        if c.is_alphabetic()
            && upper.chars().count() == 1
            && lower.chars().count() == 1
            && upper != lower
        {
            out.push('[');
            out.push_str(&lower);
            out.push_str(&upper);
            out.push(']');
        } else {
            out.push_str(&escape_word(&c.to_string()));
        }
    }
    out
}

fn escape_word(w: &str) -> String {
    regex_syntax_escape(w)
}

/// Escapes regex meta characters; hand-written because `regex-automata` does not re-export
/// `regex_syntax::escape` and a dependency for one function is not worth it.
fn regex_syntax_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            ' ' => out.push_str("[ \\t]+"),
            // `VS-NfD`, `VS - NfD`, `VS -NfD`.
            '-' => out.push_str("[ \\t]*-[ \\t]*"),
            _ => {
                if "\\.+*?()|[]{}^$#&~".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    out
}

impl Inspector {
    pub fn new(scheme: Scheme) -> Result<Self, BuildError> {
        // Level words long or distinctive enough to count as a marking anywhere they appear as
        // written (upper case, or the scheme's own spelling): `TOP SECRET`, `VS-NfD`, `GEHEIM`.
        // Short ones (`S`, `C`, `TS`) count only inside a portion mark or a `//` banner.
        let mut words: Vec<String> = Vec::new();
        for l in &scheme.def().levels {
            for w in [&l.name, &l.portion].into_iter().chain(&l.aliases) {
                let distinctive = w.chars().count() >= 6 || w.contains('-');
                if distinctive && !words.contains(w) {
                    words.push(w.clone());
                }
            }
        }
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        let level_words = words
            .iter()
            .map(|w| escape_word(w))
            .collect::<Vec<_>>()
            .join("|");
        let suffix = scheme
            .def()
            .suffixes
            .iter()
            .map(|s| escape_word(s))
            .collect::<Vec<_>>()
            .join("|");
        let suffix = if suffix.is_empty() {
            String::new()
        } else {
            format!("(?:[ \\t]*[-–,]?[ \\t]*(?i:{suffix}))?")
        };
        let level_word = if level_words.is_empty() {
            // Matches nothing: a scheme whose level words are all short.
            "[^\\s\\S]".to_string()
        } else {
            format!("(?-u:\\b)(?:{level_words}){suffix}(?-u:\\b)")
        };
        let nothing = "[^\\s\\S]".to_string();
        let hyphenated = words
            .iter()
            .filter(|w| w.contains('-'))
            .map(|w| any_case(w))
            .collect::<Vec<_>>()
            .join("|");
        let level_word_any_case = if hyphenated.is_empty() {
            nothing.clone()
        } else {
            format!("(?-u:\\b)(?:{hyphenated}){suffix}(?-u:\\b)")
        };
        // Heading words: every level word of three letters or more, in any case.
        // A portion mark opening with a capital, or one of the scheme's level words in any case
        // (`(s)`, `(ts//si)`): lower-case parentheticals of prose (`(see above)`, `(z. B.)`) are
        // never candidates, which kept the scan at its speed.
        let mut any_case_levels: Vec<String> = scheme
            .def()
            .levels
            .iter()
            .flat_map(|l| [&l.name, &l.portion].into_iter().chain(&l.aliases))
            .cloned()
            .collect();
        any_case_levels.sort_by_key(|w| std::cmp::Reverse(w.len()));
        any_case_levels.dedup();
        let any_case_levels = any_case_levels
            .iter()
            .map(|w| any_case(w))
            .collect::<Vec<_>>()
            .join("|");
        let mut heading_words: Vec<String> = scheme
            .def()
            .levels
            .iter()
            .flat_map(|l| [&l.name, &l.portion].into_iter().chain(&l.aliases))
            .filter(|w| w.chars().filter(|c| c.is_alphanumeric()).count() >= 3)
            .cloned()
            .collect();
        heading_words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        heading_words.dedup();
        let heading = if heading_words.is_empty() {
            nothing.clone()
        } else {
            let alternatives = heading_words
                .iter()
                .map(|w| any_case(w))
                .collect::<Vec<_>>()
                .join("|");
            // At the start of a line, in any case: a banner (`secret//noforn`, `ts // si`), or
            // a level word alone or before a colon (`Streng geheim:`).
            format!(
                "(?m:^)[ \\t]*(?:(?:{any_case_levels})[ \\t]*//[ \\t]*[A-Za-z0-9][A-Za-z0-9/ ,.\\-]*|(?:{alternatives}){suffix}[ \\t]*(?::|\\r?(?m:$)))"
            )
        };
        let portion = r"\([ \t\r\n]*[A-Z][A-Za-z.\- \t\r\n/,]*\)".to_string();
        let lower_portion =
            format!(r"\([ \t\r\n]*(?:{any_case_levels})[ \t\r\n]*(?://[^)\n]{{0,80}})?\)");
        let source = |p: Pattern| -> String {
            match p {
                // `(S//NF)`, `(TS//SI//REL TO USA, AUS)`, `(VS-NfD)`, `(U)`, `( s )`, and a
                // line break inside. `confirm` requires a marking position before it.
                Pattern::Portion => portion.clone(),
                // `TOP SECRET//SI//NOFORN`, `secret // noforn`: words, then `//` and more.
                // `TOP SECRET//SI//NOFORN`, `SECRET // NOFORN`: upper-case words (Latin-1 too:
                // `VS-NUR FÜR DEN DIENSTGEBRAUCH//REL TO FRA`), then `//` and more. Banners in
                // other cases are read where banners stand, at the start of a line (`Heading`):
                // a lower-case run anywhere would follow every word of prose looking for `//`.
                Pattern::Banner => {
                    r"(?-u:\b)[A-ZÀ-ÖØ-Þ][A-ZÀ-ÖØ-Þ.\- /]*//[ \t]*[A-Za-z0-9][A-Z0-9/ ,.\-]*".to_string()
                }
                Pattern::LevelWord => level_word.clone(),
                Pattern::LevelWordAnyCase => level_word_any_case.clone(),
                Pattern::Heading => heading.clone(),
                // Starts at the `@`, for the same reason as `Ipv6`; `confirm` takes back the local
                // part.
                Pattern::Email => {
                    r"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}(?-u:\b)".to_string()
                }
                Pattern::Iban => {
                    r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)".to_string()
                }
                Pattern::Ssn => r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)".to_string(),
                Pattern::Card => r"(?-u:\b)[0-9](?:[ \-]?[0-9]){11,18}(?-u:\b)".to_string(),
                Pattern::TaxId => {
                    r"(?-u:\b)[0-9]{2} ?[0-9]{3} ?[0-9]{3} ?[0-9]{3}(?-u:\b)".to_string()
                }
                Pattern::Document => {
                    r"(?-u:\b)[CFGHJKLMNPRTVWXYZ][CFGHJKLMNPRTVWXYZ0-9]{8}[0-9]?(?-u:\b)".to_string()
                }
                // `+49 30 1234567`, `+49 (0)30 123 45 67`, `+1-555-010-9999`, `001-555-...`.
                Pattern::PhoneIntl => {
                    r"(?:\+|(?-u:\b)00)[1-9][0-9]{0,2}[ \-./]?(?:\(0\)[ \-]?)?\(?[0-9]{1,5}\)?(?:[ \-./]?[0-9]{2,}){1,5}(?:[ ]?(?:x|ext\.?|-)[0-9]{1,5})?(?-u:\b)".to_string()
                }
                // German national: `030 1234567`, `(030) 123 45 67`, `0171-1234567`, `089/123456`.
                Pattern::PhoneNational => {
                    r"(?:\(0[1-9][0-9]{1,4}\)|(?-u:\b)0[1-9][0-9]{1,4})[ \-/]?[0-9]{3,}(?:[ \-][0-9]{2,})*(?-u:\b)".to_string()
                }
                // North American: `(555) 010-9999`, `555-010-9999`, `555.010.9999x123`.
                Pattern::PhoneUs => {
                    r"(?:\([0-9]{3}\) ?|(?-u:\b)[0-9]{3}[\-.])[0-9]{3}[\-.][0-9]{4}(?:[ ]?x[0-9]{1,5})?(?-u:\b)".to_string()
                }
                // `5550109999`: ten bare digits in the North American plan, only where the text
                // just before says it is a phone number.
                Pattern::PhoneBare => r"(?-u:\b)[2-9][0-9]{2}[2-9][0-9]{6}(?-u:\b)".to_string(),
                Pattern::Ipv4 => {
                    r"(?-u:\b)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?-u:\b)".to_string()
                }
                // Starts at the first colon: a pattern starting at hex digits would follow every
                // `a`–`f` of ordinary prose and cost the whole scan a third of its speed. The
                // leading group is taken back in `confirm`.
                Pattern::Ipv6 => r":[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*".to_string(),
            }
        };
        // A pattern that can match nothing in this scheme (no hyphenated level words) is left
        // out: an empty alternative costs the whole automaton a sixth of its speed.
        let active: Vec<Pattern> = PATTERNS
            .iter()
            .copied()
            .filter(|p| source(*p) != nothing)
            .collect();
        let sources: Vec<String> = active.iter().map(|p| source(*p)).collect();
        let regex = Regex::builder()
            .syntax(syntax::Config::new().unicode(true))
            .configure(
                Regex::config()
                    .match_kind(MatchKind::LeftmostFirst)
                    // Fifteen patterns with classes make many DFA states; a cache too small
                    // for them makes the lazy DFA give up and fall back to slower engines.
                    .hybrid_cache_capacity(32 << 20),
            )
            .build_many(&sources)
            .map_err(|e| BuildError(e.to_string()))?;
        let first_bytes = first_bytes(&sources)?;
        let side = |pattern: &str| {
            Regex::builder()
                .syntax(syntax::Config::new().unicode(true))
                .build(pattern)
                .map_err(|e| BuildError(e.to_string()))
        };
        let heading = side(&source(Pattern::Heading))?;
        // The bytes a heading can start with, read at a line start (after `\n`); white space
        // is passed before the test, and what may follow it is what may start the line.
        let heading_first = first_bytes_after(&[source(Pattern::Heading)], &[Some(b'\n'), None])?
            .first()
            .copied()
            .unwrap_or([true; 256]);
        let lower_portion = side(&lower_portion)?;
        let mut level_words: Vec<String> = scheme
            .def()
            .levels
            .iter()
            .flat_map(|l| [&l.name, &l.portion].into_iter().chain(&l.aliases))
            .map(|w| w.to_uppercase())
            .collect();
        level_words.dedup();
        Ok(Self {
            scheme,
            regex,
            heading,
            heading_first,
            phone_words: Words::new(&PHONE_WORDS)?,
            contact_words: Words::new(&CONTACT_WORDS)?,
            document_words: Words::new(&DOCUMENT_WORDS)?,
            lower_portion,
            level_words,
            active,
            first_bytes,
        })
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Every marking and personal-data item in `text`, in order, not overlapping, as byte ranges
    /// of `text`. Inspection reads the normalised view of `text` (see [`crate::normalize`]).
    pub fn inspect(&self, text: &str) -> Vec<Finding> {
        let view = View::new(text);
        let mut found = self.inspect_view(view.as_str());
        for f in &mut found {
            f.start = view.start_in_original(f.start);
            f.end = view.end_in_original(f.end);
        }
        found
    }

    fn inspect_view(&self, text: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut headings = self.side_findings(text).into_iter().peekable();
        let mut at = 0;
        // The candidate a heading came before, kept: searching again from after the heading
        // would find it again (the search is leftmost from where it starts), and scan the text
        // between twice.
        let mut ahead: Option<regex_automata::Match> = None;
        while at < text.len() {
            let found = match ahead.take() {
                Some(m) if m.start() >= at => Some(m),
                _ => self.regex.search(&Input::new(text).range(at..)),
            };
            // A heading that starts where or before the next candidate does wins (it stands
            // first in priority); one inside a finding already made is passed.
            while headings.next_if(|h| h.start < at).is_some() {}
            if let Some(h) = headings.next_if(|h| found.is_none_or(|m| h.start <= m.start())) {
                at = h.end.max(h.start + 1);
                out.push(h);
                ahead = found;
                continue;
            }
            let Some(m) = found else {
                break;
            };
            let pattern = self
                .active
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or(Pattern::Ipv6);
            match self.confirm(pattern, text, at, m.start(), m.end()) {
                Some(f) => {
                    at = f.end.max(m.start() + 1);
                    out.push(f);
                }
                None => {
                    // A refused candidate may hide a shorter match of a later pattern at the same
                    // place (a failed card number that is a phone number): try them, anchored.
                    if let Some(f) = self.retry_later(pattern, text, m.start()) {
                        at = f.end.max(m.start() + 1);
                        out.push(f);
                    } else {
                        // Skip the whole refused span: pieces of a broken IBAN or card number
                        // are not phone numbers either. A refused marking candidate that holds
                        // a `//` is passed one character at a time: `(see TOP SECRET//NF)`
                        // holds a banner.
                        let span = &text[m.start()..m.end()];
                        at = match pattern {
                            Pattern::Portion | Pattern::Banner if span.contains("//") => {
                                next_char(text, m.start())
                            }
                            _ => m.end().max(next_char(text, m.start())),
                        };
                    }
                }
            }
        }
        out
    }

    fn retry_later(&self, failed: Pattern, text: &str, start: usize) -> Option<Finding> {
        let index = self.active.iter().position(|p| *p == failed)?;
        let first = usize::from(*text.as_bytes().get(start)?);
        for (i, p) in self.active.iter().enumerate().skip(index + 1) {
            if !self.first_bytes.get(i).is_none_or(|can| can[first]) {
                continue;
            }
            let pid = regex_automata::PatternID::new(i).ok()?;
            let input = Input::new(text)
                .range(start..)
                .anchored(Anchored::Pattern(pid));
            if let Some(m) = self.regex.search(&input)
                && let Some(f) = self.confirm(*p, text, start, m.start(), m.end())
            {
                return Some(f);
            }
        }
        None
    }
}

/// For each pattern, the bytes a match of it can start with, read off a lazy DFA's first step
/// after every kind of byte before it (word, non-word, none: the patterns look behind only for
/// word boundaries). A DFA that gives up says "any byte", which only costs a search.
fn first_bytes(sources: &[String]) -> Result<Vec<[bool; 256]>, BuildError> {
    first_bytes_after(sources, &[None, Some(b' '), Some(b'a')])
}

/// [`first_bytes`] after each of the bytes `behind` (`None`: at the start of the text).
fn first_bytes_after(
    sources: &[String],
    behind: &[Option<u8>],
) -> Result<Vec<[bool; 256]>, BuildError> {
    use regex_automata::hybrid::dfa::DFA;
    use regex_automata::util::start;
    let dfa = DFA::builder()
        .configure(DFA::config().starts_for_each_pattern(true))
        .syntax(syntax::Config::new().unicode(true))
        .build_many(sources)
        .map_err(|e| BuildError(e.to_string()))?;
    let mut cache = dfa.create_cache();
    let mut out = Vec::with_capacity(sources.len());
    for i in 0..sources.len() {
        let pid = regex_automata::PatternID::new(i).map_err(|e| BuildError(e.to_string()))?;
        let mut can = [false; 256];
        for behind in behind.iter().copied() {
            let config = start::Config::new()
                .anchored(Anchored::Pattern(pid))
                .look_behind(behind);
            let Ok(sid) = dfa.start_state(&mut cache, &config) else {
                can = [true; 256];
                break;
            };
            for (byte, can) in (0..=255u8).zip(can.iter_mut()) {
                *can |= dfa
                    .next_state(&mut cache, sid, byte)
                    .map_or(true, |next| !next.is_dead());
            }
        }
        out.push(can);
    }
    Ok(out)
}

fn next_char(text: &str, at: usize) -> usize {
    text[at..]
        .chars()
        .next()
        .map_or(text.len(), |c| at + c.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::check_731;

    fn us() -> Inspector {
        Inspector::new(Scheme::builtin("US").unwrap()).unwrap()
    }

    fn kinds(i: &Inspector, text: &str) -> Vec<(Kind, String)> {
        i.inspect(text)
            .into_iter()
            .map(|f| (f.kind, text[f.start..f.end].to_string()))
            .collect()
    }

    #[test]
    fn finds_markings() {
        let i = us();
        let f = i.inspect("Summarize: (TS//SI) The source reports movement.");
        assert_eq!(f.len(), 1);
        let l = f[0].label.clone().unwrap();
        assert_eq!(i.scheme().banner(&l), "TOP SECRET//SI");
        let f = kinds(&i, "SECRET//NOFORN\nThe meeting is at noon.");
        assert_eq!(f, vec![(Kind::Marking, "SECRET//NOFORN".to_string())]);
        let f = kinds(&i, "TOP SECRET//SI//REL TO USA, GBR THE FOLLOWING");
        assert_eq!(f[0].1, "TOP SECRET//SI//REL TO USA, GBR");
        assert!(kinds(&i, "The applicant(s) from the USA (see annex) paid.").is_empty());
        let de = Inspector::new(Scheme::builtin("DE").unwrap()).unwrap();
        let f = de.inspect("Betreff: VS-NfD – Lagebericht");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].label.as_ref().unwrap().level.0, 1);
        let f = de.inspect("GEHEIM – amtlich geheim gehalten\nText");
        assert_eq!(f[0].label.as_ref().unwrap().level.0, 3);
    }

    #[test]
    fn finds_personal_data_with_checks() {
        let i = us();
        let text = "Mail max.mustermann@example.org, IBAN DE89 3704 0044 0532 0130 00, \
                    card 4111 1111 1111 1111, SSN 123-45-6789, Steuer-ID 86095742719, \
                    Tel. +49 30 1234567, host 192.168.10.20, Personalausweis T22000129.";
        let got: Vec<Kind> = i.inspect(text).into_iter().map(|f| f.kind).collect();
        assert_eq!(
            got,
            vec![
                Kind::Email,
                Kind::Iban,
                Kind::PaymentCard,
                Kind::UsSsn,
                Kind::DeTaxId,
                Kind::Phone,
                Kind::IpAddress,
                Kind::DeIdCard
            ]
        );
        // The same shapes with broken checksums are not personal data.
        let clean = "IBAN DE89 3704 0044 0532 0130 01, card 4111 1111 1111 1112, \
                     SSN 666-45-6789, id 86095742718, code T22000129, version 1.2.300.4";
        assert_eq!(kinds(&i, clean), vec![]);
    }

    #[test]
    fn checksums() {
        assert!(iban_valid("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_valid("GB82 WEST 1234 5698 7654 33"));
        assert!(card_valid("378282246310005"));
        assert!(!card_valid("1234567812345670"));
        assert!(de_tax_id_valid("86095742719"));
        assert!(!de_tax_id_valid("86095742711"));
        assert!(check_731("T220001293"));
    }
}
