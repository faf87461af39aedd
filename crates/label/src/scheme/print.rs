//! Printing labels: the canonical banner and portion forms, the parts of a label in words, and
//! what a clearance lacks for a label.

use std::collections::BTreeSet;

use super::{CaveatDef, Scheme};
use crate::{Label, Releasability};

impl Scheme {
    /// The canonical banner, such as `TOP SECRET//SI/TK//REL TO USA, GBR`.
    /// The banner colours of `label` as `#rrggbb`: (background, text). From the level's
    /// definition; a level without colours takes one by its rank, from green up to orange.
    pub fn banner_colours(&self, label: &Label) -> (String, String) {
        const BY_RANK: [&str; 4] = ["#007a33", "#0033a0", "#c8102e", "#ff8c00"];
        let rank = usize::from(label.level.0);
        let def = self.def.levels.get(rank);
        let compartmented = def
            .and_then(|d| d.compartmented_colour.clone())
            .filter(|_| !label.compartments.is_empty());
        let background = compartmented
            .clone()
            .or_else(|| def.and_then(|d| d.colour.clone()))
            .unwrap_or_else(|| {
                let top = self.def.levels.len().saturating_sub(1).max(1);
                BY_RANK[(rank * (BY_RANK.len() - 1))
                    .div_ceil(top)
                    .min(BY_RANK.len() - 1)]
                .to_string()
            });
        let light = ["#ff8c00", "#fce83a"].contains(&background.to_ascii_lowercase().as_str());
        let text = def
            .and_then(|d| d.text_colour.clone())
            .filter(|_| compartmented.is_none())
            .unwrap_or_else(|| if light { "#000000" } else { "#ffffff" }.into());
        (background, text)
    }

    pub fn banner(&self, label: &Label) -> String {
        self.render(label, false)
    }

    /// The canonical portion mark, such as `(TS//SI/TK//REL TO USA, GBR)`.
    pub fn portion(&self, label: &Label) -> String {
        format!("({})", self.render(label, true))
    }

    fn render(&self, label: &Label, portion: bool) -> String {
        let name = |c: &CaveatDef| {
            if portion {
                c.portion().to_string()
            } else {
                c.name.clone()
            }
        };
        let mut segments = vec![self.level_name(label.level, portion)];
        let known: BTreeSet<&str> = self
            .def
            .compartments
            .iter()
            .chain(&self.def.caveats)
            .map(|c| c.name.as_str())
            .collect();
        let mut compartments: Vec<String> = self
            .def
            .compartments
            .iter()
            .filter(|c| label.compartments.contains(&c.name))
            .map(name)
            .collect();
        // Words no scheme definition names cannot come from parsing, but printing stays total.
        compartments.extend(
            label
                .compartments
                .iter()
                .filter(|c| !known.contains(c.as_str()))
                .cloned(),
        );
        if !compartments.is_empty() {
            segments.push(compartments.join("/"));
        }
        let mut dissem: Vec<String> = self
            .def
            .caveats
            .iter()
            .filter(|c| label.compartments.contains(&c.name))
            .map(name)
            .collect();
        if let Releasability::To(set) = &label.releasability {
            let owner_only = set.len() == 1 && set.contains(&self.def.owner);
            match &self.def.noforn {
                Some(noforn) if owner_only => dissem.push(name(noforn)),
                _ if set.is_empty() => dissem.push("REL TO NONE".to_string()),
                _ => {
                    let owner = set.get(&self.def.owner).into_iter();
                    let others = set.iter().filter(|c| **c != self.def.owner);
                    let codes: Vec<&str> = owner.chain(others).map(String::as_str).collect();
                    dissem.push(format!("REL TO {}", codes.join(", ")));
                }
            }
        }
        if !dissem.is_empty() {
            segments.push(dissem.join("/"));
        }
        segments.join("//")
    }

    /// The parts of a label in words, for people: one `(part, value)` per line.
    pub fn describe(&self, label: &Label) -> Vec<(&'static str, String)> {
        let caveats: BTreeSet<&str> = self.def.caveats.iter().map(|c| c.name.as_str()).collect();
        let (cav, comp): (Vec<&String>, Vec<&String>) = label
            .compartments
            .iter()
            .partition(|c| caveats.contains(c.as_str()));
        let list = |v: Vec<&String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        vec![
            ("scheme", self.def.name.clone()),
            ("banner", self.banner(label)),
            ("portion", self.portion(label)),
            (
                "level",
                format!(
                    "{} ({} of {})",
                    self.level_name(label.level, false),
                    label.level.0,
                    self.def.levels.len() - 1
                ),
            ),
            ("compartments", list(comp)),
            ("caveats", list(cav)),
            (
                "releasable to",
                match &label.releasability {
                    Releasability::Unrestricted => {
                        "anyone cleared (no releasability marking)".into()
                    }
                    Releasability::To(set) if set.is_empty() => "no one".into(),
                    Releasability::To(set) => set
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            ),
        ]
    }

    /// Says in a sentence how `label` exceeds `clearance`, or `None` when it does not.
    pub fn explain_shortfall(&self, clearance: &Label, label: &Label) -> Option<String> {
        let s = clearance.shortfall(label);
        if s.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if let Some((want, have)) = s.level {
            parts.push(format!(
                "level {} is above {}",
                self.level_name(want, false),
                self.level_name(have, false)
            ));
        }
        if !s.compartments.is_empty() {
            let list: Vec<&str> = s.compartments.iter().map(String::as_str).collect();
            parts.push(format!(
                "compartments/caveats {} are not held",
                list.join(", ")
            ));
        }
        if let Some(outside) = s.releasability {
            if outside.is_empty() {
                parts.push("releasability is restricted and no nationality is held".to_string());
            } else {
                let list: Vec<&str> = outside.iter().map(String::as_str).collect();
                parts.push(format!("it is not releasable to {}", list.join(", ")));
            }
        }
        Some(parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use crate::Scheme;

    fn colours(scheme: &Scheme, banner: &str) -> (String, String) {
        let label = scheme
            .parse(banner)
            .unwrap_or_else(|e| panic!("{banner}: {e}"));
        scheme.banner_colours(&label)
    }

    #[test]
    fn banners_take_the_standard_colours() {
        let us = Scheme::builtin("US").unwrap_or_else(|| panic!("US"));
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(colours(&us, "UNCLASSIFIED"), pair("#007a33", "#ffffff"));
        assert_eq!(colours(&us, "CUI"), pair("#502b85", "#ffffff"));
        assert_eq!(colours(&us, "CONFIDENTIAL"), pair("#0033a0", "#ffffff"));
        assert_eq!(colours(&us, "SECRET//NOFORN"), pair("#c8102e", "#ffffff"));
        assert_eq!(colours(&us, "TOP SECRET"), pair("#ff8c00", "#000000"));
        assert_eq!(
            colours(&us, "TOP SECRET//SI//NOFORN"),
            pair("#fce83a", "#000000")
        );
        // A scheme without colours: by rank, lowest green, highest orange with black text.
        let nato = Scheme::builtin("NATO").unwrap_or_else(|| panic!("NATO"));
        assert_eq!(colours(&nato, "NATO UNCLASSIFIED").0, "#007a33");
        assert_eq!(
            colours(&nato, "COSMIC TOP SECRET"),
            pair("#ff8c00", "#000000")
        );
    }

    #[test]
    fn a_colour_that_is_not_rgb_hex_is_refused() {
        let mut def = Scheme::builtin("US")
            .unwrap_or_else(|| panic!("US"))
            .def()
            .clone();
        def.levels[0].colour = Some("red;}body{display:none".into());
        assert!(Scheme::new(def).is_err());
    }
}
