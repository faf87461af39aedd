//! The web console in a real browser: headless Chromium from Debian's packages, driven through
//! `playwright-core` (npm) by `tests/console/drive.mjs`. A person signs in at the real OpenID
//! provider's own pages, chats at each working label and sees the answer stream in; the top and
//! bottom banners show the conversation's label in the standard colours (read from screenshot
//! pixels) and rise with it; every message carries its portion mark; the page loads with no
//! console errors or CSP violations, every control is reachable by keyboard, the page weighs
//! under 150 KB, and a forged cross-origin post with the session cookie is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::oidc::Provider;
use common::{Server, npm_package};
use serde_json::{Value, json};

/// Debian's Chromium, installed with apt when missing (the test machines run as root).
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    if !path.exists() {
        let status = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get is needed to install Chromium");
        assert!(status.success(), "apt-get install chromium failed");
    }
    path
}

#[test]
fn a_person_chats_in_the_console_under_banners_that_rise_with_the_conversation() {
    let chromium = chromium();
    let playwright = npm_package(
        "console",
        "playwright-core@1.49.1",
        "playwright-core/index.mjs",
    );
    let provider = Provider::start_for_browsers(
        &["k1"],
        json!({
            "alice": {"tenant": "default", "clearance": "TOP SECRET//SI", "citizenship": "USA"},
            "audrey": {"tenant": "default", "clearance": "SECRET", "citizenship": "USA", "groups": ["auditors"]},
            "uma": {"tenant": "default", "clearance": "UNCLASSIFIED", "citizenship": "USA"},
            "ada": {"tenant": "default", "clearance": "SECRET", "citizenship": "USA", "groups": ["admins"]},
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = provider.browser_config(
        dir.path(),
        "TOP SECRET//SI",
        "citizenship = \"citizenship\"\ngroups = \"groups\"\n[identity.issuers.claims.roles]\nauditors = \"auditor\"\nadmins = \"admin\"",
    );
    let server = Server::start_with(&[("ENCLAVE_CONFIG", config.as_str())]);

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console/shots");
    std::fs::create_dir_all(&shots).unwrap();
    let steps = [
        ("UNCLASSIFIED", "(U) Say hello."),
        ("CUI", "(CUI) Name a colour."),
        ("CONFIDENTIAL", "(C) Name a river."),
        ("SECRET", "(S) Where is the harbour crane CANARYTALK?"),
        ("TOP SECRET", "(TS) Where is the harbour crane?"),
        ("TOP SECRET", "(TS//SI) What did the intercept say?"),
    ];
    // A knowledge base with an UNCLASSIFIED and a SECRET passage, each with its canary.
    let admin = server.cleared_key("default", "admin", "SECRET");
    let handbook = dir.path().join("ferries.md");
    std::fs::write(
        &handbook,
        "(U) The morning ferry CANARYUNCLAS leaves pier four at noon.\n\n\
         (S) The night ferry CANARYSECRET carries radar parts to the island.\n",
    )
    .unwrap();
    for args in [
        vec!["kb", "create", "ferries", "--max-label", "SECRET"],
        vec![
            "kb",
            "add",
            "ferries",
            handbook.to_str().unwrap(),
            "--label",
            "U",
        ],
    ] {
        let mut args = args;
        args.extend(["--url", server.base.as_str(), "--key", admin.as_str()]);
        let (ok, _, err) = server.cli(&args);
        assert!(ok, "{args:?}: {err}");
    }
    // What the administrator uploads in the console: one file refused for an unknown control.
    let manual = dir.path().join("manual.md");
    std::fs::write(
        &manual,
        "(U) The pump manual CANARYMANUAL says to bleed the valve first.\n\n\
         (S) The pump at site CANARYPUMP is rigged to fail.\n",
    )
    .unwrap();
    let refused = dir.path().join("refused.txt");
    std::fs::write(&refused, "(S//XYZ) A control word no scheme knows.\n").unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        json!({
            "playwright": playwright, "chromium": chromium, "base": server.base,
            "provider": provider.issuer, "person": "alice", "auditor": "audrey", "out": shots,
            "admin": "ada", "uploads": [manual, refused], "searchQuery": "Which pump is rigged?",
            "reader": "uma", "kbQuestion": "Which ferry carries radar parts, and which leaves at noon?",
            "steps": steps.iter().map(|(label, text)| json!({"label": label, "text": text})).collect::<Vec<_>>(),
        })
        .to_string(),
    )
    .unwrap();
    let run = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/console/drive.mjs"))
        .arg(&spec)
        .output()
        .expect("node is needed for the console test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(out["failure"].is_null(), "{}", out["failure"]);

    assert!(
        out["signedIn"]
            .as_str()
            .unwrap()
            .contains("alice · default · user"),
        "{out}"
    );
    // Before anything is said, the page is at the lowest label.
    assert_eq!(out["first"]["topText"], "UNCLASSIFIED", "{out}");
    assert_eq!(out["first"]["top"], "#007a33", "{out}");

    // Each step's banners: text, and the colour of the pixels at the top and the bottom.
    // The banners and colours each label shows, lowest first.
    let banners = [
        ("UNCLASSIFIED", "#007a33", "rgb(255, 255, 255)", "(U)"),
        ("CUI", "#502b85", "rgb(255, 255, 255)", "(CUI)"),
        ("CONFIDENTIAL", "#0033a0", "rgb(255, 255, 255)", "(C)"),
        ("SECRET", "#c8102e", "rgb(255, 255, 255)", "(S)"),
        ("TOP SECRET", "#ff8c00", "rgb(0, 0, 0)", "(TS)"),
        ("TOP SECRET//SI", "#fce83a", "rgb(0, 0, 0)", "(TS//SI)"),
    ];
    let rank = |banner: &str| {
        banners
            .iter()
            .position(|b| b.0 == banner)
            .unwrap_or_else(|| panic!("an unexpected banner `{banner}`"))
    };
    let steps_out = out["steps"].as_array().unwrap();
    assert_eq!(steps_out.len(), steps.len(), "{out}");
    let mut high = 0;
    for (i, step) in steps_out.iter().enumerate() {
        assert!(step["errors"].as_array().unwrap().is_empty(), "{step}");
        assert!(
            !step["answer"].as_str().unwrap().is_empty(),
            "streamed: {step}"
        );
        // The banner is the conversation's label: at least this step's (an answer may raise
        // it further when the model writes a marking), never lower than before, the same at
        // the top and the bottom, in its colours — read from the screenshot's pixels.
        let shown = step["topText"].as_str().unwrap();
        let at = rank(shown);
        assert!(at >= i.min(5) && at >= high, "step {i}: {step}");
        high = at;
        let (_, colour, text_colour, _) = banners[at];
        assert_eq!(step["bottomText"], shown, "{step}");
        assert_eq!(step["top"], colour, "{step}");
        assert_eq!(step["bottom"], colour, "{step}");
        assert_eq!(step["textColour"], text_colour, "{step}");
        // Every message carries a portion mark, and the question's is at least the step's.
        let marks: Vec<&str> = step["marks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert_eq!(marks.len(), 2 * (i + 1), "{marks:?}");
        let asked = marks[2 * i];
        let asked_rank = banners.iter().position(|b| b.3 == asked).unwrap();
        assert!(asked_rank >= i.min(5), "step {i}: {marks:?}");
    }
    assert_eq!(
        steps_out[5]["topText"], "TOP SECRET//SI",
        "the SI question raises the banner to the yellow one"
    );

    // Kept: the reloaded page shows the whole conversation under its highest banner, listed.
    let reloaded = &out["reloaded"];
    assert_eq!(reloaded["messages"], 2 * steps.len(), "{reloaded}");
    assert_eq!(reloaded["marks"], steps_out[5]["marks"], "{reloaded}");
    assert_eq!(reloaded["banner"], "TOP SECRET//SI", "{reloaded}");
    assert!(reloaded["listed"].as_u64().unwrap() >= 1, "{reloaded}");
    let exported = out["exported"].as_str().unwrap();
    assert!(exported.starts_with("**TOP SECRET//SI**\n"), "{exported}");
    assert!(
        exported.trim_end().ends_with("**TOP SECRET//SI**"),
        "{exported}"
    );
    assert!(
        exported.contains("**You** (S) (S) Where is the harbour crane CANARYTALK?"),
        "{exported}"
    );

    // Grounded at the lowest working label, only the UNCLASSIFIED passage is read and cited;
    // at SECRET, the SECRET passage is cited with its mark and document, and the banner rises
    // to SECRET, in red.
    let cited = out["cited"].as_array().unwrap();
    let texts = |n: usize| -> Vec<String> {
        cited[n]["citations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(cited[0]["errors"], json!([]), "{}", cited[0]);
    assert_eq!(cited[0]["topText"], "UNCLASSIFIED", "{}", cited[0]);
    assert!(
        texts(0)
            .iter()
            .all(|c| c.contains("(U)") && !c.contains("CANARYSECRET")),
        "{:?}",
        texts(0)
    );
    assert!(
        texts(0).iter().any(|c| c.contains("CANARYUNCLAS")),
        "{:?}",
        texts(0)
    );
    assert_eq!(cited[1]["errors"], json!([]), "{}", cited[1]);
    assert_eq!(cited[1]["topText"], "SECRET", "{}", cited[1]);
    assert_eq!(cited[1]["top"], "#c8102e", "{}", cited[1]);
    assert_eq!(cited[1]["bottom"], "#c8102e", "{}", cited[1]);
    assert!(
        texts(1)
            .iter()
            .any(|c| c.contains("(S)") && c.contains("ferries.md") && c.contains("CANARYSECRET")),
        "{:?}",
        texts(1)
    );

    // The administrator: tables from the API; a key shown once, working, gone from the page
    // after a reload, and dead once revoked; a knowledge base made and filled in the page, the
    // refused file named with its reason; a search at SECRET raises the banner to SECRET.
    let admin = &out["admin"];
    let rows = |k: &str| -> Vec<String> {
        admin[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k}: {admin}"))
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    assert!(
        rows("tenants").iter().any(|t| t.contains("default")),
        "{admin}"
    );
    assert!(
        rows("deployments").iter().any(|d| d.contains("embedded")),
        "{admin}"
    );
    let sha = regex_free_hex(&rows("models").join(" "));
    assert!(sha >= 2, "pinned hashes shown: {admin}");
    assert!(admin["usageDays"].as_u64().unwrap() >= 1, "{admin}");
    assert!(!rows("usageRows").is_empty(), "{admin}");
    assert!(
        admin["secret"].as_str().unwrap().starts_with("ek_"),
        "{admin}"
    );
    assert_eq!(admin["secretWorks"], 200, "{admin}");
    assert_eq!(admin["secretAfterReload"], false, "{admin}");
    assert_eq!(admin["secretAfterRevoke"], 401, "{admin}");
    assert_eq!(admin["uploadStatus"], "Uploaded 1 of 2 file(s).", "{admin}");
    let uploads = admin["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2, "{admin}");
    assert!(
        uploads
            .iter()
            .any(|u| u["ok"] == true && u["text"].as_str().unwrap().contains("manual.md")),
        "{admin}"
    );
    assert!(
        uploads.iter().any(|u| u["ok"] == false
            && u["text"].as_str().unwrap().contains("refused.txt")
            && u["text"].as_str().unwrap().contains("unrecognized_marking")),
        "{admin}"
    );
    assert!(
        rows("documents")
            .iter()
            .any(|d| d.contains("manual.md") && d.contains("ready")),
        "{admin}"
    );
    assert!(
        rows("passages")
            .iter()
            .any(|p| p.contains("(S)") && p.contains("CANARYPUMP")),
        "{admin}"
    );
    assert_eq!(admin["banner"]["topText"], "SECRET", "{admin}");
    assert_eq!(admin["banner"]["top"], "#c8102e", "{admin}");
    assert_eq!(admin["csp"], json!([]), "{admin}");
    let refusals: Vec<&str> = admin["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals.contains(&"/v1/models 401"), "{refusals:?}");
    assert!(
        refusals.iter().any(|r| r.ends_with("/documents 422")),
        "{refusals:?}"
    );

    // No read-up through the console: the UNCLASSIFIED reader's pages — the chat page, a
    // grounded answer with its citations, the other person's conversation address, the API
    // calls the pages make — hold no SECRET word, while the UNCLASSIFIED passage is cited.
    let reader = &out["reader"];
    let reader_citations = reader["citations"].to_string();
    assert!(reader_citations.contains("CANARYUNCLAS"), "{reader}");
    assert!(reader_citations.contains("(U)"), "{reader}");
    assert!(
        reader["notice"]
            .as_str()
            .unwrap_or_default()
            .contains("no conversation"),
        "{reader}"
    );
    assert_eq!(reader["banner"], "UNCLASSIFIED", "{reader}");
    let pages = reader["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 10);
    let searched = reader["searched"].to_string();
    assert!(
        searched.contains("CANARYUNCLAS") && !searched.contains("CANARYSECRET"),
        "{reader}"
    );
    for (i, page) in pages.iter().enumerate() {
        let page = page.as_str().unwrap();
        for canary in ["CANARYSECRET", "CANARYTALK", "harbour crane", "CANARYPUMP"] {
            assert!(
                !page.contains(canary),
                "reader page {i} shows `{canary}`: {page}"
            );
        }
    }

    assert_eq!(out["errors"], json!([]), "console errors");
    assert_eq!(out["csp"], json!([]), "CSP violations");
    let reached: Vec<&str> = out["keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    for control in ["model", "label", "max-tokens", "prompt", "send", "Sign out"] {
        assert!(
            reached.contains(&control),
            "{control} by keyboard: {reached:?}"
        );
    }
    let weight = out["weight"].as_u64().unwrap();
    assert!(
        weight > 2_000 && weight < 150_000,
        "chat page weight {weight} bytes"
    );
    println!(
        "chat page weight: {weight} bytes (HTML + CSS + JS): {}",
        out["weighed"]
    );
    for part in [
        "/console",
        "/console/assets/common.js",
        "/console/assets/chat.js",
        "/console/assets/console.css",
        "/console/labels.css",
    ] {
        assert!(
            out["weighed"].as_array().unwrap().contains(&json!(part)),
            "{part} weighed: {}",
            out["weighed"]
        );
    }
    // The auditor sees the records and the signed checkpoint, and the page verifies a record's
    // inclusion itself; a tampered proof fails there.
    let audit = &out["audit"];
    assert!(audit["rows"].as_u64().unwrap() >= 5, "{audit}");
    // Records hold no content: the page stays at the lowest label, whatever labels they name.
    assert_eq!(audit["banner"], "UNCLASSIFIED", "{audit}");
    assert!(
        audit["checkpoint"].as_str().unwrap().contains("\n— "),
        "a signed note: {audit}"
    );
    assert!(
        audit["verified"]
            .as_str()
            .unwrap()
            .starts_with("✓ verified"),
        "{audit}"
    );
    assert!(
        audit["tampered"]
            .as_str()
            .unwrap()
            .starts_with("✗ does not verify"),
        "{audit}"
    );
    // The auditor's filters: alice's allowed calls at TOP SECRET, and nothing else.
    let filtered = audit["filtered"].as_array().unwrap();
    assert!(!filtered.is_empty(), "{audit}");
    for row in filtered {
        let cells: Vec<&str> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(cells[4].contains("alice"), "{cells:?}");
        assert!(cells[5].starts_with('2'), "{cells:?}");
        assert!(cells[6].contains("TOP SECRET"), "{cells:?}");
    }

    // Time to first token: on screen in the console against the API's own, same run.
    let series = |k: &str, field: Option<&str>| -> Vec<f64> {
        let mut v: Vec<f64> = out["firstToken"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let x = field.map_or(x, |f| &x[f]);
                x.as_f64()
                    .unwrap_or_else(|| panic!("{k}: {}", out["firstToken"]))
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let median = |v: Vec<f64>| (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0;
    let shown = median(series("console", Some("shown")));
    let api = median(series("api", None));
    let before = median(series("console", Some("before")));
    println!(
        "first token: API {api:.1} ms, shown in the console {shown:.1} ms ({:+.1} ms; of which {before:.1} ms before the request), medians of 6: {}",
        shown - api,
        out["firstToken"]
    );

    assert!(
        out["forged"].as_str().unwrap().contains("csrf_refused"),
        "a forged cross-origin post: {}",
        out["forged"]
    );
}

/// How many 64-digit hexadecimal words (SHA-256 digests) `text` holds.
fn regex_free_hex(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
        .count()
}
