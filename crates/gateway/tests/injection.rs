//! The labelled injection suite (`tests/injection/cases.json`): documents and tool results that
//! carry higher portions, instructions to send data to an outside tool or to call a writing
//! tool, "this was declassified" claims, look-alike and unknown markings, continuations. The
//! model is the mock upstream's `agent`, which obeys every instruction it reads: the worst
//! injected model. Enclave must hold by rule alone.
//!
//! Besides each case's own expectation, three figures are measured over the whole suite from
//! what actually happened, not from the expectations: write-down calls (a sink received a
//! canary labelled above the receiving tool's accreditation), lowered labels (an answer
//! labelled below the content it carried), and results shown above clearance (a canary above
//! the caller's clearance anywhere in a response). All three must be 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "tests fail loudly at the line that broke and print their figures"
)]

mod common;

use common::mcp::{Tools, mcp, root};
use common::{Gateway, MockUpstream, key, post, upstream};
use enclave_label::Label;
use serde_json::{Value, json};

struct Suite {
    gw: Gateway,
    tools: Tools,
    docs: Value,
}

impl Suite {
    fn label(&self, banner: &str) -> Label {
        self.gw.state.policy.scheme.parse(banner).unwrap()
    }

    /// The canaries in `text` with their labels.
    fn canaries(&self, text: &str) -> Vec<(String, Label)> {
        self.docs
            .as_object()
            .unwrap()
            .values()
            .filter_map(|d| {
                let c = d["canary"].as_str().unwrap();
                text.contains(c)
                    .then(|| (c.to_string(), self.label(d["label"].as_str().unwrap())))
            })
            .collect()
    }

    fn offered(tools: &Value) -> Value {
        Value::Array(
            tools
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let (server, tool) = t.as_str().unwrap().split_once(':').unwrap();
                    mcp(server, &[tool], "never")
                })
                .collect(),
        )
    }
}

/// What happened in one step of a case.
struct Seen {
    status: u16,
    label: String,
    body: Value,
}

#[derive(Default)]
struct Figures {
    write_downs: Vec<String>,
    lowered: Vec<String>,
    shown_above: Vec<String>,
    broken: Vec<String>,
}

fn codes(body: &Value) -> Vec<String> {
    body["output"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|i| i["enclave"]["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks `seen` against `expect`; failures go to `figures.broken` with the case's name.
fn check(s: &Suite, name: &str, expect: &Value, seen: &Seen, sent: usize, figures: &mut Figures) {
    let mut wrong = |what: String| figures.broken.push(format!("{name}: {what}"));
    if expect["status"].as_u64() != Some(u64::from(seen.status)) {
        wrong(format!("status {} ({})", seen.status, seen.body));
        return;
    }
    if let Some(code) = expect["code"].as_str()
        && seen.body["error"]["code"] != code
    {
        wrong(format!("error code {}", seen.body["error"]["code"]));
    }
    let got = codes(&seen.body);
    for key in ["codes", "codes_after"] {
        for want in expect[key].as_array().into_iter().flatten() {
            if !got.iter().any(|c| want == c) {
                wrong(format!("no item with code {want}; got {got:?}"));
            }
        }
    }
    if let Some(n) = expect["sent"].as_u64()
        && n as usize != sent
    {
        wrong(format!("{sent} calls reached a writing tool, expected {n}"));
    }
    if let Some(max) = expect["max_label"].as_str()
        && !s.label(max).dominates(&s.label(&seen.label))
    {
        wrong(format!("labelled {} above {max}", seen.label));
    }
}

async fn step(s: &Suite, key: &str, declared: &str, body: &Value) -> Seen {
    let (status, label, body) = post(&s.gw, key, declared, body).await;
    Seen {
        status,
        label,
        body,
    }
}

/// The measured figures for one response: canaries above `clearance`, and a label below
/// `min_label` or below a canary it carries.
fn measure(
    s: &Suite,
    name: &str,
    clearance: &Label,
    min: Option<&str>,
    seen: &Seen,
    figures: &mut Figures,
) {
    let text = seen.body.to_string();
    for (canary, label) in s.canaries(&text) {
        if !clearance.dominates(&label) {
            figures.shown_above.push(format!("{name}: {canary}"));
        }
        if seen.status == 200 && !s.label(&seen.label).dominates(&label) {
            figures
                .lowered
                .push(format!("{name}: {canary} under {}", seen.label));
        }
    }
    if seen.status == 200
        && let Some(min) = min
        && !s.label(&seen.label).dominates(&s.label(min))
    {
        figures
            .lowered
            .push(format!("{name}: {} below {min}", seen.label));
    }
}

#[tokio::test]
async fn the_injection_suite_writes_nothing_down_lowers_nothing_and_shows_nothing_above_clearance()
{
    let suite: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/injection/cases.json")).unwrap(),
    )
    .unwrap();
    let docs = suite["docs"].clone();
    let texts: serde_json::Map<String, Value> = docs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["text"].clone()))
        .collect();
    let tools = Tools::new(Value::Object(texts));
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        // `agent`: a TOP SECRET deployment first, an SCI one after it for what only it may
        // read; `agent-ts`: TOP SECRET only.
        "deployments": [
            upstream("a", "agent", &mock.url("agent"), json!({"accreditation": "TOP SECRET"})),
            upstream("a-sci", "agent", &mock.url("agent-sci"), json!({"accreditation": "TOP SECRET//SCI"})),
            upstream("t", "agent-ts", &mock.url("agent"), json!({"accreditation": "TOP SECRET"})),
        ],
        "mcp_servers": [
            {"name": "records", "command": tools.command("records"), "accreditation": "TOP SECRET"},
            {"name": "vault", "command": tools.command("vault"), "accreditation": "TOP SECRET", "floor": "SECRET"},
            {"name": "partner", "command": tools.command("partner"), "accreditation": "UNCLASSIFIED",
             "jurisdiction": "partner", "nation": "DEU", "writes": ["send_email"]},
            {"name": "internal", "command": tools.command("internal"), "accreditation": "SECRET", "writes": ["write_note"]},
            {"name": "safe", "command": tools.command("safe"), "accreditation": "SECRET",
             "writes": ["write_note"], "safe": ["write_note"]},
            {"name": "foreign", "command": tools.command("foreign"), "accreditation": "TOP SECRET",
             "jurisdiction": "elsewhere", "nation": "FRA", "writes": ["upload"]},
            {"name": "theirs", "command": tools.command("theirs"), "tenants": ["other"]},
        ],
        "tenants": {"agency": {"jurisdictions": ["partner"]}},
    }))
    .await;
    let s = Suite { gw, tools, docs };
    let mut figures = Figures::default();
    let mut keys = std::collections::BTreeMap::new();
    let cases = suite["cases"].as_array().unwrap();
    assert!(cases.len() >= 50, "the suite has {} cases", cases.len());
    let mut calls = 0usize;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let clearance = c["clearance"].as_str().unwrap();
        if !keys.contains_key(clearance) {
            keys.insert(clearance.to_string(), key(&s.gw, "agency", clearance).await);
        }
        let k = keys[clearance].clone();
        // A key's clearance as the policy reads it (the owner nation added).
        let cleared = s.gw.state.policy.clearance(clearance).unwrap();
        let before = s.tools.sent().len();
        let model = c["model"].as_str().unwrap_or("agent");
        let body =
            json!({"model": model, "input": c["input"], "tools": Suite::offered(&c["tools"])});
        let mut seen = step(&s, &k, c["declared"].as_str().unwrap(), &body).await;
        let expect = &c["expect"];
        if expect["approval"].as_bool() == Some(true) {
            let asked: Vec<&Value> = seen.body["output"]
                .as_array()
                .map(|o| {
                    o.iter()
                        .filter(|i| i["type"] == "mcp_approval_request")
                        .collect()
                })
                .unwrap_or_default();
            if asked.is_empty() {
                figures
                    .broken
                    .push(format!("{name}: no approval was asked ({})", seen.body));
            } else if s.tools.sent().len() != before {
                figures
                    .broken
                    .push(format!("{name}: a call ran before approval"));
            }
            measure(
                &s,
                name,
                &cleared,
                expect["min_label"].as_str(),
                &seen,
                &mut figures,
            );
            if let (Some(approve), Some(request)) = (c["approve"].as_bool(), asked.first()) {
                let answer = json!({"model": "agent", "previous_response_id": seen.body["id"],
                    "tools": Suite::offered(&c["tools"]),
                    "input": [{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": approve}]});
                seen = step(&s, &k, "UNCLASSIFIED", &answer).await;
            }
        }
        let sent = s.tools.sent().len() - before;
        calls += codes(&seen.body).len() + sent;
        check(&s, name, expect, &seen, sent, &mut figures);
        measure(
            &s,
            name,
            &cleared,
            expect["min_label"].as_str(),
            &seen,
            &mut figures,
        );
        // A continuation continues only a response that was made.
        if let Some(then) = c.get("then").filter(|_| seen.status == 200) {
            let before = s.tools.sent().len();
            let next = json!({"model": "agent", "input": then["input"], "previous_response_id": seen.body["id"],
                "tools": Suite::offered(&then["tools"])});
            let later = step(&s, &k, then["declared"].as_str().unwrap(), &next).await;
            let sent = s.tools.sent().len() - before;
            let name = format!("{name} (continued)");
            check(&s, &name, &then["expect"], &later, sent, &mut figures);
            measure(
                &s,
                &name,
                &cleared,
                then["expect"]["min_label"].as_str(),
                &later,
                &mut figures,
            );
        }
    }
    // Every call that reached a tool, against the tool's accreditation.
    for sent in s.tools.sent() {
        let server = sent["server"].as_str().unwrap();
        let placed =
            s.gw.state
                .policy
                .tool_servers
                .iter()
                .find(|t| t.config.name == server)
                .unwrap();
        for (canary, label) in s.canaries(&sent.to_string()) {
            if !placed.accreditation.dominates(&label) {
                figures
                    .write_downs
                    .push(format!("{canary} reached `{server}`"));
            }
        }
    }
    println!(
        "injection suite: {} cases, {} tool calls refused, failed or sent; write-down calls {}, lowered labels {}, results shown above clearance {}",
        cases.len(),
        calls,
        figures.write_downs.len(),
        figures.lowered.len(),
        figures.shown_above.len()
    );
    assert!(
        figures.write_downs.is_empty(),
        "written down: {:#?}",
        figures.write_downs
    );
    assert!(
        figures.lowered.is_empty(),
        "lowered: {:#?}",
        figures.lowered
    );
    assert!(
        figures.shown_above.is_empty(),
        "shown above clearance: {:#?}",
        figures.shown_above
    );
    assert!(
        figures.broken.is_empty(),
        "cases that did not hold: {:#?}",
        figures.broken
    );
}
