//! Evasions: markings spelled so a naive reader misses them. Generated here, from every level and
//! several controls of each built-in scheme, under every transformation the normaliser knows and
//! every pair of them, as portion marks and as banners, in running text.
//!
//! Prints the figures the label-integrity issue asks for — evasions that lowered a label,
//! unrecognised controls that were ignored, and the false-positive rate for markings on the
//! committed clean corpus — and holds the first two at zero.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a test that prints its figures"
)]

use enclave_label::{Label, Scheme};
use enclave_policy::{Inspector, Kind, Summary};
use proptest::prelude::*;

/// A way to spell a marking that a reader still reads as the marking.
type Transform = (&'static str, fn(&str) -> String);

fn cyrillic(c: char) -> char {
    match c {
        'A' => 'А',
        'B' => 'В',
        'C' => 'С',
        'E' => 'Е',
        'H' => 'Н',
        'I' => 'І',
        'K' => 'К',
        'M' => 'М',
        'O' => 'О',
        'P' => 'Р',
        'S' => 'Ѕ',
        'T' => 'Т',
        'X' => 'Х',
        'a' => 'а',
        'c' => 'с',
        'e' => 'е',
        'o' => 'о',
        'p' => 'р',
        's' => 'ѕ',
        other => other,
    }
}

const TRANSFORMS: [Transform; 11] = [
    ("lower case", |s| s.to_lowercase()),
    ("spaces inside", |s| {
        s.replace('(', "( ")
            .replace(')', " )")
            .replace("//", " // ")
    }),
    ("full-width", |s| {
        s.chars()
            .map(|c| match c {
                '(' => '（',
                ')' => '）',
                'A'..='Z' => char::from_u32(u32::from(c) - 0x41 + 0xFF21).unwrap(),
                other => other,
            })
            .collect()
    }),
    ("zero-width", |s| {
        let mut out = String::new();
        for c in s.chars() {
            out.push(c);
            if c.is_alphabetic() {
                out.push('\u{200B}');
            }
        }
        out
    }),
    ("cyrillic look-alikes", |s| {
        s.chars().map(cyrillic).collect()
    }),
    ("html entities", |s| {
        s.chars()
            .map(|c| match c {
                '(' => "&#40;".to_string(),
                ')' => "&rpar;".to_string(),
                'S' => "&#x53;".to_string(),
                '/' => "&sol;".to_string(),
                other => other.to_string(),
            })
            .collect()
    }),
    ("line break inside", |s| {
        s.replace('(', "(\n").replace(')', "\n)")
    }),
    ("en dash", |s| s.replace('-', " \u{2013} ")),
    ("bidi and joiners", |s| {
        let mut out = String::from("\u{202A}");
        for c in s.chars() {
            out.push(c);
            if c == '/' || c == '(' {
                out.push('\u{2060}');
            }
        }
        out.push('\u{202C}');
        out
    }),
    ("no-break spaces", |s| s.replace(' ', "\u{00A0}")),
    ("double-encoded entities", |s| {
        s.replace('(', "&amp;#40;").replace(')', "&amp;#41;")
    }),
];

/// Every built-in scheme with markings of every level above the lowest and several controls.
fn markings() -> Vec<(&'static str, Vec<String>)> {
    let with = |levels: &[&str], controls: &[&str]| -> Vec<String> {
        let mut out = Vec::new();
        for l in levels {
            for c in controls {
                out.push(format!("{l}{c}"));
            }
        }
        out
    };
    vec![
        (
            "US",
            with(
                &[
                    "CUI",
                    "C",
                    "S",
                    "TS",
                    "SECRET",
                    "TOP SECRET",
                    "CONFIDENTIAL",
                ],
                &[
                    "",
                    "//NF",
                    "//SI",
                    "//TK//NOFORN",
                    "//SCI",
                    "//ORCON",
                    "//REL TO USA, GBR",
                    "//FOUO",
                    "//LIMDIS",
                    "//SI/TK//RELIDO",
                ],
            ),
        ),
        (
            "DE",
            with(
                &[
                    "VS-NfD",
                    "VS-NUR FÜR DEN DIENSTGEBRAUCH",
                    "VS-Vertr.",
                    "VS-VERTRAULICH",
                    "Geh.",
                    "GEHEIM",
                    "STRENG GEHEIM",
                ],
                &[""],
            ),
        ),
        (
            "NATO",
            with(
                &["NR", "NC", "NS", "CTS", "NATO SECRET", "COSMIC TOP SECRET"],
                &["", "//ATOMAL"],
            ),
        ),
        (
            "EU",
            with(
                &["R-UE", "C-UE", "S-UE", "TS-UE", "SECRET UE/EU SECRET"],
                &[""],
            ),
        ),
    ]
}

/// Markings that carry a control no built-in scheme knows.
const UNKNOWN: [&str; 8] = [
    "TS//XYZ",
    "S//ORCON//XYZ",
    "S//REL",
    "TS//NOFORN//QQQ",
    "SECRET//ZZZ",
    "C//FOO/BAR",
    "TS//SI-X",
    "S//DISPLAY ONLY",
];

fn inspect(inspector: &Inspector, text: &str) -> Summary {
    let mut s = Summary::default();
    s.add(&inspector.inspect(text));
    s
}

/// The marking as a portion mark opening the text, as a banner line (when it is written as
/// banners are: with `//` or a level word of three letters or more), and as a portion mark
/// opening a later paragraph.
fn contexts(marking: &str) -> Vec<String> {
    let mut out = vec![
        format!("({marking}) The site is north of the river."),
        format!("Report follows.\n\n({marking}) The site is north."),
    ];
    if marking.contains("//") || marking.chars().filter(|c| c.is_alphanumeric()).count() >= 3 {
        out.push(format!("{marking}\nThe site is north of the river."));
    }
    out
}

#[derive(Default)]
struct Figures {
    variants: usize,
    lowered: Vec<String>,
    refused_known: usize,
    unknown_variants: usize,
    unknown_ignored: Vec<String>,
}

fn run(fig: &mut Figures) {
    let transforms: Vec<Vec<Transform>> = {
        let mut v = vec![vec![]];
        for t in TRANSFORMS {
            v.push(vec![t]);
        }
        for (i, a) in TRANSFORMS.iter().enumerate() {
            for b in &TRANSFORMS[i + 1..] {
                v.push(vec![*a, *b]);
            }
        }
        v
    };
    let apply = |ts: &[Transform], s: &str| ts.iter().fold(s.to_string(), |acc, (_, f)| f(&acc));
    for (scheme_name, marks) in markings() {
        let scheme = Scheme::builtin(scheme_name).unwrap();
        let inspector = Inspector::new(scheme.clone()).unwrap();
        for m in &marks {
            let truth: Label = scheme.parse(m).unwrap();
            for text in contexts(m) {
                for ts in &transforms {
                    let spelled = apply(ts, &text);
                    fig.variants += 1;
                    let got = inspect(&inspector, &spelled);
                    if !got.unrecognized.is_empty() {
                        fig.refused_known += 1;
                        continue;
                    }
                    // Text with no marking found keeps its declared label, at least the lowest.
                    let read = got.label.clone().unwrap_or_else(|| scheme.lowest());
                    let ok = read.dominates(&truth);
                    if !ok {
                        let names: Vec<&str> = ts.iter().map(|t| t.0).collect();
                        fig.lowered.push(format!(
                            "{scheme_name} {m:?} under {names:?}: {spelled:?} read as {:?}",
                            got.label.map(|l| scheme.banner(&l))
                        ));
                    }
                }
            }
        }
    }
    let us = Scheme::builtin("US").unwrap();
    let inspector = Inspector::new(us.clone()).unwrap();
    for m in UNKNOWN {
        let level = us.read_marking(m).unwrap().label;
        for text in contexts(m) {
            for ts in &transforms {
                let spelled = apply(ts, &text);
                fig.unknown_variants += 1;
                let got = inspect(&inspector, &spelled);
                let held = !got.unrecognized.is_empty()
                    && got.label.as_ref().is_some_and(|l| l.dominates(&level));
                if !held {
                    let names: Vec<&str> = ts.iter().map(|t| t.0).collect();
                    fig.unknown_ignored.push(format!(
                        "{m:?} under {names:?}: {spelled:?} gave {:?} {:?}",
                        got.label.map(|l| us.banner(&l)),
                        got.unrecognized
                    ));
                }
            }
        }
    }
}

/// The clean corpus of the detection test: administrative prose with no markings.
fn clean_marking_rate() -> (usize, usize, Vec<String>) {
    let path = format!(
        "{}/testdata/detection/clean.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let inspector = Inspector::new(Scheme::builtin("US").unwrap()).unwrap();
    let mut flagged = 0;
    let mut total = 0;
    let mut examples = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["text"].as_str().unwrap();
        total += 1;
        if let Some(f) = inspector
            .inspect(t)
            .into_iter()
            .find(|f| f.kind == Kind::Marking)
        {
            flagged += 1;
            if examples.len() < 10 {
                examples.push(t[f.start..f.end].to_string());
            }
        }
    }
    (flagged, total, examples)
}

#[test]
fn no_evasion_lowers_a_label_and_no_unknown_control_is_ignored() {
    let mut fig = Figures::default();
    run(&mut fig);
    let (flagged, total, examples) = clean_marking_rate();
    let rate = flagged as f64 / total as f64;
    println!(
        "\nevasion corpus: {} variants of known markings",
        fig.variants
    );
    println!("  lowered a label:                 {}", fig.lowered.len());
    println!("  refused as unrecognised (safe):  {}", fig.refused_known);
    println!(
        "unknown controls: {} variants, ignored: {}",
        fig.unknown_variants,
        fig.unknown_ignored.len()
    );
    println!(
        "clean corpus: {flagged} of {total} documents flagged as marked ({:.2} %) {examples:?}",
        rate * 100.0
    );
    for l in fig.lowered.iter().take(20) {
        println!("LOWERED {l}");
    }
    for l in fig.unknown_ignored.iter().take(20) {
        println!("IGNORED {l}");
    }
    assert!(fig.variants + fig.unknown_variants >= 500);
    assert!(
        fig.lowered.is_empty(),
        "{} evasions lowered a label",
        fig.lowered.len()
    );
    assert!(
        fig.unknown_ignored.is_empty(),
        "{} unknown controls ignored",
        fig.unknown_ignored.len()
    );
    assert!(rate <= 0.01, "clean false-positive rate {rate}");
}

#[test]
fn german_spellings_are_seen_and_prose_is_not() {
    let de = Scheme::builtin("DE").unwrap();
    let inspector = Inspector::new(de.clone()).unwrap();
    let level = |t: &str| inspect(&inspector, t).label.map(|l| de.banner(&l));
    let nfd = Some("VS-NUR FÜR DEN DIENSTGEBRAUCH".to_string());
    assert_eq!(level("VS – NUR FÜR DEN DIENSTGEBRAUCH\nText"), nfd);
    assert_eq!(level("vs-nfd: die Akte liegt vor"), nfd);
    assert_eq!(level("NUR FÜR DEN DIENSTGEBRAUCH\n\nText"), nfd);
    assert_eq!(
        level("VS-Vertraulich: Lagebild"),
        Some("VS-VERTRAULICH".to_string())
    );
    assert_eq!(
        level("Streng geheim:\nDer Bericht"),
        Some("STRENG GEHEIM".to_string())
    );
    assert_eq!(level("das Rezept ist geheim, sagte sie"), None);
    assert_eq!(level("Geheim ist das nicht."), None);
}

#[test]
fn contact_phrases_are_phone_context() {
    let inspector = Inspector::new(Scheme::builtin("US").unwrap()).unwrap();
    for t in [
        "Write to jane.doe@example.org or 5552109999 for details.",
        "Kontakt: max@beispiel.de oder 3055501234",
        "reach the desk at 2125550199",
    ] {
        let found = inspector.inspect(t);
        assert!(
            found.iter().any(|f| f.kind == Kind::Phone),
            "{t}: {found:?}"
        );
    }
    let found = inspector.inspect("Invoice 5552109999 was paid.");
    assert!(!found.iter().any(|f| f.kind == Kind::Phone), "{found:?}");
}

fn transform() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..TRANSFORMS.len(), 0..=3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For any marking M a built-in scheme knows (any level, any compartments and caveats, any
    /// releasability, banner or portion) and any chain of transformations T, the inspected label
    /// of T(M) dominates M's label, or the text is refused.
    #[test]
    fn a_transformed_marking_never_reads_lower(
        scheme_index in 0..Scheme::BUILTIN.len(),
        level in 0usize..5,
        items in proptest::collection::vec(0usize..16, 0..3),
        rel in proptest::option::of(proptest::sample::subsequence(vec!["USA", "GBR", "DEU", "FRA"], 1..=3)),
        portion in any::<bool>(),
        chain in transform(),
    ) {
        let scheme = Scheme::builtin(Scheme::BUILTIN[scheme_index]).unwrap();
        let def = scheme.def();
        let mut label = Label::level((level % def.levels.len()) as u8);
        let words: Vec<String> = def.compartments.iter().chain(&def.caveats).map(|c| c.name.clone()).collect();
        for i in items {
            if let Some(w) = words.get(i % words.len().max(1)) {
                label.compartments.insert(w.clone());
            }
        }
        if let Some(r) = rel {
            label.releasability = enclave_label::Releasability::To(r.into_iter().map(String::from).collect());
        }
        let printed = if portion {
            format!("{} The site is north.", scheme.portion(&label))
        } else {
            format!("{}\nThe site is north.", scheme.banner(&label))
        };
        let spelled = chain.iter().fold(printed.clone(), |acc, &i| (TRANSFORMS[i].1)(&acc));
        let inspector = Inspector::new(scheme.clone()).unwrap();
        let got = inspect(&inspector, &spelled);
        let read = got.label.clone().unwrap_or_else(|| scheme.lowest());
        prop_assert!(
            !got.unrecognized.is_empty() || read.dominates(&label),
            "{printed:?} as {spelled:?} read as {:?}", got.label.map(|l| scheme.banner(&l))
        );
    }
}

#[test]
fn a_banner_running_into_a_long_sentence_is_still_the_banner() {
    let us = Scheme::builtin("US").unwrap();
    let inspector = Inspector::new(us.clone()).unwrap();
    let prose = "the convoy waits by the river until the night falls and the guards change at the \
                 northern gate, which nobody has watched since the spring";
    for text in [
        format!("SECRET//NOFORN {prose}"),
        format!("secret//noforn {prose}"),
        format!("Report.\nsecret // noforn {prose}"),
        format!("TOP SECRET//SI//REL TO USA, GBR {prose}"),
    ] {
        let got = inspect(&inspector, &text);
        assert!(
            got.unrecognized.is_empty(),
            "{text}: {:?}",
            got.unrecognized
        );
        let label = got.label.map(|l| us.banner(&l)).unwrap_or_default();
        assert!(
            label == "SECRET//NOFORN" || label == "TOP SECRET//SI//REL TO USA, GBR",
            "{text}: {label}"
        );
    }
    // Mid-line, in any case: read as the banner it is.
    for text in [
        "The file is top secret//si and stays here.",
        "Marked secret // noforn since May.",
    ] {
        let got = inspect(&inspector, text);
        let label = got.label.map(|l| us.banner(&l)).unwrap_or_default();
        assert!(
            label == "TOP SECRET//SI" || label == "SECRET//NOFORN",
            "{text}: {label}"
        );
    }
    // A URL is not a banner.
    assert_eq!(
        inspect(&inspector, "see https://secret//x.example").label,
        None
    );
    // Mid-line, a control in another case than its banner is read, not dropped.
    let got = inspect(&inspector, "The file is SECRET//noforn since May.");
    assert_eq!(
        got.label.map(|l| us.banner(&l)).as_deref(),
        Some("SECRET//NOFORN")
    );
}
