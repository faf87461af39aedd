//! A response whose tools include MCP servers: an agent run (`enclave_service::agent`) in the
//! Responses API's shape. Whole, it is one response object with `mcp_list_tools`, `mcp_call`,
//! `mcp_approval_request`, `function_call` and `message` items; streamed, each item is sent as
//! it completes (`response.output_item.added`, the `response.mcp_call.*` and
//! `response.mcp_list_tools.*` events, `response.output_item.done`) and the model's text as
//! `response.output_text.delta` events while it is written.

use std::convert::Infallible;

use axum::Json;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use enclave_label::Label;
use enclave_service::agent::{self, Item, Progress, Ran, Run};
use enclave_service::dispatch::UpstreamClock;
use enclave_service::monitor::Declared;
use serde_json::{Value, json};

use super::stream::Sequence;
use super::{Prepared, finish_as, items, usage};
use crate::AppState;
use crate::audit::CallNote;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::labels::{LABEL_HEADER, header_value};

/// The label the run starts at, for the items before its first model turn: the declared label
/// (or the tenant's default) joined with the continued response's.
fn start_label(
    state: &AppState,
    principal: &Principal,
    declared: Option<&Declared>,
    floor: Option<&Label>,
) -> String {
    let policy = &state.policy;
    let mut label = declared
        .and_then(|d| policy.scheme.parse(&d.text).ok())
        .unwrap_or_else(|| policy.tenant(&principal.tenant_name).default_label.clone());
    if let Some(f) = floor {
        label = label.join(f);
    }
    policy.scheme.banner(&label)
}

/// Turns items into the API's shape as they come, each at the context label it was made at.
struct Shaper {
    label: String,
}

impl Shaper {
    fn item(&mut self, item: &Item) -> Value {
        match item {
            Item::Message { label, .. }
            | Item::Called { label, .. }
            | Item::Searched { label, .. } => self.label = label.clone(),
            _ => {}
        }
        items::agent_item(item, &self.label)
    }
}

pub(super) async fn serve(
    state: AppState,
    principal: Principal,
    (declared, model): (Option<Declared>, String),
    prepared: Prepared,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Response, ApiError> {
    let id = items::item_id("resp");
    let created = enclave_service::types::now();
    let shaper = Shaper {
        label: start_label(
            &state,
            &principal,
            declared.as_ref(),
            prepared.floor.as_ref(),
        ),
    };
    let run = Run {
        id: id.clone(),
        model,
        declared,
        conversation: prepared.conversation.clone(),
        floor: prepared.floor.clone(),
        offers: prepared.offers.clone(),
        search: prepared.search.clone(),
        decided: prepared.decided.clone(),
    };
    if prepared.conversation.stream {
        // The run's steps are recorded each on its own; the call's record notes the run.
        note.decision = Some(run_decision(&shaper.label));
        note.model = Some(run.model.clone());
        let outcome = note.outcome.clone();
        let label = shaper.label.clone();
        let mut response = events(
            state,
            principal,
            run,
            prepared,
            shaper,
            outcome,
            clock.clone(),
        )
        .into_response();
        response
            .headers_mut()
            .insert(LABEL_HEADER, header_value(&label));
        return Ok(response);
    }
    let ran = agent::run(&state, &principal, run, note, clock, None).await?;
    let mut shaper = shaper;
    let output: Vec<Value> = ran.items.iter().map(|i| shaper.item(i)).collect();
    let label = ran.label.clone();
    let out = finish_run(&state, &principal, (&prepared, &id, created), output, &ran).await?;
    let mut response = Json(out).into_response();
    response
        .headers_mut()
        .insert(LABEL_HEADER, header_value(&label));
    Ok(response)
}

/// The decision a streamed run's own record carries: admitted, at the label it starts at; each
/// model turn and tool call has its own record with its decision.
fn run_decision(label: &str) -> enclave_service::types::Decision {
    enclave_service::types::Decision {
        allowed: true,
        label: Some(label.to_string()),
        reason: "an agent run: each model turn and tool call is its own record".into(),
        ..Default::default()
    }
}

async fn finish_run(
    state: &AppState,
    principal: &Principal,
    at: (&Prepared, &str, i64),
    output: Vec<Value>,
    ran: &Ran,
) -> Result<Value, ApiError> {
    let used = usage(ran.prompt_tokens, ran.completion_tokens, ran.cached_tokens);
    finish_as(
        state,
        principal,
        at,
        (output, used),
        (&ran.info, ran.label.clone()),
        ran.stopped.map(agent::Stopped::as_str),
    )
    .await
}

/// Aborts the run when the stream is dropped (the client went away): its MCP call is
/// cancelled with it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn events(
    state: AppState,
    principal: Principal,
    run: Run,
    prepared: Prepared,
    mut shaper: Shaper,
    outcome: enclave_service::note::Outcome,
    clock: UpstreamClock,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let id = run.id.clone();
    let created = enclave_service::types::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = {
        let (state, principal) = (state.clone(), principal.clone());
        tokio::spawn(async move {
            let mut note = CallNote::for_model(&run.model);
            note.outcome = outcome;
            agent::run(&state, &principal, run, &mut note, &clock, Some(&tx)).await
        })
    };
    let events = async_stream::stream! {
        let guard = AbortOnDrop(task.abort_handle());
        let mut seq = Sequence::default();
        for opened in seq.opening(&prepared, &id, created) {
            yield opened;
        }
        let mut event = |kind: &str, data: Value| seq.event(kind, data);
        let mut done: Vec<Value> = Vec::new();
        // The message being written: its item id and text so far.
        let mut open: Option<(String, String)> = None;
        while let Some(progress) = rx.recv().await {
            let index = done.len();
            match progress {
                Progress::Text(t) => {
                    let item_id = match &mut open {
                        Some((item_id, text)) => {
                            text.push_str(&t);
                            item_id.clone()
                        }
                        None => {
                            let item_id = items::item_id("msg");
                            yield event("response.output_item.added", json!({
                                "output_index": index, "item": items::message(&item_id, "", "in_progress"),
                            }));
                            yield event("response.content_part.added", json!({
                                "item_id": item_id, "output_index": index, "content_index": 0,
                                "part": {"type": "output_text", "text": "", "annotations": []},
                            }));
                            open = Some((item_id.clone(), t.clone()));
                            item_id
                        }
                    };
                    yield event("response.output_text.delta", json!({
                        "item_id": item_id, "output_index": index, "content_index": 0, "delta": t,
                    }));
                }
                Progress::Item(item) => {
                    let mut shaped = shaper.item(&item);
                    if let Item::Message { text, .. } = &item {
                        let item_id = match open.take() {
                            Some((item_id, _)) => item_id,
                            None => {
                                // A message with no delta before it (cannot happen today): sent whole.
                                let item_id = items::item_id("msg");
                                yield event("response.output_item.added", json!({
                                    "output_index": index, "item": items::message(&item_id, "", "in_progress"),
                                }));
                                item_id
                            }
                        };
                        shaped["id"] = json!(item_id);
                        yield event("response.output_text.done", json!({
                            "item_id": item_id, "output_index": index, "content_index": 0, "text": text,
                        }));
                        yield event("response.content_part.done", json!({
                            "item_id": item_id, "output_index": index, "content_index": 0,
                            "part": {"type": "output_text", "text": text, "annotations": []},
                        }));
                    } else {
                        let mut added = shaped.clone();
                        if added["type"] == "mcp_call" {
                            added["status"] = json!("in_progress");
                            added["output"] = Value::Null;
                            added["error"] = Value::Null;
                        }
                        yield event("response.output_item.added", json!({ "output_index": index, "item": added }));
                        let item_id = shaped["id"].clone();
                        match shaped["type"].as_str() {
                            Some("mcp_list_tools") => {
                                yield event("response.mcp_list_tools.in_progress", json!({ "item_id": item_id, "output_index": index }));
                                yield event("response.mcp_list_tools.completed", json!({ "item_id": item_id, "output_index": index }));
                            }
                            Some("mcp_call") => {
                                yield event("response.mcp_call.in_progress", json!({ "item_id": item_id, "output_index": index }));
                                yield event("response.mcp_call_arguments.done", json!({
                                    "item_id": item_id, "output_index": index, "arguments": shaped["arguments"],
                                }));
                                let kind = if shaped["status"] == "failed" { "response.mcp_call.failed" } else { "response.mcp_call.completed" };
                                yield event(kind, json!({ "item_id": item_id, "output_index": index }));
                            }
                            Some("file_search_call") => {
                                yield event("response.file_search_call.in_progress", json!({ "item_id": item_id, "output_index": index }));
                                yield event("response.file_search_call.searching", json!({ "item_id": item_id, "output_index": index }));
                                yield event("response.file_search_call.completed", json!({ "item_id": item_id, "output_index": index }));
                            }
                            Some("function_call") => {
                                yield event("response.function_call_arguments.delta", json!({
                                    "item_id": item_id, "output_index": index, "delta": shaped["arguments"],
                                }));
                                yield event("response.function_call_arguments.done", json!({
                                    "item_id": item_id, "output_index": index, "arguments": shaped["arguments"],
                                }));
                            }
                            _ => {}
                        }
                    }
                    yield event("response.output_item.done", json!({ "output_index": index, "item": shaped }));
                    done.push(shaped);
                }
            }
        }
        let ran = match task.await {
            Ok(Ok(ran)) => ran,
            Ok(Err(e)) => {
                yield super::stream::error(&mut event, &ApiError(e));
                drop(guard);
                return;
            }
            Err(_) => {
                yield super::stream::error(&mut event, &ApiError(enclave_service::Error::Internal));
                drop(guard);
                return;
            }
        };
        match finish_run(&state, &principal, (&prepared, &id, created), done, &ran).await {
            Ok(response) => {
                let kind = if ran.stopped.is_some() { "response.incomplete" } else { "response.completed" };
                yield event(kind, json!({ "response": response }));
            }
            Err(e) => yield super::stream::error(&mut event, &e),
        }
        drop(guard);
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}
