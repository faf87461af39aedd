//! What an answer says about itself beside its text: its label, where it was computed, and the
//! passages it was grounded in. Every surface carries it (OpenAI and Anthropic answers as an
//! `enclave` field SDKs ignore; knowledge-base answers in their own shape).

use serde::Serialize;

/// The `enclave` field of an answer: its label and where it was computed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnclaveInfo {
    pub label: String,
    pub deployment: String,
    pub jurisdiction: String,
    pub redacted: bool,
    /// Passages retrieved from knowledge bases and placed in the prompt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<Citation>,
}

/// A passage placed in a prompt, as the answer cites it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Citation {
    /// The `[n]` the model was asked to cite it by.
    pub index: usize,
    pub document: String,
    pub document_name: String,
    pub chunk: i64,
    pub label: String,
    pub page: Option<u32>,
    pub start: u64,
    pub end: u64,
    pub score: f32,
    pub text: String,
    /// Whether the answer cites it (`[n]` in the text).
    pub cited: bool,
}

/// Marks the citations whose `[n]` appears in `answer`.
pub fn mark_cited(citations: &mut [Citation], answer: &str) {
    for c in citations {
        c.cited = answer.contains(&format!("[{}]", c.index));
    }
}
