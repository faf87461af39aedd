//! What a call tells its audit record beyond who called and what came in: filled in along the
//! request path, read by whichever caller writes the record (the gateway's audit step today).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use enclave_policy::{Decision, Kind};

use crate::error::Error;

/// What a call tells the audit step about itself: the model, the reference monitor's decision,
/// every try at a deployment, and how the answer ended.
#[derive(Debug, Clone, Default)]
pub struct CallNote {
    pub model: Option<String>,
    pub decision: Option<Decision>,
    /// Every try at a deployment, in order.
    pub attempts: Vec<enclave_audit::Attempt>,
    /// How the answer ended: shared with a streamed answer, which fills it in as it ends.
    pub outcome: Outcome,
    /// SHA-256 of each image the request carried.
    pub images: Vec<String>,
    /// Background work (a batch line): the embedded engine serves interactive calls first.
    pub background: bool,
}

/// How a call's answer ended, filled in by what produced it: before the handler returns for a
/// whole answer, as the stream ends for a streamed one.
#[derive(Debug, Clone, Default)]
pub struct Outcome(Arc<Mutex<Ended>>);

#[derive(Debug, Clone, Default)]
pub struct Ended {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The answer's label, as inspecting it found it (the request's, or higher for a marking in
    /// the answer: served at that label, or withheld).
    pub answer_label: Option<String>,
    /// How a streamed answer failed after it began: the error it ended with.
    pub failure: Option<Error>,
    /// What inspecting the answer found in it, by kind: personal data and markings the model
    /// wrote (counts only).
    pub answer_findings: BTreeMap<Kind, usize>,
}

impl Outcome {
    fn with(&self, f: impl FnOnce(&mut Ended)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.with(|e| (e.prompt_tokens, e.completion_tokens) = (prompt, completion));
    }

    pub fn label(&self, banner: String) {
        self.with(|e| e.answer_label = Some(banner));
    }

    pub fn answer_findings(&self, counts: BTreeMap<Kind, usize>) {
        self.with(|e| e.answer_findings = counts);
    }

    pub fn fail(&self, error: &Error) {
        self.with(|e| e.failure = Some(error.clone()));
    }

    pub fn get(&self) -> Ended {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl CallNote {
    /// A note for a call to `model`.
    pub fn for_model(model: &str) -> Self {
        Self {
            model: Some(model.to_string()),
            ..Self::default()
        }
    }
}
