//! `cargo bench -p enclave-policy`: content-inspection throughput and the per-request cost of
//! the whole label-and-route step, with a peer measured in the same run.
//!
//! The peer is the usual way to write such a detector: one `regex` per kind, each scanning the
//! whole text. Enclave's inspector scans once with every pattern compiled together and confirms
//! candidates with checksums. The prompt mix is the committed detection corpus (administrative
//! prose, personal data, markings).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a bench binary that prints its table"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use enclave_label::{Label, Scheme};
use enclave_policy::{
    Action, Authorizer, Inspector, Placement, Subject, TenantPolicy, check_clearance,
    label_request, route,
};

fn corpus() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/detection");
    let mut texts = Vec::new();
    for name in ["positives.jsonl", "clean.jsonl"] {
        let data = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        for line in data.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            texts.push(v["text"].as_str().unwrap().to_string());
        }
    }
    texts
}

/// The peer: one regex per kind, each a pass over the text, with the same confirmations skipped
/// (it only counts candidates), which favours the peer.
fn peer() -> Vec<regex::Regex> {
    [
        r"\([A-Z][A-Za-z.\- /,]{0,120}\)",
        r"\b[A-Z][A-Z.\- /]{0,40}//[A-Z0-9][A-Z0-9/ ,.\-]{0,160}",
        r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63})*\.[A-Za-z]{2,24}",
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        r"\b[0-9](?:[ \-]?[0-9]){11,18}\b",
        r"\b[0-9]{2} ?[0-9]{3} ?[0-9]{3} ?[0-9]{3}\b",
        r"\b[CFGHJKLMNPRTVWXYZ][CFGHJKLMNPRTVWXYZ0-9]{8}[0-9]?\b",
        r"(?:\+|\b00)[1-9][0-9]{0,2}[ \-./]?(?:\(0\)[ \-]?)?\(?[0-9]{1,5}\)?(?:[ \-./]?[0-9]{2,}){1,5}",
        r"(?:\(0[1-9][0-9]{1,4}\)|\b0[1-9][0-9]{1,4})[ \-/]?[0-9]{3,}(?:[ \-][0-9]{2,})*\b",
        r"(?:\([0-9]{3}\) ?|\b[0-9]{3}[\-.])[0-9]{3}[\-.][0-9]{4}",
        r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b",
        r"(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}",
    ]
    .iter()
    .map(|p| regex::Regex::new(p).unwrap())
    .collect()
}

fn throughput(texts: &[String], mut f: impl FnMut(&str) -> usize) -> (f64, usize) {
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut best = Duration::MAX;
    let mut found = 0;
    for _ in 0..10 {
        let start = Instant::now();
        found = 0;
        for t in texts {
            found += f(black_box(t));
        }
        best = best.min(start.elapsed());
    }
    (bytes as f64 / best.as_secs_f64() / 1e6, found)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let scheme = Scheme::builtin("US").unwrap();
    let inspector = Inspector::new(scheme.clone()).unwrap();
    let texts = corpus();
    let mb: f64 = texts.iter().map(String::len).sum::<usize>() as f64 / 1e6;

    let (ours, n_ours) = throughput(&texts, |t| inspector.inspect(t).len());
    let regexes = peer();
    let (theirs, n_theirs) = throughput(&texts, |t| {
        regexes.iter().map(|r| r.find_iter(t).count()).sum()
    });

    // A 2 KB prompt: corpus documents joined until 2 KB.
    let mut prompt = String::new();
    for t in &texts {
        if prompt.len() >= 2048 {
            break;
        }
        prompt.push_str(t);
        prompt.push('\n');
    }
    prompt.truncate(prompt.floor_char_boundary(2048));
    let clearance = scheme.clearance(scheme.parse("TS//SI").unwrap());
    let declared = Label::level(0);
    let tenant = TenantPolicy {
        default_label: Label::level(0),
        jurisdictions: ["eu".to_string()].into(),
        redact_pii_for: ["eu".to_string()].into(),
    };
    let placements = vec![
        Placement {
            name: "embedded".into(),
            accreditation: scheme.system_high(),
            jurisdiction: "enclave".into(),
        },
        Placement {
            name: "cloud-eu".into(),
            accreditation: scheme.clearance(Label::level(0)),
            jurisdiction: "eu".into(),
        },
    ];
    let authz = Authorizer::new(None).unwrap();
    let mut step = Vec::new();
    let mut cedar = Vec::new();
    for _ in 0..20_000 {
        let start = Instant::now();
        let labelled = label_request(&inspector, &declared, [prompt.as_str()]);
        check_clearance(&scheme, &clearance, &labelled.label).unwrap();
        let chosen = route(
            &scheme,
            &labelled.label,
            labelled.summary.personal_data(),
            &tenant,
            &placements,
        )
        .unwrap();
        black_box(chosen);
        step.push(start.elapsed());
        let start = Instant::now();
        let who = Subject {
            key_id: "k",
            tenant: "t",
            role: "user",
        };
        black_box(authz.is_allowed(who, Action::Chat, "m"));
        cedar.push(start.elapsed());
    }
    step.sort_unstable();
    cedar.sort_unstable();

    println!("\ncontent inspection over the detection corpus ({mb:.2} MB, best of 10)");
    println!("{:<44} {:>10} {:>12}", "detector", "MB/s", "candidates");
    println!(
        "{:<44} {:>10.0} {:>12}",
        "enclave: one pass, confirmed (goal ≥ 200)", ours, n_ours
    );
    println!(
        "{:<44} {:>10.0} {:>12}",
        "peer: one regex per kind, unconfirmed", theirs, n_theirs
    );
    println!("{:<44} {:>10.2}×", "enclave ÷ peer", ours / theirs);
    println!("\nper request, 2 KB prompt, 20 000 requests");
    println!("{:<44} {:>10} {:>10}", "step", "p50 µs", "p99 µs");
    for (name, v) in [
        ("label + clearance + route (goal p99 ≤ 50)", &step),
        ("Cedar authorization", &cedar),
    ] {
        println!(
            "{:<44} {:>10.1} {:>10.1}",
            name,
            percentile(v, 0.5).as_secs_f64() * 1e6,
            percentile(v, 0.99).as_secs_f64() * 1e6
        );
    }
}
