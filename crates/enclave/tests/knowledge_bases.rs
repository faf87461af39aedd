//! Knowledge bases end to end on the real binary: files of every format added with the CLI,
//! label-filtered search and answers for readers at several clearances — checked on the prompt
//! the model actually received (the mock upstream keeps it) — deletion, tenant isolation, and a
//! server killed mid-ingestion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use enclave_mock_upstream::MockUpstream;
use serde_json::{Value, json};

/// Canaries: one unique word per passage, with the label its portion mark gives it.
const CANARIES: &[(&str, &str)] = &[
    ("ZEPHYRU1", "U"),
    ("ZEPHYRC2", "C"),
    ("ZEPHYRS3", "S"),
    ("ZEPHYRTS4", "TS//SI"),
    ("ZEPHYRU5", "U"),
    ("ZEPHYRS6", "S"),
    ("ZEPHYRC7", "C"),
    ("ZEPHYRU8", "U"),
    // A full-width portion mark (`（TS//SI）`) in a document uploaded as UNCLASSIFIED.
    ("ZEPHYRLOOK9", "TS//SI"),
];

/// Canaries of documents refused at upload: never stored, so never in a search or a prompt.
const NEVER_STORED: [&str; 2] = ["ZEPHYRSCI10", "ZEPHYRXYZ11"];

fn level_rank(l: &str) -> u8 {
    match l {
        "U" | "UNCLASSIFIED" => 0,
        "C" | "CONFIDENTIAL" => 1,
        "S" | "SECRET" => 2,
        _ => 3,
    }
}

/// Whether a reader at `clearance` (one of U, S, TS//SI here) may read a passage marked `label`.
fn readable(clearance: &str, label: &str) -> bool {
    level_rank(clearance) >= level_rank(label)
}

fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(
        dir.join("harbour.md"),
        "SECRET\n\n# Harbour crane report\n\n(U) The harbour crane ZEPHYRU1 is inspected every March.\n\n\
         (C) The harbour crane ZEPHYRC2 contractor is Baltic Lift.\n\n\
         (S) The harbour crane ZEPHYRS3 hides a radar relay.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/signals.html"),
        "<html><body><p>(TS//SI) Intercepts near the harbour crane ZEPHYRTS4 name the courier.</p></body></html>",
    )
    .unwrap();
    std::fs::write(
        dir.join("memo.docx"),
        enclave_kb::testdata::docx(&[
            "(U) Harbour crane ZEPHYRU5 paint schedule is public.",
            "(S) Harbour crane ZEPHYRS6 keys are held by the night watch.",
        ]),
    )
    .unwrap();
    std::fs::write(
        dir.join("scan.pdf"),
        enclave_kb::testdata::pdf(&[
            "(C) Harbour crane ZEPHYRC7 load limits were exceeded in May.",
        ]),
    )
    .unwrap();
    // Unmarked: takes the label given on the command line.
    std::fs::write(
        dir.join("notes.txt"),
        "Harbour crane ZEPHYRU8 visitors sign in at the gate.",
    )
    .unwrap();
    // Unreadable: reported, the rest go on.
    std::fs::write(dir.join("broken.pdf"), b"%PDF-1.7 this is not a pdf").unwrap();
}

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            rt: tokio::runtime::Runtime::new().unwrap(),
            http: common::http().build().unwrap(),
            base: base.to_string(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        label: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.rt.block_on(async {
            let url = format!("{}{path}", self.base);
            let mut req = match method {
                "GET" => self.http.get(url),
                "DELETE" => self.http.delete(url),
                _ => self.http.post(url),
            }
            .bearer_auth(key);
            if let Some(b) = body {
                req = req.json(&b);
            }
            if let Some(l) = label {
                req = req.header("enclave-label", l);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap();
            (
                status,
                headers,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }
}

fn canaries_in(text: &str) -> Vec<(&'static str, &'static str)> {
    CANARIES
        .iter()
        .filter(|(c, _)| text.contains(c))
        .copied()
        .collect()
}

fn body_id(c: &Client, key: &str, kb: &str, name: &str) -> String {
    let (_, _, list) = c.call(
        "GET",
        &format!("/v1/knowledge-bases/{kb}/documents"),
        key,
        None,
        None,
    );
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn wait_ingested(c: &Client, key: &str, kb: &str, want_ready: u64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, _, info) =
            c.call("GET", &format!("/v1/knowledge-bases/{kb}"), key, None, None);
        assert_eq!(status, 200, "{info}");
        let d = &info["documents"];
        if d["ready"].as_u64().unwrap() >= want_ready
            && d["queued"].as_u64() == Some(0)
            && d["indexing"].as_u64() == Some(0)
        {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "ingestion did not finish: {info}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn no_read_up_in_search_answers_and_the_prompt_the_model_receives() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockUpstream::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        format!(
            "[[deployments]]\nname = \"mock-chat\"\nmodel = \"mock-chat\"\nbackend = \"openai\"\n\
             base_url = \"{}\"\naccreditation = \"TOP SECRET//SI\"\njurisdiction = \"enclave\"\n",
            mock.url("ok")
        ),
    )
    .unwrap();
    let s = Server::start_with(&[("ENCLAVE_CONFIG", config.to_str().unwrap())]);
    let c = Client::new(&s.base);
    let admin = s.cleared_key("default", "admin", "TS//SI");
    let readers: Vec<(&str, String)> = ["U", "S", "TS//SI"]
        .iter()
        .map(|l| (*l, s.cleared_key("default", "user", l)))
        .collect();

    // Create with the CLI; a maximum above the creator's clearance is refused.
    let (ok, out, err) = s.cli(&[
        "kb",
        "create",
        "harbour",
        "--tenant",
        "default",
        "--max-label",
        "TS//SI",
        "--url",
        &s.base,
        "--key",
        &admin,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("harbour"), "{out}");
    let low_admin = s.cleared_key("default", "admin", "C");
    let (ok, _, err) = s.cli(&[
        "kb",
        "create",
        "other",
        "--max-label",
        "S",
        "--url",
        &s.base,
        "--key",
        &low_admin,
    ]);
    assert!(!ok && err.contains("label_exceeds_clearance"), "{err}");
    // Users cannot create knowledge bases.
    let (status, _, body) = c.call(
        "POST",
        "/v1/knowledge-bases",
        &readers[0].1,
        Some(json!({"name": "mine", "max_label": "U"})),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden_by_policy"))
    );

    // Add a folder with the CLI: every format; the broken file is reported and the rest go on.
    let docs = dir.path().join("docs");
    write_corpus(&docs);
    let (ok, _, err) = s.cli(&[
        "kb",
        "add",
        "harbour",
        docs.to_str().unwrap(),
        "--label",
        "U",
        "--url",
        &s.base,
        "--key",
        &admin,
    ]);
    assert!(!ok, "a refused file makes the command fail");
    assert!(
        err.contains("broken.pdf") && err.contains("unreadable_document"),
        "{err}"
    );
    assert!(err.contains("5 uploaded, 1 refused"), "{err}");
    let info = wait_ingested(&c, &admin, "harbour", 5, Duration::from_secs(120));
    assert_eq!(info["chunks"], info["indexed_text"]);
    assert_eq!(info["chunks"], info["indexed_vectors"]);
    let kb = info["id"].as_str().unwrap().to_string();

    // Status per document, with labels from the documents' own markings.
    let (_, _, list) = c.call(
        "GET",
        &format!("/v1/knowledge-bases/{kb}/documents"),
        &admin,
        None,
        None,
    );
    let by_name = |n: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {list}"))
            .clone()
    };
    assert_eq!(by_name("harbour.md")["label"], "SECRET");
    assert_eq!(by_name("sub/signals.html")["label"], "TOP SECRET//SI");
    assert_eq!(by_name("scan.pdf")["label"], "CONFIDENTIAL");
    assert_eq!(by_name("scan.pdf")["pages"], 1);
    assert_eq!(by_name("notes.txt")["label"], "UNCLASSIFIED");
    let memo = by_name("memo.docx");
    assert_eq!(memo["status"], "ready");
    let (status, _, one) = c.call(
        "GET",
        &format!(
            "/v1/knowledge-bases/{kb}/documents/{}",
            memo["id"].as_str().unwrap()
        ),
        &admin,
        None,
        None,
    );
    assert_eq!((status, one["chunks"].as_u64()), (200, Some(2)));

    // An unmarked document without a label is refused with a clear error; above the maximum
    // or the uploader's clearance too.
    let (status, _, body) = c.call(
        "POST",
        &format!("/v1/knowledge-bases/{kb}/documents"),
        &admin,
        Some(json!({"name": "bare.txt", "text": "no markings at all"})),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("label_required"))
    );
    let (status, _, body) = c.call(
        "POST",
        &format!("/v1/knowledge-bases/{kb}/documents"),
        &readers[1].1,
        Some(json!({"name": "ts.txt", "text": "TOP SECRET\n\nabove the uploader"})),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("label_exceeds_clearance"))
    );

    // Multipart upload (as curl -F sends it).
    let boundary = "xXenclaveXx";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\nCONFIDENTIAL\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"tide.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nTide tables for the harbour crane berth.\r\n--{boundary}--\r\n"
    );
    let (status, body) = c.rt.block_on(async {
        let r = c
            .http
            .post(format!("{}/v1/knowledge-bases/{kb}/documents", s.base))
            .bearer_auth(&admin)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(form)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["label"], "CONFIDENTIAL");
    // Queued, or already taken by the worker.
    assert!(
        ["queued", "indexing", "ready"].contains(&body["status"].as_str().unwrap()),
        "{body}"
    );

    // Markings that used to fail open: a `(TS//SCI)` paragraph in a document uploaded as
    // UNCLASSIFIED reads as TOP SECRET with every SCI compartment (above the uploader and this
    // knowledge base's maximum: refused whole); an unknown control is refused naming the paragraph; a full-width
    // portion mark is read at its level and stored there.
    let upload = |name: &str, text: &str| {
        c.call(
            "POST",
            &format!("/v1/knowledge-bases/{kb}/documents"),
            &admin,
            Some(json!({"name": name, "label": "UNCLASSIFIED", "text": text})),
            None,
        )
    };
    let (status, _, body) = upload(
        "sci.txt",
        "(U) Harbour crane schedule.\n\n(TS//SCI) ZEPHYRSCI10 the site is north.\n\n(S//FOUO) harbour crane.",
    );
    // Above the uploader's clearance (TS//SI) as well as the maximum: the first check refuses.
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("label_exceeds_clearance")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("HCS"),
        "{body}"
    );
    let (status, _, body) = upload(
        "xyz.txt",
        "(U) Harbour crane schedule.\n\n(S//XYZ) ZEPHYRXYZ11 harbour crane.",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unrecognized_marking")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("paragraph 2") && message.contains("`XYZ`"),
        "{message}"
    );
    let (status, _, body) = upload(
        "lookalike.txt",
        "(U) Harbour crane log.\n\n\u{FF08}TS//SI\u{FF09} ZEPHYRLOOK9 harbour crane berth.",
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["label"], "TOP SECRET//SI", "{body}");

    // Documents may be larger than API calls: a 6 MiB file (mostly an HTML comment, so it
    // indexes quickly) is accepted; a body over the upload limit gets 413, and the server goes on.
    let big = format!(
        "<!-- {} -->\n\n(U) Harbour crane appendix.\n",
        "x".repeat(6 << 20)
    );
    let (status, _, body) = c.call(
        "POST",
        &format!("/v1/knowledge-bases/{kb}/documents"),
        &admin,
        Some(json!({"name": "appendix.md", "text": big})),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = c.call(
        "POST",
        &format!("/v1/knowledge-bases/{kb}/documents"),
        &admin,
        Some(json!({"name": "huge.txt", "text": "y".repeat(50 << 20)})),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("request_too_large"))
    );
    let (status, _, _) = c.call(
        "DELETE",
        &format!(
            "/v1/knowledge-bases/{kb}/documents/{}",
            body_id(&c, &admin, &kb, "appendix.md")
        ),
        &admin,
        None,
        None,
    );
    assert_eq!(status, 200);
    wait_ingested(&c, &admin, &kb, 7, Duration::from_secs(60));

    for (clearance, key) in &readers {
        // Search: only passages the clearance dominates; k of them when there are k.
        let (status, headers, res) = c.call(
            "POST",
            &format!("/v1/knowledge-bases/{kb}/search"),
            key,
            Some(json!({"query": "harbour crane", "k": 10})),
            None,
        );
        assert_eq!(status, 200, "{res}");
        let hits = res["data"].as_array().unwrap();
        let visible = CANARIES
            .iter()
            .filter(|(_, l)| readable(clearance, l))
            .count();
        assert!(
            hits.len() >= visible,
            "{clearance}: {} hits, {visible} readable",
            hits.len()
        );
        for h in hits {
            let label = h["label"].as_str().unwrap();
            assert!(readable(clearance, label), "{clearance} got {label}: {h}");
        }
        for (canary, label) in canaries_in(&res.to_string()) {
            assert!(readable(clearance, label), "{clearance} got {canary}");
        }
        for canary in NEVER_STORED {
            assert!(
                !res.to_string().contains(canary),
                "a refused document was stored"
            );
        }
        assert!(headers.contains_key("enclave-audit-index"));

        // Answer: citations and the prompt the model received stay below the clearance.
        let (status, headers, ans) = c.call(
            "POST",
            &format!("/v1/knowledge-bases/{kb}/answer"),
            key,
            Some(json!({"question": "What is known about the harbour crane?", "model": "mock-chat", "k": 8})),
            None,
        );
        assert_eq!(status, 200, "{ans}");
        let prompt = mock.stats()["last_request"].to_string();
        let in_prompt = canaries_in(&prompt);
        assert!(!NEVER_STORED.iter().any(|c| prompt.contains(c)));
        assert!(
            !in_prompt.is_empty(),
            "retrieval placed nothing in the prompt: {prompt}"
        );
        for (canary, label) in &in_prompt {
            assert!(
                readable(clearance, label),
                "{clearance}'s prompt carried {canary}"
            );
        }
        let cited = ans["citations"].as_array().unwrap();
        for cite in cited {
            let text = cite["text"].as_str().unwrap();
            let head: String = text.lines().next().unwrap().chars().take(30).collect();
            assert!(
                prompt.contains(&head),
                "a listed passage was not in the prompt: {text}"
            );
        }
        let mut high = 0;
        for cite in cited {
            let l = cite["label"].as_str().unwrap();
            assert!(readable(clearance, l));
            high = high.max(level_rank(l));
        }
        // The answer's label is the high-water mark of what informed it.
        let answer_label = ans["label"].as_str().unwrap();
        assert_eq!(level_rank(answer_label), high, "{ans}");
        assert_eq!(headers["enclave-label"].to_str().unwrap(), answer_label);

        // Chat completions with the knowledge base named in metadata.
        let (status, _, chat) = c.call(
            "POST",
            "/v1/chat/completions",
            key,
            Some(json!({
                "model": "mock-chat",
                "messages": [{"role": "user", "content": "Tell me about the harbour crane."}],
                "metadata": {"knowledge_bases": "harbour"},
            })),
            None,
        );
        assert_eq!(status, 200, "{chat}");
        let prompt = mock.stats()["last_request"].to_string();
        assert!(!canaries_in(&prompt).is_empty(), "{prompt}");
        for (canary, label) in canaries_in(&prompt) {
            assert!(
                readable(clearance, label),
                "{clearance}'s chat prompt carried {canary}"
            );
        }
        assert!(!chat["enclave"]["citations"].as_array().unwrap().is_empty());
    }

    // A reader working at a lower declared label sees only that.
    let (_, _, res) = c.call(
        "POST",
        &format!("/v1/knowledge-bases/{kb}/search"),
        &readers[2].1,
        Some(json!({"query": "harbour crane", "k": 10})),
        Some("UNCLASSIFIED"),
    );
    for h in res["data"].as_array().unwrap() {
        assert_eq!(h["label"], "UNCLASSIFIED", "{h}");
    }
    // And cannot declare one above the clearance.
    let (status, _, _) = c.call(
        "POST",
        &format!("/v1/knowledge-bases/{kb}/search"),
        &readers[0].1,
        Some(json!({"query": "harbour crane"})),
        Some("SECRET"),
    );
    assert_eq!(status, 403);

    // Streamed answer: citations first, then text, then done.
    let body = c.rt.block_on(async {
        c.http
            .post(format!("{}/v1/knowledge-bases/{kb}/answer", s.base))
            .bearer_auth(&readers[1].1)
            .json(&json!({"question": "harbour crane keys?", "model": "mock-chat", "stream": true}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "citations", "{body}");
    assert!(events.iter().any(|e| e["type"] == "delta"));
    assert_eq!(events.last().unwrap()["type"], "done");
    assert!(body.trim_end().ends_with("data: [DONE]"));

    // Another tenant's key: the knowledge base does not exist for it.
    assert!(s.cli(&["tenants", "create", "other-agency"]).0);
    let stranger = s.cleared_key("other-agency", "admin", "TS//SI");
    let (status, _, _) = c.call(
        "GET",
        &format!("/v1/knowledge-bases/{kb}"),
        &stranger,
        None,
        None,
    );
    assert_eq!(status, 404);
    let (status, _, _) = c.call(
        "POST",
        &format!("/v1/knowledge-bases/{kb}/search"),
        &stranger,
        Some(json!({"query": "harbour crane"})),
        None,
    );
    assert_eq!(status, 404);

    // Delete: gone from every index, and audited.
    let harbour = by_name("harbour.md");
    let doc = harbour["id"].as_str().unwrap();
    let (status, headers, _) = c.call(
        "DELETE",
        &format!("/v1/knowledge-bases/{kb}/documents/{doc}"),
        &admin,
        None,
        None,
    );
    assert_eq!(status, 200);
    assert!(headers.contains_key("enclave-audit-index"));
    for mode in ["hybrid", "vector", "text"] {
        let (_, _, res) = c.call(
            "POST",
            &format!("/v1/knowledge-bases/{kb}/search"),
            &admin,
            Some(json!({"query": "harbour crane ZEPHYRS3 ZEPHYRU1", "k": 50, "mode": mode})),
            None,
        );
        let text = res.to_string();
        assert!(
            !text.contains("ZEPHYRS3") && !text.contains("ZEPHYRU1"),
            "{mode}: {text}"
        );
    }
    let info = wait_ingested(&c, &admin, &kb, 5, Duration::from_secs(10));
    assert_eq!(info["chunks"], info["indexed_text"]);
    assert_eq!(info["chunks"], info["indexed_vectors"]);
    let auditor = s.cleared_key("default", "auditor", "U");
    let (_, _, records) = c.call("GET", "/v1/audit/records?from=0", &auditor, None, None);
    let deletions: Vec<&Value> = records["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .filter(|r| {
            r["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("DELETE /v1/knowledge-bases/") && o.ends_with(doc))
        })
        .collect();
    assert_eq!(deletions.len(), 1, "{records}");
    assert_eq!(deletions[0]["request_label"], "SECRET");
    assert_eq!(deletions[0]["status"], 200);

    // The CLI prints hits with their labels.
    let (ok, out, err) = s.cli(&[
        "kb",
        "search",
        "harbour",
        "crane keys",
        "--url",
        &s.base,
        "--key",
        &readers[1].1,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("[SECRET]") && out.contains("memo.docx"),
        "{out}"
    );
}

#[test]
fn a_server_killed_mid_ingestion_resumes_without_duplicates_or_orphans() {
    let mut s = Server::start();
    let c = Client::new(&s.base);
    let admin = s.cleared_key("default", "admin", "S");
    let (ok, _, err) = s.cli(&[
        "kb",
        "create",
        "bulk",
        "--max-label",
        "S",
        "--url",
        &s.base,
        "--key",
        &admin,
    ]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let topics = [
        "harbour",
        "customs",
        "fisheries",
        "rail",
        "border",
        "grain",
        "permits",
    ];
    for i in 0..1000 {
        let t = topics[i % topics.len()];
        let mark = if i.is_multiple_of(3) { "(S)" } else { "(U)" };
        std::fs::write(
            dir.path().join(format!("doc-{i:04}.txt")),
            format!("{mark} Report {i} on {t} operations: case number {i} was reviewed and closed.\n\n(U) Filed under {t}."),
        )
        .unwrap();
    }
    // Upload everything with the CLI (not waiting), then kill the server while it indexes.
    let out = Command::new(common::bin())
        .args(["kb", "add", "bulk"])
        .arg(dir.path())
        .args(["--no-wait", "--url", &s.base, "--key", &admin])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1000 uploaded, 0 refused"), "{stderr}");
    let (_, _, info) = c.call("GET", "/v1/knowledge-bases/bulk", &admin, None, None);
    let ready_before = info["documents"]["ready"].as_u64().unwrap();
    assert!(
        ready_before < 1000,
        "ingestion finished before the kill could test anything"
    );
    s.crash_and_restart();
    let c = Client::new(&s.base);
    let info = wait_ingested(&c, &admin, "bulk", 1000, Duration::from_secs(600));
    assert_eq!(info["documents"]["ready"], 1000, "{info}");
    assert_eq!(info["documents"]["failed"], 0, "{info}");
    // A document marked (S) then (U) is two chunks (labels never share one); (U) then (U) is
    // one. Each exactly once, in the catalog and in both indexes.
    let expected = (0..1000)
        .map(|i: u64| if i.is_multiple_of(3) { 2 } else { 1 })
        .sum::<u64>();
    assert_eq!(info["chunks"], expected, "{info}");
    assert_eq!(info["indexed_text"], expected, "{info}");
    assert_eq!(info["indexed_vectors"], expected, "{info}");
    let (_, _, list) = c.call(
        "GET",
        "/v1/knowledge-bases/bulk/documents",
        &admin,
        None,
        None,
    );
    let docs = list["data"].as_array().unwrap();
    assert_eq!(docs.len(), 1000);
    for d in docs {
        let i: usize = d["name"].as_str().unwrap()[4..8].parse().unwrap();
        assert_eq!(d["status"], "ready", "{d}");
        assert_eq!(d["chunks"], if i.is_multiple_of(3) { 2 } else { 1 }, "{d}");
    }
    // One document's text is found once, not twice.
    let (_, _, res) = c.call(
        "POST",
        "/v1/knowledge-bases/bulk/search",
        &admin,
        Some(json!({"query": "Report 777 case number 777", "k": 5, "mode": "text"})),
        None,
    );
    let hits = res["data"].as_array().unwrap();
    let same: Vec<&Value> = hits
        .iter()
        .filter(|h| {
            h["document_name"] == "doc-0777.txt"
                && h["text"].as_str().unwrap().contains("Report 777")
        })
        .collect();
    assert_eq!(same.len(), 1, "{res}");
}
