//! One audit record and its canonical bytes.
//!
//! Format `v2` (`v1` without `attempts`): a JSON object with exactly these keys in this order, no
//! white space, strings in serde_json's escaping, absent values as `null`, `findings` with keys in
//! byte order; `answer_findings` (same form) comes next and only when the answer had any, then
//! `run` only on an agent run's steps, then `images` only when a request carried any. The bytes
//! are the leaf: leaf hash = SHA-256(0x00 ‖ bytes) (RFC 9162 §2.1.1). A verifier in another
//! language recomputes the leaf from the exported line without parsing it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One try at an upstream deployment while serving a call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub deployment: String,
    /// `ok`, `connect_error`, `rate_limited`, `server_error`, `rejected`,
    /// `first_token_timeout`, `timeout`, `malformed`, `circuit_open`.
    pub outcome: String,
    /// The upstream's HTTP status when it answered with an error.
    pub status: Option<u16>,
    pub latency_ms: u64,
}

/// What happened, when, where, who, with what outcome (NIST SP 800-53 AU-3), plus Enclave's
/// labels and inspection findings. Never a secret; never prompt or answer text, only digests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version: 2 (1 lacks `attempts`).
    pub v: u32,
    /// UTC time, RFC 3339 with nanoseconds.
    pub time: String,
    /// The node that served the call.
    pub node: String,
    /// `api` for API calls, `admin` for administrative actions.
    pub kind: String,
    /// Route or administrative operation, e.g. `POST /v1/chat/completions`, `keys.create`.
    pub operation: String,
    pub client: Option<String>,
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub role: Option<String>,
    pub model: Option<String>,
    pub deployment: Option<String>,
    /// HTTP status, or 0 for an administrative action.
    pub status: u16,
    /// The stable error code of a failure or denial.
    pub code: Option<String>,
    pub request_label: Option<String>,
    pub answer_label: Option<String>,
    /// Inspection findings by kind: counts only.
    pub findings: BTreeMap<String, u64>,
    pub redacted: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    /// SHA-256 of the request body, hex.
    pub request_sha256: Option<String>,
    /// SHA-256 of the answer body the client received, hex: for a streamed answer, of every
    /// byte of the event stream sent, however it ended.
    pub response_sha256: Option<String>,
    /// A sentence: the decision's reason or the administrative detail.
    pub detail: Option<String>,
    /// Format 2: every try at a deployment, in order; the last `ok` one served.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// What inspecting the answer found in it, by kind (counts only): personal data and markings
    /// the model wrote. Absent when it found nothing, so records without it keep their bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answer_findings: BTreeMap<String, u64>,
    /// The agent run (response id) a step belongs to: each model turn and each tool call of a
    /// run is its own record. Absent on other records, so they keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// SHA-256 of each image the request carried (images cannot be inspected; the record names
    /// them). Absent when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

impl Record {
    /// The canonical bytes of this record.
    pub fn canonical(&self) -> Vec<u8> {
        // Serialising a struct of strings, integers, options and a BTreeMap cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
