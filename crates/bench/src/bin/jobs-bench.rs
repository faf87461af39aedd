//! `jobs-bench`: batch work beside interactive calls in the embedded chat engine, each figure
//! beside its peer in the same run.
//!
//! - Interactive time to first token (a 256-token prompt, one token) alone, and again while a
//!   batch keeps every sequence it may use busy (background streams, as batch lines are): the
//!   ratio is what a running batch costs an analyst (goal ≤ 1.2×).
//! - The batch's throughput (tokens/s of the background streams alone) beside the engine's best
//!   aggregate decode (16 interactive streams): goal ≥ 0.9×.
//!
//! `cargo run --release -p enclave-bench --bin jobs-bench -- --models-dir target/test-models`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a bench binary that prints its table"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use enclave_engine::llama::interactive_reserve;
use enclave_engine::models::{self, SMOLLM2};
use enclave_engine::{ChatConfig, ChatEngine, ChatMessage, Event, Prompt, Sampling};

#[derive(Parser)]
struct Args {
    /// Models directory (as `enclave --models-dir`).
    #[arg(long, env = "ENCLAVE_MODELS_DIR")]
    models_dir: PathBuf,
    /// CPU threads for the engine.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Interactive requests timed in each phase.
    #[arg(long, default_value_t = 12)]
    tries: usize,
}

const SLOTS: u32 = 16;

fn sampling(background: bool) -> Sampling {
    Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
        background,
    }
}

/// Seconds to the first token of one interactive request.
fn first_token(rt: &tokio::runtime::Runtime, engine: &ChatEngine, prompt: Prompt) -> Result<f64> {
    rt.block_on(async {
        let start = Instant::now();
        let mut rx = engine.generate(prompt, sampling(false), Some(1), None)?;
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text(_) | Event::Done { .. } => return Ok(start.elapsed().as_secs_f64()),
                Event::Error(e) => bail!("generation failed: {e}"),
                Event::ToolCall(_) => {}
            }
        }
        bail!("the engine stopped")
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Starts `prompts` at once and reads every stream to its end; completion tokens per second.
fn throughput(
    rt: &tokio::runtime::Runtime,
    engine: &ChatEngine,
    prompts: &[Prompt],
    background: bool,
) -> Result<f64> {
    rt.block_on(async {
        let start = Instant::now();
        let mut streams = Vec::new();
        for p in prompts {
            streams.push(engine.generate(p.clone(), sampling(background), Some(96), None)?);
        }
        let mut tokens = 0u64;
        for rx in &mut streams {
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::Done {
                        completion_tokens, ..
                    } => {
                        tokens += u64::from(completion_tokens);
                        break;
                    }
                    Event::Error(e) => bail!("generation failed: {e}"),
                    Event::Text(_) | Event::ToolCall(_) => {}
                }
            }
        }
        Ok(tokens as f64 / start.elapsed().as_secs_f64())
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    models::verify(&args.models_dir, &SMOLLM2)?;
    let gguf = SMOLLM2.path(&args.models_dir, SMOLLM2.files[0].name);
    let engine = ChatEngine::load(
        &gguf,
        ChatConfig {
            slots: SLOTS,
            ctx_per_slot: 1024,
            batch_tokens: 512,
            threads: args.threads,
            ..ChatConfig::default()
        },
    )?;
    let text = (0..40)
        .map(|i| format!("Case {i}: the applicant asks about the status of file {i}."))
        .collect::<Vec<_>>()
        .join(" ");
    let interactive = engine.truncate(&engine.tokenize(&text), 256);
    // Batch lines as the API sends them: chat prompts, answered at length.
    let lines: Vec<Prompt> = (0..SLOTS as usize)
        .map(|i| {
            engine.prompt(&[ChatMessage {
                role: "user".into(),
                content: format!("Write a long report on case file {i}: the events, the people and the next steps."),
            }])
        })
        .collect::<Result<_, _>>()?;
    let batch_streams = SLOTS as usize - interactive_reserve(SLOTS as usize);

    first_token(&rt, &engine, interactive.clone())?; // warm-up
    let alone = median(
        (0..args.tries)
            .map(|_| first_token(&rt, &engine, interactive.clone()))
            .collect::<Result<_>>()?,
    );

    // A batch running: as many background streams as it may have, long enough to outlast the
    // tries (their events wait in their channels; the engine keeps decoding them).
    let running: Vec<_> = lines[..batch_streams]
        .iter()
        .map(|p| engine.generate(p.clone(), sampling(true), Some(900), None))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(1));
    let mut beside = Vec::new();
    for _ in 0..args.tries {
        beside.push(first_token(&rt, &engine, interactive.clone())?);
        std::thread::sleep(Duration::from_millis(100));
    }
    let beside = median(beside);
    drop(running);

    let batch = throughput(&rt, &engine, &lines[..batch_streams], true)?;
    let best = throughput(&rt, &engine, &lines, false)?;

    println!(
        "\nbatch work beside interactive calls (SmolLM2, {} threads, {SLOTS} sequences, {batch_streams} for the batch)",
        args.threads
    );
    println!(
        "{:<58} {:>10} {:>10} {:>8}",
        "figure", "enclave", "peer", "ratio"
    );
    println!(
        "{:<58} {:>10.1} {:>10.1} {:>7.2}×",
        "interactive first token ms, batch running / alone (≤ 1.2)",
        beside * 1e3,
        alone * 1e3,
        beside / alone
    );
    println!(
        "{:<58} {:>10.1} {:>10.1} {:>7.2}×",
        "batch tokens/s / best aggregate decode, 16 streams (≥ 0.9)",
        batch,
        best,
        batch / best
    );
    Ok(())
}
