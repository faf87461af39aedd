//! Answers are inspected like requests before they reach the caller. A marking the model writes
//! (a portion mark it quotes from a document, a tool result or an outside provider's answer)
//! raises the answer's label; an answer whose label exceeds the caller's clearance, or that
//! carries a control the scheme does not know, is withheld: 403 `label_exceeds_clearance`.
//!
//! Streamed text is released only once inspected. The last [`HOLD`] bytes stay back, since they
//! may still be the start of a marking that the next tokens complete; the rest goes out in
//! steps, so a stream stays smooth. Tool-call arguments are short and go out at the end, after
//! the whole answer was read.

use std::sync::{Arc, Mutex, PoisonError};

use enclave_engine::{Event, ToolCallDelta};
use enclave_label::Label;
use enclave_policy::label_request;
use tokio::sync::mpsc::unbounded_channel;

use crate::policy::Policy;
use crate::upstream::EventStream;

/// Streamed bytes held back until the text after them has been seen. A marking names its level
/// within its first few bytes (`(S`, `TOP SECRET`, `S//`), and what it governs follows it, so
/// the content after a marking is still held when the marking is read. 64 bytes keep the first
/// text about 20 tokens behind the model (160 bytes made a short answer arrive in one piece).
pub const HOLD: usize = 64;

/// Text is inspected and released in steps of at least this many bytes: each step reads the
/// whole answer so far, so a marking split across tokens is read whole.
const STEP: usize = 16;

/// What inspecting an answer decided, for the surface to read when the stream ends.
#[derive(Debug, Clone, Default)]
pub struct Verdict(Arc<Mutex<Decided>>);

#[derive(Debug, Default)]
struct Decided {
    /// The answer's label so far: the request's, joined with every marking in the answer.
    label: Option<Label>,
    /// Why the answer was withheld, if it was.
    withheld: Option<String>,
}

impl Verdict {
    /// The answer's label, once some of it was inspected.
    pub fn label(&self) -> Option<Label> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .label
            .clone()
    }

    /// Why the answer was withheld; `None` while it is not.
    pub fn withheld(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .withheld
            .clone()
    }

    fn set(&self, label: Label, withheld: Option<String>) {
        let mut d = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        d.label = Some(label);
        d.withheld = withheld;
    }
}

/// Passes `rx` on once inspected: the request was labelled `label`, the caller is cleared to
/// `clearance`. When the answer must be withheld, the stream ends with an [`Event::Error`] and
/// [`Verdict::withheld`] says why; dropping `rx` then stops the generation.
pub fn inspecting(
    mut rx: EventStream,
    policy: Arc<Policy>,
    clearance: Label,
    label: Label,
) -> (EventStream, Verdict) {
    let verdict = Verdict::default();
    let decided = verdict.clone();
    let (tx, out) = unbounded_channel();
    tokio::spawn(async move {
        let check = |text: &str| -> bool {
            let labelled = label_request(&policy.inspector, &label, [text]);
            let why = if let Some(control) = labelled.summary.unrecognized.first() {
                Some(format!(
                    "the answer was withheld: it carries a marking with `{control}`, which scheme {} does not know",
                    policy.scheme.name()
                ))
            } else {
                policy
                    .scheme
                    .explain_shortfall(&clearance, &labelled.label)
                    .map(|why| {
                        format!(
                            "the answer was withheld: it is labelled {} by a marking it contains, but the key's clearance is {}: {why}",
                            policy.scheme.banner(&labelled.label),
                            policy.scheme.banner(&clearance)
                        )
                    })
            };
            let ok = why.is_none();
            decided.set(labelled.label, why);
            ok
        };
        let mut text = String::new();
        let mut sent = 0;
        let mut calls: Vec<ToolCallDelta> = Vec::new();
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
                    text.push_str(&t);
                    if text.len() - sent >= HOLD + STEP {
                        if !check(&text) {
                            let _ = tx.send(Event::Error(decided.withheld().unwrap_or_default()));
                            return;
                        }
                        let cut = text.floor_char_boundary(text.len() - HOLD);
                        out.push(Event::Text(text[sent..cut].to_string()));
                        sent = cut;
                    }
                }
                Event::ToolCall(call) => calls.push(call),
                done @ Event::Done { .. } => {
                    let passed = if calls.is_empty() {
                        check(&text)
                    } else {
                        let mut whole = text.clone();
                        for call in &calls {
                            whole.push('\n');
                            whole.push_str(&call.arguments);
                        }
                        check(&whole)
                    };
                    if !passed {
                        let _ = tx.send(Event::Error(decided.withheld().unwrap_or_default()));
                        return;
                    }
                    if sent < text.len() {
                        out.push(Event::Text(text[sent..].to_string()));
                    }
                    out.extend(calls.drain(..).map(Event::ToolCall));
                    out.push(done);
                }
                // A failure part-way: what came before it goes out, once inspected, then
                // the failure (clients keep a partial answer).
                error @ Event::Error(_) => {
                    if !check(&text) {
                        let _ = tx.send(Event::Error(decided.withheld().unwrap_or_default()));
                        return;
                    }
                    if sent < text.len() {
                        out.push(Event::Text(text[sent..].to_string()));
                        sent = text.len();
                    }
                    out.push(error);
                }
            }
            for e in out {
                if tx.send(e).is_err() {
                    return;
                }
            }
        }
    });
    (EventStream::new(out), verdict)
}
