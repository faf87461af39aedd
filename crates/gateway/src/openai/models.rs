//! `GET /v1/models` and `GET /v1/models/{id}`: the models the caller's key may use.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use enclave_policy::{Action, Subject};

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::openai::{ModelList, ModelObject};
use enclave_service::policy::ModelKind;

fn object(state: &AppState, principal: &Principal, id: &str) -> ModelObject {
    // A fine-tuned model is owned by its tenant, as OpenAI names the organisation.
    let owned_by = if id.starts_with("ft:") {
        principal.tenant_name.clone()
    } else {
        "enclave".to_string()
    };
    ModelObject {
        id: id.to_string(),
        object: "model",
        created: state.started,
        owned_by,
        enclave: None,
    }
}

/// The models `principal` may call: what `GET /v1/models` lists and the console offers.
pub(crate) fn visible(state: &AppState, principal: &Principal) -> Vec<String> {
    let subject = Subject {
        key_id: &principal.key_id,
        tenant: &principal.tenant_name,
        role: principal.role.as_str(),
    };
    state
        .policy
        .models()
        .into_iter()
        .filter(|(id, kind)| {
            let action = match kind {
                ModelKind::Chat => Action::Chat,
                ModelKind::Embedding => Action::Embed,
            };
            state.policy.authz.is_allowed(subject, action, id)
        })
        .map(|(id, _)| id.to_string())
        // Fine-tuned models: the tenant's own, at labels the caller's clearance dominates.
        .chain(enclave_service::fine_tuning::visible_models(
            state, principal,
        ))
        .collect()
}

#[utoipa::path(get, path = "/v1/models", tag = "models", responses((status = 200, description = "The models this key may use", body = crate::openai::ModelList), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: visible(&state, &principal)
            .iter()
            .map(|id| object(&state, &principal, id))
            .collect(),
    })
}

#[utoipa::path(get, path = "/v1/models/{id}", tag = "models", params(("id" = String, Path, description = "A model id")), responses((status = 200, description = "The model", body = crate::openai::ModelObject), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    // A fine-tuning checkpoint is not listed, but may be read (and called) by whoever may call
    // its model.
    let checkpoint = matches!(
        enclave_service::fine_tuning::floor(&state, &principal, &id),
        Ok(Some(_))
    );
    if checkpoint || visible(&state, &principal).contains(&id) {
        let mut model = object(&state, &principal, &id);
        model.enclave = enclave_service::fine_tuning::card(&state, &principal, &id).await;
        Ok(Json(model))
    } else {
        Err(Error::ModelNotFound(id).into())
    }
}
