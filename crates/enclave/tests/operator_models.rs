//! The operator's own models: `enclave models add` refuses what it cannot vouch for (a wrong
//! hash, a file that is not GGUF or is truncated, a chat model without a template) and leaves
//! nothing behind; what it accepts is listed, audited, and served as an embedded deployment with
//! the accreditation the configuration gives it; `models remove` takes it away again.
//!
//! The model files are made here: random weights in SmolLM2's layout and tokenizer, shrunk to two
//! layers of width 64 by `../shared/gpu/gguf_clone.py`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn shared_gpu() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/gpu")
}

/// Writes a tiny random-weight GGUF with SmolLM2's tokenizer; `template` keeps or drops its chat
/// template.
fn tiny_gguf(dir: &Path, name: &str, template: bool) -> PathBuf {
    let skeleton: Value = serde_json::from_str(
        &std::fs::read_to_string(shared_gpu().join("smollm2-135m-q4_1.skeleton.json")).unwrap(),
    )
    .unwrap();
    let shrink = |n: u64| match n {
        576 => 64,
        192 => 32,
        1536 => 128,
        other => other,
    };
    let mut kv = Vec::new();
    for e in skeleton["kv"].as_array().unwrap() {
        let mut e = e.clone();
        let key = e["key"].as_str().unwrap().to_string();
        if key == "tokenizer.chat_template" && !template {
            continue;
        }
        let value = match key.as_str() {
            "llama.block_count" => Some(json!(2)),
            "llama.embedding_length" => Some(json!(64)),
            "llama.feed_forward_length" => Some(json!(128)),
            "llama.attention.head_count" => Some(json!(4)),
            "llama.attention.head_count_kv" => Some(json!(2)),
            "llama.rope.dimension_count" => Some(json!(16)),
            "llama.context_length" => Some(json!(1024)),
            _ => None,
        };
        if let Some(v) = value {
            e["value"] = v;
        }
        kv.push(e);
    }
    let tensors: Vec<Value> = skeleton["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            let name = t["name"].as_str().unwrap();
            !name.starts_with("blk.") || name.starts_with("blk.0.") || name.starts_with("blk.1.")
        })
        .map(|t| {
            let mut t = t.clone();
            let shape: Vec<u64> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| shrink(d.as_u64().unwrap()))
                .collect();
            t["shape"] = json!(shape);
            t
        })
        .collect();
    let small = json!({"arch": skeleton["arch"], "kv": kv, "tensors": tensors});
    let skel_path = dir.join(format!("{name}.skeleton.json"));
    std::fs::write(&skel_path, small.to_string()).unwrap();
    let out = dir.join(format!("{name}.gguf"));
    let status = Command::new(common::python())
        .arg(shared_gpu().join("gguf_clone.py"))
        .arg("build")
        .arg(&skel_path)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "gguf_clone.py build failed");
    out
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Runs the CLI with this data and models directory.
fn cli(data: &Path, models: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .arg("--models-dir")
        .arg(models)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A models directory of its own holding the built-in models (linked, not copied), so what this
/// test adds never reaches another test's server.
fn models_dir_with_builtins(root: &Path) -> PathBuf {
    let shared = common::models_dir();
    let dir = root.join("models");
    std::fs::create_dir_all(&dir).unwrap();
    for id in [common::CHAT, common::EMBED] {
        std::os::unix::fs::symlink(shared.join(id), dir.join(id)).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn models_add_refuses_what_it_cannot_vouch_for_and_serves_what_it_can() {
    let work = tempfile::tempdir().unwrap();
    let models = models_dir_with_builtins(work.path());
    // The CLI and the server share one data directory, as on a real host.
    let data_dir = tempfile::tempdir().unwrap();
    let data = data_dir.path().to_path_buf();
    let good = tiny_gguf(work.path(), "tiny", true);
    let hash = sha256(&good);
    let nothing_added = |models: &Path| {
        assert!(
            !models.join("local").join("tiny").exists(),
            "a refused addition left files behind"
        );
        let listed = std::fs::read_to_string(models.join("local.json")).unwrap_or_default();
        assert!(!listed.contains("\"tiny\""), "{listed}");
    };
    // `models add NAME --file FILE --sha256 HEX [more]`: (succeeded, stderr).
    let add = |name: &str, file: &Path, hash: &str, more: &[&str]| {
        let mut args = vec![
            "models",
            "add",
            name,
            "--file",
            file.to_str().unwrap(),
            "--sha256",
            hash,
        ];
        args.extend_from_slice(more);
        let (ok, _, err) = cli(&data, &models, &args);
        (ok, err)
    };

    // A wrong hash: refused, naming both hashes, nothing left.
    let wrong = "0".repeat(64);
    let (ok, err) = add("tiny", &good, &wrong, &[]);
    assert!(!ok);
    assert!(err.contains("SHA-256") && err.contains(&hash), "{err}");
    nothing_added(&models);

    // Not a GGUF at all.
    let text = work.path().join("notes.gguf");
    std::fs::write(&text, "meeting notes, not a model\n").unwrap();
    let (ok, err) = add("tiny", &text, &sha256(&text), &[]);
    assert!(!ok);
    assert!(err.contains("not a GGUF"), "{err}");
    nothing_added(&models);

    // Truncated: the first half of a good file.
    let bytes = std::fs::read(&good).unwrap();
    let cut = work.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, err) = add("tiny", &cut, &sha256(&cut), &[]);
    assert!(!ok);
    assert!(err.contains("truncated"), "{err}");
    nothing_added(&models);

    // A chat model without a template needs one given.
    let bare = tiny_gguf(work.path(), "bare", false);
    let bare_hash = sha256(&bare);
    let (ok, err) = add("bare", &bare, &bare_hash, &[]);
    assert!(!ok);
    assert!(err.contains("--chat-template"), "{err}");
    let template = work.path().join("chatml.jinja");
    std::fs::write(
        &template,
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
    )
    .unwrap();
    let (ok, err) = add(
        "bare",
        &bare,
        &bare_hash,
        &["--chat-template", template.to_str().unwrap()],
    );
    assert!(ok, "{err}");

    // The good file, with the right hash (upper case, as some tools print it).
    let (ok, err) = add("tiny", &good, &hash.to_uppercase(), &["--context", "512"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&data, &models, &["models", "list"]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("tiny "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("verified") && row.contains(&hash), "{row}");
    // A name taken is refused.
    let (ok, err) = add("tiny", &good, &hash, &[]);
    assert!(!ok && err.contains("already exists"), "{err}");

    // Served: the configuration accredits `tiny` to CONFIDENTIAL only.
    let config = work.path().join("enclave.toml");
    std::fs::write(
        &config,
        "[[deployments]]\nname = \"tiny-rack\"\nmodel = \"tiny\"\nbackend = \"embedded\"\naccreditation = \"CONFIDENTIAL\"\n",
    )
    .unwrap();
    let (ok, out, err) = cli(
        &data,
        &models,
        &["config", "check", config.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("tiny-rack") && out.contains("CONFIDENTIAL"),
        "{out}"
    );

    let server = Server::start_in(
        &models,
        data_dir,
        &[("ENCLAVE_CONFIG", config.to_str().unwrap())],
    );
    let http = common::http().build().unwrap();
    let ready: Value = http
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["models"]["tiny"], "loaded", "{ready}");
    let listed: Value = http
        .get(server.url("/v1/models"))
        .bearer_auth(&server.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"tiny") && ids.contains(&"bare"), "{ids:?}");

    let secret_key = server.cleared_key("default", "user", "TOP SECRET");
    let ask = |key: String, text: &'static str, model: &'static str| {
        let http = http.clone();
        let url = server.url("/v1/chat/completions");
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"model": model, "max_tokens": 8, "temperature": 0,
                    "messages": [{"role": "user", "content": text}]}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let label = r
                .headers()
                .get("enclave-label")
                .map(|v| v.to_str().unwrap().to_string());
            (status, label, r.json::<Value>().await.unwrap())
        }
    };
    // Within its accreditation it answers (random weights: the words are noise, the shape is not).
    let (status, label, body) = ask(secret_key.clone(), "(C) Summarise the file.", "tiny").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(label.as_deref(), Some("CONFIDENTIAL"), "{body}");
    assert_eq!(body["model"], "tiny");
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{body}"
    );
    // Above it, it is never sent there.
    let (status, _, body) = ask(secret_key.clone(), "(S) Summarise the file.", "tiny").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "no_accredited_deployment", "{body}");
    // The model added with a template of its own answers too.
    let (status, _, body) = ask(secret_key, "(U) Hello.", "bare").await;
    assert_eq!(status, 200, "{body}");

    // The additions are in the audit log, with file, hash, size and who.
    let export = work.path().join("audit-export");
    let (ok, _, err) = server.cli(&["audit", "export", "--out", export.to_str().unwrap()]);
    assert!(ok, "{err}");
    let mut records = String::new();
    for entry in std::fs::read_dir(&export).unwrap() {
        records.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    assert!(
        records.contains("models.add") && records.contains(&hash) && records.contains("bytes"),
        "the addition is not in the audit log"
    );
    assert!(
        records.contains("models.verify"),
        "the served model's check is not audited"
    );

    let (ok, _, err) = cli(&data, &models, &["models", "remove", "tiny"]);
    assert!(ok, "{err}");
    let (_, out, _) = cli(&data, &models, &["models", "list"]);
    assert!(!out.lines().any(|l| l.starts_with("tiny ")), "{out}");
    assert!(!models.join("local").join("tiny").exists());
    let (ok, _, err) = cli(&data, &models, &["models", "remove", "tiny"]);
    assert!(!ok && err.contains("no model named"), "{err}");
    drop(server);
}
