//! Enclave's HTTP surface: the OpenAI- and Anthropic-compatible API, knowledge-base, audit,
//! usage, health and metrics routes, over the request path in `enclave-service`.
//!
//! This crate owns the wire: routes, authentication extractors, parsing and validation of the
//! wire formats, error tables, streaming, and the audit step around every call. It must never
//! serve a model route to a caller that did not authenticate, never log or return a key's
//! secret, never answer in a shape its surface's SDKs cannot read, and never hold a decision of
//! the request path itself: labels, routing, quotas and answers are the service's.
//!
//! - [`routes`]: the route table and nothing else.
//! - [`auth`]: API key, token, session cookie or client certificate → principal, as a
//!   middleware on `/v1`; [`browser`]: `/login`, its callback, `/logout` and `/`;
//!   [`console`]: the web console's pages, under classification banners; [`cookies`]: reading
//!   the cookies a request carries.
//! - [`audit`]: one record per call, durable before the answer leaves (a stream: promised).
//! - [`openai`] (chat completions, embeddings, models, and OpenAI's wire types) and
//!   [`anthropic`] (Messages): each surface in its own folder; [`kb`], [`usage`], [`health`]:
//!   the other handlers.
//! - [`extract`]: the JSON extractor; [`labels`]: the `Enclave-Label` header; [`error`]: the
//!   error table.
//! - [`metrics`]: the Prometheus recorder and the request-metrics middleware.
//! - [`openapi`]: the OpenAPI document of every route, generated from the handlers.
//! - [`tls`]: HTTPS, the server's certificate and the handshakes; [`client_auth`]: client
//!   certificates (smart cards) and who they name; [`certs`]: reading PEM files; [`peer`]: the
//!   connection's far end, as handlers see it.

pub mod admin;
pub mod anthropic;
pub mod audit;
pub mod auth;
pub mod batches;
pub mod browser;
pub mod certs;
pub mod client_auth;
pub mod console;
pub mod conversations;
pub mod cookies;
pub mod error;
pub mod extract;
pub mod files;
pub mod fine_tuning;
pub mod health;
pub mod kb;
pub mod labels;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod peer;
pub mod routes;
pub mod tls;
pub mod usage;

use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use routes::app;

/// Largest request body accepted. 4 MiB holds an embeddings batch of 2048 short inputs; larger
/// bodies get 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Largest document upload (`POST /v1/knowledge-bases/{kb}/documents`): a 32 MiB file as base64
/// in JSON, or as a multipart part.
pub const MAX_UPLOAD_BYTES: usize = 48 * 1024 * 1024;

/// Largest file upload (`POST /v1/files`): the largest file and its multipart framing.
pub const MAX_FILE_UPLOAD_BYTES: usize = enclave_service::files::MAX_FILE_BYTES + (1 << 20);

/// The body limit of a request: uploads of documents and files get more room than API calls.
pub fn body_limit(method: &axum::http::Method, path: &str) -> usize {
    if method != axum::http::Method::POST {
        MAX_BODY_BYTES
    } else if path.starts_with("/v1/knowledge-bases/") && path.ends_with("/documents") {
        MAX_UPLOAD_BYTES
    } else if path == "/v1/files" {
        MAX_FILE_UPLOAD_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

pub use enclave_service::{CHAT_MODEL, EMBEDDING_MODEL, Models, Service};

/// Shared state of every handler: the service, and the metrics recorder's handle. Behind one
/// `Arc`, since axum clones the state for every extractor and middleware of every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub service: Service,
    pub metrics: metrics::Metrics,
    pub site: browser::Site,
}

impl AppState {
    pub fn new(service: Service, metrics: metrics::Metrics) -> Self {
        Self::with_site(service, metrics, browser::Site::default())
    }

    /// A state whose browser sign-in sends providers back to `site`.
    pub fn with_site(service: Service, metrics: metrics::Metrics, site: browser::Site) -> Self {
        Self(Arc::new(Shared {
            service,
            metrics,
            site,
        }))
    }

    pub fn site(&self) -> &browser::Site {
        &self.0.site
    }

    pub fn service(&self) -> &Service {
        &self.0.service
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.0.metrics
    }
}

impl std::ops::Deref for AppState {
    type Target = Service;

    fn deref(&self) -> &Service {
        &self.0.service
    }
}

/// Serves `app` on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        peer::PlainListener(listener),
        app.into_make_service_with_connect_info::<peer::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// [`serve`] over TLS: every connection completes a handshake with `tls` before HTTP (HTTP/2
/// when the client offers it by ALPN, else HTTP/1.1).
pub async fn serve_tls(
    listener: TcpListener,
    tls: tls::TlsSetup,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tls::TlsListener::new(listener, tls)?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<peer::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
