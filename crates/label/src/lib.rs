//! Classification labels and their lattice: the reference monitor's arithmetic.
//!
//! A [`Label`] is a hierarchical level, a set of compartments and caveats, and a releasability
//! set. [`Label::dominates`] is the partial order ("may read"), [`Label::join`] the least upper
//! bound (the high-water mark of several inputs). A [`Scheme`] is the grammar and ordering of one
//! marking system (US CAPCO-style, German VS, NATO, EU, or one an operator defines): it parses
//! banner and portion markings into labels and prints labels back in canonical form.
//!
//! Pure: no I/O, no configuration files, no clock. It must never decide anything but lattice
//! questions, and parsing must never panic: every input yields a label or a [`ParseError`].

mod builtin;
mod scheme;

use std::collections::BTreeSet;
use std::fmt;

pub use scheme::{
    CaveatDef, HandlingDef, LevelDef, ParseError, Reading, Scheme, SchemeDef, SchemeError,
    UmbrellaDef,
};

/// A position in a scheme's ordered list of levels; higher is more sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(pub u8);

/// Who a label may be released to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Releasability {
    /// No releasability marking: anyone cleared for the level and compartments.
    Unrestricted,
    /// Only these nations or organisations (trigraphs, tetragraphs). `NOFORN` is the owner nation
    /// alone.
    To(BTreeSet<String>),
}

impl Releasability {
    /// Whether `self` allows at most what `other` allows (is at least as restrictive).
    fn narrower_or_equal(&self, other: &Releasability) -> bool {
        match (self, other) {
            (_, Releasability::Unrestricted) => true,
            (Releasability::Unrestricted, Releasability::To(_)) => false,
            (Releasability::To(a), Releasability::To(b)) => a.is_subset(b),
        }
    }

    /// The most permissive releasability no wider than either.
    fn intersect(&self, other: &Releasability) -> Releasability {
        match (self, other) {
            (Releasability::Unrestricted, r) | (r, Releasability::Unrestricted) => r.clone(),
            (Releasability::To(a), Releasability::To(b)) => {
                Releasability::To(a.intersection(b).cloned().collect())
            }
        }
    }
}

/// A classification label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label {
    pub level: Level,
    /// Compartments and caveats: a reader needs every one.
    pub compartments: BTreeSet<String>,
    pub releasability: Releasability,
}

impl Label {
    /// A label with a level only.
    pub fn level(level: u8) -> Self {
        Self {
            level: Level(level),
            compartments: BTreeSet::new(),
            releasability: Releasability::Unrestricted,
        }
    }

    /// Whether a holder of `self` (as a clearance) may read data labelled `other`: a level at least
    /// as high, every compartment, and a releasability that `other` admits.
    ///
    /// Releasability runs the other way from level: data marked `REL TO USA, GBR` is readable by a
    /// clearance carrying `USA`; so the clearance's set must fit inside the data's.
    pub fn dominates(&self, other: &Label) -> bool {
        self.level >= other.level
            && self.compartments.is_superset(&other.compartments)
            && self.releasability.narrower_or_equal(&other.releasability)
    }

    /// The least upper bound: the lowest label that dominates both.
    pub fn join(&self, other: &Label) -> Label {
        Label {
            level: self.level.max(other.level),
            compartments: self
                .compartments
                .union(&other.compartments)
                .cloned()
                .collect(),
            releasability: self.releasability.intersect(&other.releasability),
        }
    }
}

impl Label {
    /// The greatest lower bound: the highest label both dominate. As a clearance, what a holder
    /// of `self` keeps under a ceiling of `other`: the lower level, the shared compartments, and
    /// the nations of both (a clearance carrying more nations may read less).
    pub fn meet(&self, other: &Label) -> Label {
        let releasability = match (&self.releasability, &other.releasability) {
            (Releasability::Unrestricted, _) | (_, Releasability::Unrestricted) => {
                Releasability::Unrestricted
            }
            (Releasability::To(a), Releasability::To(b)) => {
                Releasability::To(a.union(b).cloned().collect())
            }
        };
        Label {
            level: self.level.min(other.level),
            compartments: self
                .compartments
                .intersection(&other.compartments)
                .cloned()
                .collect(),
            releasability,
        }
    }
}

/// How two labels relate in the lattice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Equal,
    /// The first dominates the second and they differ.
    Dominates,
    /// The second dominates the first and they differ.
    DominatedBy,
    Incomparable,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relation::Equal => "equal",
            Relation::Dominates => "dominates",
            Relation::DominatedBy => "is dominated by",
            Relation::Incomparable => "is incomparable with",
        })
    }
}

/// Why a clearance (or accreditation) does not dominate a label: each part that exceeds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shortfall {
    /// The label's level, when it is above the clearance's.
    pub level: Option<(Level, Level)>,
    /// Compartments and caveats the label has and the clearance lacks.
    pub compartments: BTreeSet<String>,
    /// Nations the clearance carries that the label is not releasable to.
    pub releasability: Option<BTreeSet<String>>,
}

impl Shortfall {
    pub fn is_empty(&self) -> bool {
        self.level.is_none() && self.compartments.is_empty() && self.releasability.is_none()
    }
}

impl Label {
    /// The relation of `self` to `other`.
    pub fn relation(&self, other: &Label) -> Relation {
        match (self.dominates(other), other.dominates(self)) {
            (true, true) => Relation::Equal,
            (true, false) => Relation::Dominates,
            (false, true) => Relation::DominatedBy,
            (false, false) => Relation::Incomparable,
        }
    }

    /// What of `label` a holder of `self` may not read; empty exactly when `self.dominates(label)`.
    pub fn shortfall(&self, label: &Label) -> Shortfall {
        let level = (label.level > self.level).then_some((label.level, self.level));
        let compartments = label
            .compartments
            .difference(&self.compartments)
            .cloned()
            .collect();
        let releasability = match (&self.releasability, &label.releasability) {
            (_, Releasability::Unrestricted) => None,
            (Releasability::Unrestricted, Releasability::To(_)) => Some(BTreeSet::new()),
            (Releasability::To(mine), Releasability::To(theirs)) => {
                let outside: BTreeSet<String> = mine.difference(theirs).cloned().collect();
                (!outside.is_empty()).then_some(outside)
            }
        };
        Shortfall {
            level,
            compartments,
            releasability,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rel(list: &[&str]) -> Releasability {
        Releasability::To(list.iter().map(|s| s.to_string()).collect())
    }

    fn label() -> impl Strategy<Value = Label> {
        let comps =
            proptest::collection::btree_set(prop_oneof![Just("SI"), Just("TK"), Just("HCS")], 0..3);
        let rels = prop_oneof![
            Just(Releasability::Unrestricted),
            proptest::collection::btree_set(
                prop_oneof![Just("USA"), Just("GBR"), Just("AUS"), Just("DEU")],
                0..4
            )
            .prop_map(|s| Releasability::To(s.into_iter().map(String::from).collect())),
        ];
        (0u8..5, comps, rels).prop_map(|(l, c, r)| Label {
            level: Level(l),
            compartments: c.into_iter().map(String::from).collect(),
            releasability: r,
        })
    }

    proptest! {
        #[test]
        fn dominance_is_a_partial_order(a in label(), b in label(), c in label()) {
            prop_assert!(a.dominates(&a));
            if a.dominates(&b) && b.dominates(&a) { prop_assert_eq!(&a, &b); }
            if a.dominates(&b) && b.dominates(&c) { prop_assert!(a.dominates(&c)); }
        }

        #[test]
        fn shortfall_is_empty_exactly_when_dominated(a in label(), b in label()) {
            prop_assert_eq!(a.shortfall(&b).is_empty(), a.dominates(&b));
        }

        #[test]
        fn join_is_the_least_upper_bound(a in label(), b in label(), c in label()) {
            let j = a.join(&b);
            prop_assert!(j.dominates(&a) && j.dominates(&b));
            prop_assert_eq!(&j, &b.join(&a));
            prop_assert_eq!(a.join(&a), a.clone());
            prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
            if c.dominates(&a) && c.dominates(&b) { prop_assert!(c.dominates(&j)); }
        }

        #[test]
        fn meet_is_the_greatest_lower_bound(a in label(), b in label(), c in label()) {
            let m = a.meet(&b);
            prop_assert!(a.dominates(&m) && b.dominates(&m));
            prop_assert_eq!(&m, &b.meet(&a));
            prop_assert_eq!(a.meet(&a), a.clone());
            prop_assert_eq!(a.meet(&b).meet(&c), a.meet(&b.meet(&c)));
            if a.dominates(&c) && b.dominates(&c) { prop_assert!(m.dominates(&c)); }
        }
    }

    #[test]
    fn releasability_narrows_under_join() {
        let mut a = Label::level(2);
        a.releasability = rel(&["USA", "GBR"]);
        let mut b = Label::level(2);
        b.releasability = rel(&["USA", "AUS"]);
        assert_eq!(a.join(&b).releasability, rel(&["USA"]));
        let mut us_reader = Label::level(3);
        us_reader.releasability = rel(&["USA"]);
        assert!(us_reader.dominates(&a));
        let mut gbr_reader = Label::level(3);
        gbr_reader.releasability = rel(&["GBR"]);
        let mut noforn = Label::level(2);
        noforn.releasability = rel(&["USA"]);
        assert!(gbr_reader.dominates(&a));
        assert!(!gbr_reader.dominates(&noforn));
    }
}
