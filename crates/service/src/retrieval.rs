//! Knowledge bases on the request path: the embedder they use, the label a read works at, and
//! retrieval for a chat that names knowledge bases — passages best first, the prompt built from
//! them, their citations, and the join of their labels that the request's label rises to.

use std::sync::Arc;

use enclave_engine::EmbedInput;
use enclave_kb::{EmbedError, Embedder, Hit, KbError, KnowledgeBases, Mode};
use enclave_label::Label;
use enclave_policy::Action;
use serde_json::Value;

use crate::conversation::{Conversation, Role as TurnRole, Turn};
use crate::error::Error;
use crate::info::Citation;
use crate::monitor::{self, Declared};
use crate::principal::Principal;
use crate::{Models, Service};

/// Where in a chat request's `metadata` knowledge bases are named.
pub const KB_METADATA: &str = "knowledge_bases";

/// Passages placed in a prompt unless the request asks for another number.
pub const DEFAULT_PASSAGES: usize = 5;

/// The embedded MiniLM model as the knowledge bases' embedder.
pub struct EngineEmbedder(pub Arc<Models>);

impl Embedder for EngineEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let engine = self.0.embedding.get().ok_or(EmbedError::NotReady)?;
        let inputs: Vec<EmbedInput> = texts.iter().cloned().map(EmbedInput::Text).collect();
        engine
            .embed(&inputs)
            .map(|e| e.vectors)
            .map_err(|e| EmbedError::Failed(e.to_string()))
    }
}

impl From<KbError> for Error {
    fn from(e: KbError) -> Self {
        let message = e.to_string();
        match e {
            KbError::NoKnowledgeBase(_) | KbError::NoDocument(_) => Error::NotFound(message),
            KbError::Exists(_) => Error::Conflict(message),
            KbError::Invalid(_) => Error::invalid("body", message),
            KbError::Unreadable { .. } => Error::UnreadableDocument(message),
            KbError::Unlabelled { .. } => Error::LabelRequired(message),
            KbError::UnrecognizedMarking { .. } => Error::UnrecognizedMarkingInDocument(message),
            KbError::AboveClearance(_) => Error::LabelExceedsClearance(message),
            KbError::AboveMaximum(_) => Error::LabelExceedsMaximum(message),
            KbError::Embed(EmbedError::NotReady) => {
                Error::ModelLoading(crate::EMBEDDING_MODEL.to_string())
            }
            KbError::Embed(EmbedError::Failed(_)) | KbError::Storage(_) => {
                tracing::error!(error = %message, "knowledge-base failure");
                Error::Internal
            }
        }
    }
}

/// The knowledge bases, where this server runs them.
pub fn knowledge_bases(state: &Service) -> Result<&KnowledgeBases, Error> {
    state.kb.as_ref().ok_or(Error::KnowledgeBasesDisabled)
}

/// Refuses a caller the policy does not let do `action` on its own tenant's knowledge bases.
pub fn require(state: &Service, principal: &Principal, action: Action) -> Result<(), Error> {
    monitor::authorize(&state.policy, principal, action, &principal.tenant_name)
}

pub fn clearance(state: &Service, principal: &Principal) -> Result<Label, Error> {
    monitor::clearance(&state.policy, principal)
}

/// `text` as a label of the scheme in force; the error names `param`.
pub fn parse_label(state: &Service, param: &str, text: &str) -> Result<Label, Error> {
    state
        .policy
        .scheme
        .parse(text)
        .map_err(|e| Error::InvalidLabel {
            param: param.to_string(),
            message: format!(
                "`{text}` in `{param}` is not a label of scheme {}: {e}",
                state.policy.scheme.name()
            ),
        })
}

/// The label a read works at: the declared request label (header or metadata), which may not
/// exceed the clearance, else the clearance itself.
pub fn ceiling(
    state: &Service,
    principal: &Principal,
    declared: Option<&Declared>,
) -> Result<Label, Error> {
    let clearance = clearance(state, principal)?;
    let Some(Declared { source, text }) = declared else {
        return Ok(clearance);
    };
    let label = parse_label(state, source, text)?;
    enclave_policy::check_clearance(&state.policy.scheme, &clearance, &label)
        .map_err(Error::LabelExceedsClearance)?;
    Ok(label)
}

/// Passages retrieved for a prompt: the system message built from them, their citations, and
/// the join of their labels.
pub struct Retrieved {
    pub system: String,
    pub citations: Vec<Citation>,
    pub floor: Option<Label>,
}

/// The prompt, citations and label floor of retrieved passages.
pub fn build(hits: Vec<Hit>) -> Retrieved {
    let mut system = String::from(
        "Answer the question using only the numbered passages below. Cite the passages you use \
         by their number in square brackets, like [1]. If the passages do not answer the \
         question, say that you do not know.\n",
    );
    let mut floor: Option<Label> = None;
    let mut citations = Vec::with_capacity(hits.len());
    for (i, h) in hits.into_iter().enumerate() {
        system.push_str(&format!(
            "\n[{}] ({}) {}: {}\n",
            i + 1,
            h.label,
            h.document_name,
            h.text
        ));
        floor = Some(floor.map_or(h.parsed_label.clone(), |f| f.join(&h.parsed_label)));
        citations.push(Citation {
            index: i + 1,
            document: h.document,
            document_name: h.document_name,
            chunk: h.chunk,
            label: h.label,
            page: h.page,
            start: h.start,
            end: h.end,
            score: h.score,
            text: h.text,
            cited: false,
        });
    }
    Retrieved {
        system,
        citations,
        floor,
    }
}

/// The knowledge bases a chat request names in `metadata.knowledge_bases`.
fn named(metadata: Option<&Value>) -> Result<Vec<String>, Error> {
    let bad = || {
        Error::invalid(
            "metadata.knowledge_bases",
            "`metadata.knowledge_bases` must be a string of knowledge-base ids or names separated by commas, or an array of them".to_string(),
        )
    };
    match metadata.and_then(|m| m.get(KB_METADATA)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Retrieval for a chat completion that names knowledge bases: passages for the last user
/// turn from each, best first, placed as a system turn at the start of the conversation.
/// `None` when the request names none.
pub async fn augment(
    state: &Service,
    principal: &Principal,
    declared: Option<&Declared>,
    metadata: Option<&Value>,
    conversation: &mut Conversation,
) -> Result<Option<Retrieved>, Error> {
    let names = named(metadata)?;
    if names.is_empty() {
        return Ok(None);
    }
    let kbs = knowledge_bases(state)?;
    require(state, principal, Action::ReadKnowledgeBases)?;
    let ceiling = ceiling(state, principal, declared)?;
    let question = conversation
        .turns
        .iter()
        .rev()
        .find(|t| t.role == TurnRole::User)
        .map(|t| t.text.clone())
        .unwrap_or_default();
    let mut hits = Vec::new();
    for name in &names {
        hits.extend(
            kbs.search(
                &principal.tenant_name,
                name,
                &ceiling,
                &question,
                DEFAULT_PASSAGES,
                Mode::Hybrid,
            )
            .await?,
        );
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(DEFAULT_PASSAGES);
    let retrieved = build(hits);
    conversation
        .turns
        .insert(0, Turn::new(TurnRole::System, retrieved.system.clone()));
    Ok(Some(retrieved))
}
