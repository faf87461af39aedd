//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "The process is up", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready once every embedded model is loaded and the chat engine's process answers; unready while
/// that process is restarting after a crash.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, description = "Ready: models loaded, the audit log writes", body = Object), (status = 503, description = "Not ready, and why", body = Object)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let chat_health = state.models.chat.get().map(|c| c.health());
    let chat = chat_health.as_ref().is_some_and(|h| h.is_ready());
    let embedding = state.models.embedding.get().is_some();
    // The operator's own models (`enclave models add`) count as much as the built-in ones.
    let local: Vec<(String, &'static str, bool)> = match state.models.local.get() {
        Some(engines) => engines
            .iter()
            .map(|(name, e)| {
                let h = e.health();
                (name.clone(), h.word(), h.is_ready())
            })
            .collect(),
        None => Vec::new(),
    };
    let local_ready = state.models.local.get().is_some() && local.iter().all(|(_, _, r)| *r);
    let chat = chat && local_ready;
    // Fail closed (AU-5): while the audit log cannot write, nothing is served, so not ready.
    let audit = state.audit.healthy();
    let status = if chat && embedding && audit {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |loaded| if loaded { "loaded" } else { "loading" };
    let chat_word = chat_health.as_ref().map_or("loading", |h| h.word());
    let state_word = if status == StatusCode::OK {
        "ready"
    } else if !audit {
        "audit_unavailable"
    } else if chat_word == "restarting" {
        "engine_restarting"
    } else {
        "loading"
    };
    let mut engine = json!({
        "restarts": chat_health.as_ref().map_or(0, |h| h.restarts()),
    });
    if let Some(enclave_service::types::EngineHealth::Down { reason, .. }) = &chat_health {
        engine["last_failure"] = json!(reason);
    }
    let mut models =
        json!({ crate::CHAT_MODEL: chat_word, crate::EMBEDDING_MODEL: word(embedding) });
    for (name, w, _) in &local {
        models[name.as_str()] = json!(w);
    }
    (
        status,
        Json(json!({
            "status": state_word,
            "models": models,
            "engine": engine,
            "audit": if audit { "ok" } else { "failing" },
        })),
    )
}
