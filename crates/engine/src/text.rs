//! Turning a stream of token pieces into text a client may see: whole UTF-8 characters only, and
//! nothing that could still turn out to be the start of a stop sequence.

/// Collects token bytes and releases the longest prefix that is valid UTF-8.
///
/// A token may end in the middle of a multi-byte character; those bytes wait for the next token.
/// Bytes that can never become valid are replaced with U+FFFD rather than dropped silently.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid by construction; from_utf8 cannot fail on it.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left when generation ends.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Holds back text that might be the beginning of a stop sequence.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What the matcher lets through after a push.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to send; generation goes on.
    Continue(String),
    /// A stop sequence was found: the text before it, and generation ends.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_string());
        }
        self.held.push_str(text);
        // The earliest stop sequence wins, as a client reading the full text would see it.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let before = self.held[..at].to_string();
            self.held.clear();
            return StopOutcome::Stopped(before);
        }
        // Keep the longest suffix that is a proper prefix of some stop sequence.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_string();
        self.held.drain(..keep);
        StopOutcome::Continue(out)
    }

    /// Releases what was held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Token bytes in, client text out: whole characters, cut at the first stop sequence.
#[derive(Debug)]
pub struct TextStream {
    utf8: Utf8Decoder,
    stop: StopMatcher,
    /// Set once a stop sequence matched: nothing after it may reach the client.
    stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            utf8: Utf8Decoder::default(),
            stop: StopMatcher::new(stops),
            stopped: false,
        }
    }

    /// The text a token releases, and whether a stop sequence has ended the answer.
    pub fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        let text = self.utf8.push(bytes);
        self.release(&text)
    }

    /// What was held back, when generation ends; nothing after a stop sequence.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let tail = self.utf8.finish();
        let (mut out, stopped) = self.release(&tail);
        if !stopped {
            out.push_str(&self.stop.finish());
        }
        out
    }

    fn release(&mut self, text: &str) -> (String, bool) {
        match self.stop.push(text) {
            StopOutcome::Continue(t) => (t, false),
            StopOutcome::Stopped(t) => {
                self.stopped = true;
                (t, true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_releases_text_before_a_stop_even_when_it_ends_on_a_partial_character() {
        // "é" split across tokens, then the stream ends while "EN" might still start "END".
        let mut t = TextStream::new(vec!["END".into()]);
        assert_eq!(t.push(b"caf\xc3"), ("caf".to_string(), false));
        assert_eq!(t.push(b"\xa9 EN"), ("\u{e9} ".to_string(), false));
        assert_eq!(t.finish(), "EN");

        let mut t = TextStream::new(vec!["END".into()]);
        assert_eq!(t.push(b"a END b"), ("a ".to_string(), true));
        assert_eq!(t.push(b"more"), (String::new(), true));
        assert_eq!(t.finish(), "");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_sequences_cut_the_text_even_across_tokens() {
        let cases: &[(&[&str], &[&str], &str, bool)] = &[
            (&[], &["hello", " world"], "hello world", false),
            (&["END"], &["one ", "E", "N", "D", " two"], "one ", true),
            (&["END"], &["one E", "nd"], "one End", false),
            (&["\n\n", "###"], &["a\n", "b##", "#c"], "a\nb", true),
            (&["ab", "b"], &["xab"], "x", true),
            (&["é!"], &["caf", "é", "!"], "caf", true),
        ];
        for (stops, pieces, want, stopped) in cases {
            assert_eq!(
                run(stops, pieces),
                (want.to_string(), *stopped),
                "stops {stops:?} pieces {pieces:?}"
            );
        }
    }

    #[test]
    fn utf8_waits_for_whole_characters() {
        let mut d = Utf8Decoder::default();
        let bytes = "Grüße 日本".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&d.push(&[*b]));
        }
        out.push_str(&d.finish());
        assert_eq!(out, "Grüße 日本");
        assert_eq!(d.push(&[0xff, b'a']), "\u{FFFD}a");
    }
}
