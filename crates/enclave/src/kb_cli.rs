//! `enclave kb`: knowledge bases from the command line, through a running server's API (the
//! server owns the indexes and the embedding model; the CLI is one more API client, with the
//! same key checks, labels and audit as any other).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct Client {
    /// The server's base URL.
    #[arg(
        long,
        env = "ENCLAVE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// An API key of the tenant whose knowledge bases or jobs these are.
    #[arg(long, env = "ENCLAVE_KEY", global = true, hide_env_values = true)]
    key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Create a knowledge base for your tenant (admin key).
    ///
    /// Example: enclave kb create case-files --tenant default --max-label SECRET --key $ADMIN_KEY
    Create {
        name: String,
        /// The highest label a document in it may carry (at most your clearance).
        #[arg(long, value_name = "LABEL")]
        max_label: String,
        /// The label of documents uploaded without markings and without `--label`.
        #[arg(long, value_name = "LABEL")]
        default_label: Option<String>,
        /// The tenant; must be the key's own (checked by the server).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List your tenant's knowledge bases with their document and chunk counts.
    List,
    /// Add files or whole folders (recursively: .txt .md .html .pdf .docx), then follow their
    /// ingestion with a progress bar. A file that fails is reported; the rest go on.
    ///
    /// Example: enclave kb add case-files ./scans ./memo.docx --label "SECRET//NOFORN"
    Add {
        kb: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Label for documents without their own markings.
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        /// Return once uploaded, without waiting for indexing.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a knowledge base's documents and their status (queued, indexing, ready, failed).
    Status { kb: String },
    /// Search: the passages your clearance (or `--label`) may read, with their labels.
    ///
    /// Example: enclave kb search case-files "who inspected the harbour crane?" --key $KEY
    Search {
        kb: String,
        query: String,
        /// How many passages.
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// `hybrid` (default), `vector` or `text` (BM25).
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Read at this label instead of your clearance.
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
    },
    /// Ask a question: an answer from the passages, with numbered citations and its label.
    ///
    /// Example: enclave kb ask case-files "when is the crane inspected?" --model smollm2-135m-instruct
    Ask {
        kb: String,
        question: String,
        #[arg(long)]
        model: String,
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
    },
    /// Delete a document: its text, chunks and vectors leave every index.
    Rm { kb: String, document: String },
}

/// A running server's API under one path (`/v1/knowledge-bases`, `/v1/batches`), with one key.
pub(crate) struct Api {
    base: String,
    prefix: &'static str,
    key: String,
    http: reqwest::Client,
}

impl Api {
    fn new(c: &Client) -> Result<Self> {
        Self::under(c, "/v1/knowledge-bases")
    }

    pub(crate) fn under(c: &Client, prefix: &'static str) -> Result<Self> {
        let key = c
            .key
            .clone()
            .context("no API key: pass `--key` or set ENCLAVE_KEY")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(Self {
            base: c.url.trim_end_matches('/').to_string(),
            prefix,
            key,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, self.prefix)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string();
            let code = body["error"]["code"].as_str().unwrap_or("");
            bail!("{status} {code}: {msg}");
        }
        Ok(body)
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(self.url(path))).await
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: &Value,
        label: Option<&str>,
    ) -> Result<Value> {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(l) = label {
            req = req.header("enclave-label", l);
        }
        self.send(req).await
    }
}

fn seg(s: &str) -> String {
    s.replace('/', "%2F").replace(' ', "%20")
}

pub async fn run(client: Client, cmd: KbCommand) -> Result<()> {
    let api = Api::new(&client)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        KbCommand::Create {
            name,
            max_label,
            default_label,
            tenant,
        } => {
            let mut body = json!({ "name": name, "max_label": max_label });
            if let Some(d) = default_label {
                body["default_label"] = json!(d);
            }
            if let Some(t) = tenant {
                body["tenant"] = json!(t);
            }
            let kb = api.post("", &body, None).await?;
            writeln!(
                out,
                "{}\t{}\tmax {}",
                kb["id"].as_str().unwrap_or(""),
                kb["name"].as_str().unwrap_or(""),
                kb["max_label"].as_str().unwrap_or("")
            )?;
        }
        KbCommand::List => {
            let list = api.get("").await?;
            writeln!(
                out,
                "{:<36} {:<24} {:<20} {:>6} {:>8}",
                "ID", "NAME", "MAX LABEL", "DOCS", "CHUNKS"
            )?;
            for kb in list["data"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{:<36} {:<24} {:<20} {:>6} {:>8}",
                    kb["id"].as_str().unwrap_or(""),
                    kb["name"].as_str().unwrap_or(""),
                    kb["max_label"].as_str().unwrap_or(""),
                    kb["documents"]["ready"].as_u64().unwrap_or(0),
                    kb["chunks"].as_u64().unwrap_or(0)
                )?;
            }
        }
        KbCommand::Add {
            kb,
            paths,
            label,
            no_wait,
        } => {
            drop(out);
            add(&api, &kb, &paths, label.as_deref(), no_wait).await?;
        }
        KbCommand::Status { kb } => {
            let info = api.get(&format!("/{}", seg(&kb))).await?;
            let docs = api.get(&format!("/{}/documents", seg(&kb))).await?;
            writeln!(
                out,
                "{} ({}): max {}; documents: {} ready, {} queued, {} indexing, {} failed; {} chunks",
                info["name"].as_str().unwrap_or(""),
                info["id"].as_str().unwrap_or(""),
                info["max_label"].as_str().unwrap_or(""),
                info["documents"]["ready"],
                info["documents"]["queued"],
                info["documents"]["indexing"],
                info["documents"]["failed"],
                info["chunks"]
            )?;
            for d in docs["data"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{:<40} {:<9} {:>5} chunks  {:<24} {}{}",
                    d["id"].as_str().unwrap_or(""),
                    d["status"].as_str().unwrap_or(""),
                    d["chunks"],
                    d["label"].as_str().unwrap_or(""),
                    d["name"].as_str().unwrap_or(""),
                    d["error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )?;
            }
        }
        KbCommand::Search {
            kb,
            query,
            k,
            mode,
            label,
        } => {
            let res = api
                .post(
                    &format!("/{}/search", seg(&kb)),
                    &json!({ "query": query, "k": k, "mode": mode }),
                    label.as_deref(),
                )
                .await?;
            let hits = res["data"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                writeln!(out, "no passages you may read match")?;
            }
            for (i, h) in hits.iter().enumerate() {
                let page = h["page"]
                    .as_u64()
                    .map(|p| format!(" p.{p}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}. [{}] {}{} (bytes {}-{}, score {:.4})\n   {}",
                    i + 1,
                    h["label"].as_str().unwrap_or(""),
                    h["document_name"].as_str().unwrap_or(""),
                    page,
                    h["start"],
                    h["end"],
                    h["score"].as_f64().unwrap_or(0.0),
                    h["text"].as_str().unwrap_or("").replace('\n', " ")
                )?;
            }
            writeln!(
                out,
                "label of these results: {}",
                res["label"].as_str().unwrap_or("")
            )?;
        }
        KbCommand::Ask {
            kb,
            question,
            model,
            label,
        } => {
            let res = api
                .post(
                    &format!("/{}/answer", seg(&kb)),
                    &json!({ "question": question, "model": model }),
                    label.as_deref(),
                )
                .await?;
            writeln!(out, "{}\n", res["answer"].as_str().unwrap_or("").trim())?;
            for c in res["citations"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "[{}]{} {} [{}]",
                    c["index"],
                    if c["cited"].as_bool() == Some(true) {
                        "*"
                    } else {
                        " "
                    },
                    c["document_name"].as_str().unwrap_or(""),
                    c["label"].as_str().unwrap_or("")
                )?;
            }
            writeln!(out, "answer label: {}", res["label"].as_str().unwrap_or(""))?;
        }
        KbCommand::Rm { kb, document } => {
            let resp = api
                .send(api.http.delete(api.url(&format!(
                    "/{}/documents/{}",
                    seg(&kb),
                    seg(&document)
                ))))
                .await?;
            writeln!(
                out,
                "deleted {} ({} chunks)",
                resp["name"].as_str().unwrap_or(""),
                resp["chunks"]
            )?;
        }
    }
    Ok(())
}

/// Supported files under `paths`, folders walked recursively, in a stable order, each with the
/// name it gets in the knowledge base: its path inside the folder given, or its file name.
fn files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
        } else if enclave_kb::extract::Format::detect(&p.to_string_lossy(), None).is_some() {
            out.push(p.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if !p.exists() {
            bail!("{} does not exist", p.display());
        }
        let file_name = |f: &Path| {
            f.file_name()
                .map_or_else(|| f.to_string_lossy(), |n| n.to_string_lossy())
                .into_owned()
        };
        if p.is_file() {
            // Named explicitly: sent even when unsupported, so the server says why it is refused.
            out.push((p.clone(), file_name(p)));
        } else {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            for f in found {
                let name = f
                    .strip_prefix(p)
                    .map_or_else(|_| file_name(&f), |r| r.to_string_lossy().into_owned());
                out.push((f, name));
            }
        }
    }
    Ok(out)
}

/// A line above the progress bar, or on standard error when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

async fn add(
    api: &Api,
    kb: &str,
    paths: &[PathBuf],
    label: Option<&str>,
    no_wait: bool,
) -> Result<()> {
    let files = files(paths)?;
    if files.is_empty() {
        bail!("no supported files (.txt .md .html .pdf .docx) under the given paths");
    }
    let start = api.get(&format!("/{}", seg(kb))).await?;
    let kb_id = start["id"].as_str().unwrap_or(kb).to_string();
    let done_before = start["documents"]["ready"].as_u64().unwrap_or(0)
        + start["documents"]["failed"].as_u64().unwrap_or(0);
    let chunks_before = start["chunks"].as_u64().unwrap_or(0);
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} indexed  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut uploaded = 0u64;
    let mut refused = 0u64;
    let mut last_poll = Instant::now();
    let poll = |info: &Value, uploaded: u64, bar: &ProgressBar| {
        let done = (info["documents"]["ready"].as_u64().unwrap_or(0)
            + info["documents"]["failed"].as_u64().unwrap_or(0))
        .saturating_sub(done_before);
        let chunks = info["chunks"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(chunks_before);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        bar.set_position(done.min(bar.length().unwrap_or(0)));
        bar.set_message(format!(
            "uploaded {uploaded}  chunks {chunks} ({:.1}/s embedded)  files {:.1}/s",
            chunks as f64 / secs,
            done as f64 / secs
        ));
        done
    };
    for (path, name) in &files {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                say(&bar, format!("✗ {name}: cannot read: {e}"));
                refused += 1;
                continue;
            }
        };
        let mut body = json!({
            "name": name,
            "content_base64": base64::engine::general_purpose::STANDARD.encode(&bytes),
        });
        if let Some(l) = label {
            body["label"] = json!(l);
        }
        match api
            .post(&format!("/{}/documents", seg(&kb_id)), &body, None)
            .await
        {
            Ok(_) => uploaded += 1,
            Err(e) => {
                if e.to_string().starts_with("cannot reach") {
                    bar.abandon();
                    return Err(e.context(format!(
                        "stopped after {uploaded} uploads; what was uploaded keeps ingesting when the server runs"
                    )));
                }
                say(&bar, format!("✗ {name}: {e}"));
                refused += 1;
            }
        }
        if last_poll.elapsed() > Duration::from_millis(500) {
            last_poll = Instant::now();
            if let Ok(info) = api.get(&format!("/{}", seg(&kb_id))).await {
                poll(&info, uploaded, &bar);
            }
        }
    }
    bar.set_length(uploaded);
    if !no_wait {
        loop {
            let info = api.get(&format!("/{}", seg(&kb_id))).await.context(
                "lost the server while waiting; uploaded documents resume when it restarts",
            )?;
            let done = poll(&info, uploaded, &bar);
            if done >= uploaded
                || (info["documents"]["queued"].as_u64() == Some(0)
                    && info["documents"]["indexing"].as_u64() == Some(0))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    bar.finish();
    let info = api.get(&format!("/{}", seg(&kb_id))).await?;
    let failed = info["documents"]["failed"].as_u64().unwrap_or(0);
    eprintln!(
        "{uploaded} uploaded, {refused} refused; knowledge base now {} ready, {failed} failed, {} chunks ({:.1}s)",
        info["documents"]["ready"],
        info["chunks"],
        started.elapsed().as_secs_f64()
    );
    if refused > 0 {
        bail!("{refused} file(s) were refused (reasons above)");
    }
    Ok(())
}
