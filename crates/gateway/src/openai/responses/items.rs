//! The Responses API's items: what a request sends (`input`: a string, or messages, function
//! calls and their outputs) read into the service's one conversation model, and the output items
//! an answer becomes. Items are kept as JSON, the API's own shape, so a stored response gives
//! back exactly what was sent and answered.

use enclave_service::conversation::{Role, Tool, ToolCall, ToolChoice, Turn};
use serde_json::{Value, json};

use crate::error::Error;

/// `input` as items: a string is one user message.
pub fn input_items(input: &Value) -> Result<Vec<Value>, Error> {
    match input {
        Value::String(text) => Ok(vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })]),
        Value::Array(items) if !items.is_empty() => Ok(items.clone()),
        Value::Array(_) => Err(Error::invalid("input", "`input` has no items")),
        _ => Err(Error::invalid(
            "input",
            "`input` must be a string or an array of items",
        )),
    }
}

/// The text of a message's `content`: a string, or parts of text.
fn text_of(content: &Value, at: &str) -> Result<String, Error> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match part["type"].as_str() {
                    Some("input_text" | "output_text" | "text") => {
                        text.push_str(part["text"].as_str().unwrap_or_default());
                    }
                    Some("input_image") => {
                        return Err(Error::unsupported(
                            at,
                            "images are not accepted yet; send text parts",
                        ));
                    }
                    Some(other) => {
                        return Err(Error::unsupported(
                            at,
                            format!("`{other}` content is not supported; send `input_text` parts"),
                        ));
                    }
                    None => return Err(Error::invalid(at, "a content part has no `type`")),
                }
            }
            Ok(text)
        }
        _ => Err(Error::invalid(at, "`content` must be a string or parts")),
    }
}

/// The turns `items` make, in order: messages, function calls (the model's, sent back) and their
/// outputs. `param` names where they came from in errors.
pub fn turns(items: &[Value], param: &str) -> Result<Vec<Turn>, Error> {
    let mut turns: Vec<Turn> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{param}[{i}]");
        let kind = item["type"]
            .as_str()
            .unwrap_or(if item.get("role").is_some() {
                "message"
            } else {
                ""
            });
        match kind {
            "message" => {
                let role = match item["role"].as_str() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("system" | "developer") => Role::System,
                    _ => {
                        return Err(Error::invalid(
                            at,
                            "a message's `role` is `user`, `assistant`, `system` or `developer`",
                        ));
                    }
                };
                turns.push(Turn::new(role, text_of(&item["content"], &at)?));
            }
            "function_call" => {
                let call = ToolCall {
                    id: field(item, "call_id", &at)?,
                    name: field(item, "name", &at)?,
                    arguments: item["arguments"].as_str().unwrap_or("{}").to_string(),
                };
                // Calls the model made together belong to one assistant turn.
                match turns.last_mut() {
                    Some(t) if t.role == Role::Assistant && t.text.is_empty() => {
                        t.tool_calls.push(call);
                    }
                    _ => {
                        let mut t = Turn::new(Role::Assistant, String::new());
                        t.tool_calls.push(call);
                        turns.push(t);
                    }
                }
            }
            "function_call_output" => {
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    Value::Null => {
                        return Err(Error::invalid(
                            at,
                            "a `function_call_output` needs `output`",
                        ));
                    }
                    other => other.to_string(),
                };
                let mut t = Turn::new(Role::Tool, output);
                t.tool_call_id = Some(field(item, "call_id", &at)?);
                turns.push(t);
            }
            "" => return Err(Error::invalid(at, "an item needs a `type`")),
            other => {
                return Err(Error::unsupported(
                    at,
                    format!(
                        "`{other}` items are not supported yet; send messages, `function_call` and `function_call_output` items"
                    ),
                ));
            }
        }
    }
    Ok(turns)
}

fn field(item: &Value, name: &str, at: &str) -> Result<String, Error> {
    item[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(at, format!("the item needs `{name}`")))
}

/// The request's `tools`: function tools only, for now.
pub fn tools(tools: Option<&Value>) -> Result<Vec<Tool>, Error> {
    let Some(tools) = tools else {
        return Ok(Vec::new());
    };
    let list = tools
        .as_array()
        .ok_or_else(|| Error::invalid("tools", "`tools` must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        match t["type"].as_str() {
            Some("function") => out.push(Tool {
                name: field(t, "name", &at)?,
                description: t["description"].as_str().map(str::to_string),
                parameters: t
                    .get("parameters")
                    .cloned()
                    .filter(|p| !p.is_null())
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            }),
            Some(other) => {
                return Err(Error::unsupported(
                    at,
                    format!(
                        "`{other}` tools are not supported yet; this server runs `function` tools (the client runs them)"
                    ),
                ));
            }
            None => return Err(Error::invalid(at, "a tool needs a `type`")),
        }
    }
    Ok(out)
}

/// The request's `tool_choice`: `auto`, `none`, `required`, or `{"type": "function", "name"}`.
pub fn tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<Option<ToolChoice>, Error> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(Error::invalid(
                    "tool_choice",
                    format!(
                        "`{other}` is not a tool choice: use `auto`, `none`, `required` or a function"
                    ),
                ));
            }
        },
        Some(v) => match v["name"].as_str() {
            Some(name) if tools.iter().any(|t| t.name == name) => ToolChoice::Named(name.into()),
            Some(name) => {
                return Err(Error::invalid(
                    "tool_choice",
                    format!("`tool_choice` names `{name}`, which is not in `tools`"),
                ));
            }
            None => {
                return Err(Error::invalid(
                    "tool_choice",
                    "a named tool choice is `{\"type\": \"function\", \"name\": ...}`",
                ));
            }
        },
    };
    if matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) && tools.is_empty() {
        return Err(Error::invalid(
            "tool_choice",
            "`tool_choice` asks for a tool call but `tools` is empty",
        ));
    }
    Ok(Some(choice))
}

/// A new item id with OpenAI's prefix for its kind.
pub fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The assistant's message item for `text`.
pub fn message(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": if text.is_empty() && status != "completed" {
            json!([])
        } else {
            json!([{"type": "output_text", "text": text, "annotations": []}])
        },
    })
}

/// A function call item the client is to run.
pub fn function_call(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status,
    })
}
