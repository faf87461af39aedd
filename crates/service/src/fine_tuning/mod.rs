//! Fine-tuning jobs (OpenAI's fine-tuning API): LoRA training of the embedded chat model on a
//! tenant's chat files, in the background, whose model inherits the labels of what it learned.
//!
//! **Label lineage.** A job's label is the join of its training and validation files' labels
//! (each already the join of every marking in it), fixed when the job is made; the model it
//! makes carries that label for good — deleting a file later never lowers it. The model is
//! served only by the embedded engine inside the enclave, only to callers of its tenant whose
//! clearance dominates its label (to anyone else it does not exist: 404), and every answer it
//! gives is labelled at least that (its label is the floor of the call's label). Making,
//! finishing and serving it are audited: the call that makes it and every call to it are
//! records, and its end (with the lineage: base model and hash, files with hashes and labels,
//! hyperparameters, final losses) is an administrative event in the audit log.

mod run;
mod served;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use enclave_label::Label;
use enclave_store::StoredFineTune;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Service;
use crate::batches::Owner;
use crate::error::Error;
use crate::files;
use crate::monitor;
use crate::principal::Principal;

pub use run::work;
pub use served::{FineTunedEngines, engine, floor, serve_existing};

/// The learning rate a multiplier of 1 means: with the default 3 epochs of batches of 4 it
/// teaches the committed 16-example task its form (`crates/train/tests/learns.rs` trains with
/// exactly this), where half of it lowered the loss without teaching the form.
const BASE_LEARNING_RATE: f64 = 4e-3;

/// What fine-tuning needs from the server that runs it.
pub struct Setup {
    /// The base model's GGUF file and its pinned SHA-256.
    pub base: PathBuf,
    pub base_sha256: String,
    /// Where adapters and checkpoints are kept, one folder per job.
    pub dir: PathBuf,
    /// Starts an engine serving the base with an adapter.
    pub engines: Arc<dyn FineTunedEngines>,
    /// Where the trainer runs (the CPU unless [`Setup::on`] says otherwise).
    pub device: enclave_train::Device,
    cancels: Mutex<HashMap<String, Arc<AtomicBool>>>,
    served: RwLock<BTreeMap<String, served::Served>>,
}

impl Setup {
    pub fn new(
        base: PathBuf,
        base_sha256: String,
        dir: PathBuf,
        engines: Arc<dyn FineTunedEngines>,
    ) -> Self {
        Self {
            base,
            base_sha256,
            dir,
            engines,
            device: enclave_train::Device::Cpu,
            cancels: Mutex::new(HashMap::new()),
            served: RwLock::new(BTreeMap::new()),
        }
    }

    /// Trains on `device` instead of the CPU.
    pub fn on(mut self, device: enclave_train::Device) -> Self {
        self.device = device;
        self
    }
}

/// Hyperparameters as a job keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hyper {
    pub n_epochs: usize,
    pub batch_size: usize,
    pub learning_rate_multiplier: f64,
}

/// One file a model learned from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LearnedFrom {
    pub id: String,
    pub filename: String,
    pub sha256: String,
    pub label: String,
    /// `training` or `validation`.
    pub role: String,
}

/// What a job keeps beyond its searchable facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Job {
    pub owner: Owner,
    pub model: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub suffix: Option<String>,
    pub seed: u64,
    pub hyperparameters: Hyper,
    pub base_sha256: String,
    pub files: Vec<LearnedFrom>,
    pub metadata: Option<Value>,
    pub finished_at: Option<i64>,
    pub trained_tokens: Option<usize>,
    pub error: Option<String>,
    /// The error's stable code (`insufficient_quota`), when not the generic one.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Asked to stop while running (perhaps through another server): training stops before its
    /// next step.
    #[serde(default)]
    pub cancel_requested: bool,
    pub train_loss: Option<f32>,
    pub valid_loss: Option<f32>,
    pub adapter_sha256: Option<String>,
}

pub(crate) fn store_error(e: enclave_store::StoreError) -> Error {
    tracing::error!(error = %e, "fine-tuning store failure");
    Error::Internal
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("there is no fine-tuning job `{id}`"))
}

pub(crate) fn setup(state: &Service) -> Result<&Arc<Setup>, Error> {
    state.fine_tuning.as_ref().ok_or_else(|| {
        Error::unsupported(
            "fine-tuning",
            "this server does not run fine-tuning jobs (no embedded chat model)",
        )
    })
}

pub(crate) fn body(j: &StoredFineTune) -> Result<Job, Error> {
    serde_json::from_str(&j.body).map_err(|e| {
        tracing::error!(job = %j.id, error = %e, "unreadable fine-tuning job");
        Error::Internal
    })
}

/// The job object in OpenAI's shape, with Enclave's label and lineage beside it.
fn object(j: &StoredFineTune, b: &Job) -> Value {
    let hyper = json!({
        "n_epochs": b.hyperparameters.n_epochs,
        "batch_size": b.hyperparameters.batch_size,
        "learning_rate_multiplier": b.hyperparameters.learning_rate_multiplier,
    });
    json!({
        "object": "fine_tuning.job",
        "id": j.id,
        "model": b.model,
        "created_at": j.created_at,
        "finished_at": b.finished_at,
        "fine_tuned_model": j.fine_tuned_model,
        "organization_id": b.owner.tenant_name,
        "result_files": [],
        "status": j.status,
        "training_file": b.training_file,
        "validation_file": b.validation_file,
        "hyperparameters": hyper,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "trained_tokens": b.trained_tokens,
        "error": b.error.as_ref().map(|m| json!({"code": b.error_code.as_deref().unwrap_or("fine_tuning_failed"), "message": m, "param": null})),
        "user_provided_suffix": b.suffix,
        "seed": b.seed,
        "estimated_finish": null,
        "integrations": [],
        "metadata": b.metadata,
        "enclave": {
            "label": j.label,
            "priority": crate::jobs::Priority::of_rank(j.priority).as_str(),
            "lineage": lineage(b),
        },
    })
}

/// What a model learned from: the model card's lineage.
fn lineage(b: &Job) -> Value {
    json!({
        "base_model": b.model,
        "base_sha256": b.base_sha256,
        "files": b.files,
        "hyperparameters": b.hyperparameters,
        "train_loss": b.train_loss,
        "valid_loss": b.valid_loss,
        "adapter_sha256": b.adapter_sha256,
    })
}

/// A job `principal` may see: its tenant's, at a label its clearance dominates (else 404).
async fn visible(
    state: &Service,
    principal: &Principal,
    id: &str,
) -> Result<(StoredFineTune, Job), Error> {
    let j = state
        .store
        .fine_tune(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    if !monitor::may_read(&state.policy, principal, &j.tenant_id, &j.label)? {
        return Err(not_found(id));
    }
    let b = body(&j)?;
    Ok((j, b))
}

/// A fine-tuning request, in OpenAI's shape.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFineTune {
    /// The base model: the embedded chat model.
    pub model: String,
    pub training_file: String,
    #[serde(default)]
    pub validation_file: Option<String>,
    /// Up to 18 characters, in the model's name.
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Deprecated by OpenAI in favour of `method`, still accepted.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub hyperparameters: Option<Value>,
    /// `{"type": "supervised", "supervised": {"hyperparameters": {...}}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub method: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub integrations: Option<Value>,
    /// Enclave's: `high`, `normal` (the default) or `low`. Jobs of higher priority train first.
    #[serde(default)]
    pub priority: Option<crate::jobs::Priority>,
}

/// One hyperparameter: `"auto"` or absent gives `auto`, else a number within `range`.
fn hyper_value(
    from: Option<&Value>,
    name: &str,
    auto: f64,
    range: (f64, f64),
) -> Result<f64, Error> {
    match from.and_then(|h| h.get(name)) {
        None | Some(Value::Null) => Ok(auto),
        Some(Value::String(s)) if s == "auto" => Ok(auto),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x >= range.0 && *x <= range.1)
            .ok_or_else(|| {
                Error::invalid(
                    name,
                    format!(
                        "`{name}` must be \"auto\" or a number from {} to {}",
                        range.0, range.1
                    ),
                )
            }),
    }
}

fn hyperparameters(req: &NewFineTune) -> Result<Hyper, Error> {
    let from_method = match &req.method {
        None | Some(Value::Null) => None,
        Some(m) => {
            let kind = m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("supervised");
            if kind != "supervised" {
                return Err(Error::unsupported(
                    "method.type",
                    format!("`{kind}`: Enclave fine-tunes by supervised learning only"),
                ));
            }
            m.get("supervised").and_then(|s| s.get("hyperparameters"))
        }
    };
    let h = from_method.or(req.hyperparameters.as_ref());
    Ok(Hyper {
        n_epochs: hyper_value(h, "n_epochs", 3.0, (1.0, 50.0))? as usize,
        batch_size: hyper_value(h, "batch_size", 4.0, (1.0, 64.0))? as usize,
        learning_rate_multiplier: hyper_value(h, "learning_rate_multiplier", 1.0, (0.01, 10.0))?,
    })
}

/// Checks a training or validation file and returns its facts and label: `principal` may read
/// it, it was uploaded for fine-tuning, and every line ends with the answer to learn.
async fn learned_from(
    state: &Service,
    principal: &Principal,
    id: &str,
    role: &str,
    param: &str,
) -> Result<(LearnedFrom, Label), Error> {
    let (file, lines) =
        files::lines_for(state, principal, id, files::Purpose::FineTune, param).await?;
    for (n, v) in &lines {
        let last = v["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["role"].as_str());
        if last != Some("assistant") {
            return Err(Error::invalid(
                param,
                format!("line {n}: the last message must be the `assistant` answer to learn"),
            ));
        }
    }
    let label = state
        .policy
        .scheme
        .parse(&file.enclave.label)
        .map_err(|_| Error::Internal)?;
    Ok((
        LearnedFrom {
            id: file.id,
            filename: file.filename,
            sha256: file.enclave.sha256,
            label: file.enclave.label,
            role: role.to_string(),
        },
        label,
    ))
}

/// Makes a job over files `principal` may read; it runs in the background.
pub async fn create(
    state: &Service,
    principal: &Principal,
    req: NewFineTune,
) -> Result<Value, Error> {
    let setup = setup(state)?;
    if req.model != crate::CHAT_MODEL {
        return Err(Error::invalid(
            "model",
            format!(
                "`{}` cannot be fine-tuned here: the model to fine-tune is `{}`",
                req.model,
                crate::CHAT_MODEL
            ),
        ));
    }
    if let Some(s) = &req.suffix
        && (s.is_empty()
            || s.len() > 18
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(Error::invalid(
            "suffix",
            "`suffix` is 1 to 18 letters, digits, `-` or `_`",
        ));
    }
    files::check_metadata(req.metadata.as_ref())?;
    if req
        .integrations
        .as_ref()
        .is_some_and(|i| i.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(Error::unsupported(
            "integrations",
            "no integration is reachable from inside the enclave",
        ));
    }
    let hyper = hyperparameters(&req)?;
    // Whoever may call the base model may adapt it.
    monitor::authorize(
        &state.policy,
        principal,
        enclave_policy::Action::Chat,
        crate::CHAT_MODEL,
    )?;
    let (train, mut label) = learned_from(
        state,
        principal,
        &req.training_file,
        "training",
        "training_file",
    )
    .await?;
    let mut files = vec![train];
    if let Some(v) = &req.validation_file {
        let (valid, l) = learned_from(state, principal, v, "validation", "validation_file").await?;
        label = label.join(&l);
        files.push(valid);
    }
    let now = enclave_store::now();
    let id = format!("ftjob-{}", uuid::Uuid::now_v7().simple());
    let job = Job {
        owner: Owner::of(principal),
        model: req.model.clone(),
        training_file: req.training_file.clone(),
        validation_file: req.validation_file.clone(),
        suffix: req.suffix.clone(),
        seed: req.seed.unwrap_or(0),
        hyperparameters: hyper,
        base_sha256: setup.base_sha256.clone(),
        files,
        metadata: req.metadata.clone().filter(|m| !m.is_null()),
        finished_at: None,
        trained_tokens: None,
        error: None,
        error_code: None,
        cancel_requested: false,
        train_loss: None,
        valid_loss: None,
        adapter_sha256: None,
    };
    let stored = StoredFineTune {
        id: id.clone(),
        tenant_id: principal.tenant_id.clone(),
        status: "queued".into(),
        label: state.policy.scheme.banner(&label),
        fine_tuned_model: None,
        created_at: now,
        body: serde_json::to_string(&job).map_err(|_| Error::Internal)?,
        priority: req.priority.unwrap_or_default().rank(),
    };
    state
        .store
        .save_fine_tune(&stored)
        .await
        .map_err(store_error)?;
    run::event(
        state,
        &id,
        "info",
        &format!("Fine-tuning job created at {}", stored.label),
        None,
    )
    .await;
    Ok(object(&stored, &job))
}

pub async fn get(state: &Service, principal: &Principal, id: &str) -> Result<Value, Error> {
    let (j, b) = visible(state, principal, id).await?;
    Ok(object(&j, &b))
}

/// The jobs of `principal`'s tenant at labels it may read, newest first.
pub async fn list(state: &Service, principal: &Principal) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for j in state
        .store
        .list_fine_tunes(&principal.tenant_id)
        .await
        .map_err(store_error)?
    {
        if monitor::may_read(&state.policy, principal, &j.tenant_id, &j.label)? {
            out.push(object(&j, &body(&j)?));
        }
    }
    Ok(out)
}

/// Stops a job: a queued one at once, a running one at its next step.
pub async fn cancel(state: &Service, principal: &Principal, id: &str) -> Result<Value, Error> {
    let setup = setup(state)?;
    let (mut j, mut b) = visible(state, principal, id).await?;
    match j.status.as_str() {
        "queued" => {
            j.status = "cancelled".into();
            state.store.save_fine_tune(&j).await.map_err(store_error)?;
            run::event(state, id, "info", "Fine-tuning job cancelled", None).await;
        }
        "running" => {
            // Noted in the store for whichever server trains it, and told at once to this
            // server's trainer if it is the one.
            b.cancel_requested = true;
            j.body = serde_json::to_string(&b).map_err(|_| Error::Internal)?;
            state.store.save_fine_tune(&j).await.map_err(store_error)?;
            if let Some(flag) = setup
                .cancels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
            {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        other => {
            return Err(Error::Conflict(format!(
                "the job is {other}; only a queued or running job can be cancelled"
            )));
        }
    }
    Ok(object(&j, &b))
}

/// A job's events, newest first, in OpenAI's shape.
pub async fn events(state: &Service, principal: &Principal, id: &str) -> Result<Vec<Value>, Error> {
    visible(state, principal, id).await?;
    let mut out: Vec<Value> = state
        .store
        .fine_tune_events(id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|e| {
            let body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
            json!({
                "object": "fine_tuning.job.event",
                "id": format!("ftevent-{}-{}", id.trim_start_matches("ftjob-"), e.seq),
                "created_at": e.created_at,
                "level": body["level"],
                "message": body["message"],
                "data": body["data"],
                "type": if body["data"].is_null() { "message" } else { "metrics" },
            })
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// A job's checkpoints, newest first, in OpenAI's shape.
pub async fn checkpoints(
    state: &Service,
    principal: &Principal,
    id: &str,
) -> Result<Vec<Value>, Error> {
    visible(state, principal, id).await?;
    let mut out: Vec<Value> = state
        .store
        .fine_tune_checkpoints(id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|c| {
            let body: Value = serde_json::from_str(&c.body).unwrap_or(Value::Null);
            json!({
                "object": "fine_tuning.job.checkpoint",
                "id": c.id,
                "created_at": c.created_at,
                "fine_tuned_model_checkpoint": body["name"],
                "fine_tuning_job_id": c.job_id,
                "metrics": body["metrics"],
                "step_number": c.step,
            })
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// The fine-tuned models `principal` may call, by name.
pub fn visible_models(state: &Service, principal: &Principal) -> Vec<String> {
    served::visible(state, principal)
}

/// A fine-tuned model's card for `principal`: its label and lineage (`None` when the model is
/// not one `principal` may see).
pub async fn card(state: &Service, principal: &Principal, model: &str) -> Option<Value> {
    let job = served::job_of(state, principal, model)?;
    let j = state.store.fine_tune(&job).await.ok()??;
    let b = body(&j).ok()?;
    Some(json!({
        "label": j.label,
        "fine_tuning_job": j.id,
        "lineage": lineage(&b),
    }))
}
