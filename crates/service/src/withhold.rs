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

/// Text is inspected and released in steps of at least this many bytes: each step reads what
/// arrived since the last (with an overlap, see [`Reader`]), so a marking split across tokens is
/// read whole.
const STEP: usize = 16;

/// Bytes before the end of the last read that the next read starts from: more than the longest
/// marking, so a marking that was still arriving when one read ended is read whole by the next.
const OVERLAP: usize = 1024;

/// How far back a read goes to start at the beginning of its line, so a marking keeps the context
/// the inspector reads it in (banners and headings stand at line starts). A longer line is read
/// from mid-line, where a word at the cut may read as a line start: at worst that raises the
/// label (an answer withheld that need not be), never lowers it.
const LINE_CONTEXT: usize = 8 << 10;

/// Reads an answer as it grows, each part about once: every read starts [`OVERLAP`] bytes before
/// where the last one ended (back to its line start), and the label joins what every read found.
/// Reading the whole answer at every step would make a long answer quadratic.
struct Reader {
    policy: Arc<Policy>,
    clearance: Label,
    /// The request's label, joined with every marking read so far.
    label: Label,
    /// Bytes of the answer read so far.
    read_to: usize,
    /// Bytes handed to the inspector in all, rereads included.
    inspected: usize,
}

impl Reader {
    fn new(policy: Arc<Policy>, clearance: Label, label: Label) -> Self {
        Self {
            policy,
            clearance,
            label,
            read_to: 0,
            inspected: 0,
        }
    }

    /// Reads what `text` (the answer so far) added since the last read, and `extra` (tool-call
    /// arguments, short, read whole); says why the answer must be withheld, if it must.
    fn read(&mut self, text: &str, extra: &str) -> Option<String> {
        let mut from = text.floor_char_boundary(self.read_to.saturating_sub(OVERLAP));
        let line = text[..from].rfind('\n').map_or(0, |n| n + 1);
        if from - line <= LINE_CONTEXT {
            from = line;
        }
        let policy = &self.policy;
        let labelled = label_request(&policy.inspector, &self.label, [&text[from..], extra]);
        self.read_to = text.len();
        self.inspected += text.len() - from + extra.len();
        self.label = labelled.label;
        if let Some(control) = labelled.summary.unrecognized.first() {
            return Some(format!(
                "the answer was withheld: it carries a marking with `{control}`, which scheme {} does not know",
                policy.scheme.name()
            ));
        }
        policy
            .scheme
            .explain_shortfall(&self.clearance, &self.label)
            .map(|why| {
                format!(
                    "the answer was withheld: it is labelled {} by a marking it contains, but the key's clearance is {}: {why}",
                    policy.scheme.banner(&self.label),
                    policy.scheme.banner(&self.clearance)
                )
            })
    }
}

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
        let mut reader = Reader::new(policy, clearance, label);
        let mut check = |text: &str, extra: &str| -> bool {
            let why = reader.read(text, extra);
            let ok = why.is_none();
            decided.set(reader.label.clone(), why);
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
                        if !check(&text, "") {
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
                    let mut arguments = String::new();
                    for call in &calls {
                        arguments.push('\n');
                        arguments.push_str(&call.arguments);
                    }
                    let passed = check(&text, &arguments);
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
                    if !check(&text, "") {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Arc<Policy> {
        Arc::new(Policy::default_policy().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Streams `text` through a reader in chunks of the given sizes, reading at each step as the
    /// stream does; the label it ends with.
    fn streamed(policy: &Arc<Policy>, text: &str, chunks: &[usize]) -> Label {
        let high = policy.scheme.system_high();
        let mut reader = Reader::new(Arc::clone(policy), high, policy.scheme.lowest());
        let mut so_far = String::new();
        let mut at = 0;
        for (n, size) in chunks.iter().cycle().enumerate() {
            if at >= text.len() || n > 1_000_000 {
                break;
            }
            let end = text.ceil_char_boundary((at + size).min(text.len()));
            so_far.push_str(&text[at..end]);
            at = end;
            reader.read(&so_far, "");
        }
        reader.read(&so_far, "");
        reader.label.clone()
    }

    #[test]
    fn reading_in_steps_finds_what_reading_whole_finds() {
        let policy = policy();
        let filler = "The harbour crane was inspected on Tuesday and found sound. ";
        let markings = [
            "(S) The site is north.",
            "TOP SECRET//SI//NOFORN",
            "(TS//SI) x",
            "SECRET",
        ];
        for marking in markings {
            // On a line of its own, and inside one long line (read from mid-line).
            for (before, breaks) in [
                (0usize, true),
                (1000, true),
                (5000, true),
                (100, false),
                (1023, false),
                (1025, false),
                (20_000, false),
            ] {
                let mut text = String::new();
                while text.len() < before {
                    text.push_str(filler);
                    if breaks && text.len().is_multiple_of(7) {
                        text.push('\n');
                    }
                }
                text.truncate(before);
                text.push_str(if breaks { "\n" } else { " " });
                text.push_str(marking);
                text.push_str(" More text follows. ");
                let lowest = policy.scheme.lowest();
                let whole = label_request(&policy.inspector, &lowest, [text.as_str()]).label;
                assert_ne!(whole, lowest, "{marking:?} is read at all");
                for chunks in [&[1usize][..], &[3, 17], &[16], &[80, 5, 200], &[4096]] {
                    assert_eq!(
                        streamed(&policy, &text, chunks),
                        whole,
                        "{marking:?} after {before} bytes, chunks {chunks:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_long_answer_is_read_in_linear_time() {
        let policy = policy();
        let high = policy.scheme.system_high();
        let mut reader = Reader::new(Arc::clone(&policy), high, policy.scheme.lowest());
        let line = "Plain prose about cranes, ships and the weather in the harbour.\n";
        let mut text = String::new();
        for _ in 0..4000 {
            text.push_str(line);
            reader.read(&text, "");
        }
        // Each read covers what is new, the overlap and the start of its line: the 65-byte steps
        // of this answer are read about 17 times each, whatever its length (reading the whole
        // answer at every step would be 2,000 times).
        assert!(
            reader.inspected < 20 * text.len(),
            "inspected {} bytes for an answer of {}",
            reader.inspected,
            text.len()
        );
        text.push_str("(S) the end.");
        assert!(reader.read(&text, "").is_none(), "cleared to system high");
        assert_eq!(policy.scheme.banner(&reader.label), "SECRET");
    }
}
