//! Inspection never panics, and its findings are in order, inside the text, on character
//! boundaries and not overlapping; redaction then restoration gives the text back.

#![no_main]

use std::sync::OnceLock;

use enclave_label::Scheme;
use enclave_policy::{Inspector, Redactions};
use libfuzzer_sys::fuzz_target;

fn inspector() -> &'static Inspector {
    static I: OnceLock<Inspector> = OnceLock::new();
    I.get_or_init(|| Inspector::new(Scheme::builtin("US").unwrap()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let findings = inspector().inspect(text);
    let mut end = 0;
    for f in &findings {
        assert!(f.start >= end && f.start < f.end && f.end <= text.len());
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        end = f.end;
    }
    let mut r = Redactions::default();
    let redacted = r.redact(text, &findings);
    assert_eq!(r.restore(&redacted), text);
});
