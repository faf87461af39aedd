//! Enclave's request path with no HTTP in it: every caller — the HTTP gateway today; agents,
//! batch jobs, the console and other logins next — goes through it.
//!
//! It owns who is calling ([`principal`]; signed tokens in [`token`], browser sign-in and
//! sessions in [`session`]), the policy in force as plain data ([`policy`]) and
//! the runtime registry of deployments built from it ([`dispatch::Registry`]), the reference
//! monitor ([`monitor`]: label, clearance, authorize, route, redact), quotas ([`quota`]), typed
//! dispatch to the embedded engines and upstreams ([`dispatch`], [`upstream`]), answers that
//! are inspected, metered, settled and noted for their audit record however they end
//! ([`answer`], [`withhold`], [`note`]), retrieval from knowledge bases ([`retrieval`]), and the
//! administrative operations every front end calls ([`admin`]: tenants, keys, revocation), and
//! agent runs whose tool calls obey the egress rule ([`agent`]).
//!
//! It must never depend on an HTTP stack (`axum`, `http`, `hyper`: the test suite checks its
//! dependency tree), never let content reach a deployment routing did not choose, and never let
//! an answer reach a caller whose clearance does not dominate its label.

pub mod admin;
pub mod agent;
pub mod answer;
pub mod batches;
pub mod breaker;
pub mod conversation;
pub mod directory;
pub mod dispatch;
pub mod embed;
pub mod error;
pub mod files;
pub mod fine_tuning;
pub mod history;
pub mod info;
pub mod jobs;
pub mod monitor;
pub mod note;
pub mod policy;
pub mod principal;
pub mod quota;
pub mod retrieval;
pub mod session;
pub mod stored;
pub mod telemetry;
pub mod token;
pub mod tool_servers;
pub mod upstream;
pub mod withhold;

use std::sync::{Arc, OnceLock};

use enclave_engine::{ChatProcess, EmbeddingEngine};
use enclave_store::Store;

pub use error::Error;

/// The engine's, store's and knowledge bases' types that callers of the service name: the
/// vocabulary of its API. Front ends reach those crates through the service only (the gateway
/// has no dependency on them; `tests/layering.rs` checks).
pub mod types {
    pub use enclave_engine::{EmbedInput, EngineHealth, FinishReason, Sampling, ToolCallDelta};
    pub use enclave_kb::{Hit, KbError, Mode, Upload};
    pub use enclave_policy::{Decision, Kind};
    pub use enclave_store::{Role, now};
}

/// The embedded chat model's id.
pub const CHAT_MODEL: &str = enclave_engine::models::SMOLLM2.id;
/// The embedded embedding model's id.
pub const EMBEDDING_MODEL: &str = enclave_engine::models::MINILM.id;

/// Models the server serves, filled in once they are loaded (the server answers before that,
/// with `/readyz` unready and model calls refused with `model_loading`).
#[derive(Default)]
pub struct Models {
    pub chat: OnceLock<Arc<ChatProcess>>,
    pub embedding: OnceLock<Arc<EmbeddingEngine>>,
    /// The operator's own chat models (`enclave models add`), by the name clients call them.
    pub local: OnceLock<std::collections::BTreeMap<String, Arc<ChatProcess>>>,
    /// Every model loaded, with the hashes its files were verified against.
    pub pinned: OnceLock<Vec<PinnedModel>>,
}

/// A model served here and the SHA-256 of each of its files, checked when it was loaded.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PinnedModel {
    pub id: String,
    /// `chat` or `embedding`.
    pub kind: String,
    /// Where it came from: the package it is built into Enclave from, or who added it.
    pub source: String,
    /// File names and their SHA-256.
    pub files: Vec<(String, String)>,
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

/// Tasks the service runs beside its callers (the meter flush; the binary adds its own). They
/// stop when [`Service::shutdown`] asks, and it waits for them.
#[derive(Clone, Default)]
pub struct Background {
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Background {
    /// Runs `task` until it returns; it gets the token that says when to stop, and should finish
    /// what it holds (a last flush) before returning.
    pub fn spawn<F>(
        &self,
        name: &'static str,
        task: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let work = task(self.stop.clone());
        self.tasks.spawn(async move {
            work.await;
            tracing::info!(task = name, "background task stopped");
        });
    }

    /// Asks every task to stop and waits until they have.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The service every caller shares. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    pub store: Arc<dyn Store>,
    pub models: Arc<Models>,
    pub policy: Arc<policy::Policy>,
    /// The runtime side of the policy's deployments: clients and circuit breakers.
    pub registry: Arc<dispatch::Registry>,
    pub audit: enclave_audit::AuditLog,
    /// Sealed request/answer content for tenants whose policy keeps it.
    pub content: Arc<enclave_audit::ContentVault>,
    pub quotas: quota::Quotas,
    pub key_cache: Arc<principal::KeyCache>,
    /// Signed tokens' verifier, where issuers are configured.
    pub tokens: Option<Arc<dyn token::TokenVerifier>>,
    pub token_cache: Arc<token::TokenCache>,
    /// Browser sign-in, where an issuer has a `client_id`.
    pub logins: Option<Arc<dyn session::BrowserLogin>>,
    /// Logins in flight and sessions seen lately.
    pub sessions: Arc<session::Sessions>,
    /// Knowledge bases, where the server runs them.
    pub kb: Option<enclave_kb::KnowledgeBases>,
    /// What calls the registered MCP servers ([`tool_servers::NoTools`] until
    /// [`Service::with_tools`]).
    pub tools: Arc<dyn tool_servers::ToolClients>,
    /// Fine-tuning jobs and the models they made, where the server runs them.
    pub fine_tuning: Option<Arc<fine_tuning::Setup>>,
    /// When the service started, as the `created` of model objects.
    pub started: i64,
    /// This server's name among servers sharing one store: who holds the jobs it works on
    /// ([`jobs`]). Stable across restarts, unique among replicas.
    pub node: String,
    pub background: Background,
}

impl Service {
    /// A service over `store` enforcing `policy`, recording to `audit`; `connector` makes the
    /// upstream deployments' clients. Fails naming a deployment whose client cannot be made.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<policy::Policy>,
        audit: enclave_audit::AuditLog,
        content: Arc<enclave_audit::ContentVault>,
        connector: &dyn upstream::Connector,
    ) -> Result<Self, String> {
        let registry = Arc::new(dispatch::Registry::build(&policy, connector)?);
        Ok(Self {
            tools: Arc::new(tool_servers::NoTools),
            store,
            models: Arc::new(Models::default()),
            policy,
            registry,
            audit,
            content,
            quotas: quota::Quotas::default(),
            key_cache: Arc::new(principal::KeyCache::default()),
            tokens: None,
            token_cache: Arc::default(),
            logins: None,
            sessions: Arc::default(),
            kb: None,
            fine_tuning: None,
            started: enclave_store::now(),
            node: "local".to_string(),
            background: Background::default(),
        })
    }

    /// Names this server among the servers sharing its store (see [`Service::node`]).
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// Runs fine-tuning jobs and serves the models they make, as `setup` says.
    pub fn with_fine_tuning(mut self, setup: fine_tuning::Setup) -> Self {
        self.fine_tuning = Some(Arc::new(setup));
        self
    }

    /// Calls the registered MCP servers through `tools` (an MCP client over
    /// `policy.tool_servers`).
    pub fn with_tools(mut self, tools: Arc<dyn tool_servers::ToolClients>) -> Self {
        self.tools = tools;
        self
    }

    /// Accepts signed tokens wherever keys are accepted, checked by `verifier`.
    pub fn with_tokens(mut self, verifier: Arc<dyn token::TokenVerifier>) -> Self {
        self.tokens = Some(verifier);
        self
    }

    /// Lets browsers sign in through `logins` (OpenID Connect), their sessions lasting as
    /// `limits` says.
    pub fn with_logins(
        mut self,
        logins: Arc<dyn session::BrowserLogin>,
        limits: session::SessionLimits,
    ) -> Self {
        self.logins = Some(logins);
        self.sessions = Arc::new(session::Sessions::new(limits));
        self
    }

    /// Uses `quotas` (seeded from the store by [`quota::Quotas::load`]) and starts writing its
    /// metered usage to the store every second, and once more when the service shuts down.
    pub fn with_quotas(mut self, quotas: quota::Quotas) -> Self {
        self.quotas = quotas;
        let (meter, store) = (Arc::clone(&self.quotas.meter), Arc::clone(&self.store));
        if tokio::runtime::Handle::try_current().is_ok() {
            self.background.spawn("meter flush", |stop| async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    if let Err(e) = meter.flush(store.as_ref()).await {
                        tracing::error!(error = %e, "cannot write metered usage; will retry");
                    }
                }
                if let Err(e) = meter.flush(store.as_ref()).await {
                    tracing::error!(error = %e, "cannot write the last metered usage");
                }
            });
        }
        self
    }

    /// Stops the background tasks and the knowledge bases' ingestion worker, and waits for them:
    /// usage metered so far is written, and a document being indexed is finished.
    pub async fn shutdown(&self) {
        self.background.stop().await;
        if let Some(kb) = &self.kb {
            kb.stop().await;
        }
    }

    /// Serves knowledge bases from `kb`.
    pub fn with_knowledge_bases(mut self, kb: enclave_kb::KnowledgeBases) -> Self {
        self.kb = Some(kb);
        self
    }

    /// Whether every model is loaded and the audit log writes.
    pub fn ready(&self) -> bool {
        self.models
            .chat
            .get()
            .is_some_and(|c| c.health().is_ready())
            && self.models.embedding.get().is_some()
            && self.audit.healthy()
    }
}
