//! Precision and recall of content inspection on the committed corpus
//! (`testdata/detection/generate.py`: faker `de_DE`/`en_US` personal data, US markings, and a
//! clean corpus of administrative prose with look-alikes that fail the checksums).
//!
//! Prints a table per kind and holds the goals: recall 1.0 on markings and checksummed
//! identifiers, at least 0.95 on the rest, and fewer than 1% of clean documents flagged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a test that prints its table"
)]

use std::collections::BTreeMap;

use enclave_label::Scheme;
use enclave_policy::{Inspector, Kind};
use serde_json::Value;

type Doc = (String, Vec<(Kind, usize, usize)>);

fn corpus(name: &str) -> Vec<Doc> {
    let path = format!("{}/testdata/detection/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let entities = v["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let kind = Kind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == e["kind"].as_str().unwrap())
                        .unwrap();
                    let start = e["start"].as_u64().unwrap() as usize;
                    let end = e["end"].as_u64().unwrap() as usize;
                    (kind, start, end)
                })
                .collect();
            (v["text"].as_str().unwrap().to_string(), entities)
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    expected: usize,
    found: usize,
    predicted: usize,
    correct: usize,
}

#[test]
fn detection_meets_its_goals_on_the_corpus() {
    let inspector = Inspector::new(Scheme::builtin("US").unwrap()).unwrap();
    let mut tally: BTreeMap<Kind, Tally> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    for (text, expected) in corpus("positives.jsonl") {
        let got = inspector.inspect(&text);
        for &(kind, start, end) in &expected {
            let t = tally.entry(kind).or_default();
            t.expected += 1;
            if got
                .iter()
                .any(|f| f.kind == kind && f.start < end && start < f.end)
            {
                t.found += 1;
            } else if notes.len() < 40 {
                notes.push(format!("missed {kind}: {:?}", &text[start..end]));
            }
        }
        for f in &got {
            let t = tally.entry(f.kind).or_default();
            t.predicted += 1;
            if expected
                .iter()
                .any(|&(k, s, e)| k == f.kind && f.start < e && s < f.end)
            {
                t.correct += 1;
            } else if notes.len() < 40 {
                notes.push(format!("extra {}: {:?}", f.kind, &text[f.start..f.end]));
            }
        }
    }
    let clean = corpus("clean.jsonl");
    let mut flagged = 0;
    for (text, _) in &clean {
        let got = inspector.inspect(text);
        if let Some(f) = got.first() {
            flagged += 1;
            if notes.len() < 60 {
                notes.push(format!(
                    "clean flagged {}: {:?}",
                    f.kind,
                    &text[f.start..f.end]
                ));
            }
        }
    }
    let fp_rate = flagged as f64 / clean.len() as f64;

    println!(
        "\n{:<14} {:>8} {:>8} {:>10} {:>6}",
        "kind", "expected", "recall", "precision", "goal"
    );
    let mut failures = Vec::new();
    for (kind, t) in &tally {
        let recall = t.found as f64 / t.expected.max(1) as f64;
        let precision = t.correct as f64 / t.predicted.max(1) as f64;
        let goal = match kind {
            Kind::Marking | Kind::Iban | Kind::PaymentCard | Kind::UsSsn | Kind::DeTaxId => 1.0,
            _ => 0.95,
        };
        println!(
            "{:<14} {:>8} {:>8.3} {:>10.3} {:>6}",
            kind.as_str(),
            t.expected,
            recall,
            precision,
            format!("≥{goal}")
        );
        if recall < goal {
            failures.push(format!("{kind}: recall {recall:.3} < {goal}"));
        }
    }
    println!(
        "clean corpus: {flagged} of {} documents flagged ({:.2}%, goal < 1%)\n",
        clean.len(),
        fp_rate * 100.0
    );
    for n in &notes {
        println!("  {n}");
    }
    if fp_rate >= 0.01 {
        failures.push(format!("false-positive rate {:.2}% ≥ 1%", fp_rate * 100.0));
    }
    assert!(failures.is_empty(), "{failures:?}");
}
