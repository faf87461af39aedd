//! Schemes as operators write them in configuration: plain data, checked by `Scheme::new`.

use serde::{Deserialize, Serialize};

use crate::Label;

/// A scheme as written in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeDef {
    /// Short name, such as `US` or `DE`.
    pub name: String,
    /// The nation or organisation that owns the markings: a clearance given without
    /// releasability carries it, and `NOFORN` means releasable to it alone.
    pub owner: String,
    /// Levels from least to most sensitive.
    pub levels: Vec<LevelDef>,
    /// Compartments (SCI control systems and the like), printed in their own segment.
    #[serde(default)]
    pub compartments: Vec<CaveatDef>,
    /// Dissemination caveats that restrict readers (such as `ORCON`), printed with releasability.
    #[serde(default)]
    pub caveats: Vec<CaveatDef>,
    /// The marking that means "releasable to the owner only", if the scheme has one.
    #[serde(default)]
    pub noforn: Option<CaveatDef>,
    /// Phrases accepted after a level and dropped, such as `amtlich geheim gehalten`.
    #[serde(default)]
    pub suffixes: Vec<String>,
    /// Codes `REL TO` accepts; empty accepts any code of 2 to 4 capital letters.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Controls recognised for what they are that restrict no reader beyond a level: handling
    /// markings such as the legacy `FOUO`. Each may name a level it implies at least. They are
    /// not part of the label and are not printed.
    #[serde(default)]
    pub handling: Vec<HandlingDef>,
    /// Words that stand for several compartments, such as `SCI` for the SCI control systems. A
    /// marking carrying one carries every compartment it names: a reader must hold them all,
    /// because the marking does not say which one applies.
    #[serde(default)]
    pub umbrellas: Vec<UmbrellaDef>,
}

/// A handling control: recognised, restricts no reader, may imply a minimum level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlingDef {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A level word: content carrying this control is at least this level.
    #[serde(default)]
    pub floor: Option<String>,
}

/// An umbrella word and the compartments it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UmbrellaDef {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Names of compartments or caveats of this scheme.
    pub compartments: Vec<String>,
}

/// A marking read as far as the scheme knows it ([`Scheme::read_marking`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The level named, raised by every item the scheme knows.
    pub label: Label,
    /// Items the scheme does not know, as written: each must be refused or mapped by the
    /// operator, never ignored.
    pub unrecognized: Vec<String>,
    /// Whether the level segment is exactly a level word (else a level word and more).
    pub exact: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelDef {
    /// The banner form, such as `TOP SECRET`.
    pub name: String,
    /// The portion form, such as `TS`.
    pub portion: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The banner's background as `#rrggbb`; a level without one takes a colour by its rank.
    #[serde(default)]
    pub colour: Option<String>,
    /// The banner's text colour as `#rrggbb`; white when not given.
    #[serde(default)]
    pub text_colour: Option<String>,
    /// The background when the label also carries compartments (US: TOP SECRET//SCI, yellow).
    #[serde(default)]
    pub compartmented_colour: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaveatDef {
    /// The banner form, such as `NOFORN`.
    pub name: String,
    /// The portion form, such as `NF`; the name when absent.
    #[serde(default)]
    pub portion: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl CaveatDef {
    pub(crate) fn new(name: &str, portion: Option<&str>, aliases: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            portion: portion.map(str::to_string),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub(crate) fn portion(&self) -> &str {
        self.portion.as_deref().unwrap_or(&self.name)
    }
}
