//! Redaction of personal data before content leaves the enclave, and restoration of the originals
//! in the answer before it reaches the caller.
//!
//! Each distinct item becomes a stable placeholder such as `[IBAN_1]`: the same value gets the
//! same placeholder everywhere in one request, so a model can refer back to it. Markings are never
//! redacted: classified content is not made safe by masking, it is refused (see `route`).

use std::borrow::Borrow;
use std::collections::HashMap;

use crate::inspect::{Finding, Kind};

/// Maps placeholders back to what they replaced, for one request.
#[derive(Debug, Clone, Default)]
pub struct Redactions {
    by_value: HashMap<(Kind, String), String>,
    by_placeholder: HashMap<String, String>,
    next: HashMap<Kind, usize>,
}

impl Redactions {
    pub fn is_empty(&self) -> bool {
        self.by_placeholder.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_placeholder.len()
    }

    /// `text` with every personal-data finding replaced by its placeholder. `findings` must be
    /// those of `text`, in order. A placeholder that already occurs in `text` is skipped, so
    /// restoring never rewrites what the caller wrote.
    pub fn redact(&mut self, text: &str, findings: &[Finding]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in findings.iter().filter(|f| f.kind.is_personal()) {
            let (Some(before), Some(value)) = (text.get(at..f.start), text.get(f.start..f.end))
            else {
                continue;
            };
            out.push_str(before);
            let key = (f.kind, value.to_string());
            let placeholder = match self.by_value.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = loop {
                        let n = self.next.entry(f.kind).or_insert(0);
                        *n += 1;
                        let p = format!("[{}_{}]", f.kind.placeholder(), n);
                        if !text.contains(&p) && !self.by_placeholder.contains_key(&p) {
                            break p;
                        }
                    };
                    self.by_value.insert(key, p.clone());
                    self.by_placeholder.insert(p.clone(), value.to_string());
                    p
                }
            };
            out.push_str(&placeholder);
            at = f.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        out
    }

    /// `text` with every placeholder this request made put back to its original.
    pub fn restore(&self, text: &str) -> String {
        let mut r = self.restorer();
        let mut out = r.push(text);
        out.push_str(&r.finish());
        out
    }

    /// A restorer for a streamed answer, where a placeholder may arrive split across chunks.
    pub fn restorer(&self) -> Restorer<&Self> {
        Restorer::new(self)
    }
}

/// The longest placeholder is `[PASSPORT_` plus digits and `]`; anything longer than this after
/// a `[` cannot be one.
const MAX_PLACEHOLDER: usize = 24;

/// Restores placeholders in a stream of text chunks, holding back only what could still be the
/// start of a placeholder. `M` is how it holds the request's redactions: borrowed, or shared
/// (`Arc<Redactions>`) by a restorer that outlives the borrow.
#[derive(Debug)]
pub struct Restorer<M> {
    map: M,
    pending: String,
}

impl<M: Borrow<Redactions>> Restorer<M> {
    pub fn new(map: M) -> Self {
        Self {
            map,
            pending: String::new(),
        }
    }

    /// Text that can be sent now.
    pub fn push(&mut self, chunk: &str) -> String {
        self.pending.push_str(chunk);
        let mut out = String::new();
        loop {
            let Some(open) = self.pending.find('[') else {
                out.push_str(&self.pending);
                self.pending.clear();
                return out;
            };
            out.push_str(&self.pending[..open]);
            let rest = &self.pending[open..];
            match rest.find(']') {
                Some(close) => {
                    let candidate = &rest[..=close];
                    match self.map.borrow().by_placeholder.get(candidate) {
                        Some(original) => {
                            out.push_str(original);
                            self.pending = rest[close + 1..].to_string();
                        }
                        None => {
                            // Not ours: emit the `[` and look again after it.
                            out.push('[');
                            self.pending = rest[1..].to_string();
                        }
                    }
                }
                None if rest.len() < MAX_PLACEHOLDER && could_be_placeholder(rest) => {
                    self.pending = rest.to_string();
                    return out;
                }
                None => {
                    out.push('[');
                    self.pending = rest[1..].to_string();
                }
            }
        }
    }

    /// Whatever is still held back, at the end of the stream.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

fn could_be_placeholder(s: &str) -> bool {
    s.bytes()
        .skip(1)
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Inspector;
    use enclave_label::Scheme;
    use proptest::prelude::*;

    fn inspector() -> Inspector {
        Inspector::new(Scheme::builtin("US").unwrap()).unwrap()
    }

    #[test]
    fn redacts_and_restores_with_stable_placeholders() {
        let i = inspector();
        let text = "Pay DE89 3704 0044 0532 0130 00 from DE89 3704 0044 0532 0130 00; mail a@b.de";
        let mut r = Redactions::default();
        let red = r.redact(text, &i.inspect(text));
        assert_eq!(red, "Pay [IBAN_1] from [IBAN_1]; mail [EMAIL_1]");
        assert_eq!(r.restore(&red), text);
        // A second message of the same request reuses the numbering.
        let more = "also GB82 WEST 1234 5698 7654 32 and DE89 3704 0044 0532 0130 00";
        assert_eq!(
            r.redact(more, &i.inspect(more)),
            "also [IBAN_2] and [IBAN_1]"
        );
    }

    #[test]
    fn placeholders_the_caller_wrote_are_left_alone() {
        let i = inspector();
        let text = "literal [IBAN_1] then DE89 3704 0044 0532 0130 00";
        let mut r = Redactions::default();
        let red = r.redact(text, &i.inspect(text));
        assert_eq!(red, "literal [IBAN_1] then [IBAN_2]");
        assert_eq!(r.restore(&red), text);
    }

    proptest! {
        #[test]
        fn streamed_restore_equals_whole_restore(cuts in proptest::collection::vec(0usize..60, 0..8)) {
            let i = inspector();
            let text = "x [EMAIL_1] y [IBAN_1]] [[IBAN_1] [NOPE] [IBAN_12 end";
            let src = "x a@b.de y DE89 3704 0044 0532 0130 00";
            let mut r = Redactions::default();
            r.redact(src, &i.inspect(src));
            let whole = r.restore(text);
            let mut cuts = cuts;
            cuts.push(text.len());
            cuts.sort_unstable();
            let mut streamed = String::new();
            let mut s = r.restorer();
            let mut from = 0;
            for c in cuts {
                let c = c.min(text.len()).max(from);
                streamed.push_str(&s.push(&text[from..c]));
                from = c;
            }
            streamed.push_str(&s.finish());
            prop_assert_eq!(streamed, whole.clone());
            prop_assert_eq!(whole, "x a@b.de y DE89 3704 0044 0532 0130 00] [DE89 3704 0044 0532 0130 00 [NOPE] [IBAN_12 end");
        }
    }
}
