//! One chat request in surface-neutral terms: what the OpenAI and Anthropic surfaces parse into,
//! what the reference monitor inspects, and what every backend encodes from.
//!
//! Keeping one model in the middle means two surfaces × three backends is five translations,
//! not six, and that inspection cannot miss a field one surface has and another lacks.

use enclave_engine::{ChatMessage, Sampling};
use serde_json::Value;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering the assistant's call `tool_call_id`.
    Tool,
}

/// One turn. Assistant turns may carry tool calls; tool turns carry the id they answer; user
/// turns may carry images.
#[derive(Debug, Clone)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    pub images: Vec<Image>,
}

impl Turn {
    pub fn new(role: Role, text: String) -> Self {
        Self {
            role,
            text,
            tool_calls: Vec::new(),
            tool_call_id: None,
            images: Vec::new(),
        }
    }
}

/// An image a user sent, as base64. It cannot be inspected for markings, so a request carrying
/// one is labelled as declared (or the tenant's default), never lower; it goes only to
/// deployments that declare `vision`, and the audit record names it by its SHA-256. Enclave
/// never fetches an image: only `data:` URLs are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub media_type: String,
    /// The bytes, base64 (standard alphabet), as sent.
    pub data: String,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

impl Image {
    /// Reads a `data:` URL; the sentence says what is wrong otherwise.
    pub fn from_data_url(url: &str) -> Result<Self, String> {
        use base64::Engine as _;
        use sha2::{Digest, Sha256};
        let Some(rest) = url.strip_prefix("data:") else {
            return Err("Enclave never fetches a URL from inside the enclave: send the image as a base64 `data:` URL".into());
        };
        let Some((head, data)) = rest.split_once(',') else {
            return Err("the `data:` URL has no `,` before its data".into());
        };
        let Some(media_type) = head.strip_suffix(";base64") else {
            return Err("the `data:` URL must be base64 (`data:image/png;base64,...`)".into());
        };
        if !matches!(
            media_type,
            "image/png" | "image/jpeg" | "image/gif" | "image/webp"
        ) {
            return Err(format!(
                "`{media_type}` is not an image type Enclave passes on: use image/png, image/jpeg, image/gif or image/webp"
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("the image's base64 does not decode: {e}"))?;
        if bytes.is_empty() {
            return Err("the image is empty".into());
        }
        Ok(Self {
            media_type: media_type.to_string(),
            data: data.trim().to_string(),
            sha256: hex::encode(Sha256::digest(&bytes)),
        })
    }

    /// The image as a `data:` URL.
    pub fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.media_type, self.data)
    }
}

/// A call the model made: `arguments` is JSON text, as OpenAI carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A tool the caller offers: `parameters` is a JSON Schema object.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called (OpenAI `required`, Anthropic `any`).
    Required,
    Named(String),
}

/// A validated chat request.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub turns: Vec<Turn>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub sampling: Sampling,
    pub max_tokens: Option<u32>,
    pub stream: bool,
}

impl Conversation {
    /// Every text the request sends, in a fixed order: turn texts, tool-call arguments, tool
    /// descriptions. The reference monitor inspects (and may redact) exactly these.
    pub fn take_texts(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &mut self.turns {
            out.push(std::mem::take(&mut t.text));
            for c in &mut t.tool_calls {
                out.push(std::mem::take(&mut c.arguments));
            }
        }
        for tool in &mut self.tools {
            out.push(tool.description.take().unwrap_or_default());
        }
        out
    }

    /// Puts texts back in the order [`take_texts`](Self::take_texts) took them.
    pub fn put_texts(&mut self, texts: Vec<String>) {
        let mut it = texts.into_iter();
        for t in &mut self.turns {
            t.text = it.next().unwrap_or_default();
            for c in &mut t.tool_calls {
                c.arguments = it.next().unwrap_or_default();
            }
        }
        for tool in &mut self.tools {
            tool.description = it.next().filter(|d| !d.is_empty());
        }
    }

    /// The text of the last user turn: what this request asks.
    pub fn last_user_text(&self) -> Option<&str> {
        self.turns
            .iter()
            .rev()
            .find(|t| t.role == Role::User)
            .map(|t| t.text.as_str())
    }

    /// Whether the request uses tool calling at all.
    pub fn uses_tools(&self) -> bool {
        !self.tools.is_empty()
            || self
                .turns
                .iter()
                .any(|t| t.role == Role::Tool || !t.tool_calls.is_empty())
    }

    /// Every image the request carries, in order.
    pub fn images(&self) -> impl Iterator<Item = &Image> {
        self.turns.iter().flat_map(|t| t.images.iter())
    }

    /// A rough token count of what is sent, for reserving quota before the backend counts:
    /// a token is about four bytes of English, plus a few per turn for the template.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let bytes: usize = self
            .turns
            .iter()
            .map(|t| {
                t.text.len()
                    + t.tool_calls
                        .iter()
                        .map(|c| c.arguments.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
            + self
                .tools
                .iter()
                .map(|t| {
                    t.parameters.to_string().len() + t.description.as_ref().map_or(0, String::len)
                })
                .sum::<usize>();
        (bytes as u64).div_ceil(4) + 4 * self.turns.len() as u64
    }

    /// The messages for the embedded model, which reads text turns only.
    pub fn engine_messages(&self) -> Result<Vec<ChatMessage>, Error> {
        if self.uses_tools() {
            return Err(Error::unsupported(
                "tools",
                "the embedded model does not call tools; use a model served by an upstream that does",
            ));
        }
        Ok(self
            .turns
            .iter()
            .map(|t| ChatMessage {
                role: match t.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    Role::Tool => "tool",
                }
                .to_string(),
                content: t.text.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_round_trip_in_order() {
        let mut c = Conversation {
            turns: vec![
                Turn::new(Role::User, "a".into()),
                Turn {
                    role: Role::Assistant,
                    text: "b".into(),
                    tool_calls: vec![ToolCall {
                        id: "1".into(),
                        name: "f".into(),
                        arguments: "{\"x\":1}".into(),
                    }],
                    tool_call_id: None,
                    images: Vec::new(),
                },
            ],
            tools: vec![Tool {
                name: "f".into(),
                description: Some("d".into()),
                parameters: Value::Null,
            }],
            tool_choice: None,
            sampling: Sampling {
                temperature: 1.0,
                top_p: 1.0,
                seed: 0,
                stop: vec![],
                background: false,
            },
            max_tokens: None,
            stream: false,
        };
        let texts = c.take_texts();
        assert_eq!(texts, ["a", "b", "{\"x\":1}", "d"]);
        c.put_texts(texts.into_iter().map(|t| t.to_uppercase()).collect());
        assert_eq!(c.turns[1].tool_calls[0].arguments, "{\"X\":1}");
        assert_eq!(c.tools[0].description.as_deref(), Some("D"));
    }
}
