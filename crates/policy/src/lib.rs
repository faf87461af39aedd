//! The reference monitor's decisions: request labels, clearance checks, content inspection,
//! redaction, sovereign routing, egress to agents' tools and role authorization.
//!
//! It owns every answer to "may this content go there, for this caller?" and returns it with a
//! reason. It must never do I/O or HTTP, never decide a label question anywhere but through the
//! `label` crate's lattice, and never record or return matched personal data: a [`Decision`]
//! holds kinds and counts only.

pub mod authz;
mod checks;
pub mod egress;
pub mod inspect;
pub mod normalize;
pub mod redact;
pub mod route;

use std::collections::BTreeMap;

use enclave_label::{Label, Scheme};
use serde::Serialize;

pub use authz::{ALL_TENANTS, Action, Authorizer, AuthzError, Subject};
pub use inspect::{Finding, Inspector, Kind, Summary};
pub use redact::{Redactions, Restorer};
pub use route::{Choice, ENCLAVE, Placement, Refused, TenantPolicy, route};

/// A request's label and what inspection found, per text inspected.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The declared (or default) label joined with every marking found.
    pub label: Label,
    pub summary: Summary,
    /// Findings for each inspected text, in the order given.
    pub findings: Vec<Vec<Finding>>,
}

/// Labels a request: `declared` joined with the markings found in every text it sends (system
/// prompts, earlier turns, tool results: all of them, so a conversation that once turned
/// sensitive stays pinned).
pub fn label_request<'a>(
    inspector: &Inspector,
    declared: &Label,
    texts: impl IntoIterator<Item = &'a str>,
) -> Labelled {
    let mut summary = Summary::default();
    let mut findings = Vec::new();
    for text in texts {
        let f = inspector.inspect(text);
        summary.add(&f);
        findings.push(f);
    }
    let label = match &summary.label {
        Some(found) => declared.join(found),
        None => declared.clone(),
    };
    Labelled {
        label,
        summary,
        findings,
    }
}

/// Checks a request label against the caller's clearance; the error says which part exceeds.
pub fn check_clearance(scheme: &Scheme, clearance: &Label, label: &Label) -> Result<(), String> {
    match scheme.explain_shortfall(clearance, label) {
        None => Ok(()),
        Some(why) => Err(format!(
            "the request is labelled {} but the caller's clearance is {}: {why}",
            scheme.banner(label),
            scheme.banner(clearance)
        )),
    }
}

/// What the reference monitor decided about one request: what the audit log records. Kinds and
/// counts of findings, never the matched text.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The stable error code of a denial.
    pub code: Option<&'static str>,
    /// The request label, as a canonical banner.
    pub label: Option<String>,
    pub findings: BTreeMap<Kind, usize>,
    pub deployment: Option<String>,
    /// How many distinct items were redacted.
    pub redacted: usize,
    pub reason: String,
}
