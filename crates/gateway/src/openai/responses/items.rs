//! The Responses API's items: what a request sends (`input`: a string, or messages, function
//! calls and their outputs) read into the service's one conversation model, and the output items
//! an answer becomes. Items are kept as JSON, the API's own shape, so a stored response gives
//! back exactly what was sent and answered.

use enclave_service::agent::{Approval, Decided, McpCall, Offer, Search};
use enclave_service::conversation::{Image, Role, Tool, ToolCall, ToolChoice, Turn};
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

/// The text of a message's `content` (a string, or parts of text) and its images.
fn text_of(content: &Value, at: &str) -> Result<(String, Vec<Image>), Error> {
    match content {
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut images = Vec::new();
            for part in parts {
                match part["type"].as_str() {
                    Some("input_text" | "output_text" | "text") => {
                        text.push_str(part["text"].as_str().unwrap_or_default());
                    }
                    Some("input_image") => {
                        if part.get("file_id").is_some_and(|f| !f.is_null()) {
                            return Err(Error::unsupported(
                                at,
                                "an image by `file_id` is not accepted: send it as a base64 `data:` URL in `image_url`",
                            ));
                        }
                        let url = part["image_url"].as_str().unwrap_or_default();
                        images.push(Image::from_data_url(url).map_err(|m| Error::invalid(at, m))?);
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
            Ok((text, images))
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
                let (text, images) = text_of(&item["content"], &at)?;
                if !images.is_empty() && role != Role::User {
                    return Err(Error::invalid(at, "only user messages carry images"));
                }
                let mut turn = Turn::new(role, text);
                turn.images = images;
                turns.push(turn);
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
            "mcp_call" => {
                // A call an earlier run made: the model's call and what it was told.
                let id = item["enclave"]["call_id"]
                    .as_str()
                    .map(str::to_string)
                    .map_or_else(|| field(item, "id", &at), Ok)?;
                let call = ToolCall {
                    id: id.clone(),
                    name: field(item, "name", &at)?,
                    arguments: item["arguments"].as_str().unwrap_or("{}").to_string(),
                };
                let told = match (item["output"].as_str(), item["error"].as_str()) {
                    (Some(out), _) => out.to_string(),
                    (None, Some(e)) => e.to_string(),
                    (None, None) => String::new(),
                };
                let mut t = Turn::new(Role::Assistant, String::new());
                t.tool_calls.push(call);
                turns.push(t);
                let mut r = Turn::new(Role::Tool, told);
                r.tool_call_id = Some(id);
                turns.push(r);
            }
            "file_search_call" => {
                let id = item["enclave"]["call_id"]
                    .as_str()
                    .map(str::to_string)
                    .map_or_else(|| field(item, "id", &at), Ok)?;
                let query = item["queries"][0].as_str().unwrap_or_default();
                let call = ToolCall {
                    id: id.clone(),
                    name: "file_search".into(),
                    arguments: json!({"query": query}).to_string(),
                };
                let mut found = String::new();
                for (n, r) in item["results"].as_array().into_iter().flatten().enumerate() {
                    found.push_str(&format!(
                        "[{}] ({}) {}: {}\n",
                        n + 1,
                        r["attributes"]["label"].as_str().unwrap_or_default(),
                        r["filename"].as_str().unwrap_or_default(),
                        r["text"].as_str().unwrap_or_default()
                    ));
                }
                let mut t = Turn::new(Role::Assistant, String::new());
                t.tool_calls.push(call);
                turns.push(t);
                let mut r = Turn::new(Role::Tool, found);
                r.tool_call_id = Some(id);
                turns.push(r);
            }
            // What a server listed, a request for approval and its answer: not turns (an
            // approved call becomes one when it runs).
            "mcp_list_tools" | "mcp_approval_request" | "mcp_approval_response" => {}
            "" => return Err(Error::invalid(at, "an item needs a `type`")),
            other => {
                return Err(Error::unsupported(
                    at,
                    format!(
                        "`{other}` items are not supported yet; send messages, `function_call`, `function_call_output` and `mcp_approval_response` items"
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

/// The request's `tools`: `function` tools (the client runs them) and `mcp` tools (registered
/// MCP servers Enclave calls).
pub fn tools(tools: Option<&Value>) -> Result<Offered, Error> {
    let Some(tools) = tools else {
        return Ok(Offered::default());
    };
    let mut offers = Vec::new();
    let mut search = None;
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
            Some("mcp") => offers.push(offer(t, &at)?),
            Some("file_search") if search.is_none() => search = Some(file_search(t, &at)?),
            Some("file_search") => {
                return Err(Error::invalid(
                    at,
                    "give one `file_search` tool, naming every knowledge base in its `vector_store_ids`",
                ));
            }
            Some(other) => {
                return Err(Error::unsupported(
                    at,
                    format!(
                        "`{other}` tools are not supported yet; this server runs `function` tools (the client runs them) and `mcp` tools (registered MCP servers)"
                    ),
                ));
            }
            None => return Err(Error::invalid(at, "a tool needs a `type`")),
        }
    }
    Ok(Offered {
        functions: out,
        mcp: offers,
        search,
    })
}

/// The tools a request offers, by who runs them.
#[derive(Debug, Default)]
pub struct Offered {
    /// The client runs these.
    pub functions: Vec<Tool>,
    /// Registered MCP servers, run by Enclave.
    pub mcp: Vec<Offer>,
    /// Enclave's knowledge bases.
    pub search: Option<Search>,
}

/// A `file_search` tool: `vector_store_ids` name knowledge bases (by id or name).
fn file_search(t: &Value, at: &str) -> Result<Search, Error> {
    let stores = t["vector_store_ids"]
        .as_array()
        .ok_or_else(|| {
            Error::invalid(
                format!("{at}.vector_store_ids"),
                "`vector_store_ids` must list knowledge-base ids or names",
            )
        })?
        .iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                Error::invalid(
                    format!("{at}.vector_store_ids"),
                    "knowledge-base ids are strings",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_results = match t.get("max_num_results") {
        None | Some(Value::Null) => 10,
        Some(v) => v.as_u64().filter(|n| (1..=50).contains(n)).ok_or_else(|| {
            Error::invalid(
                format!("{at}.max_num_results"),
                "`max_num_results` is 1 to 50",
            )
        })? as usize,
    };
    Ok(Search {
        stores,
        max_results,
    })
}

/// An `mcp` tool: a registered server by `server_label`, narrowed by `allowed_tools`, with the
/// calls the client wants to approve (`require_approval`, OpenAI's default `always`).
fn offer(t: &Value, at: &str) -> Result<Offer, Error> {
    let server = field(t, "server_label", at)?;
    if t.get("server_url").is_some_and(|u| !u.is_null())
        || t.get("connector_id").is_some_and(|u| !u.is_null())
    {
        return Err(Error::invalid(
            format!("{at}.server_url"),
            "Enclave connects only to MCP servers an administrator registered: name one by `server_label` and leave out `server_url`",
        ));
    }
    let names = |v: &Value, param: &str| -> Result<Vec<String>, Error> {
        let list = v.as_array().or_else(|| v["tool_names"].as_array());
        let Some(list) = list else {
            return Err(Error::invalid(
                param,
                "must be a list of tool names or `{\"tool_names\": [...]}`",
            ));
        };
        list.iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::invalid(param, "tool names are strings"))
            })
            .collect()
    };
    let allowed = match t.get("allowed_tools") {
        None | Some(Value::Null) => None,
        Some(v) => Some(names(v, &format!("{at}.allowed_tools"))?),
    };
    let param = format!("{at}.require_approval");
    let approval = match t.get("require_approval") {
        None | Some(Value::Null) => Approval::Always,
        Some(Value::String(s)) if s == "always" => Approval::Always,
        Some(Value::String(s)) if s == "never" => Approval::Never,
        Some(Value::Object(o)) => match (o.get("always"), o.get("never")) {
            (Some(a), None) => Approval::Only(names(a, &param)?.into_iter().collect()),
            (None, Some(n)) => Approval::Except(names(n, &param)?.into_iter().collect()),
            _ => {
                return Err(Error::invalid(
                    param,
                    "`require_approval` is `always`, `never`, `{\"always\": {\"tool_names\": [...]}}` or `{\"never\": {\"tool_names\": [...]}}`",
                ));
            }
        },
        Some(_) => {
            return Err(Error::invalid(
                param,
                "`require_approval` is `always`, `never`, or an object naming tools",
            ));
        }
    };
    Ok(Offer {
        server,
        allowed,
        approval,
    })
}

/// The approvals `input` answers, each matched to its request in `context` (the response it
/// continues). An answer to no request, or to one already answered, is refused.
pub fn decided(input: &[Value], context: &[Value]) -> Result<Vec<Decided>, Error> {
    let mut out: Vec<Decided> = Vec::new();
    for (i, item) in input.iter().enumerate() {
        if item["type"] != "mcp_approval_response" {
            continue;
        }
        let at = format!("input[{i}]");
        let id = field(item, "approval_request_id", &at)?;
        let request = context
            .iter()
            .find(|c| c["type"] == "mcp_approval_request" && c["id"] == id.as_str())
            .ok_or_else(|| {
                Error::invalid(
                    &at,
                    format!("`{id}` is not an approval request of the response this continues (`previous_response_id`)"),
                )
            })?;
        let answered = context.iter().any(|c| {
            c["type"] == "mcp_approval_response" && c["approval_request_id"] == id.as_str()
        });
        if answered || out.iter().any(|d| d.call.id == call_id(request)) {
            return Err(Error::invalid(
                &at,
                format!("`{id}` has been answered already"),
            ));
        }
        let approve = item["approve"].as_bool().ok_or_else(|| {
            Error::invalid(
                &at,
                "an `mcp_approval_response` needs `approve`: true or false",
            )
        })?;
        out.push(Decided {
            call: McpCall {
                id: call_id(request),
                server: request["server_label"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                tool: request["name"].as_str().unwrap_or_default().to_string(),
                arguments: request["arguments"].as_str().unwrap_or("{}").to_string(),
            },
            approve,
        });
    }
    Ok(out)
}

fn call_id(item: &Value) -> String {
    item["enclave"]["call_id"]
        .as_str()
        .or(item["id"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The request's `tool_choice`: `auto`, `none`, `required`, or `{"type": "function", "name"}`.
pub fn tool_choice(
    choice: Option<&Value>,
    tools: &[Tool],
    mcp: bool,
) -> Result<Option<ToolChoice>, Error> {
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
            // An MCP server's tools are known once it lists them; the run checks the name.
            Some(name) if mcp || tools.iter().any(|t| t.name == name) => {
                ToolChoice::Named(name.into())
            }
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
    if matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) && tools.is_empty() && !mcp {
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

/// An item an agent run produced, in the API's shape, carrying the context label it was made
/// at (`label`; a message and a call carry their own).
pub fn agent_item(item: &enclave_service::agent::Item, label: &str) -> Value {
    use enclave_service::agent::Item;
    match item {
        Item::Listed { server, tools } => json!({
            "type": "mcp_list_tools", "id": item_id("mcpl"), "server_label": server,
            "tools": tools.iter().map(|t| json!({
                "name": t.name, "description": t.description,
                "input_schema": t.input_schema, "annotations": null,
            })).collect::<Vec<_>>(),
            "enclave": {"label": label},
        }),
        Item::Message { text, label: at } => {
            let mut m = message(&item_id("msg"), text, "completed");
            m["enclave"] = json!({"label": at});
            m
        }
        Item::FunctionCall(c) => {
            let mut f = function_call(&item_id("fc"), &c.id, &c.name, &c.arguments, "completed");
            f["enclave"] = json!({"label": label});
            f
        }
        Item::Called {
            call,
            output,
            error,
            label: after,
        } => json!({
            "type": "mcp_call", "id": item_id("mcp"), "server_label": call.server,
            "name": call.tool, "arguments": call.arguments,
            "output": output, "error": error.as_ref().map(enclave_service::agent::Failure::told),
            "approval_request_id": null,
            "status": if error.is_some() { "failed" } else { "completed" },
            "enclave": {
                "label": after, "call_id": call.id,
                "code": error.as_ref().map(|e| e.code),
                "reason": error.as_ref().map(|e| e.message.clone()),
            },
        }),
        Item::Searched {
            id,
            queries,
            results,
            label: after,
        } => json!({
            "type": "file_search_call", "id": format!("fs_{}", id.trim_start_matches("call_")),
            "status": "completed", "queries": queries,
            "results": results.iter().map(|c| json!({
                "file_id": c.document, "filename": c.document_name, "score": c.score,
                "text": c.text, "attributes": {"label": c.label},
            })).collect::<Vec<_>>(),
            "enclave": {"label": after, "call_id": id},
        }),
        Item::ApprovalRequested { call, reason } => json!({
            "type": "mcp_approval_request", "id": item_id("mcpr"), "server_label": call.server,
            "name": call.tool, "arguments": call.arguments,
            "enclave": {"label": label, "call_id": call.id, "reason": reason},
        }),
    }
}
