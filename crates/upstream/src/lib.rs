//! The HTTP clients of upstream model servers: anything speaking OpenAI's chat completions
//! (vLLM, TGI, llama.cpp's server, Ollama, a provider) or Anthropic's Messages API, as
//! `enclave_service::upstream::Upstream`s made by [`Connector`].
//!
//! An upstream answers in the engine's [`Event`] stream, so redaction restore, answer inspection
//! and both streaming surfaces are one path for every backend. It owns the wire protocols and
//! connection pools; it must never decide where content may go (routing did, in the service),
//! and never print a credential.

mod anthropic;
mod openai;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use enclave_engine::Event;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::mpsc::unbounded_channel;
use tokio::time::{Instant, timeout_at};

use enclave_service::conversation::Conversation;
use enclave_service::upstream::{EventStream, Failure, Protocol, Timeouts, UpstreamSpec};

/// Makes the HTTP client of each upstream deployment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Connector;

impl enclave_service::upstream::Connector for Connector {
    fn connect(
        &self,
        spec: &UpstreamSpec,
    ) -> Result<std::sync::Arc<dyn enclave_service::upstream::Upstream>, String> {
        Upstream::new(
            spec.protocol,
            &spec.base_url,
            spec.model.clone(),
            spec.credential.clone(),
            spec.timeouts,
            spec.pool_idle,
        )
        .map(|u| std::sync::Arc::new(u) as _)
        .map_err(|e| e.to_string())
    }
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
    timeouts: Timeouts,
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
}

#[async_trait::async_trait]
impl enclave_service::upstream::Upstream for Upstream {
    fn encode(&self, c: &Conversation) -> Bytes {
        let value = match self.protocol {
            Protocol::OpenAi => openai::request(&self.model, c),
            Protocol::Anthropic => anthropic::request(&self.model, c),
        };
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    fn encode_embeddings(&self, inputs: &[String], dimensions: Option<u32>) -> Bytes {
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

    async fn embed(&self, body: Bytes) -> Result<enclave_engine::Embeddings, Failure> {
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

    async fn start(&self, body: Bytes, stream: bool) -> Result<EventStream, Failure> {
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
            let _live = enclave_service::telemetry::Live::new("enclave_upstream_streams_open");
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
        let mut rx = rx;
        match timeout_at(first_by, rx.recv()).await {
            Err(_) => Err(Failure::FirstToken),
            Ok(None) => Err(Failure::Malformed(
                "the stream closed before any event".into(),
            )),
            Ok(Some(Event::Error(e))) => Err(Failure::Malformed(e)),
            Ok(Some(first)) => Ok(EventStream::starting_with(first, rx)),
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
