//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// The process is up and answering.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready once every embedded model is loaded.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let chat = state.models.chat.get().is_some();
    let embedding = state.models.embedding.get().is_some();
    // Fail closed (AU-5): while the audit log cannot write, nothing is served, so not ready.
    let audit = state.audit.healthy();
    let status = if chat && embedding && audit {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |loaded| if loaded { "loaded" } else { "loading" };
    let state_word = if status == StatusCode::OK {
        "ready"
    } else if !audit {
        "audit_unavailable"
    } else {
        "loading"
    };
    (
        status,
        Json(json!({
            "status": state_word,
            "models": { crate::CHAT_MODEL: word(chat), crate::EMBEDDING_MODEL: word(embedding) },
            "audit": if audit { "ok" } else { "failing" },
        })),
    )
}
