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
    let status = if chat && embedding {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |loaded| if loaded { "loaded" } else { "loading" };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "loading" },
            "models": { crate::CHAT_MODEL: word(chat), crate::EMBEDDING_MODEL: word(embedding) },
        })),
    )
}
