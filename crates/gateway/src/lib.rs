//! Enclave's HTTP surface: the OpenAI-compatible API, authentication, health and metrics.
//!
//! This crate owns the wire: parsing, validation, error shapes, streaming, and the order of the
//! steps a request passes through. It delegates compute to `enclave-engine` and state to
//! `enclave-store`. It must never serve a model route to a caller that did not authenticate, never
//! log or return a key's secret, and never answer with a body that is not the OpenAI shape.
//!
//! - [`routes`]: the route table and nothing else.
//! - [`auth`]: API key → principal, as a middleware on `/v1`.
//! - [`mac`]: the reference monitor on the request path: label, clearance, authorize, route,
//!   redact ([`policy`] is what it consults, built once from the configuration).
//! - [`conversation`]: one chat request in surface-neutral terms, whichever API it came in on.
//! - [`dispatch`]: weighted, prioritised routing with retries, fallback and circuit breakers.
//! - [`upstream`]: OpenAI-compatible and Anthropic Messages servers as backends.
//! - [`kb`]: knowledge bases: documents, label-filtered search, answers with citations.
//! - [`quota`]: reserve-and-settle quotas per tenant, key and model; usage metering.
//! - [`chat`] (OpenAI), [`messages`] (Anthropic), [`embeddings`], [`models`], [`health`]:
//!   handlers.
//! - [`openai`]: wire types and their validation; [`extract`]: the JSON extractor; [`error`]: the
//!   error table.
//! - [`metrics`]: the Prometheus recorder and the request-metrics middleware.

pub mod audit;
pub mod auth;
pub mod chat;
pub mod conversation;
pub mod dispatch;
pub mod embeddings;
pub mod error;
pub mod extract;
pub mod health;
pub mod kb;
pub mod mac;
pub mod messages;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod policy;
pub mod quota;
pub mod routes;
pub mod upstream;
pub mod withhold;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use enclave_engine::{ChatProcess, EmbeddingEngine};
use enclave_store::Store;
use tokio::net::TcpListener;

pub use routes::app;

/// Largest request body accepted. 4 MiB holds an embeddings batch of 2048 short inputs; larger
/// bodies get 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Largest document upload (`POST /v1/knowledge-bases/{kb}/documents`): a 32 MiB file as base64
/// in JSON, or as a multipart part.
pub const MAX_UPLOAD_BYTES: usize = 48 * 1024 * 1024;

/// The body limit of a request: uploads of documents get more room than API calls.
pub fn body_limit(method: &axum::http::Method, path: &str) -> usize {
    if method == axum::http::Method::POST
        && path.starts_with("/v1/knowledge-bases/")
        && path.ends_with("/documents")
    {
        MAX_UPLOAD_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// Models the server serves, filled in once they are loaded (the server answers before that,
/// with `/readyz` unready and model routes 503 `model_loading`).
#[derive(Default)]
pub struct Models {
    pub chat: OnceLock<Arc<ChatProcess>>,
    pub embedding: OnceLock<Arc<EmbeddingEngine>>,
    /// The operator's own chat models (`enclave models add`), by the name clients call them.
    pub local: OnceLock<std::collections::BTreeMap<String, Arc<ChatProcess>>>,
}

impl Models {
    /// The chat engine serving `model`, once it is loaded.
    pub fn chat_engine(&self, model: &str) -> Option<Arc<ChatProcess>> {
        if model == CHAT_MODEL {
            return self.chat.get().cloned();
        }
        self.local.get()?.get(model).cloned()
    }
}

/// Ids the server answers to.
pub const CHAT_MODEL: &str = enclave_engine::models::SMOLLM2.id;
pub const EMBEDDING_MODEL: &str = enclave_engine::models::MINILM.id;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub models: Arc<Models>,
    pub policy: Arc<policy::Policy>,
    pub audit: enclave_audit::AuditLog,
    /// Sealed request/answer content for tenants whose policy keeps it.
    pub content: Arc<enclave_audit::ContentVault>,
    pub metrics: metrics::Metrics,
    pub quotas: quota::Quotas,
    pub key_cache: Arc<auth::KeyCache>,
    /// Knowledge bases, where the server runs them.
    pub kb: Option<enclave_kb::KnowledgeBases>,
    /// When the server started, as the `created` of model objects.
    pub started: i64,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<policy::Policy>,
        audit: enclave_audit::AuditLog,
        content: Arc<enclave_audit::ContentVault>,
        metrics: metrics::Metrics,
    ) -> Self {
        Self {
            store,
            models: Arc::new(Models::default()),
            policy,
            audit,
            content,
            metrics,
            quotas: quota::Quotas::default(),
            key_cache: Arc::new(auth::KeyCache::default()),
            kb: None,
            started: enclave_store::now(),
        }
    }

    /// Uses `quotas` (seeded from the store by [`quota::Quotas::load`]) and starts writing its
    /// metered usage to the store every second.
    pub fn with_quotas(mut self, quotas: quota::Quotas) -> Self {
        self.quotas = quotas;
        let (meter, store) = (Arc::clone(&self.quotas.meter), Arc::clone(&self.store));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    if let Err(e) = meter.flush(store.as_ref()).await {
                        tracing::error!(error = %e, "cannot write metered usage; will retry");
                    }
                }
            });
        }
        self
    }

    /// Serves knowledge bases from `kb`.
    pub fn with_knowledge_bases(mut self, kb: enclave_kb::KnowledgeBases) -> Self {
        self.kb = Some(kb);
        self
    }

    pub fn ready(&self) -> bool {
        self.models
            .chat
            .get()
            .is_some_and(|c| c.health().is_ready())
            && self.models.embedding.get().is_some()
            && self.audit.healthy()
    }
}

/// Serves `app` on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Small writes (SSE chunks) leave at once instead of waiting on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
