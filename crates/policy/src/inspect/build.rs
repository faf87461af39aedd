//! Building the inspector: the scheme's words made into patterns, the one automaton, the side
//! patterns and the tables that say where each pattern can start.

use enclave_label::Scheme;
use regex_automata::meta::Regex;
use regex_automata::util::pool::Pool;
use regex_automata::util::syntax;
use regex_automata::{Anchored, MatchKind};

use super::confirm::{CONTACT_WORDS, PHONE_WORDS};
use super::{BuildError, CachePool, Caches, Inspector, PATTERNS, Pattern};
use crate::checks::{DOCUMENT_WORDS, Words};

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
        let reverse = regex_automata::hybrid::dfa::DFA::builder()
            .configure(
                regex_automata::hybrid::dfa::DFA::config()
                    .match_kind(MatchKind::All)
                    .starts_for_each_pattern(true)
                    .cache_capacity(8 << 20),
            )
            .syntax(syntax::Config::new().unicode(true))
            .thompson(regex_automata::nfa::thompson::Config::new().reverse(true))
            .build_many(&sources)
            .map_err(|e| BuildError(e.to_string()))?;
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
        let caches: CachePool = {
            let (main, heading, lower) = (regex.clone(), heading.clone(), lower_portion.clone());
            let back = reverse.clone();
            Pool::new(Box::new(move || Caches {
                reverse: back.create_cache(),
                main: main.create_cache(),
                heading: heading.create_cache(),
                lower_portion: lower.create_cache(),
            }))
        };
        Ok(Self {
            reverse,
            caches,
            scheme,
            regex,
            heading,
            heading_first,
            phone_words: Words::new(&PHONE_WORDS).map_err(|e| BuildError(e.to_string()))?,
            contact_words: Words::new(&CONTACT_WORDS).map_err(|e| BuildError(e.to_string()))?,
            document_words: Words::new(&DOCUMENT_WORDS).map_err(|e| BuildError(e.to_string()))?,
            lower_portion,
            level_words,
            active,
            first_bytes,
        })
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
