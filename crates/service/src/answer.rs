//! A chat call from admission to its last event, whichever caller made it: admit (label,
//! clearance, authorize, route, redact), reserve quota, dispatch to the deployments in order,
//! restore redacted data in the answer, inspect the answer; then [`Answer::next`] meters,
//! settles the quota ticket and notes the end for the audit record however the answer ends.

use std::sync::Arc;
use std::time::Instant;

use enclave_engine::{Event, ToolCallDelta};
use enclave_label::Label;
use enclave_policy::Redactions;
use tokio::sync::mpsc::unbounded_channel;

use crate::Service;
use crate::conversation::Conversation;
use crate::dispatch::{self, UpstreamClock};
use crate::error::Error;
use crate::info::EnclaveInfo;
use crate::monitor::{self, Declared};
use crate::note::{CallNote, Outcome};
use crate::policy::{ModelKind, Policy};
use crate::principal::Principal;
use crate::quota::Ticket;
use crate::upstream::EventStream;
use crate::withhold::{self, Verdict};

/// A chat call under way, whichever surface it came in on: admitted by the reference monitor,
/// reserved against quotas, answered by some deployment. Read it with [`Answer::next`], which
/// meters, settles and notes the end for the audit record however the answer ends.
pub struct Answer {
    events: EventStream,
    /// What inspecting the answer decided: its label, and whether it was withheld.
    verdict: Verdict,
    pub info: EnclaveInfo,
    /// Settled when the answer is done; dropped unsettled (charging the reservation) when it
    /// fails part-way.
    ticket: Option<Ticket>,
    pub started: Instant,
    model: String,
    outcome: Outcome,
    policy: Arc<Policy>,
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
    Failed(Error),
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
                crate::telemetry::tokens(&self.model, prompt_tokens, completion_tokens);
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
                        Error::LabelExceedsClearance(why)
                    }
                    None => {
                        tracing::error!(error = %msg, "generation failed part-way");
                        Error::UpstreamFailed(format!("the answer failed part-way: {msg}"))
                    }
                };
                self.outcome.fail(&error);
                Step::Failed(error)
            }
            None => {
                let error = Error::EngineUnavailable;
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
        self.verdict.label().map(|l| self.policy.scheme.banner(&l))
    }
}

/// The steps every chat surface shares: admit (label, clearance, authorize, route, redact),
/// reserve quota, dispatch to the deployments in order, restore redacted data in the answer.
#[allow(clippy::too_many_arguments, reason = "each is one input of the call")]
pub async fn chat(
    state: &Service,
    principal: &Principal,
    declared: Option<&Declared>,
    model: &str,
    mut conversation: Conversation,
    floor: Option<&Label>,
    note: &mut CallNote,
    clock: &UpstreamClock,
) -> Result<Answer, Error> {
    let mut texts = conversation.take_texts();
    let mut admitted = match monitor::admit(
        &state.policy,
        principal,
        ModelKind::Chat,
        model,
        declared,
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
        dispatch::chat(state, &admitted.routes, &work, &mut note.attempts, clock).await;
    let (events, index) = match dispatched {
        Ok(served) => served,
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
        Arc::clone(&state.policy),
        admitted.clearance.clone(),
        admitted.label.clone(),
    );
    tracing::debug!(tenant = %principal.tenant_name, key = %principal.key_id, deployment = %admitted.info.deployment, "chat answer started");
    Ok(Answer {
        events,
        verdict,
        info: admitted.info,
        ticket: Some(ticket),
        started,
        model: model.to_string(),
        outcome: note.outcome.clone(),
        policy: Arc::clone(&state.policy),
        ended: false,
    })
}

/// Tokens reserved for an answer whose request set no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Puts redacted personal data back into the answer as it streams, holding back only text that
/// may still be the start of a placeholder.
pub fn restoring(mut rx: EventStream, redactions: Redactions) -> EventStream {
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
