//! Fine-tuned models being served: each an engine running the base with its adapter, inside the
//! enclave, visible and callable only by its tenant's callers cleared for its label.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use enclave_engine::ChatProcess;
use enclave_label::Label;

use super::{Setup, setup};
use crate::Service;
use crate::error::Error;
use crate::monitor;
use crate::principal::Principal;

/// Starts an engine serving the base model with an adapter (the binary knows how to start an
/// engine worker; the service does not).
pub trait FineTunedEngines: Send + Sync {
    fn start(&self, adapter: &Path) -> Result<Arc<ChatProcess>, String>;
}

pub(super) struct Served {
    pub tenant_id: String,
    pub label: Label,
    pub job: String,
    /// The adapter the engine runs.
    pub adapter: PathBuf,
    /// A checkpoint of the job rather than its final model: callable, not listed.
    pub checkpoint: bool,
    /// Started with the model; a checkpoint's at its first call.
    pub engine: Mutex<Option<Arc<ChatProcess>>>,
}

impl Served {
    /// A model whose engine is already running.
    pub(super) fn running(
        tenant_id: String,
        label: Label,
        job: String,
        adapter: PathBuf,
        engine: Arc<ChatProcess>,
    ) -> Self {
        Self {
            tenant_id,
            label,
            job,
            adapter,
            checkpoint: false,
            engine: Mutex::new(Some(engine)),
        }
    }
}

/// Where a job's adapter is kept.
pub(super) fn adapter_path(setup: &Setup, job: &str) -> std::path::PathBuf {
    setup.dir.join(job).join("adapter.gguf")
}

/// Puts a model in service under `name`.
pub(super) fn register(setup: &Setup, name: String, served: Served) {
    setup
        .served
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name, served);
}

/// Where this server keeps the file `path` names (the trainer's path, perhaps on another
/// server) for job `job`.
fn local(setup: &Setup, job: &str, path: &str) -> Option<PathBuf> {
    Path::new(path)
        .file_name()
        .map(|name| setup.dir.join(job).join(name))
}

/// Makes the checkpoints of succeeded job `job` callable under their names; each one's engine
/// starts at its first call.
pub(super) async fn register_checkpoints(
    state: &Service,
    setup: &Setup,
    job: &str,
    tenant_id: &str,
    label: &Label,
) {
    let checkpoints = match state.store.fine_tune_checkpoints(job).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(job, error = %e, "cannot read a job's checkpoints");
            return;
        }
    };
    for c in checkpoints {
        let body: serde_json::Value = serde_json::from_str(&c.body).unwrap_or_default();
        let (Some(name), Some(adapter)) = (
            body["name"].as_str(),
            body["path"].as_str().and_then(|p| local(setup, job, p)),
        ) else {
            continue;
        };
        register(
            setup,
            name.to_string(),
            Served {
                tenant_id: tenant_id.to_string(),
                label: label.clone(),
                job: job.to_string(),
                adapter,
                checkpoint: true,
                engine: Mutex::new(None),
            },
        );
    }
}

/// Serves every model a succeeded job made that this server does not serve yet: at start, and
/// then every few seconds, so a model trained by another server sharing the store is served
/// here too. An engine starts at once where its adapter is on this server's disk (`eager`),
/// else at the model's first call, after its adapter is fetched from the store.
pub(super) async fn sync(state: &Service, eager: bool) {
    let Ok(setup) = setup(state) else { return };
    let jobs = match state.store.fine_tunes_with_status(&["succeeded"]).await {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "cannot read fine-tuned models");
            return;
        }
    };
    for j in jobs {
        let (Some(name), Ok(label)) = (
            j.fine_tuned_model.clone(),
            state.policy.scheme.parse(&j.label),
        ) else {
            continue;
        };
        let known = setup
            .served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&name);
        if known {
            continue;
        }
        let path = adapter_path(setup, &j.id);
        let engine = if eager && path.exists() {
            match setup.engines.start(&path) {
                Ok(engine) => Some(engine),
                Err(e) => {
                    tracing::error!(job = %j.id, error = %e, "cannot serve a fine-tuned model");
                    continue;
                }
            }
        } else {
            None
        };
        register_checkpoints(state, setup, &j.id, &j.tenant_id, &label).await;
        register(
            setup,
            name,
            Served {
                tenant_id: j.tenant_id.clone(),
                label,
                job: j.id.clone(),
                adapter: path,
                checkpoint: false,
                engine: Mutex::new(engine),
            },
        );
    }
}

/// Serves every model a job made before this start.
pub async fn serve_existing(state: &Service) {
    sync(state, true).await;
}

/// Writes the adapter a job keeps in the store under `adapter`'s file name to `adapter`.
async fn fetch(state: &Service, job: &str, adapter: &Path) -> Result<(), String> {
    let name = adapter
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("an adapter path without a file name")?;
    let bytes = state
        .store
        .fine_tune_artifact(job, name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the store keeps no `{name}` for {job}"))?;
    let dir = adapter.parent().ok_or("an adapter path without a folder")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // Written beside, then renamed: an engine never reads half a file.
    let partial = adapter.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, adapter).map_err(|e| e.to_string())
}

/// Whether `principal` may see `served`: its tenant, at a clearance that dominates its label.
fn may_see(state: &Service, principal: &Principal, served: &Served) -> bool {
    served.tenant_id == principal.tenant_id
        && monitor::clearance(&state.policy, principal).is_ok_and(|c| c.dominates(&served.label))
}

/// For a call of `model` by `principal`: `None` when it is not a fine-tuned model, its label
/// (the floor of the call's label) when `principal` may call it, and 404 `model_not_found` when
/// it is another tenant's, above the caller's clearance, or not (yet) served — a caller who may
/// not call it learns nothing of it.
pub fn floor(state: &Service, principal: &Principal, model: &str) -> Result<Option<Label>, Error> {
    if !model.starts_with("ft:") {
        return Ok(None);
    }
    let not_found = || Error::ModelNotFound(model.to_string());
    let setup = setup(state).map_err(|_| not_found())?;
    let served = setup.served.read().unwrap_or_else(|p| p.into_inner());
    match served.get(model) {
        Some(s) if may_see(state, principal, s) => Ok(Some(s.label.clone())),
        _ => Err(not_found()),
    }
}

/// The engine serving fine-tuned `model`: a checkpoint's, or a model another server trained,
/// is started here at its first call (its adapter fetched from the store first), and answers
/// `model_loading` until it is up.
pub async fn engine(state: &Service, model: &str) -> Option<Arc<ChatProcess>> {
    let setup = state.fine_tuning.as_ref()?;
    let (adapter, job) = {
        let served = setup.served.read().unwrap_or_else(|p| p.into_inner());
        let s = served.get(model)?;
        if let Some(e) = s.engine.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(e);
        }
        (s.adapter.clone(), s.job.clone())
    };
    if !adapter.exists()
        && let Err(e) = fetch(state, &job, &adapter).await
    {
        tracing::error!(model, error = %e, "cannot fetch a fine-tuned adapter");
        return None;
    }
    let served = setup.served.read().unwrap_or_else(|p| p.into_inner());
    let s = served.get(model)?;
    let mut engine = s.engine.lock().unwrap_or_else(|p| p.into_inner());
    if engine.is_none() {
        match setup.engines.start(&s.adapter) {
            Ok(e) => *engine = Some(e),
            Err(e) => {
                tracing::error!(model, error = %e, "cannot start a fine-tuned model's engine");
                return None;
            }
        }
    }
    engine.clone()
}

pub(super) fn visible(state: &Service, principal: &Principal) -> Vec<String> {
    let Some(setup) = state.fine_tuning.as_ref() else {
        return Vec::new();
    };
    let served = setup.served.read().unwrap_or_else(|p| p.into_inner());
    served
        .iter()
        .filter(|(_, s)| !s.checkpoint && may_see(state, principal, s))
        .map(|(name, _)| name.clone())
        .collect()
}

pub(super) fn job_of(state: &Service, principal: &Principal, model: &str) -> Option<String> {
    let setup = state.fine_tuning.as_ref()?;
    let served = setup.served.read().unwrap_or_else(|p| p.into_inner());
    served
        .get(model)
        .filter(|s| may_see(state, principal, s))
        .map(|s| s.job.clone())
}
