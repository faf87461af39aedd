//! The built-in marking schemes: US (CAPCO-style), DE (VSA), NATO and EU.

use crate::scheme::{CaveatDef, HandlingDef, LevelDef, Scheme, SchemeDef, UmbrellaDef, normalize};

fn handling(name: &str, aliases: &[&str], floor: Option<&str>) -> HandlingDef {
    HandlingDef {
        name: name.to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        floor: floor.map(str::to_string),
    }
}

fn level(name: &str, portion: &str, aliases: &[&str]) -> LevelDef {
    LevelDef {
        name: name.to_string(),
        portion: portion.to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        colour: None,
        text_colour: None,
        compartmented_colour: None,
    }
}

/// A level with its banner colours: background, text, and background when compartmented.
fn coloured(def: LevelDef, colour: &str, text: &str, compartmented: Option<&str>) -> LevelDef {
    LevelDef {
        colour: Some(colour.into()),
        text_colour: Some(text.into()),
        compartmented_colour: compartmented.map(str::to_string),
        ..def
    }
}

impl Scheme {
    /// A built-in scheme by name: `US`, `DE`, `NATO` or `EU` (any case).
    pub fn builtin(name: &str) -> Option<Scheme> {
        let def = match normalize(name).as_str() {
            "US" => us(),
            "DE" => de(),
            "NATO" => nato(),
            "EU" => eu(),
            _ => return None,
        };
        Scheme::new(def).ok()
    }

    /// Names of the built-in schemes.
    pub const BUILTIN: [&'static str; 4] = ["US", "DE", "NATO", "EU"];
}

/// US, CAPCO-style.
pub fn us() -> SchemeDef {
    SchemeDef {
        name: "US".into(),
        owner: "USA".into(),
        levels: vec![
            // The standard banner colours (ISOO and the CAPCO register).
            coloured(level("UNCLASSIFIED", "U", &[]), "#007a33", "#ffffff", None),
            coloured(
                level("CUI", "CUI", &["CONTROLLED UNCLASSIFIED INFORMATION"]),
                "#502b85",
                "#ffffff",
                None,
            ),
            coloured(level("CONFIDENTIAL", "C", &[]), "#0033a0", "#ffffff", None),
            coloured(level("SECRET", "S", &[]), "#c8102e", "#ffffff", None),
            coloured(
                level("TOP SECRET", "TS", &[]),
                "#ff8c00",
                "#000000",
                Some("#fce83a"),
            ),
        ],
        compartments: vec![
            CaveatDef::new("SI", None, &["COMINT"]),
            CaveatDef::new("SI-G", None, &["SI-GAMMA"]),
            CaveatDef::new("TK", None, &["TALENT KEYHOLE"]),
            CaveatDef::new("HCS", None, &[]),
            CaveatDef::new("HCS-O", None, &[]),
            CaveatDef::new("HCS-P", None, &[]),
        ],
        // Dissemination controls that restrict who may read: a reader (or a deployment) must hold
        // each one the content carries, exactly like a compartment.
        caveats: vec![
            CaveatDef::new("ORCON", Some("OC"), &["ORIGINATOR CONTROLLED"]),
            CaveatDef::new("ORCON-USGOV", Some("OC-USGOV"), &[]),
            CaveatDef::new("IMCON", Some("IMC"), &[]),
            CaveatDef::new("PROPIN", Some("PR"), &[]),
            CaveatDef::new("RSEN", None, &["RISK SENSITIVE"]),
            CaveatDef::new("FISA", None, &[]),
            // Legacy and agency controls (State's distribution captions, DEA, NGA): each narrows
            // the readership to a list its originator keeps, so it restricts like a caveat.
            CaveatDef::new("LIMDIS", Some("DS"), &["LIMITED DISTRIBUTION"]),
            CaveatDef::new("EXDIS", Some("XD"), &["EXCLUSIVE DISTRIBUTION"]),
            CaveatDef::new("NODIS", Some("ND"), &["NO DISTRIBUTION"]),
            CaveatDef::new("DSEN", None, &["DEA SENSITIVE"]),
            CaveatDef::new("WNINTEL", None, &[]),
        ],
        noforn: Some(CaveatDef::new("NOFORN", Some("NF"), &[])),
        suffixes: vec![],
        countries: vec![],
        // Controls that say how to handle content but do not narrow who may read it beyond its
        // level. The unclassified handling markings that CUI replaced (`FOUO`, `SBU`, `LES`)
        // mean at least CUI; `RELIDO` lets a disclosure official decide releases and widens
        // nothing, so it leaves the label as it is.
        handling: vec![
            handling("FOUO", &["FOR OFFICIAL USE ONLY"], Some("CUI")),
            handling("SBU", &["SENSITIVE BUT UNCLASSIFIED"], Some("CUI")),
            handling("LES", &["LAW ENFORCEMENT SENSITIVE"], Some("CUI")),
            handling("RELIDO", &[], None),
        ],
        // `SCI` names the SCI control systems without saying which: read as all of them, so only
        // a reader holding every one may read it (operators narrow this in their own scheme).
        umbrellas: vec![UmbrellaDef {
            name: "SCI".into(),
            aliases: vec![],
            compartments: vec!["SI".into(), "TK".into(), "HCS".into()],
        }],
    }
}

/// Germany, Verschlusssachenanweisung (VSA).
pub fn de() -> SchemeDef {
    SchemeDef {
        name: "DE".into(),
        owner: "DEU".into(),
        levels: vec![
            level("OFFEN", "OFFEN", &[]),
            level(
                "VS-NUR FÜR DEN DIENSTGEBRAUCH",
                "VS-NfD",
                &[
                    "VS - NUR FÜR DEN DIENSTGEBRAUCH",
                    "VS-NUR FUER DEN DIENSTGEBRAUCH",
                    // Offices write the bare phrase as a banner, too.
                    "NUR FÜR DEN DIENSTGEBRAUCH",
                    "NUR FUER DEN DIENSTGEBRAUCH",
                ],
            ),
            level("VS-VERTRAULICH", "VS-Vertr.", &["VS - VERTRAULICH"]),
            level("GEHEIM", "Geh.", &[]),
            level("STRENG GEHEIM", "Str. Geh.", &["STR.GEH."]),
        ],
        compartments: vec![],
        caveats: vec![],
        noforn: None,
        suffixes: vec!["amtlich geheim gehalten".into()],
        countries: vec![],
        handling: vec![],
        umbrellas: vec![],
    }
}

/// NATO.
pub fn nato() -> SchemeDef {
    SchemeDef {
        name: "NATO".into(),
        owner: "NATO".into(),
        levels: vec![
            level("NATO UNCLASSIFIED", "NU", &[]),
            level("NATO RESTRICTED", "NR", &[]),
            level("NATO CONFIDENTIAL", "NC", &[]),
            level("NATO SECRET", "NS", &[]),
            level("COSMIC TOP SECRET", "CTS", &[]),
        ],
        compartments: vec![],
        caveats: vec![
            CaveatDef::new("ATOMAL", Some("A"), &[]),
            CaveatDef::new("BOHEMIA", None, &[]),
        ],
        noforn: None,
        suffixes: vec![],
        countries: vec![],
        handling: vec![],
        umbrellas: vec![],
    }
}

/// European Union.
pub fn eu() -> SchemeDef {
    SchemeDef {
        name: "EU".into(),
        owner: "EU".into(),
        levels: vec![
            level("UNCLASSIFIED", "U", &["EU UNCLASSIFIED"]),
            level(
                "RESTREINT UE/EU RESTRICTED",
                "R-UE",
                &["RESTREINT UE", "EU RESTRICTED", "R-UE/EU-R"],
            ),
            level(
                "CONFIDENTIEL UE/EU CONFIDENTIAL",
                "C-UE",
                &["CONFIDENTIEL UE", "EU CONFIDENTIAL", "C-UE/EU-C"],
            ),
            level(
                "SECRET UE/EU SECRET",
                "S-UE",
                &["SECRET UE", "EU SECRET", "S-UE/EU-S"],
            ),
            level(
                "TRES SECRET UE/EU TOP SECRET",
                "TS-UE",
                &[
                    "TRÈS SECRET UE/EU TOP SECRET",
                    "TRES SECRET UE",
                    "TRÈS SECRET UE",
                    "EU TOP SECRET",
                    "TS-UE/EU-TS",
                ],
            ),
        ],
        compartments: vec![],
        caveats: vec![],
        noforn: None,
        suffixes: vec![],
        countries: vec![],
        handling: vec![],
        umbrellas: vec![],
    }
}
