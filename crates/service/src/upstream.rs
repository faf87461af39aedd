//! Model servers Enclave passes requests to, as the request path sees them: a [`Upstream`]
//! client per deployment, made by a [`Connector`] the binary provides (the HTTP clients live in
//! `enclave-upstream`, so no HTTP stack is in this crate).
//!
//! One call is one *attempt*: it either fails before the first token (a [`Failure`] the router
//! may retry or fall back on) or yields an [`EventStream`] whose later failures arrive as
//! `Event::Error`. Only what routing allowed reaches an upstream: nothing here decides where
//! content may go.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enclave_engine::Event;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::conversation::Conversation;

/// The wire protocol an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
}

/// How long an attempt may take: to connect; to the first token (or, not streamed, the whole
/// answer's headers), and between tokens after that; and in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub total: Duration,
}

/// What a connector needs to make one deployment's client.
#[derive(Clone, PartialEq)]
pub struct UpstreamSpec {
    pub protocol: Protocol,
    /// Starts with `http://` or `https://` (checked when the policy is built).
    pub base_url: String,
    /// The model name upstream.
    pub model: String,
    /// The API key, read from where the configuration said; never printed.
    pub credential: Option<String>,
    pub timeouts: Timeouts,
    /// Idle connections kept per host.
    pub pool_idle: usize,
}

impl fmt::Debug for UpstreamSpec {
    // By hand: the derived form would print the credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSpec")
            .field("protocol", &self.protocol)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// One upstream deployment's client.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync + fmt::Debug {
    /// The request body for this upstream, encoded once: retries resend the same bytes.
    fn encode(&self, c: &Conversation) -> Bytes;
    /// An embeddings request body (OpenAI's protocol; Anthropic's has no embeddings).
    fn encode_embeddings(&self, inputs: &[String], dimensions: Option<u32>) -> Bytes;
    /// One attempt: send `body`, wait for the first token (streamed) or the whole answer.
    async fn start(&self, body: Bytes, stream: bool) -> Result<EventStream, Failure>;
    /// One embeddings attempt.
    async fn embed(&self, body: Bytes) -> Result<enclave_engine::Embeddings, Failure>;
}

/// Makes the client of each upstream deployment when the service starts.
pub trait Connector: Send + Sync {
    fn connect(&self, spec: &UpstreamSpec) -> Result<Arc<dyn Upstream>, String>;
}

/// A connector for a service that has no upstream deployments (tests, tools): any spec is
/// refused, so a policy that names one fails at start.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUpstreams;

impl Connector for NoUpstreams {
    fn connect(&self, spec: &UpstreamSpec) -> Result<Arc<dyn Upstream>, String> {
        Err(format!(
            "this service was started without upstream clients, so `{}` cannot be served",
            spec.base_url
        ))
    }
}

/// Why an attempt failed before its answer started.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No answer: refused, reset, closed, DNS, TLS.
    Connect(String),
    /// An error status, with the upstream's own message.
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Nothing within the first-token timeout.
    FirstToken,
    /// The whole answer did not arrive within the total timeout.
    Total,
    /// An answer that is not the protocol (bad JSON, malformed SSE, stream closed early).
    Malformed(String),
}

impl Failure {
    /// The attempt's outcome as recorded in the audit log and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect_error",
            Failure::Status { status: 429, .. } => "rate_limited",
            Failure::Status { status, .. } if *status >= 500 => "server_error",
            Failure::Status { .. } => "rejected",
            Failure::FirstToken => "first_token_timeout",
            Failure::Total => "timeout",
            Failure::Malformed(_) => "malformed",
        }
    }

    /// Worth trying the same deployment again after a pause.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Connect(_) | Failure::FirstToken | Failure::Total => true,
            Failure::Status { status, .. } => *status == 429 || *status >= 500,
            Failure::Malformed(_) => false,
        }
    }

    /// Worth trying another deployment. A request the upstream rejected as invalid (4xx other
    /// than 429) would be rejected by the next one too: the caller gets that answer instead.
    pub fn falls_back(&self) -> bool {
        !matches!(self, Failure::Status { status, .. } if *status != 429 && *status < 500)
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Failure::Connect(e) => format!("could not be reached ({e})"),
            Failure::Status {
                status, message, ..
            } => format!("answered {status}: {message}"),
            Failure::FirstToken => "sent nothing within its first-token timeout".into(),
            Failure::Total => "did not finish within its timeout".into(),
            Failure::Malformed(e) => format!("sent a malformed answer ({e})"),
        }
    }
}

/// An answer under way, from any backend: possibly its first event already received (so the
/// router knows the attempt succeeded), then the rest. Dropping it drops the receiver, which
/// stops whatever produces it (a generation, an upstream reader and its connection).
#[derive(Debug)]
pub struct EventStream {
    pending: Option<Event>,
    rx: UnboundedReceiver<Event>,
}

impl EventStream {
    pub fn new(rx: UnboundedReceiver<Event>) -> Self {
        Self { pending: None, rx }
    }

    /// A stream whose `first` event was already taken from `rx`.
    pub fn starting_with(first: Event, rx: UnboundedReceiver<Event>) -> Self {
        Self {
            pending: Some(first),
            rx,
        }
    }

    pub async fn recv(&mut self) -> Option<Event> {
        match self.pending.take() {
            Some(e) => Some(e),
            None => self.rx.recv().await,
        }
    }
}
