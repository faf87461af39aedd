//! Pass-through to an OpenAI-compatible chat server (vLLM, TGI, llama.cpp, Ollama, a provider).
//!
//! An upstream answers in the same [`Event`] stream the embedded engine produces, so the chat
//! handler, redaction restore and streaming code are one path for both. Only what routing
//! allowed reaches here: this module never decides where content may go.

use std::time::Duration;

use enclave_engine::{ChatMessage, Event, FinishReason, Sampling};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::error::ApiError;

/// One OpenAI-compatible server and the model name it knows.
#[derive(Debug, Clone)]
pub struct Upstream {
    url: String,
    base_url: String,
    model: String,
    api_key: Option<String>,
    client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("`base_url` must start with http:// or https://; got `{0}`")]
    Scheme(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Upstream {
    pub fn new(
        base_url: &str,
        model: String,
        api_key: Option<String>,
        timeout_secs: u64,
    ) -> Result<Self, UpstreamConfigError> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(UpstreamConfigError::Scheme(base_url.to_string()));
        }
        // rustls needs one process-wide crypto provider; ring is the one compiled in. A second
        // install (another upstream) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(timeout_secs))
            .build()
            .map_err(|e| UpstreamConfigError::Client(e.to_string()))?;
        let base = base_url.trim_end_matches('/').to_string();
        Ok(Self {
            url: format!("{base}/chat/completions"),
            base_url: base,
            model,
            api_key,
            client,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a chat request; the answer arrives as events, streamed from upstream when `stream`.
    /// Errors before the answer starts (unreachable, refused) come back as the `Err`.
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        sampling: &Sampling,
        max_tokens: Option<u32>,
        stream: bool,
    ) -> Result<UnboundedReceiver<Event>, ApiError> {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
            "stream": stream,
        });
        if let Some(n) = max_tokens {
            body["max_tokens"] = json!(n);
        }
        if !sampling.stop.is_empty() {
            body["stop"] = json!(sampling.stop);
        }
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut request = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            tracing::warn!(upstream = %self.base_url, error = %e, "upstream unreachable");
            ApiError::UpstreamUnavailable(self.base_url.clone())
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.chars().take(200).collect());
            tracing::warn!(upstream = %self.base_url, %status, %message, "upstream refused");
            return Err(ApiError::UpstreamFailed(format!(
                "the upstream answered {status}: {message}"
            )));
        }
        let (tx, rx) = unbounded_channel();
        if !stream {
            let completion: Completion = response.json().await.map_err(|e| {
                ApiError::UpstreamFailed(format!(
                    "the upstream's answer is not a chat completion: {e}"
                ))
            })?;
            let choice = completion.choices.into_iter().next();
            let (text, reason) = choice
                .map(|c| (c.message.content.unwrap_or_default(), c.finish_reason))
                .unwrap_or_default();
            let usage = completion.usage.unwrap_or_default();
            let _ = tx.send(Event::Text(text));
            let _ = tx.send(Event::Done {
                reason: finish(reason.as_deref()),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            });
            return Ok(rx);
        }
        let upstream = self.base_url.clone();
        tokio::spawn(async move {
            let mut events = response.bytes_stream().eventsource();
            let mut reason = None;
            let mut usage = UsageIn::default();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(%upstream, error = %e, "upstream stream broke");
                        let _ = tx.send(Event::Error(format!("upstream stream broke: {e}")));
                        return;
                    }
                };
                if event.data.trim() == "[DONE]" {
                    break;
                }
                let Ok(chunk) = serde_json::from_str::<Chunk>(&event.data) else {
                    let _ = tx.send(Event::Error(
                        "upstream sent a chunk that is not JSON".into(),
                    ));
                    return;
                };
                if let Some(u) = chunk.usage {
                    usage = u;
                }
                for c in chunk.choices {
                    if let Some(text) = c.delta.content.filter(|t| !t.is_empty())
                        && tx.send(Event::Text(text)).is_err()
                    {
                        return; // the client left: dropping the response closes upstream
                    }
                    if c.finish_reason.is_some() {
                        reason = c.finish_reason;
                    }
                }
            }
            let _ = tx.send(Event::Done {
                reason: finish(reason.as_deref()),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            });
        });
        Ok(rx)
    }
}

fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Debug, Deserialize)]
struct CompletionChoice {
    message: MessageIn,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageIn {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoiceIn>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoiceIn {
    #[serde(default)]
    delta: DeltaIn,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaIn {
    #[serde(default)]
    content: Option<String>,
}
