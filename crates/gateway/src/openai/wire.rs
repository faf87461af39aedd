//! OpenAI's wire format for the routes Enclave serves. Wire types only: conversions into engine
//! types are explicit and validate as they go, naming the parameter at fault.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, Error};
use enclave_service::conversation::{Conversation, Image, Role, Tool, ToolCall, ToolChoice, Turn};

// ---------- chat completions: request ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    #[serde(default)]
    pub tools: Option<Vec<ToolIn>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Accepted; the upstream decides whether it makes calls in parallel.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Parameters OpenAI defines that Enclave does not implement yet. Present with a value that
    /// changes behaviour, each is refused by name rather than silently ignored.
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: serde_json::Map<String, Value>,
}

/// OpenAI chat parameters not implemented yet. Fields no OpenAI API defines are ignored instead.
const UNSUPPORTED_CHAT: &[&str] = &[
    "logprobs",
    "top_logprobs",
    "logit_bias",
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatMessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ToolCallIn {
    pub id: String,
    pub function: FunctionCallIn,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FunctionCallIn {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ToolIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    /// `{"url": "data:image/...;base64,..."}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub image_url: Option<Value>,
}

/// A chat request after validation: the conversation, and how the OpenAI surface answers.
#[derive(Debug)]
pub struct ValidChat {
    pub conversation: Conversation,
    pub include_usage: bool,
}

/// OpenAI's `tools` into the neutral form.
fn tools_in(tools: Option<Vec<ToolIn>>) -> Result<Vec<Tool>, ApiError> {
    let mut out = Vec::new();
    for (i, t) in tools.unwrap_or_default().into_iter().enumerate() {
        if t.kind != "function" {
            return Err(Error::unsupported(
                format!("tools[{i}].type"),
                format!("only `function` tools are supported; got `{}`", t.kind),
            )
            .into());
        }
        if t.function.name.is_empty() {
            return Err(
                Error::invalid(format!("tools[{i}].function.name"), "a tool needs a name").into(),
            );
        }
        out.push(Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t
                .function
                .parameters
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        });
    }
    Ok(out)
}

/// OpenAI's `tool_choice`: `auto`, `none`, `required`, or `{"type":"function","function":{"name"}}`.
fn tool_choice_in(v: Option<Value>, tools: &[Tool]) -> Result<Option<ToolChoice>, ApiError> {
    let choice = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(Error::invalid(
                    "tool_choice",
                    format!(
                        "`{other}` is not a tool choice: use `auto`, `none`, `required` or a named function"
                    ),
                ).into());
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Named(name.to_string()),
            None => {
                return Err(Error::invalid(
                    "tool_choice",
                    "a named tool choice is `{\"type\": \"function\", \"function\": {\"name\": ...}}`",
                ).into());
            }
        },
    };
    if choice != ToolChoice::None && choice != ToolChoice::Auto && tools.is_empty() {
        return Err(Error::invalid(
            "tool_choice",
            "`tool_choice` asks for a tool call but `tools` is empty",
        )
        .into());
    }
    if let ToolChoice::Named(name) = &choice
        && !tools.iter().any(|t| &t.name == name)
    {
        return Err(Error::invalid(
            "tool_choice",
            format!("`tool_choice` names `{name}`, which is not in `tools`"),
        )
        .into());
    }
    Ok(Some(choice))
}

/// `temperature` (default 1, at most `max_temperature`) and `top_p` (default 1, in (0, 1]),
/// checked the same way on both API surfaces.
pub fn sampling(
    temperature: Option<f32>,
    max_temperature: f32,
    top_p: Option<f32>,
) -> Result<(f32, f32), ApiError> {
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=max_temperature).contains(&temperature) {
        return Err(Error::invalid(
            "temperature",
            format!("`temperature` must be between 0 and {max_temperature}; got {temperature}"),
        )
        .into());
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::invalid(
            "top_p",
            format!("`top_p` must be greater than 0 and at most 1; got {top_p}"),
        )
        .into());
    }
    Ok((temperature, top_p))
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
                    return Err(Error::unsupported(
                        *name,
                        "Enclave does not implement it yet; remove it from the request",
                    )
                    .into());
                }
            }
        }
        if let Some(n) = self.n
            && n != 1
        {
            {
                return Err(
                    Error::unsupported("n", format!("only `n=1` is implemented; got {n}")).into(),
                );
            }
        }
        if self.messages.is_empty() {
            return Err(
                Error::invalid("messages", "`messages` must hold at least one message").into(),
            );
        }
        let tools = tools_in(self.tools)?;
        let tool_choice = tool_choice_in(self.tool_choice, &tools)?;
        let mut turns = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                "function" => {
                    return Err(Error::unsupported(
                        format!("messages[{i}].role"),
                        "the deprecated `function` role is not supported; use `tool`",
                    )
                    .into());
                }
                other => {
                    return Err(Error::invalid(
                        format!("messages[{i}].role"),
                        format!(
                            "`{other}` is not a role: use `system`, `developer`, `user`, `assistant` or `tool`"
                        ),
                    ).into());
                }
            };
            let tool_calls: Vec<ToolCall> = m
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                })
                .collect();
            if !tool_calls.is_empty() && role != Role::Assistant {
                return Err(Error::invalid(
                    format!("messages[{i}].tool_calls"),
                    "only assistant messages carry `tool_calls`",
                )
                .into());
            }
            let tool_call_id = if role == Role::Tool {
                match m.tool_call_id {
                    Some(id) if !id.is_empty() => Some(id),
                    _ => {
                        return Err(Error::invalid(
                            format!("messages[{i}].tool_call_id"),
                            "a `tool` message needs the `tool_call_id` it answers",
                        )
                        .into());
                    }
                }
            } else {
                None
            };
            let mut images = Vec::new();
            let content = match m.content {
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.into_iter().enumerate() {
                        if part.kind == "image_url" && role == Role::User {
                            let url = part
                                .image_url
                                .as_ref()
                                .and_then(|u| u["url"].as_str().or(u.as_str()))
                                .unwrap_or_default();
                            let image = Image::from_data_url(url).map_err(|m| {
                                Error::invalid(format!("messages[{i}].content[{j}].image_url"), m)
                            })?;
                            images.push(image);
                            continue;
                        }
                        if part.kind != "text" {
                            return Err(Error::unsupported(
                                format!("messages[{i}].content[{j}].type"),
                                format!(
                                    "content of type `{}` is not supported: send `text` parts, and `image_url` parts in user messages",
                                    part.kind
                                ),
                            ).into());
                        }
                        let Some(t) = part.text else {
                            return Err(Error::invalid(
                                format!("messages[{i}].content[{j}].text"),
                                "a text part needs `text`",
                            )
                            .into());
                        };
                        text.push_str(&t);
                    }
                    text
                }
                // An assistant turn that only calls tools has no content.
                None if role == Role::Assistant && !tool_calls.is_empty() => String::new(),
                None => {
                    return Err(Error::invalid(
                        format!("messages[{i}].content"),
                        "every message needs `content`",
                    )
                    .into());
                }
            };
            turns.push(Turn {
                role,
                text: content,
                tool_calls,
                tool_call_id,
                images,
            });
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            let param = if self.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(Error::invalid(param, format!("`{param}` must be at least 1")).into());
        }
        let (temperature, top_p) = sampling(self.temperature, 2.0, self.top_p)?;
        for (name, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = value
                && v != 0.0
            {
                {
                    return Err(Error::unsupported(
                        name,
                        "penalties are not implemented yet; send 0 or leave it out",
                    )
                    .into());
                }
            }
        }
        let stop = match self.stop {
            None => vec![],
            Some(StopField::One(s)) => vec![s],
            Some(StopField::Many(v)) => v,
        };
        if stop.len() > 4 {
            return Err(Error::invalid(
                "stop",
                format!("`stop` takes at most 4 sequences; got {}", stop.len()),
            )
            .into());
        }
        if stop.iter().any(String::is_empty) {
            return Err(Error::invalid("stop", "a stop sequence cannot be empty").into());
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(Error::invalid(
                "stream_options",
                "`stream_options` is only allowed with `stream: true`",
            )
            .into());
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
            conversation: Conversation {
                turns,
                tools,
                tool_choice,
                sampling: enclave_service::types::Sampling {
                    temperature,
                    top_p,
                    seed,
                    stop,
                    background: false,
                },
                max_tokens,
                stream,
            },
            include_usage,
        })
    }
}

// ---------- chat completions: response ----------

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    pub enclave: Option<enclave_service::info::EnclaveInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// Null when the answer is only tool calls, as OpenAI sends it.
    pub content: Option<String>,
    pub refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FunctionOut {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ToolCallDeltaOut {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDeltaOut,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FunctionDeltaOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// How the prompt was paid for: `cached_tokens` came from the prompt cache (the tenant's own).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails::default(),
        }
    }

    /// With `cached` of the prompt tokens read from the prompt cache.
    pub fn cached(mut self, cached: u32) -> Self {
        self.prompt_tokens_details.cached_tokens = cached;
        self
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    pub enclave: Option<&'a enclave_service::info::EnclaveInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDeltaOut>>,
}

// ---------- embeddings ----------

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    pub fn into_inputs(self) -> Result<Vec<enclave_service::types::EmbedInput>, ApiError> {
        use enclave_service::types::EmbedInput;
        let inputs: Vec<EmbedInput> = match self {
            EmbeddingInput::One(s) => vec![EmbedInput::Text(s)],
            EmbeddingInput::Many(v) => v.into_iter().map(EmbedInput::Text).collect(),
            EmbeddingInput::Tokens(t) => vec![EmbedInput::Tokens(t)],
            EmbeddingInput::ManyTokens(v) => v.into_iter().map(EmbedInput::Tokens).collect(),
        };
        if inputs.is_empty() {
            return Err(Error::invalid("input", "`input` must not be an empty list").into());
        }
        if inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(Error::invalid(
                "input",
                format!(
                    "`input` takes at most {MAX_EMBEDDING_INPUTS} items; got {}",
                    inputs.len()
                ),
            )
            .into());
        }
        for (i, input) in inputs.iter().enumerate() {
            let empty = match input {
                EmbedInput::Text(s) => s.is_empty(),
                EmbedInput::Tokens(t) => t.is_empty(),
            };
            if empty {
                return Err(
                    Error::invalid(format!("input[{i}]"), "an input must not be empty").into(),
                );
            }
        }
        Ok(inputs)
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingItem>,
    pub model: String,
    pub usage: EmbeddingUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enclave: Option<enclave_service::info::EnclaveInfo>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingItem {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

// ---------- models ----------

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
    /// A fine-tuned model's card, on `GET /v1/models/{id}`: its label and lineage (base model and
    /// hash, files learned from with hashes and labels, hyperparameters, final losses).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub enclave: Option<serde_json::Value>,
}
