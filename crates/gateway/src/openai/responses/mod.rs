//! `POST /v1/responses` and the stored responses (`GET`, `DELETE`, `input_items`): OpenAI's
//! Responses API over the same service as chat completions. Each request is one model turn:
//! `function` tools return control to the client, which sends `function_call_output` items back
//! (with `previous_response_id`, or the whole context again).
//!
//! Labels: a continuation is admitted no lower than the response it continues (the context never
//! falls), the answer's label is in the `Enclave-Label` header, the `enclave` field and on each
//! output item, and a stored response is read only within its tenant by a clearance that
//! dominates it (`enclave_service::stored`).

mod agent;
mod items;
mod stream;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_label::Label;
use enclave_service::answer::{self, Answer, Step};
use enclave_service::conversation::{Conversation, Role, Turn};
use enclave_service::dispatch::UpstreamClock;
use enclave_service::stored;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::audit::{CallNote, attach};
use crate::auth::Principal;
use crate::error::{ApiError, Error};
use crate::extract::OpenAiJson;
use crate::labels::{LABEL_HEADER, declared, header_value};
use crate::openai::chat::ToolCalls;

/// A request to `POST /v1/responses`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ResponsesRequest {
    pub model: String,
    /// A string, or items: messages, `function_call` and `function_call_output`.
    #[schema(value_type = Object)]
    pub input: Value,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// Keep the response (default true) so it can be read and continued.
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    /// Parameters OpenAI defines that Enclave does not implement yet: refused by name when they
    /// would change the answer.
    #[serde(flatten)]
    #[schema(ignore)]
    pub other: serde_json::Map<String, Value>,
}

/// What a request becomes before the model is asked.
struct Prepared {
    conversation: Conversation,
    /// The items this request sent.
    input: Vec<Value>,
    /// Everything the model sees: the continued response's context, then `input`.
    context: Vec<Value>,
    /// The continued response's label: the floor under this one.
    floor: Option<Label>,
    /// MCP servers offered to the model, and approvals answered: an agent run when any.
    offers: Vec<enclave_service::agent::Offer>,
    search: Option<enclave_service::agent::Search>,
    decided: Vec<enclave_service::agent::Decided>,
    store: bool,
    /// The response object's echo of the request.
    echo: Value,
}

fn prepare(req: ResponsesRequest, previous: Option<stored::Stored>) -> Result<Prepared, ApiError> {
    for (name, value) in &req.other {
        let harmless = value.is_null()
            || matches!(name.as_str(), "truncation" if value == "disabled")
            || matches!(name.as_str(), "text" if value["format"]["type"] == "text")
            || (name == "include"
                && value
                    .as_array()
                    .is_some_and(|a| a.iter().all(|i| i == "file_search_call.results")))
            || matches!(name.as_str(), "reasoning" | "include" | "service_tier" | "prompt_cache_key" | "safety_identifier" | "background" if value.is_null() || value == &json!([]) || value == &json!({}) || value == "auto" || value == false);
        if !harmless {
            return Err(Error::unsupported(
                name.as_str(),
                format!("`{name}` is not supported by this server yet; leave it out"),
            )
            .into());
        }
    }
    if req.max_output_tokens == Some(0) {
        return Err(Error::invalid(
            "max_output_tokens",
            "`max_output_tokens` must be at least 1",
        )
        .into());
    }
    let (temperature, top_p) = crate::openai::sampling(req.temperature, 2.0, req.top_p)?;
    let input = items::input_items(&req.input)?;
    let mut context = previous
        .as_ref()
        .map(|p| p.context.clone())
        .unwrap_or_default();
    context.extend(input.iter().cloned());
    let mut turns = Vec::new();
    if let Some(instructions) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        turns.push(Turn::new(Role::System, instructions.to_string()));
    }
    turns.extend(items::turns(&context, "input")?);
    let items::Offered {
        functions: tools,
        mcp: offers,
        search,
    } = items::tools(req.tools.as_ref())?;
    let enclave_runs = !offers.is_empty() || search.is_some();
    let tool_choice = items::tool_choice(req.tool_choice.as_ref(), &tools, enclave_runs)?;
    let decided = items::decided(
        &input,
        previous.as_ref().map_or(&[][..], |p| p.context.as_slice()),
    )?;
    let stream = req.stream.unwrap_or(false);
    let echo = json!({
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "previous_response_id": req.previous_response_id,
        "temperature": temperature,
        "top_p": top_p,
        "tool_choice": req.tool_choice.clone().unwrap_or(json!("auto")),
        "tools": req.tools.clone().unwrap_or(json!([])),
        "store": req.store.unwrap_or(true),
        "metadata": req.metadata.clone().filter(Value::is_object).unwrap_or(json!({})),
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "user": req.user,
    });
    Ok(Prepared {
        conversation: Conversation {
            turns,
            tools,
            tool_choice,
            sampling: enclave_service::types::Sampling {
                temperature,
                top_p,
                seed: rand::random(),
                stop: Vec::new(),
                background: false,
            },
            max_tokens: req.max_output_tokens,
            stream,
        },
        input,
        context,
        floor: previous.map(|p| p.label),
        offers,
        search,
        decided,
        store: req.store.unwrap_or(true),
        echo,
    })
}

/// The response object: the request's echo, then what happened.
fn body(
    echo: &Value,
    id: &str,
    created: i64,
    status: &str,
    output: &[Value],
    extra: Value,
) -> Value {
    let mut out = json!({
        "id": id, "object": "response", "created_at": created, "status": status,
        "error": null, "incomplete_details": null, "output": output,
    });
    for source in [echo, &extra] {
        if let Some(fields) = source.as_object() {
            for (k, v) in fields {
                out[k] = v.clone();
            }
        }
    }
    out
}

fn usage(prompt: u32, completion: u32, cached: u32) -> Value {
    json!({
        "input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    })
}

#[utoipa::path(post, path = "/v1/responses", tag = "responses", request_body = ResponsesRequest, params(("Enclave-Label" = Option<String>, Header, description = "The request's declared label")), responses((status = 200, description = "A response; with `stream: true`, the Responses API's server-sent events", content((Object = "application/json"), (String = "text/event-stream"))), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    clock: Option<Extension<UpstreamClock>>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<ResponsesRequest>,
) -> Response {
    let mut note = CallNote::for_model(&req.model);
    let clock = clock.map(|c| c.0).unwrap_or_default();
    let result = serve(state, principal, headers, req, &mut note, &clock).await;
    attach(note, result)
}

async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    mut req: ResponsesRequest,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Response, ApiError> {
    let model = req.model.clone();
    let metadata = req.metadata.take();
    let declared = declared(&headers, metadata.as_ref())?;
    req.metadata = metadata;
    let previous = match req.previous_response_id.as_deref() {
        Some(id) => Some(stored::load(&state, &principal, id).await?),
        None => None,
    };
    let prepared = prepare(req, previous)?;
    if !prepared.offers.is_empty() || prepared.search.is_some() || !prepared.decided.is_empty() {
        return agent::serve(state, principal, (declared, model), prepared, note, clock).await;
    }
    let stream_it = prepared.conversation.stream;
    let conversation = prepared.conversation.clone();
    let a = answer::chat(
        &state,
        &principal,
        declared.as_ref(),
        &model,
        conversation,
        prepared.floor.as_ref(),
        note,
        clock,
    )
    .await?;
    let id = items::item_id("resp");
    let created = enclave_service::types::now();
    let header = header_value(&a.info.label);
    let mut response = if stream_it {
        stream::events(state, principal, a, prepared, id, created).into_response()
    } else {
        let (out, label) = collect(&state, &principal, a, &prepared, &id, created).await?;
        let mut response = Json(out).into_response();
        response
            .headers_mut()
            .insert(LABEL_HEADER, header_value(&label));
        return Ok(response);
    };
    response.headers_mut().insert(LABEL_HEADER, header);
    Ok(response)
}

/// What the model answered, as output items: its function calls, then its text.
struct Answered {
    text: String,
    calls: ToolCalls,
    usage: Value,
}

fn output_items(answered: Answered, label: &str) -> Vec<Value> {
    let mut output: Vec<Value> = answered
        .calls
        .into_inner()
        .into_iter()
        .map(|c| {
            let call_id = if c.id.is_empty() {
                items::item_id("call")
            } else {
                c.id
            };
            items::function_call(
                &items::item_id("fc"),
                &call_id,
                &c.function.name,
                &c.function.arguments,
                "completed",
            )
        })
        .collect();
    if !answered.text.is_empty() || output.is_empty() {
        output.push(items::message(
            &items::item_id("msg"),
            &answered.text,
            "completed",
        ));
    }
    for item in &mut output {
        item["enclave"] = json!({ "label": label });
    }
    output
}

/// Finishes a response: its body at `label`, kept when asked.
async fn finish(
    state: &AppState,
    principal: &Principal,
    (prepared, id, created): (&Prepared, &str, i64),
    (output, usage): (Vec<Value>, Value),
    (info, label): (&enclave_service::info::EnclaveInfo, String),
) -> Result<Value, ApiError> {
    finish_as(
        state,
        principal,
        (prepared, id, created),
        (output, usage),
        (info, label),
        None,
    )
    .await
}

/// [`finish`], for a run that stopped at a limit (`incomplete`, with the reason) when `stopped`.
async fn finish_as(
    state: &AppState,
    principal: &Principal,
    (prepared, id, created): (&Prepared, &str, i64),
    (output, usage): (Vec<Value>, Value),
    (info, label): (&enclave_service::info::EnclaveInfo, String),
    stopped: Option<&str>,
) -> Result<Value, ApiError> {
    let mut enclave = serde_json::to_value(info).map_err(|_| Error::Internal)?;
    enclave["label"] = json!(label);
    let mut extra = json!({ "usage": usage, "enclave": enclave });
    if let Some(reason) = stopped {
        extra["incomplete_details"] = json!({ "reason": reason });
    }
    let out = body(
        &prepared.echo,
        id,
        created,
        if stopped.is_some() {
            "incomplete"
        } else {
            "completed"
        },
        &output,
        extra,
    );
    if prepared.store {
        let mut context = prepared.context.clone();
        context.extend(output.iter().cloned());
        stored::save(
            state,
            principal,
            id,
            &label,
            (&context, &prepared.input, &out),
        )
        .await?;
    }
    Ok(out)
}

async fn collect(
    state: &AppState,
    principal: &Principal,
    mut a: Answer,
    prepared: &Prepared,
    id: &str,
    created: i64,
) -> Result<(Value, String), ApiError> {
    let mut answered = Answered {
        text: String::new(),
        calls: ToolCalls::default(),
        usage: Value::Null,
    };
    while let Some(step) = a.next().await {
        match step {
            Step::Text(t) => answered.text.push_str(&t),
            Step::ToolCall(d) => answered.calls.push(d),
            Step::Done {
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                ..
            } => {
                answered.usage = usage(prompt_tokens, completion_tokens, cached_tokens);
            }
            Step::Failed(e) => return Err(e.into()),
        }
    }
    let label = a.label().unwrap_or_else(|| a.info.label.clone());
    let usage = answered.usage.clone();
    let output = output_items(answered, &label);
    let out = finish(
        state,
        principal,
        (prepared, id, created),
        (output, usage),
        (&a.info, label.clone()),
    )
    .await?;
    Ok((out, label))
}

/// `GET /v1/responses/{id}`: a stored response.
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "responses", params(("id" = String, Path, description = "A response id")), responses((status = 200, description = "The response", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let found = stored::load(&state, &principal, &id).await?;
    let label = state.policy.scheme.banner(&found.label);
    let mut response = Json(found.body).into_response();
    response
        .headers_mut()
        .insert(LABEL_HEADER, header_value(&label));
    Ok(response)
}

/// `DELETE /v1/responses/{id}`.
#[utoipa::path(delete, path = "/v1/responses/{id}", tag = "responses", params(("id" = String, Path, description = "A response id")), responses((status = 200, description = "`{id, object: response, deleted: true}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    stored::delete(&state, &principal, &id).await?;
    Ok(Json(
        json!({ "id": id, "object": "response", "deleted": true }),
    ))
}

/// `GET /v1/responses/{id}/input_items`: the items that request sent, newest first as OpenAI
/// lists them.
#[utoipa::path(get, path = "/v1/responses/{id}/input_items", tag = "responses", params(("id" = String, Path, description = "A response id")), responses((status = 200, description = "`{object: list, data: [item], first_id, last_id, has_more}`", body = Object), (status = "default", description = "An error: OpenAI's error object with a stable `code`", body = crate::error::ErrorBody)))]
pub async fn input_items(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = stored::load(&state, &principal, &id).await?;
    let mut data: Vec<Value> = found
        .input
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            if item.get("id").is_none() {
                item["id"] = json!(format!("{id}_in{i}"));
            }
            item
        })
        .collect();
    data.reverse();
    let first = data.first().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    Ok(Json(json!({
        "object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false,
    })))
}
