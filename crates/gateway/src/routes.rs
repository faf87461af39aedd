//! The route table: which path goes to which handler, and the layers around them.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, Error};
use crate::openai::{chat, embeddings, models, responses};
use crate::{
    AppState, MAX_BODY_BYTES, admin, anthropic, audit, auth, batches, browser, console,
    conversations, files, fine_tuning, health, kb, metrics, openapi, usage,
};

/// Builds the application. Tests call this directly; `serve` runs it on a listener.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/models", get(models::list))
        .route("/models/{id}", get(models::get))
        .route("/chat/completions", post(chat::completions))
        .route("/responses", post(responses::create))
        .route(
            "/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route("/responses/{id}/input_items", get(responses::input_items))
        .route("/messages", post(anthropic::create))
        .route(
            "/files",
            post(files::upload)
                .get(files::list)
                .layer(DefaultBodyLimit::max(crate::MAX_FILE_UPLOAD_BYTES)),
        )
        .route("/files/{id}", get(files::get).delete(files::delete))
        .route("/files/{id}/content", get(files::content))
        .route("/batches", post(batches::create).get(batches::list))
        .route("/batches/{id}", get(batches::get))
        .route("/batches/{id}/cancel", post(batches::cancel))
        .route(
            "/fine_tuning/jobs",
            post(fine_tuning::create).get(fine_tuning::list),
        )
        .route("/fine_tuning/jobs/{id}", get(fine_tuning::get))
        .route("/fine_tuning/jobs/{id}/cancel", post(fine_tuning::cancel))
        .route("/fine_tuning/jobs/{id}/events", get(fine_tuning::events))
        .route(
            "/fine_tuning/jobs/{id}/checkpoints",
            get(fine_tuning::checkpoints),
        )
        .route("/embeddings", post(embeddings::create))
        .route("/usage", get(usage::usage))
        .route(
            "/conversations",
            post(conversations::create).get(conversations::list),
        )
        .route(
            "/conversations/{id}",
            get(conversations::get).delete(conversations::delete),
        )
        .route("/conversations/{id}/export", get(conversations::export))
        .route("/knowledge-bases", post(kb::create).get(kb::list))
        .route("/knowledge-bases/{kb}", get(kb::get))
        .route(
            "/knowledge-bases/{kb}/documents",
            post(kb::add)
                .get(kb::documents)
                .layer(DefaultBodyLimit::max(crate::MAX_UPLOAD_BYTES)),
        )
        .route(
            "/knowledge-bases/{kb}/documents/{doc}",
            get(kb::document).delete(kb::delete),
        )
        .route("/knowledge-bases/{kb}/search", post(kb::search))
        .route("/knowledge-bases/{kb}/answer", post(kb::answer))
        .route("/admin/tenants", get(admin::tenants))
        .route("/admin/users", get(admin::users))
        .route("/admin/keys", get(admin::keys).post(admin::create_key))
        .route("/admin/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/admin/deployments", get(admin::deployments))
        .route("/admin/models", get(admin::models))
        .route("/audit/checkpoint", get(audit::checkpoint))
        .route("/audit/records", get(audit::records))
        .route("/audit/proof/inclusion", get(audit::inclusion))
        .route("/audit/proof/consistency", get(audit::consistency))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        // Errors of the Anthropic surface in Anthropic's shape, including authentication's.
        .route_layer(middleware::from_fn(anthropic::error_shape))
        // Outside authentication: every call that reaches it is recorded, allowed or not.
        .route_layer(middleware::from_fn_with_state(state.clone(), audit::record));

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::document))
        .merge(pages())
        .nest("/v1", v1)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Pages for browsers: sign-in and the console, with the console's security headers.
fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(browser::home))
        .route("/login", get(browser::login))
        .route("/auth/callback", get(browser::callback))
        .route("/logout", get(browser::logout_page).post(browser::logout))
        .route("/console", get(console::pages::chat))
        .route("/console/audit", get(console::pages::audit))
        .route("/console/admin", get(console::pages::admin))
        .route(
            "/console/knowledge-bases",
            get(console::pages::knowledge_bases),
        )
        .route("/console/label", get(console::label))
        .route("/console/labels.css", get(console::labels_css))
        .route("/console/assets/{file}", get(console::asset))
        .route("/favicon.ico", get(console::favicon))
        .route_layer(middleware::from_fn(console::secure))
}

async fn no_route(uri: Uri) -> ApiError {
    Error::NoRoute(uri.path().to_string()).into()
}

async fn method_not_allowed() -> ApiError {
    Error::MethodNotAllowed.into()
}
