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
use std::panic::{RefUnwindSafe, UnwindSafe};

use enclave_label::{Label, Scheme};

use crate::checks::Words;
pub use crate::checks::{card_valid, de_tax_id_valid, iban_valid, ssn_valid};
use crate::normalize::View;

mod build;
mod confirm;
mod passes;
use regex_automata::meta::Regex;
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input};
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

impl Finding {
    /// A marking at `start..start + len` denoting `label`.
    pub(crate) fn marking(
        start: usize,
        len: usize,
        label: Label,
        unrecognized: Vec<String>,
    ) -> Self {
        Self {
            kind: Kind::Marking,
            start,
            end: start + len,
            label: Some(label),
            unrecognized,
        }
    }
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

/// The search state of the inspector's three regexes, taken once per text.
#[derive(Debug)]
pub(crate) struct Caches {
    main: regex_automata::meta::Cache,
    heading: regex_automata::meta::Cache,
    lower_portion: regex_automata::meta::Cache,
    reverse: regex_automata::hybrid::dfa::Cache,
}

type CachePool = Pool<Caches, Box<dyn Fn() -> Caches + Send + Sync + RefUnwindSafe + UnwindSafe>>;

/// Finds markings of one scheme and personal data. Build once, share; `inspect` takes `&self`.
#[derive(Debug)]
pub struct Inspector {
    scheme: Scheme,
    regex: Regex,
    /// Search caches for `regex`, `heading` and `lower_portion`, taken from the pool once per
    /// text rather than by each of its hundreds of searches.
    caches: CachePool,
    /// `regex`'s patterns reversed, to find where a candidate starts by reading back from its
    /// end with only the pattern that matched (see [`Inspector::candidate`]).
    reverse: regex_automata::hybrid::dfa::DFA,
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

impl Inspector {
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Every marking and personal-data item in `text`, in order, not overlapping, as byte ranges
    /// of `text`. Inspection reads the normalised view of `text` (see [`crate::normalize`]).
    pub fn inspect(&self, text: &str) -> Vec<Finding> {
        let view = View::new(text);
        let mut caches = self.caches.get();
        let mut found = self.inspect_view(view.as_str(), &mut caches);
        for f in &mut found {
            f.start = view.start_in_original(f.start);
            f.end = view.end_in_original(f.end);
        }
        found
    }

    fn inspect_view(&self, text: &str, caches: &mut Caches) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut sides = self.side_places(text).into_iter().peekable();
        let mut at = 0;
        // The candidate a heading came before, kept: searching again from after the heading
        // would find it again (the search is leftmost from where it starts), and scan the text
        // between twice.
        let mut ahead: Option<regex_automata::Match> = None;
        while at < text.len() {
            let found = match ahead.take() {
                Some(m) if m.start() >= at => Some(m),
                _ => self.candidate(text, at, caches),
            };
            // A side marking that starts where or before the next candidate does wins (it stands
            // first in priority); one inside a finding already made is passed. Places are read
            // only here, in order, so a place the scan's findings cover is never read.
            let mut side = None;
            loop {
                while sides.next_if(|s| s.start < at).is_some() {}
                let Some(place) = sides.next_if(|s| found.is_none_or(|m| s.start <= m.start()))
                else {
                    break;
                };
                side = self.read_side(text, place, caches);
                if side.is_some() {
                    break;
                }
            }
            if let Some(h) = side {
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
                    if let Some(f) = self.retry_later(pattern, text, m.start(), caches) {
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

    /// The leftmost candidate at or after `at`. The forward scan gives its end and pattern;
    /// its start is read back from the end with that pattern alone. (The regex's own reverse
    /// pass runs every pattern back, and one that can span runs of capitals, digits and
    /// punctuation, like a banner's, kept it reading far past the start: a tenth of the time.)
    /// The leftmost match's pattern matches from no earlier start, so the two agree.
    fn candidate(
        &self,
        text: &str,
        at: usize,
        caches: &mut Caches,
    ) -> Option<regex_automata::Match> {
        let input = Input::new(text).range(at..);
        let end = self.regex.search_half_with(&mut caches.main, &input)?;
        let back = Input::new(text)
            .range(at..end.offset())
            .anchored(Anchored::Pattern(end.pattern()));
        match self.reverse.try_search_rev(&mut caches.reverse, &back) {
            Ok(Some(start)) => Some(regex_automata::Match::new(
                end.pattern(),
                start.offset()..end.offset(),
            )),
            // The lazy DFA gave up (or disagreed): the regex's own search decides.
            _ => self.regex.search_with(&mut caches.main, &input),
        }
    }

    fn retry_later(
        &self,
        failed: Pattern,
        text: &str,
        start: usize,
        caches: &mut Caches,
    ) -> Option<Finding> {
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
            if let Some(m) = self.regex.search_with(&mut caches.main, &input)
                && let Some(f) = self.confirm(*p, text, start, m.start(), m.end())
            {
                return Some(f);
            }
        }
        None
    }
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
