//! OpenAI's chat completions on the wire, as Enclave sends it upstream and reads the answer.

use enclave_engine::{Event, FinishReason, ToolCallDelta};
use serde::Deserialize;
use serde_json::{Value, json};

use enclave_service::conversation::{Conversation, Role, ToolChoice};

pub fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// The request body for `model`.
pub fn request(model: &str, c: &Conversation) -> Value {
    let messages: Vec<Value> = c
        .turns
        .iter()
        .map(|t| match t.role {
            Role::System => json!({"role": "system", "content": t.text}),
            Role::User if t.images.is_empty() => json!({"role": "user", "content": t.text}),
            Role::User => {
                let mut parts = vec![json!({"type": "text", "text": t.text})];
                parts.extend(
                    t.images
                        .iter()
                        .map(|i| json!({"type": "image_url", "image_url": {"url": i.data_url()}})),
                );
                json!({"role": "user", "content": parts})
            }
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": t.tool_call_id,
                "content": t.text,
            }),
            Role::Assistant => {
                let mut m = json!({"role": "assistant", "content": t.text});
                if !t.tool_calls.is_empty() {
                    if t.text.is_empty() {
                        m["content"] = Value::Null;
                    }
                    m["tool_calls"] = t
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments},
                            })
                        })
                        .collect();
                }
                m
            }
        })
        .collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "temperature": c.sampling.temperature,
        "top_p": c.sampling.top_p,
        "seed": c.sampling.seed,
        "stream": c.stream,
    });
    if let Some(n) = c.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if !c.sampling.stop.is_empty() {
        body["stop"] = json!(c.sampling.stop);
    }
    if c.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if !c.tools.is_empty() {
        body["tools"] = c
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
    }
    if let Some(choice) = &c.tool_choice {
        body["tool_choice"] = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
        };
    }
    body
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
    #[serde(default)]
    tool_calls: Vec<ToolCallIn>,
}

#[derive(Debug, Deserialize)]
struct ToolCallIn {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: FunctionIn,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// A whole (not streamed) answer as events.
pub fn whole(bytes: &[u8]) -> Result<Vec<Event>, String> {
    let completion: Completion = serde_json::from_slice(bytes)
        .map_err(|e| format!("the answer is not a chat completion: {e}"))?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err("the answer has no choices".into());
    };
    let usage = completion.usage.unwrap_or_default();
    let mut events = Vec::new();
    if let Some(text) = choice.message.content.filter(|t| !t.is_empty()) {
        events.push(Event::Text(text));
    }
    for (i, c) in choice.message.tool_calls.into_iter().enumerate() {
        events.push(Event::ToolCall(ToolCallDelta {
            index: i as u32,
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments.unwrap_or_default(),
        }));
    }
    events.push(Event::Done {
        reason: finish(choice.finish_reason.as_deref()),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_tokens: 0,
    });
    Ok(events)
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: DeltaIn,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaIn {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallIn>,
}

/// What a stream has said so far.
#[derive(Debug, Default)]
pub struct StreamState {
    reason: Option<String>,
    usage: UsageIn,
}

impl StreamState {
    fn done(&self) -> Event {
        Event::Done {
            reason: finish(self.reason.as_deref()),
            prompt_tokens: self.usage.prompt_tokens,
            completion_tokens: self.usage.completion_tokens,
            cached_tokens: 0,
        }
    }

    pub fn event(&mut self, data: &str) -> Result<(Vec<Event>, bool), String> {
        if data.trim() == "[DONE]" {
            return Ok((vec![self.done()], true));
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            format!("the upstream sent a chunk that is not a completion chunk: {e}")
        })?;
        if let Some(u) = chunk.usage {
            self.usage = u;
        }
        let mut out = Vec::new();
        for c in chunk.choices {
            if let Some(text) = c.delta.content.filter(|t| !t.is_empty()) {
                out.push(Event::Text(text));
            }
            for (i, call) in c.delta.tool_calls.into_iter().enumerate() {
                out.push(Event::ToolCall(ToolCallDelta {
                    index: call.index.unwrap_or(i as u32),
                    id: call.id,
                    name: call.function.name,
                    arguments: call.function.arguments.unwrap_or_default(),
                }));
            }
            if c.finish_reason.is_some() {
                self.reason = c.finish_reason;
            }
        }
        Ok((out, false))
    }

    /// Servers that omit `[DONE]` still end with a finish reason; without either the answer
    /// was cut off.
    pub fn end(&mut self) -> Result<(Vec<Event>, bool), String> {
        if self.reason.is_some() {
            Ok((vec![self.done()], true))
        } else {
            Err("the upstream's stream ended before the answer did".into())
        }
    }
}

#[derive(Debug, Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

/// An embeddings answer, vectors in input order.
pub fn embeddings(bytes: &[u8]) -> Result<enclave_engine::Embeddings, String> {
    let mut list: EmbeddingList = serde_json::from_slice(bytes)
        .map_err(|e| format!("the answer is not an embeddings list: {e}"))?;
    list.data.sort_by_key(|d| d.index.unwrap_or(0));
    Ok(enclave_engine::Embeddings {
        vectors: list.data.into_iter().map(|d| d.embedding).collect(),
        tokens: list.usage.map_or(0, |u| u.prompt_tokens as usize),
    })
}
