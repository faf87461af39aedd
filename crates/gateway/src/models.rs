//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::Json;
use axum::extract::{Path, State};

use crate::error::ApiError;
use crate::openai::{ModelList, ModelObject};
use crate::{AppState, CHAT_MODEL, EMBEDDING_MODEL};

fn object(state: &AppState, id: &str) -> ModelObject {
    ModelObject {
        id: id.to_string(),
        object: "model",
        created: state.started,
        owned_by: "enclave",
    }
}

pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: [CHAT_MODEL, EMBEDDING_MODEL]
            .iter()
            .map(|id| object(&state, id))
            .collect(),
    })
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    if id == CHAT_MODEL || id == EMBEDDING_MODEL {
        Ok(Json(object(&state, &id)))
    } else {
        Err(ApiError::ModelNotFound(id))
    }
}
