//! Model servers Enclave passes requests to: anything speaking OpenAI's chat completions (vLLM,
//! TGI, llama.cpp's server, Ollama, a provider) or Anthropic's Messages API.
//!
//! An upstream answers in the engine's [`Event`] stream, so the handlers, redaction restore and
//! both streaming surfaces are one path for every backend. One call here is one *attempt*: it
//! either fails before the first token (a [`Failure`] the router may retry or fall back on) or
//! yields an [`EventStream`] whose later failures arrive as `Event::Error`. Only what routing
//! allowed reaches here: this module never decides where content may go.

mod anthropic;
mod openai;

use std::fmt;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use enclave_engine::Event;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::{Instant, timeout_at};

use crate::conversation::Conversation;

/// The wire protocol an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
}

/// How long an attempt may take: to connect; to the first token (or, not streamed, the whole
/// answer's headers), and between tokens after that; and in all.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_token: Duration,
    pub total: Duration,
}

/// One configured server and the model name it knows.
#[derive(Clone)]
pub struct Upstream {
    protocol: Protocol,
    url: String,
    embeddings_url: String,
    base_url: String,
    model: String,
    /// The credential header, marked sensitive so no header dump prints it.
    auth: Option<(header::HeaderName, HeaderValue)>,
    client: reqwest::Client,
    pub timeouts: Timeouts,
}

impl fmt::Debug for Upstream {
    // By hand: the derived form would print the credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("protocol", &self.protocol)
            .field("url", &self.url)
            .field("model", &self.model)
            .field("credential", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("`base_url` must start with http:// or https://; got `{0}`")]
    Scheme(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("the credential contains characters a header cannot carry")]
    Credential,
}

/// Why an attempt failed before its answer started.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No answer: refused, reset, closed, DNS, TLS.
    Connect(String),
    /// An HTTP error status, with the upstream's own message.
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

/// An answer under way: the first event already received (so the router knows the attempt
/// succeeded), then the rest. Dropping it drops the receiver, which stops the reader task and
/// closes the upstream connection.
#[derive(Debug)]
pub struct EventStream {
    pending: Option<Event>,
    rx: UnboundedReceiver<Event>,
}

impl EventStream {
    pub fn new(rx: UnboundedReceiver<Event>) -> Self {
        Self { pending: None, rx }
    }

    pub async fn recv(&mut self) -> Option<Event> {
        match self.pending.take() {
            Some(e) => Some(e),
            None => self.rx.recv().await,
        }
    }
}

impl Upstream {
    pub fn new(
        protocol: Protocol,
        base_url: &str,
        model: String,
        credential: Option<String>,
        timeouts: Timeouts,
        pool_idle: usize,
    ) -> Result<Self, UpstreamConfigError> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(UpstreamConfigError::Scheme(base_url.to_string()));
        }
        // rustls needs one process-wide crypto provider; ring is the one compiled in. A second
        // install (another upstream) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // One client per deployment: its pool keeps connections to that server alive and reused.
        // Timeouts are applied per attempt (first token, total), not by the client.
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_max_idle_per_host(pool_idle)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| UpstreamConfigError::Client(e.to_string()))?;
        let base = base_url.trim_end_matches('/').to_string();
        let auth = match credential {
            None => None,
            Some(secret) => {
                let (name, value) = match protocol {
                    Protocol::OpenAi => (header::AUTHORIZATION, format!("Bearer {secret}")),
                    Protocol::Anthropic => (header::HeaderName::from_static("x-api-key"), secret),
                };
                let mut value =
                    HeaderValue::from_str(&value).map_err(|_| UpstreamConfigError::Credential)?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let path = match protocol {
            Protocol::OpenAi => "chat/completions",
            Protocol::Anthropic => "messages",
        };
        Ok(Self {
            protocol,
            url: format!("{base}/{path}"),
            embeddings_url: format!("{base}/embeddings"),
            base_url: base,
            model,
            auth,
            client,
            timeouts,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The request body for this upstream, encoded once: retries resend the same bytes.
    pub fn encode(&self, c: &Conversation) -> Bytes {
        let value = match self.protocol {
            Protocol::OpenAi => openai::request(&self.model, c),
            Protocol::Anthropic => anthropic::request(&self.model, c),
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    /// An embeddings request body (OpenAI's protocol; Anthropic's has no embeddings).
    pub fn encode_embeddings(&self, inputs: &[String], dimensions: Option<u32>) -> Bytes {
        let mut v = serde_json::json!({
            "model": self.model,
            "input": inputs,
            "encoding_format": "float",
        });
        if let Some(d) = dimensions {
            v["dimensions"] = serde_json::json!(d);
        }
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// One embeddings attempt.
    pub async fn embed(&self, body: Bytes) -> Result<enclave_engine::Embeddings, Failure> {
        let deadline = Instant::now() + self.timeouts.total;
        let send = self
            .client
            .post(&self.embeddings_url)
            .headers(self.headers())
            .body(body)
            .send();
        let response = match timeout_at(deadline, send).await {
            Err(_) => return Err(Failure::Total),
            Ok(Err(e)) => return Err(Failure::Connect(error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let bytes = match timeout_at(deadline, response.bytes()).await {
            Err(_) => return Err(Failure::Total),
            Ok(Err(e)) => return Err(Failure::Connect(error_chain(&e))),
            Ok(Ok(b)) => b,
        };
        if !status.is_success() {
            return Err(Failure::Status {
                status: status.as_u16(),
                retry_after: None,
                message: error_message(&String::from_utf8_lossy(&bytes)),
            });
        }
        openai::embeddings(&bytes).map_err(Failure::Malformed)
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.protocol == Protocol::Anthropic {
            h.insert(
                "anthropic-version",
                HeaderValue::from_static(anthropic::VERSION),
            );
        }
        if let Some((name, value)) = &self.auth {
            h.insert(name.clone(), value.clone());
        }
        h
    }

    /// One attempt: send `body`, wait for the first token (streamed) or the whole answer.
    pub async fn start(&self, body: Bytes, stream: bool) -> Result<EventStream, Failure> {
        let started = Instant::now();
        let deadline = started + self.timeouts.total;
        let first_by = (started + self.timeouts.first_token).min(deadline);
        let send = self
            .client
            .post(&self.url)
            .headers(self.headers())
            .body(body)
            .send();
        let response = match timeout_at(first_by, send).await {
            Err(_) => return Err(Failure::FirstToken),
            Ok(Err(e)) => return Err(Failure::Connect(error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = match timeout_at(deadline, response.text()).await {
                Ok(Ok(t)) => t,
                _ => String::new(),
            };
            return Err(Failure::Status {
                status: status.as_u16(),
                retry_after,
                message: error_message(&text),
            });
        }
        let (tx, rx) = unbounded_channel();
        if !stream {
            let bytes = match timeout_at(deadline, response.bytes()).await {
                Err(_) => return Err(Failure::Total),
                Ok(Err(e)) => return Err(Failure::Connect(error_chain(&e))),
                Ok(Ok(b)) => b,
            };
            let events = match self.protocol {
                Protocol::OpenAi => openai::whole(&bytes),
                Protocol::Anthropic => anthropic::whole(&bytes),
            }
            .map_err(Failure::Malformed)?;
            for e in events {
                let _ = tx.send(e);
            }
            return Ok(EventStream::new(rx));
        }
        let protocol = self.protocol;
        let idle = self.timeouts.first_token;
        let upstream = self.base_url.clone();
        tokio::spawn(async move {
            let _live = crate::metrics::Live::new("enclave_upstream_streams_open");
            let mut events = response.bytes_stream().eventsource();
            let mut decoder = Decoder::new(protocol);
            loop {
                let next_by = (Instant::now() + idle).min(deadline);
                let event = tokio::select! {
                    // The caller went away: stop now; dropping the body closes the connection.
                    () = tx.closed() => return,
                    e = timeout_at(next_by, events.next()) => e,
                };
                let out = match event {
                    Err(_) => Err(if Instant::now() >= deadline {
                        "the upstream did not finish within its timeout".to_string()
                    } else {
                        "the upstream stalled mid-answer".to_string()
                    }),
                    Ok(None) => decoder.end(),
                    Ok(Some(Err(e))) => Err(format!("the upstream's stream broke: {e}")),
                    Ok(Some(Ok(e))) => decoder.event(&e.event, &e.data),
                };
                match out {
                    Ok((events, done)) => {
                        for e in events {
                            if tx.send(e).is_err() {
                                return;
                            }
                        }
                        if done {
                            return;
                        }
                    }
                    Err(message) => {
                        tracing::warn!(%upstream, error = %message, "upstream stream failed");
                        let _ = tx.send(Event::Error(message));
                        return;
                    }
                }
            }
        });
        let mut stream = EventStream::new(rx);
        match timeout_at(first_by, stream.rx.recv()).await {
            Err(_) => Err(Failure::FirstToken),
            Ok(None) => Err(Failure::Malformed(
                "the stream closed before any event".into(),
            )),
            Ok(Some(Event::Error(e))) => Err(Failure::Malformed(e)),
            Ok(Some(first)) => {
                stream.pending = Some(first);
                Ok(stream)
            }
        }
    }
}

/// A protocol's streaming decoder: SSE events in, engine events out.
enum Decoder {
    OpenAi(openai::StreamState),
    Anthropic(anthropic::StreamState),
}

impl Decoder {
    fn new(p: Protocol) -> Self {
        match p {
            Protocol::OpenAi => Decoder::OpenAi(openai::StreamState::default()),
            Protocol::Anthropic => Decoder::Anthropic(anthropic::StreamState::default()),
        }
    }

    /// The events one SSE event yields, and whether the answer is complete.
    fn event(&mut self, name: &str, data: &str) -> Result<(Vec<Event>, bool), String> {
        match self {
            Decoder::OpenAi(s) => s.event(data),
            Decoder::Anthropic(s) => s.event(name, data),
        }
    }

    /// The stream ended: complete if the protocol's end was seen, an error otherwise.
    fn end(&mut self) -> Result<(Vec<Event>, bool), String> {
        match self {
            Decoder::OpenAi(s) => s.end(),
            Decoder::Anthropic(s) => s.end(),
        }
    }
}

/// The upstream's own error message from an error body, or the body's start.
fn error_message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.chars().take(200).collect())
}

/// An error and its causes in one line: reqwest's top-level message alone says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
