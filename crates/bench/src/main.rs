//! `enclave-bench`: the embedded engine's speed beside its peers, measured in one run on one machine.
//!
//! Chat figures come from Enclave's scheduler (`ChatEngine`, the path requests take) and from
//! llama.cpp itself through `llama-cpp-python` (bench/peer_llama.py) with the same thread count
//! and the same token ids; embedding figures from Enclave's BERT and from onnxruntime over a graph
//! built from the same safetensors (bench/peer_onnx.py). Prints a table with ratios.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use enclave_engine::models::{self, MINILM, SMOLLM2};
use enclave_engine::{
    ChatConfig, ChatEngine, EmbedInput, EmbeddingEngine, Event, Prompt, Sampling,
};
use serde_json::{Value, json};

/// Benchmarks the embedded engine against llama.cpp and onnxruntime.
///
/// Needs the models (`enclave models pull`) and a Python with `llama-cpp-python`, `onnxruntime`,
/// `onnx`, `safetensors`, `tokenizers` and `numpy` for the peers (bench/setup.sh makes one).
#[derive(Debug, Parser)]
struct Args {
    /// Models directory (as `enclave --models-dir`).
    #[arg(long, env = "ENCLAVE_MODELS_DIR")]
    models_dir: PathBuf,
    /// Python interpreter with the peers' packages.
    #[arg(long, default_value = "bench/.venv/bin/python")]
    python: PathBuf,
    /// CPU threads, for Enclave and the peers alike.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Tokens generated per stream in the decode figures.
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Skip the peers (prints Enclave's figures only).
    #[arg(long)]
    no_peers: bool,
}

const TOPICS: &[&str] = &[
    "the history of the printing press",
    "how bridges carry loads",
    "the water cycle",
    "a day at a harbour",
    "the rules of chess",
    "how vaccines are tested",
    "the life of bees",
    "volcanoes of Iceland",
    "the invention of the telephone",
    "how a bill becomes law",
    "the night sky in winter",
    "the Roman roads",
    "how rivers shape valleys",
    "the first railways",
    "a library in a small town",
    "the migration of birds",
];

fn short_prompt(i: usize) -> String {
    format!(
        "Write a long, detailed essay about {}. Begin with an introduction.",
        TOPICS[i % TOPICS.len()]
    )
}

fn sentences() -> Vec<String> {
    // Realistic lengths for document chunks and questions: 6 to 60 words.
    let words = "the agency reviewed every application filed in the last quarter and found that most were complete \
        while several needed additional documents about income residence and identity before a decision could be made";
    let words: Vec<&str> = words.split_whitespace().collect();
    (0..256)
        .map(|i| {
            let n = 6 + (i * 37) % 55;
            (0..n)
                .map(|k| words[(i + k * 7) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn greedy() -> Sampling {
    Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
        background: false,
    }
}

/// Runs `prompts` at once through the scheduler; returns (seconds to first token of the first
/// stream, total completion tokens, wall seconds).
fn run(
    rt: &tokio::runtime::Runtime,
    engine: &ChatEngine,
    prompts: Vec<Prompt>,
    max_tokens: u32,
) -> Result<(f64, u64, f64)> {
    rt.block_on(async {
        let start = Instant::now();
        let mut streams = Vec::new();
        for p in prompts {
            streams.push(engine.generate(p, greedy(), Some(max_tokens), None)?);
        }
        let mut first = None;
        let mut tokens = 0u64;
        for (i, rx) in streams.iter_mut().enumerate() {
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::Text(_) => {
                        if i == 0 && first.is_none() {
                            first = Some(start.elapsed().as_secs_f64());
                        }
                    }
                    Event::Done {
                        completion_tokens, ..
                    } => {
                        if i == 0 && first.is_none() {
                            first = Some(start.elapsed().as_secs_f64());
                        }
                        tokens += u64::from(completion_tokens);
                        break;
                    }
                    Event::Error(e) => bail!("generation failed: {e}"),
                    Event::ToolCall(_) => {}
                }
            }
        }
        Ok((
            first.unwrap_or_default(),
            tokens,
            start.elapsed().as_secs_f64(),
        ))
    })
}

/// Decode rate of one stream: tokens after the first over the time after the first.
fn decode_one(
    rt: &tokio::runtime::Runtime,
    engine: &ChatEngine,
    prompt: Prompt,
    max_tokens: u32,
) -> Result<f64> {
    rt.block_on(async {
        let mut rx = engine.generate(prompt, greedy(), Some(max_tokens), None)?;
        let mut first = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text(_) => {
                    first.get_or_insert_with(Instant::now);
                }
                Event::Done {
                    completion_tokens, ..
                } => {
                    let t = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
                    return Ok(f64::from(completion_tokens.saturating_sub(1)) / t);
                }
                Event::Error(e) => bail!("generation failed: {e}"),
                Event::ToolCall(_) => {}
            }
        }
        bail!("the engine stopped")
    })
}

/// Seconds to the first event of one request in prompt cache `cache`, and how many prompt
/// tokens the cache served.
fn first_token(
    rt: &tokio::runtime::Runtime,
    engine: &ChatEngine,
    prompt: Prompt,
    cache: &str,
) -> Result<(f64, u32)> {
    rt.block_on(async {
        let start = Instant::now();
        let mut rx = engine.generate(prompt, greedy(), Some(1), Some(cache.to_string()))?;
        let mut first = None;
        while let Some(ev) = rx.recv().await {
            first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            match ev {
                Event::Done { cached_tokens, .. } => {
                    return Ok((first.unwrap_or_default(), cached_tokens));
                }
                Event::Error(e) => bail!("generation failed: {e}"),
                Event::Text(_) | Event::ToolCall(_) => {}
            }
        }
        bail!("the engine stopped")
    })
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn peer(python: &PathBuf, script: &str, args: &[String]) -> Result<Value> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("{script} printed {text}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let gguf = SMOLLM2.path(&args.models_dir, SMOLLM2.files[0].name);
    models::verify(&args.models_dir, &SMOLLM2)?;
    models::verify(&args.models_dir, &MINILM)?;
    let engine = ChatEngine::load(
        &gguf,
        ChatConfig {
            slots: 16,
            // Room for the prompt-cache figure's 1,500-token prefix.
            ctx_per_slot: 2048,
            batch_tokens: 512,
            threads: args.threads,
            ..ChatConfig::default()
        },
    )?;

    let long_text = (0..40)
        .map(|i| format!("Section {i}: {}.", short_prompt(i)))
        .collect::<Vec<_>>()
        .join(" ");
    let long = engine.truncate(&engine.tokenize(&long_text), 512);
    anyhow::ensure!(
        long.len() == 512,
        "the long prompt has only {} tokens",
        long.len()
    );
    let shorts: Vec<Prompt> = (0..16).map(|i| engine.tokenize(&short_prompt(i))).collect();
    let spec = json!({
        "long": long.token_ids(),
        "short": shorts.iter().map(Prompt::token_ids).collect::<Vec<_>>(),
        "max_tokens": args.max_tokens,
    });

    eprintln!("enclave: chat");
    run(&rt, &engine, vec![engine.truncate(&long, 64)], 1)?; // warm-up
    let (ttft, _, _) = run(&rt, &engine, vec![long.clone()], 1)?;
    let prompt_tps = 512.0 / ttft;
    let decode1 = decode_one(&rt, &engine, shorts[0].clone(), args.max_tokens)?;
    let agg = |n: usize| -> Result<f64> {
        let (_, tokens, secs) = run(&rt, &engine, shorts[..n].to_vec(), args.max_tokens)?;
        Ok(tokens as f64 / secs)
    };
    let decode4 = agg(4)?;
    let decode16 = agg(16)?;

    // Prompt caching: a 1,500-token shared prefix (a knowledge-base prompt, agent instructions),
    // then a different question. Cold: the first request of a tenant; warm: the same tenant
    // again; other: another tenant with the same text, which must pay the cold price.
    eprintln!("enclave: prompt cache");
    let prefix_text = (0..200)
        .map(|i| format!("Section {i}: {}.", short_prompt(i)))
        .collect::<Vec<_>>()
        .join(" ");
    let prefix = engine.truncate(&engine.tokenize(&prefix_text), 1500);
    anyhow::ensure!(
        prefix.len() == 1500,
        "the prefix has {} tokens",
        prefix.len()
    );
    let with_question = |q: &str| {
        let mut ids = prefix.token_ids();
        ids.extend(engine.tokenize(q).token_ids());
        Prompt::from_ids(&ids)
    };
    let (cold, _) = first_token(
        &rt,
        &engine,
        with_question(" Question: who signs?"),
        "tenant-a",
    )?;
    let (warm, reused) = first_token(
        &rt,
        &engine,
        with_question(" Question: by when?"),
        "tenant-a",
    )?;
    let (other, other_reused) = first_token(
        &rt,
        &engine,
        with_question(" Question: by when?"),
        "tenant-b",
    )?;
    anyhow::ensure!(
        other_reused == 0,
        "another tenant reused {other_reused} cached tokens"
    );

    eprintln!("enclave: embeddings");
    let embedder = EmbeddingEngine::load(&MINILM.dir(&args.models_dir))?;
    let sents = sentences();
    let inputs: Vec<EmbedInput> = sents.iter().cloned().map(EmbedInput::Text).collect();
    embedder.embed(&inputs[..32])?;
    let t = Instant::now();
    for input in &inputs[..64] {
        embedder.embed(std::slice::from_ref(input))?;
    }
    let embed1 = 64.0 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for chunk in inputs.chunks(32) {
        embedder.embed(chunk)?;
    }
    let embed32 = inputs.len() as f64 / t.elapsed().as_secs_f64();
    let rss = peak_rss_mb();

    let ours = json!({
        "prompt_tps": prompt_tps, "ttft_s": ttft, "decode_1": decode1, "decode_4": decode4, "decode_16": decode16,
        "embed_b1": embed1, "embed_b32": embed32, "peak_rss_mb": rss,
    });
    let (llama, onnx) = if args.no_peers {
        (Value::Null, Value::Null)
    } else {
        let dir = tempfile::tempdir()?;
        let spec_path = dir.path().join("prompts.json");
        std::fs::write(&spec_path, spec.to_string())?;
        let sent_path = dir.path().join("sentences.txt");
        std::fs::write(&sent_path, sents.join("\n"))?;
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench");
        eprintln!("peer: llama.cpp (llama-cpp-python)");
        let llama = peer(
            &args.python,
            &format!("{root}/peer_llama.py"),
            &[
                gguf.display().to_string(),
                spec_path.display().to_string(),
                args.threads.to_string(),
            ],
        )?;
        eprintln!("peer: onnxruntime");
        let onnx = peer(
            &args.python,
            &format!("{root}/peer_onnx.py"),
            &[
                MINILM.dir(&args.models_dir).display().to_string(),
                sent_path.display().to_string(),
                args.threads.to_string(),
            ],
        )?;
        (llama, onnx)
    };

    let rows: &[(&str, &str, &Value, &str)] = &[
        (
            "prompt tokens/s (512-token prompt)",
            "prompt_tps",
            &llama,
            "≥ 0.95×",
        ),
        (
            "time to first token, 512-token prompt (s)",
            "ttft_s",
            &llama,
            "≤ 1.05×",
        ),
        ("decode tokens/s, 1 stream", "decode_1", &llama, "≥ 0.95×"),
        (
            "decode tokens/s, 4 streams (aggregate)",
            "decode_4",
            &llama,
            "≥ 0.95×",
        ),
        (
            "decode tokens/s, 16 streams (aggregate)",
            "decode_16",
            &llama,
            "≥ 0.95×",
        ),
        ("embeddings/s, batch 1", "embed_b1", &onnx, ""),
        ("embeddings/s, batch 32", "embed_b32", &onnx, "≥ 0.7×"),
    ];
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n{:<44} {:>12} {:>12} {:>8}  goal",
        "figure", "enclave", "peer", "ratio"
    )?;
    for (name, key, peer, goal) in rows {
        let ours_v = ours[key].as_f64().unwrap_or(f64::NAN);
        let peer_v = peer[key].as_f64().unwrap_or(f64::NAN);
        writeln!(
            out,
            "{name:<44} {ours_v:>12.2} {peer_v:>12.2} {:>7.2}×  {goal}",
            ours_v / peer_v
        )?;
    }
    writeln!(
        out,
        "{:<44} {:>12.2} {:>12.2} {:>7.2}×  (peers: llama.cpp / onnxruntime)",
        "peak memory (MiB)",
        rss,
        llama["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        rss / llama["peak_rss_mb"].as_f64().unwrap_or(f64::NAN)
    )?;
    writeln!(
        out,
        "16-stream aggregate / 1-stream decode: {:.2}× (goal ≥ 1.4×)",
        decode16 / decode1
    )?;
    writeln!(
        out,
        "prompt cache, 1,500-token shared prefix: warm TTFT {:.3} s ÷ cold {:.3} s = {:.3}× (goal ≤ 0.2×, {reused} tokens reused); another tenant {:.3} s = {:.2}× of cold (its cache is its own)",
        warm,
        cold,
        warm / cold,
        other,
        other / cold
    )?;
    writeln!(
        out,
        "threads: {}, max_tokens per stream: {}",
        args.threads, args.max_tokens
    )?;
    Ok(())
}
