//! A streamed response: the Responses API's events, in its order — `response.created`,
//! `response.in_progress`, for each output item `response.output_item.added`, its deltas
//! (`response.output_text.delta` inside a content part, or
//! `response.function_call_arguments.delta`), its `.done` events and
//! `response.output_item.done`, then `response.completed` once the response is kept — or an
//! `error` event. Each event carries `type` and a `sequence_number`.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use enclave_service::answer::{Answer, Step};
use serde_json::{Value, json};

use super::{Prepared, body, finish, items, usage};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// One output item being streamed.
struct Open {
    index: usize,
    item: Value,
}

pub(super) fn events(
    state: AppState,
    principal: Principal,
    mut a: Answer,
    prepared: Prepared,
    id: String,
    created: i64,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let events = async_stream::stream! {
        let mut seq = Sequence::default();
        for opened in seq.opening(&prepared, &id, created) {
            yield opened;
        }
        let mut event = |kind: &str, data: Value| seq.event(kind, data);
        let mut output: Vec<Open> = Vec::new();
        let mut message: Option<usize> = None;
        let mut text = String::new();
        // The model's call index → the position of its item in `output`.
        let mut calls: Vec<(u32, usize)> = Vec::new();
        while let Some(step) = a.next().await {
            match step {
                Step::Text(t) => {
                    let at = match message {
                        Some(at) => at,
                        None => {
                            let item_id = items::item_id("msg");
                            let item = items::message(&item_id, "", "in_progress");
                            let index = output.len();
                            yield event("response.output_item.added", json!({ "output_index": index, "item": item }));
                            yield event("response.content_part.added", json!({
                                "item_id": item_id, "output_index": index, "content_index": 0,
                                "part": {"type": "output_text", "text": "", "annotations": []},
                            }));
                            output.push(Open { index, item });
                            message = Some(index);
                            index
                        }
                    };
                    text.push_str(&t);
                    let item_id = output[at].item["id"].clone();
                    yield event("response.output_text.delta", json!({
                        "item_id": item_id, "output_index": at, "content_index": 0, "delta": t,
                    }));
                }
                Step::ToolCall(d) => {
                    let at = match calls.iter().find(|(i, _)| *i == d.index) {
                        Some((_, at)) => *at,
                        None => {
                            let call_id = d.id.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| items::item_id("call"));
                            let item = items::function_call(&items::item_id("fc"), &call_id, d.name.as_deref().unwrap_or_default(), "", "in_progress");
                            let index = output.len();
                            yield event("response.output_item.added", json!({ "output_index": index, "item": item }));
                            output.push(Open { index, item });
                            calls.push((d.index, index));
                            index
                        }
                    };
                    let open = &mut output[at].item;
                    if let Some(name) = d.name.as_deref().filter(|n| !n.is_empty()) {
                        open["name"] = json!(name);
                    }
                    if !d.arguments.is_empty() {
                        let args = format!("{}{}", open["arguments"].as_str().unwrap_or_default(), d.arguments);
                        open["arguments"] = json!(args);
                        let item_id = open["id"].clone();
                        yield event("response.function_call_arguments.delta", json!({
                            "item_id": item_id, "output_index": at, "delta": d.arguments,
                        }));
                    }
                }
                Step::Done { prompt_tokens, completion_tokens, cached_tokens, .. } => {
                    let label = a.label().unwrap_or_else(|| a.info.label.clone());
                    let mut done: Vec<Value> = Vec::with_capacity(output.len());
                    for open in &output {
                        let mut item = open.item.clone();
                        let item_id = item["id"].clone();
                        if Some(open.index) == message {
                            item = items::message(item_id.as_str().unwrap_or_default(), &text, "completed");
                            yield event("response.output_text.done", json!({
                                "item_id": item_id, "output_index": open.index, "content_index": 0, "text": text,
                            }));
                            yield event("response.content_part.done", json!({
                                "item_id": item_id, "output_index": open.index, "content_index": 0,
                                "part": {"type": "output_text", "text": text, "annotations": []},
                            }));
                        } else {
                            item["status"] = json!("completed");
                            yield event("response.function_call_arguments.done", json!({
                                "item_id": item_id, "output_index": open.index, "arguments": item["arguments"],
                            }));
                        }
                        item["enclave"] = json!({ "label": label });
                        yield event("response.output_item.done", json!({ "output_index": open.index, "item": item }));
                        done.push(item);
                    }
                    let used = usage(prompt_tokens, completion_tokens, cached_tokens);
                    match finish(&state, &principal, (&prepared, &id, created), (done, used), (&a.info, label)).await {
                        Ok(response) => yield event("response.completed", json!({ "response": response })),
                        Err(e) => yield error(&mut event, &e),
                    }
                    return;
                }
                Step::Failed(e) => {
                    yield error(&mut event, &ApiError(e));
                    return;
                }
            }
        }
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Numbers one stream's events: each carries its `type` and its `sequence_number`.
#[derive(Default)]
pub(super) struct Sequence(u64);

impl Sequence {
    pub(super) fn event(&mut self, kind: &str, mut data: Value) -> Result<SseEvent, Infallible> {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.0);
        self.0 += 1;
        Ok(SseEvent::default().event(kind).data(data.to_string()))
    }

    /// `response.created` and `response.in_progress`, with the response not yet answered.
    pub(super) fn opening(
        &mut self,
        prepared: &Prepared,
        id: &str,
        created: i64,
    ) -> [Result<SseEvent, Infallible>; 2] {
        let pending = body(
            &prepared.echo,
            id,
            created,
            "in_progress",
            &[],
            json!({"usage": null}),
        );
        [
            self.event("response.created", json!({ "response": pending })),
            self.event("response.in_progress", json!({ "response": pending })),
        ]
    }
}

/// The `error` event: the API's error code and sentence.
pub(super) fn error(
    event: &mut impl FnMut(&str, Value) -> Result<SseEvent, Infallible>,
    e: &ApiError,
) -> Result<SseEvent, Infallible> {
    let body = e.body();
    let error = serde_json::to_value(&body).unwrap_or(Value::Null);
    event(
        "error",
        json!({
            "code": error["error"]["code"],
            "message": error["error"]["message"],
            "param": error["error"]["param"],
        }),
    )
}
