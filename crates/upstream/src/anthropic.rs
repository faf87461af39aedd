//! Anthropic's Messages API on the wire, as Enclave sends it upstream and reads the answer.

use std::collections::HashMap;

use enclave_engine::{Event, FinishReason, ToolCallDelta};
use serde_json::{Value, json};

use enclave_service::conversation::{Conversation, Role, ToolChoice};

/// The `anthropic-version` Enclave speaks.
pub const VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the Messages API; this is sent when the caller gave none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// The request body for `model`. System turns become `system`; tool results become
/// `tool_result` blocks of a user turn; consecutive turns of one role are merged, as the API
/// requires alternation.
pub fn request(model: &str, c: &Conversation) -> Value {
    let system: Vec<&str> = c
        .turns
        .iter()
        .filter(|t| t.role == Role::System)
        .map(|t| t.text.as_str())
        .collect();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    for t in c.turns.iter().filter(|t| t.role != Role::System) {
        let (role, blocks) = match t.role {
            Role::User => {
                let mut blocks = vec![json!({"type": "text", "text": t.text})];
                blocks.extend(t.images.iter().map(|i| {
                    json!({"type": "image", "source": {
                        "type": "base64", "media_type": i.media_type, "data": i.data,
                    }})
                }));
                ("user", blocks)
            }
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": t.tool_call_id,
                    "content": t.text,
                })],
            ),
            _ => {
                let mut blocks = Vec::new();
                if !t.text.is_empty() {
                    blocks.push(json!({"type": "text", "text": t.text}));
                }
                for call in &t.tool_calls {
                    let input: Value =
                        serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.name, "input": input,
                    }));
                }
                ("assistant", blocks)
            }
        };
        match messages.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => messages.push((role.to_string(), blocks)),
        }
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": c.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "temperature": c.sampling.temperature.min(1.0),
        "stream": c.stream,
    });
    if c.sampling.top_p < 1.0 {
        body["top_p"] = json!(c.sampling.top_p);
    }
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !c.sampling.stop.is_empty() {
        body["stop_sequences"] = json!(c.sampling.stop);
    }
    if !c.tools.is_empty() {
        body["tools"] = c
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
    }
    if let Some(choice) = &c.tool_choice {
        body["tool_choice"] = match choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Named(n) => json!({"type": "tool", "name": n}),
        };
    }
    body
}

fn tokens(v: &Value, key: &str) -> u32 {
    v.get(key)
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// A whole (not streamed) answer as events.
pub fn whole(bytes: &[u8]) -> Result<Vec<Event>, String> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the answer is not a Messages response: {e}"))?;
    let Some(content) = v.get("content").and_then(Value::as_array) else {
        return Err("the answer has no `content`".into());
    };
    let mut events = Vec::new();
    let mut tool = 0;
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = block.get("text").and_then(Value::as_str)
                    && !t.is_empty()
                {
                    events.push(Event::Text(t.to_string()));
                }
            }
            Some("tool_use") => {
                events.push(Event::ToolCall(ToolCallDelta {
                    index: tool,
                    id: block.get("id").and_then(Value::as_str).map(str::to_string),
                    name: block
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    arguments: block
                        .get("input")
                        .map_or_else(|| "{}".into(), Value::to_string),
                }));
                tool += 1;
            }
            _ => {}
        }
    }
    let usage = v.get("usage").cloned().unwrap_or(Value::Null);
    events.push(Event::Done {
        reason: finish(v.get("stop_reason").and_then(Value::as_str)),
        prompt_tokens: tokens(&usage, "input_tokens"),
        completion_tokens: tokens(&usage, "output_tokens"),
        cached_tokens: 0,
    });
    Ok(events)
}

/// What a stream has said so far.
#[derive(Debug, Default)]
pub struct StreamState {
    input_tokens: u32,
    output_tokens: u32,
    reason: Option<String>,
    /// Content block index → tool call index.
    tools: HashMap<u64, u32>,
}

impl StreamState {
    pub fn event(&mut self, name: &str, data: &str) -> Result<(Vec<Event>, bool), String> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| format!("the upstream sent an event that is not JSON: {e}"))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let usage = v.pointer("/message/usage").cloned().unwrap_or(Value::Null);
                self.input_tokens = tokens(&usage, "input_tokens");
            }
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or(Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let n = self.tools.len() as u32;
                    self.tools.insert(index, n);
                    out.push(Event::ToolCall(ToolCallDelta {
                        index: n,
                        id: block.get("id").and_then(Value::as_str).map(str::to_string),
                        name: block
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        arguments: String::new(),
                    }));
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").cloned().unwrap_or(Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = delta.get("text").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            out.push(Event::Text(t.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        let Some(&n) = self.tools.get(&index) else {
                            return Err("the upstream sent tool input for no tool block".into());
                        };
                        out.push(Event::ToolCall(ToolCallDelta {
                            index: n,
                            id: None,
                            name: None,
                            arguments: delta
                                .get("partial_json")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        }));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.reason = Some(r.to_string());
                }
                let usage = v.get("usage").cloned().unwrap_or(Value::Null);
                self.output_tokens = tokens(&usage, "output_tokens").max(self.output_tokens);
                let input = tokens(&usage, "input_tokens");
                if input > 0 {
                    self.input_tokens = input;
                }
            }
            "message_stop" => {
                out.push(self.done());
                return Ok((out, true));
            }
            "error" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream reported an error");
                return Err(message.to_string());
            }
            _ => {} // ping, content_block_stop, and types added later
        }
        Ok((out, false))
    }

    fn done(&self) -> Event {
        Event::Done {
            reason: finish(self.reason.as_deref()),
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            cached_tokens: 0,
        }
    }

    pub fn end(&mut self) -> Result<(Vec<Event>, bool), String> {
        if self.reason.is_some() {
            Ok((vec![self.done()], true))
        } else {
            Err("the upstream's stream ended before the answer did".into())
        }
    }
}
