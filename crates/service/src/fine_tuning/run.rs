//! The fine-tuning worker: one job at a time (training takes every core it is given), oldest
//! first, on the blocking pool, reporting each step as an event and each epoch as a checkpoint.
//!
//! A job never hangs: one a stopped server left running (a shutdown, or `kill -9`) is queued
//! again at the next start and trained again from the start, with an event saying so; one that
//! fails ends `failed` with the reason; a cancelled one ends `cancelled` at its next step.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enclave_engine::{ChatMessage, Prompter};
use enclave_store::{FineTuneCheckpoint, StoredFineTune};
use enclave_train::{Example, Outcome, Progress, Settings, TrainError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::served::{Served, adapter_path, register};
use super::{BASE_LEARNING_RATE, Job, Setup, body, setup, store_error};
use crate::Service;
use crate::error::Error;

/// How often the worker looks for models other servers trained.
const SYNC_EVERY: Duration = Duration::from_secs(3);

/// How long a trained model's engine may take to answer before the job fails.
const ENGINE_START: Duration = Duration::from_secs(120);

/// Appends an event to a job's log (a failure to write it is logged, not fatal).
pub(super) async fn event(
    state: &Service,
    job: &str,
    level: &str,
    message: &str,
    data: Option<Value>,
) {
    let body = json!({"level": level, "message": message, "data": data}).to_string();
    if let Err(e) = state
        .store
        .add_fine_tune_event(job, enclave_store::now(), &body)
        .await
    {
        tracing::error!(job, error = %e, "cannot record a fine-tuning event");
    }
}

/// The model a job makes: `ft:{base}:{tenant}:{suffix}:{job}`, as OpenAI names them.
fn model_name(j: &StoredFineTune, b: &Job) -> String {
    let id = j.id.trim_start_matches("ftjob-");
    let short = &id[id.len().saturating_sub(12)..];
    format!(
        "ft:{}:{}:{}:{short}",
        b.model,
        b.owner.tenant_name,
        b.suffix.as_deref().unwrap_or_default()
    )
}

/// Runs jobs until `stop` says so, taking them from the jobs queue: the highest priority
/// first, then the tenant served longest ago. A job this server held when it stopped (or
/// another server held when it died, once its hold lapsed) is taken up again.
pub async fn work(state: Service, stop: tokio_util::sync::CancellationToken) {
    crate::jobs::release_mine(&state).await;
    let mut turns = crate::jobs::Turns::default();
    let mut synced = std::time::Instant::now();
    loop {
        if stop.is_cancelled() {
            break;
        }
        // Models other servers sharing the store trained are served here too.
        if synced.elapsed() >= SYNC_EVERY {
            super::served::sync(&state, false).await;
            synced = std::time::Instant::now();
        }
        let held = crate::jobs::next(&state, &mut turns, "fine_tuning", &["queued", "running"])
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the jobs queue; retrying");
                None
            });
        let Some(held) = held else {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        };
        let id = held.job.id.clone();
        match state.store.fine_tune(&id).await {
            Ok(Some(job)) => {
                if let Err(e) = run(&state, job, &stop).await {
                    tracing::error!(job = %id, error = %e, "fine-tuning job could not be recorded");
                }
            }
            Ok(None) => tracing::error!(job = %id, "a queued fine-tuning job has no record"),
            Err(e) => tracing::error!(job = %id, error = %e, "cannot read a fine-tuning job"),
        }
        held.release().await;
    }
}

async fn run(
    state: &Service,
    mut j: StoredFineTune,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), Error> {
    let setup = Arc::clone(setup(state)?);
    let mut b = body(&j)?;
    if j.status == "running" {
        event(
            state,
            &j.id,
            "warn",
            "The server stopped while this job ran; it is queued to train again from the start",
            None,
        )
        .await;
    }
    j.status = "running".into();
    state.store.save_fine_tune(&j).await.map_err(store_error)?;
    event(state, &j.id, "info", "Fine-tuning job started", None).await;

    let cancel = Arc::new(AtomicBool::new(false));
    setup
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(j.id.clone(), Arc::clone(&cancel));
    // A server stopping cancels the run too; the job is then queued again.
    let watcher = {
        let (cancel, stop) = (Arc::clone(&cancel), stop.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            cancel.store(true, Ordering::Relaxed);
        })
    };
    let result = train(state, &setup, &j, &b, Arc::clone(&cancel)).await;
    watcher.abort();
    setup
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&j.id);

    match result {
        Ok(outcome) => succeed(state, &setup, j, b, outcome).await,
        Err(TrainError::Cancelled) if stop.is_cancelled() => {
            j.status = "queued".into();
            state.store.save_fine_tune(&j).await.map_err(store_error)?;
            event(
                state,
                &j.id,
                "warn",
                "The server is stopping; the job is queued to train again at its next start",
                None,
            )
            .await;
            Ok(())
        }
        Err(TrainError::Cancelled) => {
            j.status = "cancelled".into();
            b.finished_at = Some(enclave_store::now());
            j.body = serde_json::to_string(&b).map_err(|_| Error::Internal)?;
            state.store.save_fine_tune(&j).await.map_err(store_error)?;
            event(state, &j.id, "info", "Fine-tuning job cancelled", None).await;
            Ok(())
        }
        Err(TrainError::Refused(why)) => {
            b.error_code = Some("insufficient_quota".into());
            fail(state, j, b, &why).await
        }
        Err(e) => fail(state, j, b, &e.to_string()).await,
    }
}

async fn fail(state: &Service, mut j: StoredFineTune, mut b: Job, why: &str) -> Result<(), Error> {
    tracing::warn!(job = %j.id, error = why, "fine-tuning job failed");
    j.status = "failed".into();
    b.error = Some(why.to_string());
    b.finished_at = Some(enclave_store::now());
    j.body = serde_json::to_string(&b).map_err(|_| Error::Internal)?;
    state.store.save_fine_tune(&j).await.map_err(store_error)?;
    event(
        state,
        &j.id,
        "error",
        &format!("Fine-tuning job failed: {why}"),
        None,
    )
    .await;
    Ok(())
}

/// Tokenized examples of a chat file.
fn examples(prompter: &Prompter, bytes: &[u8]) -> Result<Vec<Example>, TrainError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TrainError::Data("not UTF-8".into()))?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |m: String| TrainError::Data(format!("line {}: {m}", i + 1));
        let v: Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let messages: Vec<ChatMessage> = v["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| ChatMessage {
                        role: m["role"].as_str().unwrap_or_default().to_string(),
                        content: m["content"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (ids, first_target) = prompter
            .training_example(&messages)
            .map_err(|e| bad(e.to_string()))?;
        out.push(Example {
            ids: ids.into_iter().map(|t| t as u32).collect(),
            first_target,
        });
    }
    Ok(out)
}

/// Reads the files and trains on the blocking pool, recording progress as it goes.
async fn train(
    state: &Service,
    setup: &Arc<Setup>,
    j: &StoredFineTune,
    b: &Job,
    cancel: Arc<AtomicBool>,
) -> Result<Outcome, TrainError> {
    let read = |id: String| async move {
        state
            .store
            .file_content(&id)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| TrainError::Data(format!("the file `{id}` is gone")))
    };
    let train_bytes = read(b.training_file.clone()).await?;
    let valid_bytes = match &b.validation_file {
        Some(v) => Some(read(v.clone()).await?),
        None => None,
    };
    let dir: PathBuf = setup.dir.join(&j.id);
    std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
        path: dir.clone(),
        source,
    })?;
    let settings = Settings {
        epochs: b.hyperparameters.n_epochs,
        batch_size: b.hyperparameters.batch_size,
        learning_rate: BASE_LEARNING_RATE * b.hyperparameters.learning_rate_multiplier,
        seed: b.seed,
        ..Settings::default()
    };
    let (base_path, device) = (setup.base.clone(), setup.device.clone());
    let name = model_name(j, b);
    let (job, service) = (j.id.clone(), state.clone());
    let owner = b
        .owner
        .principal()
        .map_err(|_| TrainError::Data("the job's owner cannot be read".into()))?;
    let usage = format!("training:{}", b.model);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let prompter =
            Prompter::load(&base_path, None).map_err(|e| TrainError::Model(e.to_string()))?;
        let train = examples(&prompter, &train_bytes)?;
        let valid = match &valid_bytes {
            Some(v) => examples(&prompter, v)?,
            None => Vec::new(),
        };
        let base = enclave_train::Base::load_on(&base_path, &device)?;
        let mut on = |p: &Progress| match p {
            Progress::Starting { tokens, .. } => {
                handle.block_on(charge(&service, &job, &owner, &usage, *tokens, &cancel))
            }
            _ => {
                handle.block_on(progress(&service, &job, &name, p));
                Ok(())
            }
        };
        enclave_train::train(&base, &train, &valid, &settings, &dir, &cancel, &mut on)
    })
    .await
    .map_err(|e| TrainError::Model(format!("the training task ended: {e}")))?
}

/// Charges one training step's tokens (every token of its examples) to the owner's quotas
/// before it runs, under the usage name `training:{base}`: the tenant's and the key's limits
/// apply as to a call. A per-minute limit pauses training until the step fits; a spent monthly
/// budget, or a step larger than a per-minute limit, ends the job `failed` with
/// `insufficient_quota`.
async fn charge(
    state: &Service,
    job: &str,
    owner: &crate::principal::Principal,
    usage: &str,
    tokens: usize,
    cancel: &AtomicBool,
) -> Result<(), TrainError> {
    let asked = tokens as u64;
    let q = state.policy.quota(&owner.tenant_name);
    let scopes = [
        ("the tenant", Some(&q.tenant)),
        ("the key", Some(&q.key)),
        ("the model", q.models.get(usage)),
    ];
    for (whose, limits) in scopes {
        if let Some(tpm) = limits.and_then(|l| l.tokens_per_minute)
            && tpm < asked
        {
            return Err(TrainError::Refused(format!(
                "a training step needs {asked} tokens, more than {whose}'s limit of {tpm} tokens per minute: lower `batch_size` or raise the limit"
            )));
        }
    }
    // A cancel made through another server is noted in the store.
    if let Ok(Some(stored)) = state.store.fine_tune(job).await
        && body(&stored).is_ok_and(|b| b.cancel_requested)
    {
        cancel.store(true, Ordering::Relaxed);
    }
    let mut paused = false;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled);
        }
        match state
            .quotas
            .reserve(&state.policy, owner, usage, asked)
            .await
        {
            Ok(ticket) => {
                ticket
                    .settle(u32::try_from(tokens).unwrap_or(u32::MAX), 0)
                    .await;
                return Ok(());
            }
            Err(Error::QuotaExceeded {
                code: "rate_limit_exceeded",
                message,
                retry_after,
            }) => {
                if !paused {
                    paused = true;
                    event(
                        state,
                        job,
                        "warn",
                        &format!("Training waits for the quota: {message}"),
                        None,
                    )
                    .await;
                }
                tokio::time::sleep(retry_after.min(Duration::from_secs(5))).await;
            }
            Err(Error::QuotaExceeded { message, .. }) => {
                return Err(TrainError::Refused(format!(
                    "training stopped: the quota is spent ({message})"
                )));
            }
            Err(e) => return Err(TrainError::Model(format!("training stopped: {e}"))),
        }
    }
}

/// Records one report of the trainer as an event (and a checkpoint).
async fn progress(state: &Service, job: &str, name: &str, p: &Progress) {
    match p {
        Progress::Step {
            step,
            steps,
            train_loss,
        } => {
            event(
                state,
                job,
                "info",
                &format!("Step {step}/{steps}: training loss={train_loss:.4}"),
                Some(json!({"step": step, "total_steps": steps, "train_loss": train_loss})),
            )
            .await;
        }
        Progress::Validation { step, valid_loss } => {
            event(
                state,
                job,
                "info",
                &format!("Step {step}: validation loss={valid_loss:.4}"),
                Some(json!({"step": step, "valid_loss": valid_loss})),
            )
            .await;
        }
        Progress::Checkpoint {
            step,
            epoch,
            path,
            train_loss,
            valid_loss,
        } => {
            let body = json!({
                "name": format!("{name}:ckpt-step-{step}"),
                "metrics": {"step": step, "epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss},
                "path": path,
            });
            let c = FineTuneCheckpoint {
                id: format!("ftckpt-{}-{step}", job.trim_start_matches("ftjob-")),
                job_id: job.to_string(),
                step: *step as i64,
                created_at: enclave_store::now(),
                body: body.to_string(),
            };
            if let Err(e) = state.store.add_fine_tune_checkpoint(&c).await {
                tracing::error!(job, error = %e, "cannot record a checkpoint");
            }
            event(
                state,
                job,
                "info",
                &format!("Checkpoint created at step {step} (epoch {epoch})"),
                None,
            )
            .await;
        }
        Progress::Starting { .. } => {}
    }
}

async fn succeed(
    state: &Service,
    setup: &Setup,
    mut j: StoredFineTune,
    mut b: Job,
    outcome: Outcome,
) -> Result<(), Error> {
    let adapter = adapter_path(setup, &j.id);
    let bytes = match std::fs::read(&outcome.adapter) {
        Ok(bytes) => bytes,
        Err(e) => return fail(state, j, b, &format!("the adapter cannot be read: {e}")).await,
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    if outcome.adapter != adapter {
        return fail(state, j, b, "the adapter was written elsewhere").await;
    }
    // Kept in the store before the job is called succeeded, so every server sharing the store
    // can serve the model and its checkpoints.
    if let Err(e) = keep_artifacts(state, &j.id, &bytes).await {
        return fail(state, j, b, &format!("the adapter cannot be kept: {e}")).await;
    }
    let label = match state.policy.scheme.parse(&j.label) {
        Ok(l) => l,
        Err(e) => return fail(state, j, b, &format!("the job's label: {e}")).await,
    };
    let engine = match setup.engines.start(&adapter) {
        Ok(e) => e,
        Err(e) => {
            return fail(
                state,
                j,
                b,
                &format!("trained, but its engine did not start: {e}"),
            )
            .await;
        }
    };
    // The job succeeds when its model answers, as OpenAI's does: not before its engine is up.
    let deadline = std::time::Instant::now() + ENGINE_START;
    while !engine.health().is_ready() {
        if std::time::Instant::now() > deadline {
            return fail(
                state,
                j,
                b,
                "trained, but its engine did not become ready (the server log says why)",
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = model_name(&j, &b);
    b.finished_at = Some(enclave_store::now());
    // Billable tokens, as OpenAI counts them: every token of every example, per epoch.
    b.trained_tokens = Some(outcome.processed_tokens);
    b.train_loss = Some(outcome.train_loss);
    b.valid_loss = outcome.valid_loss;
    b.adapter_sha256 = Some(digest);
    j.status = "succeeded".into();
    j.fine_tuned_model = Some(name.clone());
    j.body = serde_json::to_string(&b).map_err(|_| Error::Internal)?;
    state.store.save_fine_tune(&j).await.map_err(store_error)?;
    super::served::register_checkpoints(state, setup, &j.id, &j.tenant_id, &label).await;
    register(
        setup,
        name.clone(),
        Served::running(j.tenant_id.clone(), label, j.id.clone(), adapter, engine),
    );
    event(
        state,
        &j.id,
        "info",
        &format!("New fine-tuned model created: {name}"),
        None,
    )
    .await;
    event(
        state,
        &j.id,
        "info",
        "The job has successfully completed",
        None,
    )
    .await;
    let lineage = json!({
        "job": j.id, "model": name, "label": j.label, "lineage": super::lineage(&b),
    });
    if let Err(e) = crate::admin::record_event(
        state.store.as_ref(),
        "fine_tuning.succeeded",
        Some(&b.owner.tenant_name),
        Some(&b.owner.key_id),
        lineage.to_string(),
    )
    .await
    {
        tracing::error!(job = %j.id, error = %e, "cannot queue the fine-tuning audit event");
    }
    Ok(())
}

/// Keeps a succeeded job's adapter and its checkpoints' adapters in the store, by file name.
async fn keep_artifacts(state: &Service, job: &str, adapter: &[u8]) -> Result<(), String> {
    let store = |e: enclave_store::StoreError| e.to_string();
    state
        .store
        .save_fine_tune_artifact(job, "adapter.gguf", adapter)
        .await
        .map_err(store)?;
    for c in state
        .store
        .fine_tune_checkpoints(job)
        .await
        .map_err(store)?
    {
        let body: Value = serde_json::from_str(&c.body).unwrap_or_default();
        let Some(path) = body["path"].as_str().map(std::path::Path::new) else {
            continue;
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        state
            .store
            .save_fine_tune_artifact(job, name, &bytes)
            .await
            .map_err(store)?;
    }
    Ok(())
}
