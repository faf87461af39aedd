//! OpenAI's wire format for the routes Enclave serves. Wire types only: conversions into engine
//! types are explicit and validate as they go, naming the parameter at fault.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

// ---------- chat completions: request ----------

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessageIn>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Option<StopField>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Parameters OpenAI defines that Enclave does not implement yet. Present with a value that
    /// changes behaviour, each is refused by name rather than silently ignored.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// OpenAI chat parameters not implemented yet. Fields no OpenAI API defines are ignored instead.
const UNSUPPORTED_CHAT: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "response_format",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "reasoning_effort",
    "verbosity",
];

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub tool_calls: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A chat request after validation, in the engine's terms.
#[derive(Debug)]
pub struct ValidChat {
    pub messages: Vec<enclave_engine::ChatMessage>,
    pub sampling: enclave_engine::Sampling,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    pub include_usage: bool,
}

/// A value that does not change behaviour: absent, null, false, or an empty list.
fn is_inert(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

impl ChatCompletionRequest {
    pub fn validate(self) -> Result<ValidChat, ApiError> {
        for name in UNSUPPORTED_CHAT {
            if let Some(v) = self.other.get(*name) {
                // `response_format: {"type": "text"}` is the default and changes nothing.
                let is_text_format = *name == "response_format"
                    && v.get("type").and_then(Value::as_str) == Some("text");
                if !is_inert(v) && !is_text_format {
                    return Err(ApiError::unsupported(
                        *name,
                        "Enclave does not implement it yet; remove it from the request",
                    ));
                }
            }
        }
        if let Some(n) = self.n
            && n != 1
        {
            {
                return Err(ApiError::unsupported(
                    "n",
                    format!("only `n=1` is implemented; got {n}"),
                ));
            }
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must hold at least one message",
            ));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" | "function" => {
                    return Err(ApiError::unsupported(
                        format!("messages[{i}].role"),
                        format!(
                            "role `{}` needs tool calling, which is not implemented yet",
                            m.role
                        ),
                    ));
                }
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "`{other}` is not a role: use `system`, `developer`, `user` or `assistant`"
                        ),
                    ));
                }
            };
            if m.tool_calls.as_ref().is_some_and(|v| !is_inert(v)) {
                return Err(ApiError::unsupported(
                    format!("messages[{i}].tool_calls"),
                    "tool calling is not implemented yet",
                ));
            }
            let content = match m.content {
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        if part.kind != "text" {
                            return Err(ApiError::unsupported(
                                format!("messages[{i}].content[{j}].type"),
                                format!(
                                    "content of type `{}` is not supported: this model reads text only",
                                    part.kind
                                ),
                            ));
                        }
                        let Some(t) = part.text else {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].text"),
                                "a text part needs `text`",
                            ));
                        };
                        text.push_str(&t);
                    }
                    text
                }
                None => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].content"),
                        "every message needs `content`",
                    ));
                }
            };
            messages.push(enclave_engine::ChatMessage {
                role: role.to_string(),
                content,
            });
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            let param = if self.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(ApiError::invalid(
                param,
                format!("`{param}` must be at least 1"),
            ));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("`temperature` must be between 0 and 2; got {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("`top_p` must be greater than 0 and at most 1; got {top_p}"),
            ));
        }
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = value
                && v != 0.0
            {
                {
                    return Err(ApiError::unsupported(
                        name,
                        "penalties are not implemented yet; send 0 or leave it out",
                    ));
                }
            }
        }
        let stop = match self.stop {
            None => vec![],
            Some(StopField::One(s)) => vec![s],
            Some(StopField::Many(v)) => v,
        };
        if stop.len() > 4 {
            return Err(ApiError::invalid(
                "stop",
                format!("`stop` takes at most 4 sequences; got {}", stop.len()),
            ));
        }
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", "a stop sequence cannot be empty"));
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` is only allowed with `stream: true`",
            ));
        }
        let include_usage = self
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        // A seed of any size picks a stream; folding keeps distinct small seeds distinct.
        let seed = match self.seed {
            Some(s) => (s as u64 ^ ((s as u64) >> 32)) as u32,
            None => rand::random(),
        };
        Ok(ValidChat {
            messages,
            sampling: enclave_engine::Sampling {
                temperature,
                top_p,
                seed,
                stop,
            },
            max_tokens,
            stream,
            include_usage,
        })
    }
}

// ---------- chat completions: response ----------

#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
    pub system_fingerprint: &'static str,
    /// Enclave's addition: the answer's label and the deployment that produced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enclave: Option<crate::mac::EnclaveInfo>,
}

#[derive(Debug, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
    pub refusal: Option<()>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: i64,
    pub model: &'a str,
    pub system_fingerprint: &'static str,
    pub choices: Vec<ChunkChoice>,
    /// Present (as null) on every chunk when usage was asked for, filled on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    /// Enclave's addition, on the first chunk: the answer's label and deployment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enclave: Option<&'a crate::mac::EnclaveInfo>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

// ---------- embeddings ----------

#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

/// Inputs per embeddings request, as OpenAI caps it.
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

impl EmbeddingInput {
    pub fn into_inputs(self) -> Result<Vec<enclave_engine::EmbedInput>, ApiError> {
        use enclave_engine::EmbedInput;
        let inputs: Vec<EmbedInput> = match self {
            EmbeddingInput::One(s) => vec![EmbedInput::Text(s)],
            EmbeddingInput::Many(v) => v.into_iter().map(EmbedInput::Text).collect(),
            EmbeddingInput::Tokens(t) => vec![EmbedInput::Tokens(t)],
            EmbeddingInput::ManyTokens(v) => v.into_iter().map(EmbedInput::Tokens).collect(),
        };
        if inputs.is_empty() {
            return Err(ApiError::invalid(
                "input",
                "`input` must not be an empty list",
            ));
        }
        if inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(ApiError::invalid(
                "input",
                format!(
                    "`input` takes at most {MAX_EMBEDDING_INPUTS} items; got {}",
                    inputs.len()
                ),
            ));
        }
        for (i, input) in inputs.iter().enumerate() {
            let empty = match input {
                EmbedInput::Text(s) => s.is_empty(),
                EmbedInput::Tokens(t) => t.is_empty(),
            };
            if empty {
                return Err(ApiError::invalid(
                    format!("input[{i}]"),
                    "an input must not be empty",
                ));
            }
        }
        Ok(inputs)
    }
}

#[derive(Debug, Serialize)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingItem>,
    pub model: String,
    pub usage: EmbeddingUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enclave: Option<crate::mac::EnclaveInfo>,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingItem {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

// ---------- models ----------

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
}
