//! A chat call from admission to its last event, whichever caller made it: admit (label,
//! clearance, authorize, route, redact), reserve quota, dispatch to the deployments in order,
//! restore redacted data in the answer, inspect the answer; then [`Answer::next`] meters,
//! settles the quota ticket and notes the end for the audit record however the answer ends.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use enclave_engine::{Event, ToolCallDelta};
use enclave_label::Label;
use enclave_policy::{Redactions, Restorer};

use crate::Service;
use crate::conversation::Conversation;
use crate::dispatch::{self, UpstreamClock};
use crate::error::Error;
use crate::history::{self, Keeper};
use crate::info::EnclaveInfo;
use crate::monitor::{self, Declared};
use crate::note::{CallNote, Outcome};
use crate::policy::{ModelKind, Policy};
use crate::principal::Principal;
use crate::quota::Ticket;
use crate::upstream::EventStream;
use crate::withhold::Inspection;

/// A chat call under way, whichever surface it came in on: admitted by the reference monitor,
/// reserved against quotas, answered by some deployment. Read it with [`Answer::next`], which
/// meters, settles and notes the end for the audit record however the answer ends.
pub struct Answer {
    /// The backend's events. Dropping the answer drops them, which stops the generation.
    events: EventStream,
    /// Puts redacted personal data back, when the serving route was sent redacted text.
    restoration: Option<Restoration>,
    /// Reads the answer as it arrives: its label, and whether it was withheld.
    inspection: Inspection,
    /// Events restored and inspected, ready for the caller. Restoring and inspecting run here,
    /// in the caller's task, rather than in relay tasks of their own: one hop per event.
    ready: VecDeque<Event>,
    /// Scratch for what restoring one event yields.
    restored: VecDeque<Event>,
    pub info: EnclaveInfo,
    /// Settled when the answer is done; dropped unsettled (charging the reservation) when it
    /// fails part-way.
    ticket: Option<Ticket>,
    pub started: Instant,
    model: String,
    outcome: Outcome,
    policy: Arc<Policy>,
    /// The request's label, and its banner.
    request: (Label, String),
    ended: bool,
    /// The kept conversation this answer continues, what was asked and what is answered.
    keeping: Option<Keeping>,
}

struct Keeping {
    keeper: Keeper,
    asked: String,
    answered: String,
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
        let event = loop {
            if let Some(e) = self.ready.pop_front() {
                break Some(e);
            }
            match self.events.recv().await {
                Some(e) => self.relay(e),
                None => break None,
            }
        };
        let step = match event {
            Some(Event::Text(t)) => {
                if let Some(k) = &mut self.keeping {
                    k.answered.push_str(&t);
                }
                return Some(Step::Text(t));
            }
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
                self.keep().await;
                Step::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                }
            }
            Some(Event::Error(msg)) => {
                let error = match self.inspection.withheld() {
                    Some(why) => {
                        tracing::warn!(reason = %why, "answer withheld");
                        Error::LabelExceedsClearance(why.to_string())
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
        self.outcome.answer_findings(self.inspection.findings());
        // The label the answer reached, served or withheld.
        if let Some(label) = self.inspection.label() {
            let banner = self.banner_of(label);
            self.outcome.label(banner);
        }
        Some(step)
    }

    /// Keeps this answer in the conversation it continues (see [`Answer::keep_in`]).
    pub fn keep_in(&mut self, keeper: Keeper, asked: String) {
        self.keeping = Some(Keeping {
            keeper,
            asked,
            answered: String::new(),
        });
    }

    /// Adds the question and this (done) answer to the kept conversation, at the labels the
    /// monitor and the answer's inspection found. The answer has reached the caller already; a
    /// failure here is logged and counted, and the audit log still holds the call.
    async fn keep(&mut self) {
        let Some(k) = self.keeping.take() else {
            return;
        };
        let mut citations = self.info.citations.clone();
        crate::info::mark_cited(&mut citations, &k.answered);
        let answered_at = self.label().unwrap_or_else(|| self.request.1.clone());
        let turns = [
            history::Turn {
                role: "user",
                content: k.asked,
                label: self.request.1.clone(),
                citations: Vec::new(),
            },
            history::Turn {
                role: "assistant",
                content: k.answered,
                label: answered_at,
                citations,
            },
        ];
        if k.keeper.keep(&turns).await.is_err() {
            metrics::counter!("enclave_conversation_keep_failures_total").increment(1);
        }
    }

    /// `label` as a banner: the request's, written once at admission, unless the answer raised it.
    fn banner_of(&self, label: &Label) -> String {
        if *label == self.request.0 {
            self.request.1.clone()
        } else {
            self.policy.scheme.banner(label)
        }
    }

    /// Restores and inspects one event from the backend, queueing what may go out now.
    fn relay(&mut self, event: Event) {
        match &mut self.restoration {
            None => self.inspection.push(event, &mut self.ready),
            Some(r) => {
                r.push(event, &mut self.restored);
                for e in self.restored.drain(..) {
                    self.inspection.push(e, &mut self.ready);
                }
            }
        }
    }

    /// The answer's label as inspecting its text found it so far, as a banner.
    pub fn label(&self) -> Option<String> {
        self.inspection.label().map(|l| self.banner_of(l))
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
    // A fine-tuned model carries the label of what it learned: it is the floor of every call's
    // label, and the model does not exist for a caller who may not read it.
    let learned = crate::fine_tuning::floor(state, principal, model)?;
    let joined = match (floor, &learned) {
        (Some(f), Some(l)) => Some(f.join(l)),
        (f, l) => f.cloned().or_else(|| l.clone()),
    };
    let mut texts = conversation.take_texts();
    let images: Vec<String> = conversation.images().map(|i| i.sha256.clone()).collect();
    note.images.clone_from(&images);
    let mut admitted = monitor::noted(
        monitor::admit(
            &state.policy,
            principal,
            ModelKind::Chat,
            model,
            declared,
            joined.as_ref(),
            &mut texts,
            !images.is_empty(),
        ),
        &mut note.decision,
    )?;
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
    let cache = format!("{}\u{1f}{}", principal.tenant_id, admitted.banner());
    let work = dispatch::Work::Chat {
        model,
        background: note.background,
        plain: &conversation,
        redacted: redacted.as_ref(),
        cache: &cache,
    };
    let dispatched =
        dispatch::chat(state, &admitted.routes, &work, &mut note.attempts, clock).await;
    let ((events, index), ticket) = ticket.unless_refused(dispatched).await?;
    admitted.serve(index);
    note.decision = Some(admitted.decision.clone());
    let restoration = admitted
        .redactions_for(index)
        .map(|r| Restoration::new(Arc::new(r.clone())));
    // The answer is inspected like the request: what the model writes may raise its label.
    let inspection = Inspection::new(
        Arc::clone(&state.policy),
        admitted.clearance.clone(),
        admitted.label.clone(),
    );
    tracing::debug!(tenant = %principal.tenant_name, key = %principal.key_id, deployment = %admitted.info.deployment, "chat answer started");
    let request = (admitted.label.clone(), admitted.banner().to_string());
    Ok(Answer {
        events,
        restoration,
        inspection,
        ready: VecDeque::new(),
        restored: VecDeque::new(),
        info: admitted.info,
        ticket: Some(ticket),
        started,
        model: model.to_string(),
        outcome: note.outcome.clone(),
        policy: Arc::clone(&state.policy),
        request,
        ended: false,
        keeping: None,
    })
}

/// Tokens reserved for an answer whose request set no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Puts redacted personal data back into an answer as it arrives, holding back only text that
/// may still be the start of a placeholder.
struct Restoration {
    redactions: Arc<Redactions>,
    text: Restorer<Arc<Redactions>>,
    /// Each tool call's arguments stream on their own, so each gets its own restorer.
    calls: BTreeMap<u32, Restorer<Arc<Redactions>>>,
}

impl Restoration {
    fn new(redactions: Arc<Redactions>) -> Self {
        Self {
            text: Restorer::new(Arc::clone(&redactions)),
            redactions,
            calls: BTreeMap::new(),
        }
    }

    fn push(&mut self, event: Event, out: &mut VecDeque<Event>) {
        match event {
            Event::Text(t) => {
                let text = self.text.push(&t);
                if !text.is_empty() {
                    out.push_back(Event::Text(text));
                }
            }
            Event::ToolCall(mut call) => {
                let r = self
                    .calls
                    .entry(call.index)
                    .or_insert_with(|| Restorer::new(Arc::clone(&self.redactions)));
                call.arguments = r.push(&call.arguments);
                out.push_back(Event::ToolCall(call));
            }
            done @ Event::Done { .. } => {
                let rest = self.text.finish();
                if !rest.is_empty() {
                    out.push_back(Event::Text(rest));
                }
                for (index, r) in &mut self.calls {
                    let rest = r.finish();
                    if !rest.is_empty() {
                        out.push_back(Event::ToolCall(ToolCallDelta {
                            index: *index,
                            arguments: rest,
                            ..ToolCallDelta::default()
                        }));
                    }
                }
                out.push_back(done);
            }
            other => out.push_back(other),
        }
    }
}
