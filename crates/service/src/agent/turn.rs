//! One model turn of a run: admitted through the service core at no less than the context
//! label, its text relayed as it comes, its tool calls assembled, the label raised by what it
//! answered, and its own audit record.

use std::time::Instant;

use super::{Agent, Progress, record};
use crate::answer::{self, Step};
use crate::conversation::{Conversation, ToolCall};
use crate::dispatch::UpstreamClock;
use crate::error::Error;
use crate::info::EnclaveInfo;
use crate::monitor::Declared;
use crate::note::CallNote;

/// One model turn's result.
pub(super) struct TurnResult {
    pub(super) text: String,
    pub(super) calls: Vec<ToolCall>,
    pub(super) info: EnclaveInfo,
    pub(super) prompt_tokens: u32,
    pub(super) completion_tokens: u32,
    pub(super) cached_tokens: u32,
}

/// Asks the model once, at no less than the context label; raises the label by what it
/// answered. `None` when the run's time ran out.
pub(super) async fn model_turn(
    agent: &mut Agent<'_>,
    model: &str,
    declared: Option<&Declared>,
    conversation: &Conversation,
    clock: &UpstreamClock,
    note: &mut CallNote,
) -> Result<Option<TurnResult>, Error> {
    let started = Instant::now();
    let before = agent.banner();
    let mut turn_note = CallNote::for_model(model);
    let deadline = tokio::time::Instant::from_std(agent.deadline);
    let admitted = tokio::time::timeout_at(
        deadline,
        answer::chat(
            agent.state,
            agent.principal,
            declared,
            model,
            conversation.clone(),
            Some(&agent.label),
            &mut turn_note,
            clock,
        ),
    )
    .await;
    let mut a = match admitted {
        Err(_) => return Ok(None),
        Ok(Err(e)) => {
            let failed = finish_turn(agent, &turn_note, before, None, Some(&e), started).await;
            *note = turn_note;
            failed?;
            return Err(e);
        }
        Ok(Ok(a)) => a,
    };
    let mut out = TurnResult {
        text: String::new(),
        calls: Vec::new(),
        info: a.info.clone(),
        prompt_tokens: 0,
        completion_tokens: 0,
        cached_tokens: 0,
    };
    let mut calls: Vec<(u32, ToolCall)> = Vec::new();
    loop {
        let step = match tokio::time::timeout_at(deadline, a.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => break,
            Ok(Some(step)) => step,
        };
        match step {
            Step::Text(t) => {
                if let Some(p) = agent.progress {
                    let _ = p.send(Progress::Text(t.clone()));
                }
                out.text.push_str(&t);
            }
            Step::ToolCall(d) => {
                let at = match calls.iter().position(|(i, _)| *i == d.index) {
                    Some(at) => at,
                    None => {
                        calls.push((
                            d.index,
                            ToolCall {
                                id: String::new(),
                                name: String::new(),
                                arguments: String::new(),
                            },
                        ));
                        calls.len() - 1
                    }
                };
                let c = &mut calls[at].1;
                if let Some(id) = d.id.filter(|i| !i.is_empty()) {
                    c.id = id;
                }
                if let Some(name) = d.name.filter(|n| !n.is_empty()) {
                    c.name = name;
                }
                c.arguments.push_str(&d.arguments);
            }
            Step::Done {
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                ..
            } => {
                out.prompt_tokens = prompt_tokens;
                out.completion_tokens = completion_tokens;
                out.cached_tokens = cached_tokens;
            }
            Step::Failed(e) => {
                let failed =
                    finish_turn(agent, &turn_note, before, a.label(), Some(&e), started).await;
                *note = turn_note;
                failed?;
                return Err(e);
            }
        }
    }
    // What the answer reached raises the context; it never falls.
    if let Some(reached) = a.label()
        && let Ok(l) = agent.state.policy.scheme.parse(&reached)
    {
        agent.label = agent.label.join(&l);
    }
    out.info = a.info.clone();
    out.calls = calls
        .into_iter()
        .map(|(_, mut c)| {
            if c.id.is_empty() {
                c.id = format!("call_{}", uuid::Uuid::new_v4().simple());
            }
            c
        })
        .collect();
    let after = Some(agent.banner());
    finish_turn(agent, &turn_note, before, after, None, started).await?;
    note.decision = turn_note.decision.clone();
    note.attempts.extend(turn_note.attempts.iter().cloned());
    Ok(Some(out))
}

async fn finish_turn(
    agent: &Agent<'_>,
    note: &CallNote,
    before: String,
    after: Option<String>,
    failed: Option<&Error>,
    started: Instant,
) -> Result<(), Error> {
    record::turn(
        agent.state,
        agent.principal,
        &agent.id,
        record::Turn {
            note,
            before,
            after,
            failed,
            latency_ms: record::since(started),
        },
    )
    .await
}
