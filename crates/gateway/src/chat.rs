//! `POST /v1/chat/completions`, streamed and not, from the embedded engine or an upstream.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use enclave_engine::{Event, ToolCallDelta};
use enclave_label::Label;
use enclave_policy::{Action, Redactions};
use serde_json::Value;
use tokio::sync::mpsc::unbounded_channel;

use crate::AppState;
use crate::audit::{CallNote, Outcome};
use crate::auth::Principal;
use crate::conversation::Conversation;
use crate::dispatch::{self, UpstreamClock};
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::mac::{self, EnclaveInfo, LABEL_HEADER};
use crate::openai::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Delta, FunctionDeltaOut, FunctionOut, ToolCallDeltaOut, ToolCallOut, Usage,
};
use crate::quota::Ticket;
use crate::upstream::EventStream;
use crate::withhold::{self, Verdict};


/// Names the build in `system_fingerprint`, so a client can tell answers of different builds apart.
const FINGERPRINT: &str = concat!("enclave-", env!("CARGO_PKG_VERSION"));

pub async fn completions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    clock: Option<Extension<UpstreamClock>>,
    headers: HeaderMap,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Response {
    let mut note = CallNote::for_model(&req.model);
    let clock = clock.map(|c| c.0).unwrap_or_default();
    let result = serve(state, principal, headers, req, &mut note, &clock).await;
    note.attach(result)
}

/// A chat call under way, whichever surface it came in on: admitted by the reference monitor,
/// reserved against quotas, answered by some deployment. Read it with [`Answer::next`], which
/// meters, settles and notes the end for the audit record however the answer ends.
pub struct Answer {
    events: EventStream,
    /// What inspecting the answer decided: its label, and whether it was withheld.
    verdict: Verdict,
    pub info: EnclaveInfo,
    pub header: HeaderValue,
    /// Settled when the answer is done; dropped unsettled (charging the reservation) when it
    /// fails part-way.
    ticket: Option<Ticket>,
    pub started: Instant,
    model: String,
    outcome: Outcome,
    policy: std::sync::Arc<crate::policy::Policy>,
    ended: bool,
}

/// One step of an answer, as a surface shows it.
#[derive(Debug)]
pub enum Step {
    Text(String),
    ToolCall(ToolCallDelta),
    Done {
        reason: enclave_engine::FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
        cached_tokens: u32,
    },
    /// The answer ended without being done: withheld (403 `label_exceeds_clearance`), failed
    /// part-way, or its backend went away. Nothing follows.
    Failed(ApiError),
}

impl Answer {
    /// The next step; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<Step> {
        if self.ended {
            return None;
        }
        let step = match self.events.recv().await {
            Some(Event::Text(t)) => return Some(Step::Text(t)),
            Some(Event::ToolCall(d)) => return Some(Step::ToolCall(d)),
            Some(Event::Done {
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            }) => {
                crate::metrics::tokens(&self.model, prompt_tokens, completion_tokens);
                if let Some(ticket) = self.ticket.take() {
                    ticket.settle(prompt_tokens, completion_tokens).await;
                }
                self.outcome
                    .tokens(prompt_tokens.into(), completion_tokens.into());
                Step::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                }
            }
            Some(Event::Error(msg)) => {
                let error = match self.verdict.withheld() {
                    Some(why) => {
                        tracing::warn!(reason = %why, "answer withheld");
                        ApiError::LabelExceedsClearance(why)
                    }
                    None => {
                        tracing::error!(error = %msg, "generation failed part-way");
                        ApiError::UpstreamFailed(format!("the answer failed part-way: {msg}"))
                    }
                };
                self.outcome.fail(&error);
                Step::Failed(error)
            }
            None => {
                let error = ApiError::EngineUnavailable;
                self.outcome.fail(&error);
                Step::Failed(error)
            }
        };
        self.ended = true;
        // The label the answer reached, served or withheld.
        if let Some(label) = self.verdict.label() {
            self.outcome.label(self.policy.scheme.banner(&label));
        }
        Some(step)
    }

    /// The answer's label as inspecting its text found it so far, as a banner.
    pub fn label(&self) -> Option<String> {
        self.verdict
            .label()
            .map(|l| self.policy.scheme.banner(&l))
    }
}

/// The steps every chat surface shares: admit (label, clearance, authorize, route, redact),
/// reserve quota, dispatch to the deployments in order, restore redacted data in the answer.
#[allow(clippy::too_many_arguments, reason = "each is one input of the call")]
pub async fn answer(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    metadata: Option<&Value>,
    model: &str,
    mut conversation: Conversation,
    floor: Option<&Label>,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Answer, ApiError> {
    let mut texts = conversation.take_texts();
    let mut admitted = match mac::admit(
        &state.policy,
        principal,
        Action::Chat,
        model,
        headers,
        metadata,
        floor,
        &mut texts,
    ) {
        Ok(a) => a,
        Err(denied) => {
            note.decision = Some(denied.decision);
            return Err(denied.error);
        }
    };
    note.decision = Some(admitted.decision.clone());
    let redacted = admitted.redacted.as_ref().map(|(t, _)| {
        let mut c = conversation.clone();
        c.put_texts(t.clone());
        c
    });
    conversation.put_texts(texts);
    let worst_case = conversation.estimated_prompt_tokens()
        + u64::from(conversation.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS));
    let ticket = state
        .quotas
        .reserve(&state.policy, principal, model, worst_case)
        .await?;
    let started = Instant::now();
    // The prompt cache is the tenant's, per label: a prefix computed for a request at one label
    // is reused only by requests of the same tenant at the same label, so its presence (which
    // shows in time to first token) tells a lower-cleared user nothing about higher requests.
    let cache = format!(
        "{}\u{1f}{}",
        principal.tenant_id,
        state.policy.scheme.banner(&admitted.label)
    );
    let work = dispatch::Work::Chat {
        plain: &conversation,
        redacted: redacted.as_ref(),
        cache: &cache,
    };
    let dispatched =
        dispatch::dispatch(state, &admitted.routes, &work, &mut note.attempts, clock).await;
    let (events, index) = match dispatched {
        Ok((dispatch::Output::Events(events), index)) => (events, index),
        Ok(_) => {
            ticket.release().await;
            return Err(ApiError::Internal);
        }
        Err(e) => {
            ticket.release().await;
            return Err(e);
        }
    };
    admitted.serve(index);
    note.decision = Some(admitted.decision.clone());
    let events = match admitted.redactions_for(index) {
        Some(r) => restoring(events, r.clone()),
        None => events,
    };
    // The answer is inspected like the request: what the model writes may raise its label.
    let (events, verdict) = withhold::inspecting(
        events,
        std::sync::Arc::clone(&state.policy),
        admitted.clearance.clone(),
        admitted.label.clone(),
    );
    tracing::debug!(tenant = %principal.tenant_name, key = %principal.key_id, deployment = %admitted.info.deployment, "chat answer started");
    Ok(Answer {
        events,
        verdict,
        header: admitted.header(),
        info: admitted.info,
        ticket: Some(ticket),
        started,
        model: model.to_string(),
        outcome: note.outcome.clone(),
        policy: std::sync::Arc::clone(&state.policy),
        ended: false,
    })
}

/// Tokens reserved for an answer whose request set no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

async fn serve(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    mut req: ChatCompletionRequest,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Response, ApiError> {
    let model = req.model.clone();
    let metadata = req.metadata.take();
    let valid = req.validate()?;
    let stream_it = valid.conversation.stream;
    let include_usage = valid.include_usage;
    let mut conversation = valid.conversation;
    let retrieved = crate::kb::augment(
        &state,
        &principal,
        &headers,
        metadata.as_ref(),
        &mut conversation,
    )
    .await?;
    let mut a = answer(
        &state,
        &principal,
        &headers,
        metadata.as_ref(),
        &model,
        conversation,
        retrieved.as_ref().and_then(|r| r.floor.as_ref()),
        note,
        clock,
    )
    .await?;
    if let Some(r) = retrieved {
        a.info.citations = r.citations;
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = enclave_store::now();
    let mut header = a.header.clone();
    let mut response = if stream_it {
        stream(a, id, model, created, include_usage).into_response()
    } else {
        let mut completion = collect(a, id, model, created).await?;
        if let Some(info) = completion.enclave.as_mut() {
            // A marking in the answer raised its label (within the caller's clearance).
            if let Some(banner) = note.outcome.get().answer_label {
                header = mac::header_value(&banner);
                info.label = banner;
            }
            if let Some(choice) = completion.choices.first() {
                let text = choice.message.content.as_deref().unwrap_or_default();
                crate::kb::mark_cited(&mut info.citations, text);
            }
        }
        Json(completion).into_response()
    };
    response.headers_mut().insert(LABEL_HEADER, header);
    Ok(response)
}

/// Puts redacted personal data back into the answer as it streams, holding back only text that
/// may still be the start of a placeholder.
fn restoring(mut rx: EventStream, redactions: Redactions) -> EventStream {
    let (tx, out) = unbounded_channel();
    tokio::spawn(async move {
        let mut restorer = redactions.restorer();
        // Each tool call's arguments stream on their own, so each gets its own restorer.
        let mut calls: std::collections::BTreeMap<u32, enclave_policy::Restorer<'_>> =
            Default::default();
        loop {
            let event = tokio::select! {
                // The client left: stop now, which drops `rx` and cancels the backend.
                () = tx.closed() => return,
                e = rx.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            let mut out = Vec::with_capacity(1);
            match event {
                Event::Text(t) => {
                    let text = restorer.push(&t);
                    if !text.is_empty() {
                        out.push(Event::Text(text));
                    }
                }
                Event::ToolCall(mut call) => {
                    let r = calls
                        .entry(call.index)
                        .or_insert_with(|| redactions.restorer());
                    call.arguments = r.push(&call.arguments);
                    out.push(Event::ToolCall(call));
                }
                done @ Event::Done { .. } => {
                    let rest = restorer.finish();
                    if !rest.is_empty() {
                        out.push(Event::Text(rest));
                    }
                    for (index, r) in &mut calls {
                        let rest = r.finish();
                        if !rest.is_empty() {
                            out.push(Event::ToolCall(ToolCallDelta {
                                index: *index,
                                arguments: rest,
                                ..ToolCallDelta::default()
                            }));
                        }
                    }
                    out.push(done);
                }
                other => out.push(other),
            }
            for e in out {
                if tx.send(e).is_err() {
                    return;
                }
            }
        }
    });
    EventStream::new(out)
}

/// Tool calls assembled from their streamed pieces.
#[derive(Default)]
pub struct ToolCalls(Vec<ToolCallOut>);

impl ToolCalls {
    pub fn push(&mut self, d: ToolCallDelta) {
        let i = d.index as usize;
        while self.0.len() <= i {
            self.0.push(ToolCallOut {
                id: String::new(),
                kind: "function",
                function: FunctionOut {
                    name: String::new(),
                    arguments: String::new(),
                },
            });
        }
        let call = &mut self.0[i];
        if let Some(id) = d.id {
            call.id = id;
        }
        if let Some(name) = d.name {
            call.function.name = name;
        }
        call.function.arguments.push_str(&d.arguments);
    }

    pub fn into_inner(self) -> Vec<ToolCallOut> {
        self.0
    }
}

async fn collect(
    mut a: Answer,
    id: String,
    model: String,
    created: i64,
) -> Result<ChatCompletion, ApiError> {
    let mut content = String::new();
    let mut calls = ToolCalls::default();
    while let Some(step) = a.next().await {
        match step {
            Step::Text(t) => content.push_str(&t),
            Step::ToolCall(d) => calls.push(d),
            Step::Done {
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => {
                let tool_calls = calls.into_inner();
                return Ok(ChatCompletion {
                    id,
                    object: "chat.completion",
                    created,
                    model,
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            role: "assistant",
                            content: (!content.is_empty() || tool_calls.is_empty())
                                .then_some(content),
                            refusal: None,
                            tool_calls,
                        },
                        logprobs: None,
                        finish_reason: reason.as_str(),
                    }],
                    usage: Usage::new(prompt_tokens, completion_tokens).cached(cached_tokens),
                    system_fingerprint: FINGERPRINT,
                    enclave: Some(a.info),
                });
            }
            Step::Failed(error) => return Err(error),
        }
    }
    Err(ApiError::EngineUnavailable)
}

fn chunk_event(chunk: &ChatCompletionChunk<'_>) -> SseEvent {
    match serde_json::to_string(chunk) {
        Ok(json) => SseEvent::default().data(json),
        Err(_) => error_event(&ApiError::Internal),
    }
}

fn error_event(err: &ApiError) -> SseEvent {
    let json = serde_json::to_string(&err.body()).unwrap_or_else(|_| r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}"#.to_string());
    SseEvent::default().data(json)
}

/// The SSE stream the SDKs expect: a first chunk with the role, content chunks with one `id`, a
/// last chunk with `finish_reason`, a usage chunk with empty `choices` when asked for, then
/// `[DONE]`. Dropping the stream (client gone) drops the receiver, which frees the sequence.
fn stream(
    mut a: Answer,
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let usage_field = include_usage.then_some(None);
    let events = async_stream::stream! {
        let chunk = |delta: Delta, finish: Option<&'static str>| ChatCompletionChunk {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model: &model,
            system_fingerprint: FINGERPRINT,
            choices: vec![ChunkChoice { index: 0, delta, logprobs: None, finish_reason: finish }],
            usage: usage_field,
            enclave: None,
        };
        let mut opening = chunk(Delta { role: Some("assistant"), content: Some(String::new()), tool_calls: None }, None);
        opening.enclave = Some(&a.info);
        yield Ok(chunk_event(&opening));
        let mut first = true;
        while let Some(step) = a.next().await {
            match step {
                Step::Text(t) => {
                    if first {
                        metrics::histogram!("enclave_time_to_first_token_seconds").record(a.started.elapsed().as_secs_f64());
                        first = false;
                    }
                    yield Ok(chunk_event(&chunk(Delta { content: Some(t), ..Delta::default() }, None)));
                }
                Step::ToolCall(d) => {
                    let call = ToolCallDeltaOut {
                        index: d.index,
                        kind: d.id.is_some().then_some("function"),
                        id: d.id,
                        function: FunctionDeltaOut { name: d.name, arguments: d.arguments },
                    };
                    yield Ok(chunk_event(&chunk(Delta { tool_calls: Some(vec![call]), ..Delta::default() }, None)));
                }
                Step::Done { reason, prompt_tokens, completion_tokens, cached_tokens } => {
                    // The last chunk names the answer's label, which a marking in it may have
                    // raised since the header went out.
                    let mut last_info = a.info.clone();
                    if let Some(banner) = a.label() {
                        last_info.label = banner;
                    }
                    let mut last = chunk(Delta::default(), Some(reason.as_str()));
                    last.enclave = Some(&last_info);
                    yield Ok(chunk_event(&last));
                    if include_usage {
                        let last = ChatCompletionChunk {
                            id: &id,
                            object: "chat.completion.chunk",
                            created,
                            model: &model,
                            system_fingerprint: FINGERPRINT,
                            choices: vec![],
                            usage: Some(Some(Usage::new(prompt_tokens, completion_tokens).cached(cached_tokens))),
                            enclave: None,
                        };
                        yield Ok(chunk_event(&last));
                    }
                    yield Ok(SseEvent::default().data("[DONE]"));
                    return;
                }
                Step::Failed(error) => {
                    yield Ok(error_event(&error));
                    return;
                }
            }
        }
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}
