//! Answers are inspected like requests before they reach the caller. A marking the model writes
//! (a portion mark it quotes from a document, a tool result or an outside provider's answer)
//! raises the answer's label; an answer whose label exceeds the caller's clearance, or that
//! carries a control the scheme does not know, is withheld: 403 `label_exceeds_clearance`.
//!
//! Streamed text is released only once inspected. The last [`HOLD`] bytes stay back, since they
//! may still be the start of a marking that the next tokens complete; the rest goes out in
//! steps, so a stream stays smooth. Tool-call arguments are short and go out at the end, after
//! the whole answer was read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use enclave_engine::{Event, ToolCallDelta};
use enclave_label::Label;
use enclave_policy::{Kind, Summary, label_request};

use crate::policy::Policy;

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
                    "the answer was withheld: it is labelled {} by a marking it contains, but the caller's clearance is {}: {why}",
                    policy.scheme.banner(&self.label),
                    policy.scheme.banner(&self.clearance)
                )
            })
    }
}

/// Inspects an answer as its events arrive and says what may go out: the request was labelled
/// `label`, the caller is cleared to `clearance`. Synchronous, so the answer's reader runs it in
/// its own task: one hop per event from the backend to the client.
pub struct Inspection {
    reader: Reader,
    /// The answer's text so far.
    text: String,
    /// Bytes of `text` already released.
    sent: usize,
    /// Tool-call deltas, released after the whole answer was read.
    calls: Vec<ToolCallDelta>,
    /// Every tool call's arguments, as read at the end.
    arguments: String,
    /// Whether any of the answer was read yet.
    read: bool,
    /// Why the answer was withheld, once it was.
    withheld: Option<String>,
}

impl Inspection {
    pub fn new(policy: Arc<Policy>, clearance: Label, label: Label) -> Self {
        Self {
            reader: Reader::new(policy, clearance, label),
            text: String::new(),
            sent: 0,
            calls: Vec::new(),
            arguments: String::new(),
            read: false,
            withheld: None,
        }
    }

    /// The answer's label: the request's joined with every marking read in it; `None` until
    /// some of it was read.
    pub fn label(&self) -> Option<&Label> {
        self.read.then_some(&self.reader.label)
    }

    /// Why the answer was withheld; `None` while it is not.
    pub fn withheld(&self) -> Option<&str> {
        self.withheld.as_deref()
    }

    /// Takes the answer's next event and queues on `out` what may go out now. When the answer
    /// must be withheld, an [`Event::Error`] is queued and nothing after it ever is; the reader
    /// then drops the backend's stream, which stops the generation.
    pub fn push(&mut self, event: Event, out: &mut VecDeque<Event>) {
        if self.withheld.is_some() {
            return;
        }
        match event {
            Event::Text(t) => {
                self.text.push_str(&t);
                if self.text.len() - self.sent >= HOLD + STEP {
                    if !self.check("", out) {
                        return;
                    }
                    let cut = self.text.floor_char_boundary(self.text.len() - HOLD);
                    out.push_back(Event::Text(self.text[self.sent..cut].to_string()));
                    self.sent = cut;
                }
            }
            Event::ToolCall(call) => self.calls.push(call),
            done @ Event::Done { .. } => {
                let mut arguments = String::new();
                for call in &self.calls {
                    arguments.push('\n');
                    arguments.push_str(&call.arguments);
                }
                let passed = self.check(&arguments, out);
                self.arguments = arguments;
                if !passed {
                    return;
                }
                self.release_rest(out);
                out.extend(self.calls.drain(..).map(Event::ToolCall));
                out.push_back(done);
            }
            // A failure part-way: what came before it goes out, once inspected, then the
            // failure (clients keep a partial answer).
            error @ Event::Error(_) => {
                if !self.check("", out) {
                    return;
                }
                self.release_rest(out);
                out.push_back(error);
            }
        }
    }

    /// What the whole answer as received so far holds, by kind: personal data and markings the
    /// model wrote. One pass over the answer, made once when it ends (the reads while it streams
    /// overlap, so counting there would count some findings twice).
    pub fn findings(&self) -> BTreeMap<Kind, usize> {
        let mut summary = Summary::default();
        let inspector = &self.reader.policy.inspector;
        summary.add(&inspector.inspect(&self.text));
        if !self.arguments.is_empty() {
            summary.add(&inspector.inspect(&self.arguments));
        }
        summary.counts
    }

    /// Reads what is new; when the answer must be withheld, queues the error and says so.
    fn check(&mut self, extra: &str, out: &mut VecDeque<Event>) -> bool {
        self.read = true;
        match self.reader.read(&self.text, extra) {
            None => true,
            Some(why) => {
                out.push_back(Event::Error(why.clone()));
                self.withheld = Some(why);
                false
            }
        }
    }

    fn release_rest(&mut self, out: &mut VecDeque<Event>) {
        if self.sent < self.text.len() {
            out.push_back(Event::Text(self.text[self.sent..].to_string()));
            self.sent = self.text.len();
        }
    }
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
