//! Marking schemes: the grammar of banner and portion markings, and the order of levels.
//!
//! Every scheme, built in or defined by an operator, is data ([`SchemeDef`]) run by one parser and
//! one printer, so a nation that brings its own markings gets the same guarantees: parsing is
//! total, printing is canonical, and `parse(print(l)) == l`.
//!
//! The grammar, with `//` between segments and `/` between items of a segment:
//!
//! ```text
//! marking  := banner | "(" banner ")"            a portion mark is a banner in parentheses
//! banner   := level [suffix] ("//" item ("/" item)*)*
//! item     := compartment | caveat | noforn | "REL TO " code ("," code)* | "REL TO NONE"
//! ```
//!
//! Words match case-insensitively with runs of white space as one space; a level, compartment or
//! caveat may be written by its name, its portion abbreviation or any alias.

use std::collections::{BTreeSet, HashMap};

use rustc_hash::FxHashMap;
use std::fmt;

use crate::{Label, Level, Releasability};

mod def;
mod print;
mod read;

pub use def::{CaveatDef, HandlingDef, LevelDef, Reading, SchemeDef, UmbrellaDef};

/// A scheme definition that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("scheme `{0}` has no levels")]
    NoLevels(String),
    #[error("scheme `{0}` has more than 255 levels")]
    TooManyLevels(String),
    #[error("scheme `{scheme}`: `{word}` names two things ({first} and {second})")]
    Ambiguous {
        scheme: String,
        word: String,
        first: String,
        second: String,
    },
    #[error("scheme `{scheme}`: `{word}` cannot be a marking word: {why}")]
    BadWord {
        scheme: String,
        word: String,
        why: &'static str,
    },
    #[error("scheme `{scheme}`: owner `{owner}` is not a code of 2 to 4 capital letters")]
    BadOwner { scheme: String, owner: String },
    #[error("scheme `{scheme}`: level `{level}` has colour `{colour}`; a colour is `#rrggbb`")]
    BadColour {
        scheme: String,
        level: String,
        colour: String,
    },
}

/// Where parsing failed and what it expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    /// 1-based character column in the input.
    pub column: usize,
    pub expected: String,
    /// What was there, quoted, or `end of input`.
    pub found: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Compartment(usize),
    Caveat(usize),
    Noforn,
    /// A handling control, with the level it implies at least.
    Handling(Option<u8>),
    /// An index into `Scheme::umbrellas`.
    Umbrella(usize),
}

/// A compiled scheme: parses and prints markings.
#[derive(Debug, Clone)]
pub struct Scheme {
    def: SchemeDef,
    /// Normalised level words, longest first, so `TOP SECRET` wins over a shorter prefix.
    levels: Vec<(String, u8)>,
    /// Fx-hashed: the keys are the scheme's own words, and inspection looks up every item of
    /// every candidate marking (SipHash was a twentieth of inspection's time).
    items: FxHashMap<String, Item>,
    /// The compartments each umbrella word stands for.
    umbrellas: Vec<BTreeSet<String>>,
    /// Level words and suffixes [`squash`]ed, longest first, for [`Scheme::level_of_word`].
    squashed_levels: Vec<(String, u8)>,
    squashed_suffixes: Vec<String>,
    suffixes: Vec<String>,
    countries: BTreeSet<String>,
    /// Letters in the longest item word the scheme knows, for [`Scheme::may_be_item`].
    longest_item: usize,
}

/// Letters and digits only, upper case: how [`Scheme::level_of_word`] compares.
fn squash(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    squash_into(s, &mut out);
    out
}

/// [`squash`] into `out`, which is cleared first: inspection reads thousands of candidate words
/// and reuses one buffer for them.
pub(crate) fn squash_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        // The common case, without the per-character Unicode case tables.
        out.extend(
            s.bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| char::from(b.to_ascii_uppercase())),
        );
        return;
    }
    out.extend(
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_uppercase),
    );
}

/// Upper case, runs of white space as one space, trimmed.
pub(crate) fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    normalize_into(s, &mut out);
    out
}

/// [`normalize`] into `out`, which is cleared first.
pub(crate) fn normalize_into(s: &str, out: &mut String) {
    out.clear();
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        if word.is_ascii() {
            let from = out.len();
            out.push_str(word);
            out[from..].make_ascii_uppercase();
        } else {
            out.extend(word.chars().flat_map(char::to_uppercase));
        }
    }
}

fn is_code(s: &str) -> bool {
    (2..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl Scheme {
    /// Compiles a definition, refusing one whose words are empty, reserved or ambiguous.
    pub fn new(def: SchemeDef) -> Result<Self, SchemeError> {
        let scheme = def.name.clone();
        if def.levels.is_empty() {
            return Err(SchemeError::NoLevels(scheme));
        }
        if def.levels.len() > 255 {
            return Err(SchemeError::TooManyLevels(scheme));
        }
        if !is_code(&def.owner) {
            return Err(SchemeError::BadOwner {
                scheme,
                owner: def.owner.clone(),
            });
        }
        for level in &def.levels {
            let colours = [
                &level.colour,
                &level.text_colour,
                &level.compartmented_colour,
            ];
            if let Some(bad) = colours.into_iter().flatten().find(|c| {
                c.len() != 7
                    || !c.starts_with('#')
                    || !c[1..].bytes().all(|b| b.is_ascii_hexdigit())
            }) {
                return Err(SchemeError::BadColour {
                    scheme: def.name.clone(),
                    level: level.name.clone(),
                    colour: bad.clone(),
                });
            }
        }
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut claim = |word: &str, what: String, in_level: bool| -> Result<String, SchemeError> {
            let norm = normalize(word);
            let bad = |why| SchemeError::BadWord {
                scheme: def.name.clone(),
                word: word.to_string(),
                why,
            };
            if norm.is_empty() {
                return Err(bad("it is empty"));
            }
            if norm.contains("//") || norm.contains('(') || norm.contains(')') {
                return Err(bad("it contains `//` or a parenthesis"));
            }
            if !in_level && (norm.contains('/') || norm.contains(',')) {
                return Err(bad("compartments and caveats cannot contain `/` or `,`"));
            }
            if norm.starts_with("REL TO") {
                return Err(bad("`REL TO` is reserved for releasability"));
            }
            if let Some(first) = seen.insert(norm.clone(), what.clone())
                && first != what
            {
                return Err(SchemeError::Ambiguous {
                    scheme: def.name.clone(),
                    word: word.to_string(),
                    first,
                    second: what,
                });
            }
            Ok(norm)
        };
        let mut levels = Vec::new();
        for (i, l) in def.levels.iter().enumerate() {
            let what = format!("level `{}`", l.name);
            for word in [&l.name, &l.portion].into_iter().chain(&l.aliases) {
                let norm = claim(word, what.clone(), true)?;
                #[allow(clippy::cast_possible_truncation, reason = "at most 255 levels")]
                levels.push((norm, i as u8));
            }
        }
        let mut items = FxHashMap::default();
        let groups = [(&def.compartments, "compartment"), (&def.caveats, "caveat")];
        for (defs, kind) in groups {
            for (i, c) in defs.iter().enumerate() {
                let what = format!("{kind} `{}`", c.name);
                let item = if kind == "compartment" {
                    Item::Compartment(i)
                } else {
                    Item::Caveat(i)
                };
                for word in [&c.name, c.portion()]
                    .into_iter()
                    .chain(c.aliases.iter().map(String::as_str))
                {
                    items.insert(claim(word, what.clone(), false)?, item);
                }
            }
        }
        if let Some(n) = &def.noforn {
            let what = format!("`{}`", n.name);
            for word in [&n.name, n.portion()]
                .into_iter()
                .chain(n.aliases.iter().map(String::as_str))
            {
                items.insert(claim(word, what.clone(), false)?, Item::Noforn);
            }
        }
        levels.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        levels.dedup();
        for h in &def.handling {
            let what = format!("handling control `{}`", h.name);
            let floor = match &h.floor {
                None => None,
                Some(word) => {
                    let norm = normalize(word);
                    let found = levels.iter().find(|(w, _)| *w == norm).map(|(_, l)| *l);
                    Some(found.ok_or_else(|| SchemeError::BadWord {
                        scheme: def.name.clone(),
                        word: word.clone(),
                        why: "a handling control's `floor` must be a level of the scheme",
                    })?)
                }
            };
            for word in std::iter::once(&h.name).chain(&h.aliases) {
                items.insert(claim(word, what.clone(), false)?, Item::Handling(floor));
            }
        }
        let mut umbrellas = Vec::new();
        for u in &def.umbrellas {
            let what = format!("umbrella `{}`", u.name);
            let mut names = BTreeSet::new();
            for c in &u.compartments {
                let known = def
                    .compartments
                    .iter()
                    .chain(&def.caveats)
                    .find(|d| normalize(&d.name) == normalize(c));
                let Some(d) = known else {
                    return Err(SchemeError::BadWord {
                        scheme: def.name.clone(),
                        word: c.clone(),
                        why: "an umbrella may name only compartments and caveats of the scheme",
                    });
                };
                names.insert(d.name.clone());
            }
            for word in std::iter::once(&u.name).chain(&u.aliases) {
                items.insert(
                    claim(word, what.clone(), false)?,
                    Item::Umbrella(umbrellas.len()),
                );
            }
            umbrellas.push(names);
        }
        let suffixes = def.suffixes.iter().map(|s| normalize(s)).collect();
        let countries = def.countries.iter().map(|c| normalize(c)).collect();
        let mut squashed_levels: Vec<(String, u8)> =
            levels.iter().map(|(w, l)| (squash(w), *l)).collect();
        squashed_levels.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        squashed_levels.dedup();
        let squashed_suffixes = def.suffixes.iter().map(|s| squash(s)).collect();
        let longest_item = items
            .keys()
            .map(|k| k.chars().filter(|c| !c.is_whitespace()).count())
            .max()
            .unwrap_or(0);
        Ok(Self {
            def,
            levels,
            items,
            umbrellas,
            squashed_levels,
            squashed_suffixes,
            suffixes,
            countries,
            longest_item,
        })
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn owner(&self) -> &str {
        &self.def.owner
    }

    pub fn def(&self) -> &SchemeDef {
        &self.def
    }

    /// Every word that can begin a marking: level names, portions and aliases.
    pub fn level_words(&self) -> impl Iterator<Item = &str> {
        self.def
            .levels
            .iter()
            .flat_map(|l| [&l.name, &l.portion].into_iter().chain(&l.aliases))
            .map(String::as_str)
    }

    /// The least sensitive label: the lowest level, nothing else.
    pub fn lowest(&self) -> Label {
        Label::level(0)
    }

    /// The most sensitive label the owner's own systems handle: the top level, every compartment
    /// and caveat, releasable to the owner.
    pub fn system_high(&self) -> Label {
        #[allow(clippy::cast_possible_truncation, reason = "at most 255 levels")]
        let top = (self.def.levels.len() - 1) as u8;
        Label {
            level: Level(top),
            compartments: self
                .def
                .compartments
                .iter()
                .chain(&self.def.caveats)
                .map(|c| c.name.clone())
                .collect(),
            releasability: Releasability::To(BTreeSet::from([self.def.owner.clone()])),
        }
    }

    /// A label as a clearance: one with no releasability takes the owner nation.
    pub fn clearance(&self, mut label: Label) -> Label {
        if label.releasability == Releasability::Unrestricted {
            label.releasability = Releasability::To(BTreeSet::from([self.def.owner.clone()]));
        }
        label
    }

    /// The banner or portion name of a level.
    pub fn level_name(&self, level: Level, portion: bool) -> String {
        match self.def.levels.get(usize::from(level.0)) {
            Some(l) if portion => l.portion.clone(),
            Some(l) => l.name.clone(),
            None => format!("LEVEL {}", level.0),
        }
    }

    /// Parses a banner (`SECRET//SI//NOFORN`) or portion mark (`(S//SI//NF)`).
    pub fn parse(&self, input: &str) -> Result<Label, ParseError> {
        let start = input.len() - input.trim_start().len();
        let body = input.trim();
        if let Some(inner) = body.strip_prefix('(') {
            let Some(inner) = inner.strip_suffix(')') else {
                return Err(error(input, input.trim_end().len(), "`)`", None));
            };
            return self.parse_body(input, start + 1, inner);
        }
        self.parse_body(input, start, body)
    }

    fn parse_body(&self, input: &str, base: usize, body: &str) -> Result<Label, ParseError> {
        let mut segments = split(body, "//", base);
        let Some((at, first)) = segments.next() else {
            return Err(error(input, base, "a level", None));
        };
        let level = self.parse_level(input, at, first)?;
        let mut label = Label::level(level);
        for (at, segment) in segments {
            for (at, item) in split(segment, "/", at) {
                self.parse_item(input, at, item, &mut label)?;
            }
        }
        Ok(label)
    }

    fn parse_level(&self, input: &str, at: usize, text: &str) -> Result<u8, ParseError> {
        let at = at + (text.len() - text.trim_start().len());
        let norm = normalize(text);
        for (word, level) in &self.levels {
            if norm == *word {
                return Ok(*level);
            }
            let Some(rest) = norm.strip_prefix(word.as_str()) else {
                continue;
            };
            if !rest.starts_with([' ', '-', '\u{2013}', '\u{2014}', ',']) {
                continue;
            }
            let rest = rest.trim_start_matches([' ', '-', '\u{2013}', '\u{2014}', ',']);
            if self.suffixes.iter().any(|s| s == rest) {
                return Ok(*level);
            }
            let expected = if self.suffixes.is_empty() {
                "`//` or the end of the marking".to_string()
            } else {
                format!(
                    "`//`, the end of the marking, or {}",
                    quoted(&self.def.suffixes)
                )
            };
            return Err(error(input, at, &expected, Some(text.trim())));
        }
        let words: Vec<&str> = self.def.levels.iter().map(|l| l.name.as_str()).collect();
        Err(error(
            input,
            at,
            &format!("a {} level ({})", self.def.name, quoted(&words)),
            Some(text.trim()).filter(|t| !t.is_empty()),
        ))
    }

    /// Applies an item the scheme knows to `label`.
    fn apply_known(&self, item: Item, label: &mut Label) {
        match item {
            Item::Compartment(i) => {
                if let Some(c) = self.def.compartments.get(i) {
                    label.compartments.insert(c.name.clone());
                }
            }
            Item::Caveat(i) => {
                if let Some(c) = self.def.caveats.get(i) {
                    label.compartments.insert(c.name.clone());
                }
            }
            Item::Noforn => {
                let owner = Releasability::To(BTreeSet::from([self.def.owner.clone()]));
                label.releasability = label.releasability.intersect(&owner);
            }
            Item::Handling(floor) => {
                if let Some(f) = floor {
                    label.level = label.level.max(Level(f));
                }
            }
            Item::Umbrella(i) => {
                if let Some(names) = self.umbrellas.get(i) {
                    label.compartments.extend(names.iter().cloned());
                }
            }
        }
    }

    fn parse_item(
        &self,
        input: &str,
        at: usize,
        text: &str,
        label: &mut Label,
    ) -> Result<(), ParseError> {
        let at = at + (text.len() - text.trim_start().len());
        let norm = normalize(text);
        if let Some(list) = norm.strip_prefix("REL TO ") {
            let set = self.parse_countries(input, at + 7, list)?;
            label.releasability = label.releasability.intersect(&Releasability::To(set));
            return Ok(());
        }
        match self.items.get(&norm) {
            Some(item) => self.apply_known(*item, label),
            None => {
                let mut words: Vec<&str> = self
                    .def
                    .compartments
                    .iter()
                    .chain(&self.def.caveats)
                    .chain(&self.def.noforn)
                    .map(|c| c.name.as_str())
                    .collect();
                words.push("REL TO ...");
                let found = if text.trim().is_empty() {
                    None
                } else {
                    Some(text.trim())
                };
                return Err(error(
                    input,
                    at,
                    &format!(
                        "a compartment, caveat or releasability ({})",
                        quoted(&words)
                    ),
                    found,
                ));
            }
        }
        Ok(())
    }

    fn parse_countries(
        &self,
        input: &str,
        at: usize,
        list: &str,
    ) -> Result<BTreeSet<String>, ParseError> {
        if list == "NONE" {
            return Ok(BTreeSet::new());
        }
        let mut set = BTreeSet::new();
        // `list` is normalised, so offsets are approximate past multiple spaces; good enough to
        // point at the code.
        for (offset, code) in split(list, ",", 0) {
            let code = code.trim();
            let ok = is_code(code) && (self.countries.is_empty() || self.countries.contains(code));
            if !ok {
                let expected = if self.countries.is_empty() {
                    "a country code of 2 to 4 capital letters".to_string()
                } else {
                    "a country code this scheme knows".to_string()
                };
                let found = (!code.is_empty()).then_some(code);
                return Err(error(input, at + offset, &expected, found));
            }
            set.insert(code.to_string());
        }
        Ok(set)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.def.name)
    }
}

/// `s` split on `sep`, each piece with its byte offset (plus `base`) in the original input.
/// The pieces of `s` between each `sep` (found leftmost first, as `str::split` does), each with
/// its byte offset plus `base`. Markings are short, so a plain byte comparison beats a substring
/// searcher that must be built for every call.
fn split<'a>(
    s: &'a str,
    sep: &'static str,
    base: usize,
) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    let bytes = s.as_bytes();
    let sep = sep.as_bytes();
    let mut next = Some(0);
    std::iter::from_fn(move || {
        let from = next?;
        let found = bytes
            .get(from..)
            .unwrap_or_default()
            .windows(sep.len())
            .position(|w| w == sep)
            .map(|i| from + i);
        let end = found.unwrap_or(bytes.len());
        next = found.map(|i| i + sep.len());
        // `sep` is ASCII, so both ends are character boundaries.
        Some((base + from, s.get(from..end).unwrap_or_default()))
    })
}

fn quoted<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| format!("`{}`", w.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn error(input: &str, byte: usize, expected: &str, found: Option<&str>) -> ParseError {
    let column = input.char_indices().take_while(|(i, _)| *i < byte).count() + 1;
    ParseError {
        column,
        expected: expected.to_string(),
        found: match found {
            Some(f) => format!("`{f}`"),
            None => "end of input".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schemes() -> Vec<Scheme> {
        Scheme::BUILTIN
            .iter()
            .filter_map(|n| Scheme::builtin(n))
            .collect()
    }

    fn us() -> Scheme {
        Scheme::builtin("US").unwrap()
    }

    fn set(codes: &[&str]) -> BTreeSet<String> {
        codes.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn builtins_compile() {
        assert_eq!(schemes().len(), Scheme::BUILTIN.len());
    }

    #[test]
    fn us_banners_and_portions() {
        let us = us();
        let l = us.parse("TOP SECRET//SI/TK//REL TO USA, GBR").unwrap();
        assert_eq!(l.level, Level(4));
        assert_eq!(l.compartments, set(&["SI", "TK"]));
        assert_eq!(l.releasability, Releasability::To(set(&["USA", "GBR"])));
        let p = us.parse("(TS//SI//REL TO USA, AUS)").unwrap();
        assert_eq!(us.portion(&p), "(TS//SI//REL TO USA, AUS)");
        assert_eq!(us.banner(&p), "TOP SECRET//SI//REL TO USA, AUS");
        let nf = us.parse("(S//NF)").unwrap();
        assert_eq!(us.banner(&nf), "SECRET//NOFORN");
        assert_eq!(nf, us.parse("secret // noforn").unwrap());
        assert_eq!(us.parse("(U)").unwrap(), Label::level(0));
        assert_eq!(us.parse("(CUI)").unwrap(), Label::level(1));
        assert_eq!(
            us.banner(&us.parse("S//SI-G//ORCON/NF").unwrap()),
            "SECRET//SI-G//ORCON/NOFORN"
        );
        // Releasability lists print with the owner first, then in order.
        let r = us.parse("S//REL TO GBR, USA, AUS").unwrap();
        assert_eq!(us.banner(&r), "SECRET//REL TO USA, AUS, GBR");
    }

    #[test]
    fn releasability_narrows_and_noforn_is_the_owner() {
        let us = us();
        let a = us.parse("S//REL TO USA, GBR").unwrap();
        let b = us.parse("S//REL TO USA, AUS").unwrap();
        assert_eq!(us.banner(&a.join(&b)), "SECRET//NOFORN");
        let gbr = us.parse("S//REL TO GBR").unwrap();
        let aus = us.parse("S//REL TO AUS").unwrap();
        assert_eq!(us.banner(&gbr.join(&aus)), "SECRET//REL TO NONE");
        assert_eq!(us.parse("SECRET//REL TO NONE").unwrap(), gbr.join(&aus));
        // A US reader reads NOFORN; a British one reads REL TO USA, GBR but not NOFORN.
        let us_reader = us.clearance(us.parse("TS").unwrap());
        let uk_reader = us.parse("TS//REL TO GBR").unwrap();
        let noforn = us.parse("S//NF").unwrap();
        assert!(us_reader.dominates(&noforn) && us_reader.dominates(&a));
        assert!(uk_reader.dominates(&a) && !uk_reader.dominates(&noforn));
    }

    #[test]
    fn german_levels_and_the_phrase() {
        let de = Scheme::builtin("DE").unwrap();
        let nfd = de.parse("VS-NfD").unwrap();
        assert_eq!(de.banner(&nfd), "VS-NUR FÜR DEN DIENSTGEBRAUCH");
        assert_eq!(de.parse("VS-Nur für den Dienstgebrauch").unwrap(), nfd);
        assert_eq!(de.portion(&nfd), "(VS-NfD)");
        assert_eq!(
            de.parse("GEHEIM – amtlich geheim gehalten").unwrap(),
            Label::level(3)
        );
        assert_eq!(de.parse("VS-Vertr.").unwrap(), Label::level(2));
        assert_eq!(de.parse("Str. Geh.").unwrap(), Label::level(4));
        assert_eq!(de.parse("(Geh.)").unwrap(), Label::level(3));
        let err = de.parse("GEHEIM streng").unwrap_err();
        assert_eq!(err.column, 1);
        assert!(err.expected.contains("amtlich geheim gehalten"), "{err}");
    }

    #[test]
    fn nato_and_eu_levels() {
        let nato = Scheme::builtin("NATO").unwrap();
        assert_eq!(
            nato.parse("COSMIC TOP SECRET//ATOMAL").unwrap().level,
            Level(4)
        );
        assert_eq!(nato.banner(&nato.parse("(NR)").unwrap()), "NATO RESTRICTED");
        let eu = Scheme::builtin("EU").unwrap();
        assert_eq!(
            eu.parse("RESTREINT UE/EU RESTRICTED").unwrap().level,
            Level(1)
        );
        assert_eq!(
            eu.parse("TRÈS SECRET UE/EU TOP SECRET").unwrap().level,
            Level(4)
        );
        assert_eq!(
            eu.banner(&eu.parse("EU SECRET").unwrap()),
            "SECRET UE/EU SECRET"
        );
        assert_eq!(eu.portion(&eu.parse("SECRET UE").unwrap()), "(S-UE)");
    }

    #[test]
    fn errors_say_where_and_what() {
        let us = us();
        let e = us.parse("SECRET//XYZ").unwrap_err();
        assert_eq!((e.column, e.found.as_str()), (9, "`XYZ`"));
        assert!(e.expected.contains("NOFORN"), "{e}");
        let e = us.parse("SEKRET").unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.expected.contains("TOP SECRET"), "{e}");
        let e = us.parse("(S//NF").unwrap_err();
        assert_eq!(e.expected, "`)`");
        let e = us.parse("").unwrap_err();
        assert_eq!(e.found, "end of input");
        let e = us.parse("S//REL TO USA, g1").unwrap_err();
        assert_eq!(e.found, "`G1`");
        let e = us.parse("S//").unwrap_err();
        assert_eq!((e.column, e.found.as_str()), (4, "end of input"));
    }

    #[test]
    fn operator_schemes_are_checked() {
        let mut def = Scheme::builtin("US").unwrap().def().clone();
        def.caveats.push(CaveatDef::new("SI", None, &[]));
        assert!(matches!(
            Scheme::new(def),
            Err(SchemeError::Ambiguous { .. })
        ));
        let mut def = Scheme::builtin("US").unwrap().def().clone();
        def.levels.clear();
        assert!(matches!(Scheme::new(def), Err(SchemeError::NoLevels(_))));
        let mut def = Scheme::builtin("US").unwrap().def().clone();
        def.compartments.push(CaveatDef::new("A/B", None, &[]));
        assert!(matches!(Scheme::new(def), Err(SchemeError::BadWord { .. })));
    }

    /// Labels a scheme can express: any level, any subset of its words, releasability among a few
    /// codes that always include some the scheme's owner does not own.
    fn label_in(scheme: &Scheme) -> impl Strategy<Value = Label> + use<> {
        let words: Vec<String> = scheme
            .def
            .compartments
            .iter()
            .chain(&scheme.def.caveats)
            .map(|c| c.name.clone())
            .collect();
        let n = scheme.def.levels.len();
        let codes = vec![
            scheme.owner().to_string(),
            "GBR".into(),
            "AUS".into(),
            "FRA".into(),
        ];
        let rel = prop_oneof![
            Just(Releasability::Unrestricted),
            proptest::sample::subsequence(codes.clone(), 0..=codes.len())
                .prop_map(|c| Releasability::To(c.into_iter().collect())),
        ];
        let comps = proptest::sample::subsequence(words.clone(), 0..=words.len());
        (0..n, comps, rel).prop_map(|(l, c, r)| Label {
            level: Level(u8::try_from(l).unwrap()),
            compartments: c.into_iter().collect(),
            releasability: r,
        })
    }

    fn scheme_and_labels() -> impl Strategy<Value = (Scheme, Label, Label, Label)> {
        (0..Scheme::BUILTIN.len()).prop_flat_map(|i| {
            let s = Scheme::builtin(Scheme::BUILTIN[i]).unwrap();
            (Just(s.clone()), label_in(&s), label_in(&s), label_in(&s))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn print_then_parse_round_trips((s, a, _, _) in scheme_and_labels()) {
            prop_assert_eq!(s.parse(&s.banner(&a)).unwrap(), a.clone());
            prop_assert_eq!(s.parse(&s.portion(&a)).unwrap(), a.clone());
            prop_assert_eq!(s.parse(&s.banner(&a).to_lowercase()).unwrap(), a);
        }

        #[test]
        fn lattice_laws_hold_in_every_scheme((_s, a, b, c) in scheme_and_labels()) {
            prop_assert!(a.dominates(&a));
            if a.dominates(&b) && b.dominates(&a) { prop_assert_eq!(&a, &b); }
            if a.dominates(&b) && b.dominates(&c) { prop_assert!(a.dominates(&c)); }
            let j = a.join(&b);
            prop_assert!(j.dominates(&a) && j.dominates(&b));
            prop_assert_eq!(&j, &b.join(&a));
            prop_assert_eq!(a.join(&a), a.clone());
            prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
            if c.dominates(&a) && c.dominates(&b) { prop_assert!(c.dominates(&j)); }
        }

        #[test]
        fn parsing_is_total(input in "\\PC{0,40}", i in 0..Scheme::BUILTIN.len()) {
            let s = Scheme::builtin(Scheme::BUILTIN[i]).unwrap();
            if let Ok(l) = s.parse(&input) {
                prop_assert_eq!(s.parse(&s.banner(&l)).unwrap(), l);
            }
        }

        /// `may_be_item` may only answer `false` where a reading reports the item unrecognized:
        /// it is the shortcut the inspector takes past prose, and a wrong `false` would drop a
        /// marking it can read.
        #[test]
        fn may_be_item_never_refuses_a_readable_item(
            parts in proptest::collection::vec(prop_oneof![
                Just("NF"), Just("noforn"), Just("SI"), Just("REL TO "), Just("rel  to "), Just("USA"),
                Just(", "), Just("GBR"), Just(" "), Just("ORCON"), Just("x"), Just("ẞ"), Just("ß"),
                Just("NUR FÜR DEN DIENSTGEBRAUCH"), Just("LIMDIS"), Just("ı"),
            ], 1..6),
            i in 0..Scheme::BUILTIN.len(),
        ) {
            let s = Scheme::builtin(Scheme::BUILTIN[i]).unwrap();
            let item: String = parts.concat();
            let level = &s.def().levels[0].name;
            let reading = s.read_marking(&format!("{level}//{item}")).unwrap();
            if reading.unrecognized.is_empty() {
                prop_assert!(s.may_be_item(&item), "{item:?} reads but may_be_item refused it");
            }
        }

        #[test]
        fn parsing_near_markings_is_total(
            parts in proptest::collection::vec(prop_oneof![
                Just("S"), Just("TS"), Just("//"), Just("/"), Just("("), Just(")"), Just("REL TO "),
                Just("USA"), Just(", "), Just("NF"), Just("SI"), Just(" "), Just("ü"), Just("GEHEIM"),
            ], 0..10),
            i in 0..Scheme::BUILTIN.len(),
        ) {
            let s = Scheme::builtin(Scheme::BUILTIN[i]).unwrap();
            let input: String = parts.concat();
            match s.parse(&input) {
                Ok(l) => prop_assert_eq!(s.parse(&s.banner(&l)).unwrap(), l),
                Err(e) => prop_assert!(e.column >= 1 && e.column <= input.chars().count() + 1),
            }
        }
    }
}
