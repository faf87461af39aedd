//! The OpenAPI document of every route the gateway serves, `GET /openapi.json`: generated from
//! the handlers' `#[utoipa::path]` annotations and the wire types' derived schemas, never written
//! by hand. A test checks that it names every route of the route table.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::openai::{chat, embeddings, models, responses};
use crate::{
    admin, anthropic, audit, batches, browser, console, conversations, files, fine_tuning, health,
    kb, metrics, usage,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Enclave",
        description = "OpenAI- and Anthropic-compatible model serving under classification labels, with knowledge bases, a verifiable audit log and usage. Every `/v1` route takes an API key or a signed token: `Authorization: Bearer <key>` (or `x-api-key`); a browser signed in at `/login` uses its session cookie."
    ),
    paths(
        models::list,
        models::get,
        chat::completions,
        responses::create,
        responses::get,
        responses::delete,
        responses::input_items,
        anthropic::create,
        embeddings::create,
        files::upload,
        files::list,
        files::get,
        files::content,
        files::delete,
        batches::create,
        batches::list,
        batches::get,
        batches::cancel,
        fine_tuning::create,
        fine_tuning::list,
        fine_tuning::get,
        fine_tuning::cancel,
        fine_tuning::events,
        fine_tuning::checkpoints,
        usage::usage,
        conversations::create,
        conversations::list,
        conversations::get,
        conversations::delete,
        conversations::export,
        kb::create,
        kb::list,
        kb::get,
        kb::add,
        kb::documents,
        kb::document,
        kb::delete,
        kb::search,
        kb::answer,
        admin::tenants,
        admin::users,
        admin::keys,
        admin::create_key,
        admin::revoke_key,
        admin::deployments,
        admin::models,
        audit::read::checkpoint,
        audit::read::records,
        audit::read::inclusion,
        audit::read::consistency,
        health::healthz,
        health::readyz,
        metrics::render,
        browser::home,
        browser::login,
        browser::callback,
        browser::logout_page,
        browser::logout,
        console::pages::chat,
        console::pages::audit,
        console::pages::admin,
        console::pages::knowledge_bases,
        console::label,
        console::labels_css,
        console::asset,
        console::favicon,
        document,
    ),
    modifiers(&ApiKey),
    security(("api_key" = []))
)]
pub struct ApiDoc;

/// The API key, as a bearer token.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()), responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
