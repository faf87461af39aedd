//! The training loop: AdamW over the adapters, examples shuffled each epoch, validation loss
//! and a checkpoint at the end of each epoch, cancellable between steps.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::adapter;
use crate::model::{Adapters, Base};

/// One chat example, tokenized: the loss counts `ids[first_target..]` only (the assistant's
/// answer and its end-of-turn token), never the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub first_target: usize,
}

/// Hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// The adapters' rank.
    pub rank: usize,
    /// The adapters' scale numerator: `B·A` is scaled by `alpha / rank`.
    pub alpha: f32,
    /// Adapters go on the top this many layers (0: all).
    pub layers: usize,
    /// Seeds the adapters' start and each epoch's order, so a run can be repeated.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 4,
            learning_rate: 4e-3,
            rank: 8,
            alpha: 16.0,
            layers: 8,
            seed: 0,
        }
    }
}

/// What training reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// An optimizer step is about to run over `tokens` tokens (prompts and answers, the whole
    /// of each example). The listener may refuse it (a quota), which ends the run.
    Starting { step: usize, tokens: usize },
    /// An optimizer step ended.
    Step {
        step: usize,
        steps: usize,
        train_loss: f32,
    },
    /// Validation loss before training (step 0) and after each epoch.
    Validation { step: usize, valid_loss: f32 },
    /// An epoch ended and its adapter was written.
    Checkpoint {
        step: usize,
        epoch: usize,
        path: PathBuf,
        train_loss: f32,
        valid_loss: Option<f32>,
    },
}

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub steps: usize,
    /// Mean training loss over the last epoch.
    pub train_loss: f32,
    pub valid_loss: Option<f32>,
    /// Tokens the loss counted (the answers'), over all epochs.
    pub trained_tokens: usize,
    /// Every token of every example, once per epoch: what the steps asked for and what a job
    /// bills (OpenAI's `trained_tokens`).
    pub processed_tokens: usize,
    /// The final adapter.
    pub adapter: PathBuf,
}

/// Trains adapters on `train`, validating on `valid`, writing checkpoints and the final adapter
/// into `out`. `on` hears every step and may end the run by returning an error (before a step
/// it is asked whether the step may run); `cancel` is read between steps.
pub fn train(
    base: &Base,
    train: &[Example],
    valid: &[Example],
    settings: &Settings,
    out: &Path,
    cancel: &AtomicBool,
    on: &mut dyn FnMut(&Progress) -> Result<(), TrainError>,
) -> Result<Outcome, TrainError> {
    if train.is_empty() {
        return Err(TrainError::Data("no training examples".into()));
    }
    if settings.epochs == 0 || settings.batch_size == 0 || settings.rank == 0 {
        return Err(TrainError::Data(
            "epochs, batch size and rank must each be at least 1".into(),
        ));
    }
    let adapters = Adapters::new(
        base,
        settings.rank,
        settings.alpha,
        settings.layers,
        settings.seed,
    )?;
    let mut opt = AdamW::new(
        adapters.vars(),
        ParamsAdamW {
            lr: settings.learning_rate,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed.wrapping_add(1));
    let per_epoch = train.len().div_ceil(settings.batch_size);
    let steps = per_epoch * settings.epochs;
    let mut valid_loss = mean_loss(base, &adapters, valid)?;
    if let Some(v) = valid_loss {
        on(&Progress::Validation {
            step: 0,
            valid_loss: v,
        })?;
    }
    let mut step = 0;
    let mut trained_tokens = 0;
    let mut processed_tokens = 0;
    let mut epoch_loss = 0.0;
    let mut last = None;
    for epoch in 1..=settings.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        for batch in order.chunks(settings.batch_size) {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let tokens = batch.iter().map(|&i| train[i].ids.len()).sum();
            on(&Progress::Starting {
                step: step + 1,
                tokens,
            })?;
            processed_tokens += tokens;
            let mut total = None;
            for &i in batch {
                let ex = &train[i];
                trained_tokens += ex.ids.len() - ex.first_target;
                let l = base.loss(&adapters, &ex.ids, ex.first_target)?;
                total = Some(match total {
                    None => l,
                    Some(t) => (t + l)?,
                });
            }
            let Some(total) = total else { continue };
            let loss = (total / batch.len() as f64)?;
            opt.backward_step(&loss)?;
            let value = loss.to_scalar::<f32>()?;
            sum += value * batch.len() as f32;
            step += 1;
            on(&Progress::Step {
                step,
                steps,
                train_loss: value,
            })?;
        }
        epoch_loss = sum / train.len() as f32;
        valid_loss = mean_loss(base, &adapters, valid)?;
        if let Some(v) = valid_loss {
            on(&Progress::Validation {
                step,
                valid_loss: v,
            })?;
        }
        let path = out.join(format!("checkpoint-step-{step}.gguf"));
        adapter::write(&path, &base.shape, &adapters)?;
        on(&Progress::Checkpoint {
            step,
            epoch,
            path: path.clone(),
            train_loss: epoch_loss,
            valid_loss,
        })?;
        last = Some(path);
    }
    let adapter = out.join("adapter.gguf");
    match last {
        Some(p) => std::fs::copy(&p, &adapter).map_err(|source| TrainError::Io {
            path: adapter.clone(),
            source,
        })?,
        None => return Err(TrainError::Data("no epoch ran".into())),
    };
    Ok(Outcome {
        steps: step,
        train_loss: epoch_loss,
        valid_loss,
        trained_tokens,
        processed_tokens,
        adapter,
    })
}

/// Mean loss over `examples` (none: `None`), computed without keeping a graph for gradients.
fn mean_loss(
    base: &Base,
    adapters: &Adapters,
    examples: &[Example],
) -> Result<Option<f32>, TrainError> {
    if examples.is_empty() {
        return Ok(None);
    }
    let mut sum = 0.0;
    for ex in examples {
        sum += base
            .loss(adapters, &ex.ids, ex.first_target)?
            .detach()
            .to_scalar::<f32>()?;
    }
    Ok(Some(sum / examples.len() as f32))
}
