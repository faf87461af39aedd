//! Conversations kept for the person who had them (not to be confused with [`crate::conversation`],
//! one chat request's turns): their messages with the labels they were sent and answered at,
//! and the conversation's own label, the join of all of them, which only ever rises.
//!
//! A conversation is its owner's alone (a user's, or a key's that belongs to no user), in its
//! tenant, and only while the owner's clearance dominates its label: a user whose clearance
//! falls no longer sees it listed, cannot open it, and cannot continue it. Any other caller is
//! told there is no such conversation. A chat that continues one is admitted no lower than the
//! conversation's label ([`floor`]); what it said and answered is kept when the answer is done
//! ([`Keeper`]), with labels the reference monitor and the answer's inspection computed, never
//! the client's.

use std::sync::Arc;

use enclave_label::Label;
use enclave_store::{Conversation, ConversationMessage, Store};
use serde::Serialize;
use serde_json::Value;

use crate::Service;
use crate::error::Error;
use crate::info::Citation;
use crate::policy::Policy;
use crate::principal::Principal;

/// Characters of the first message that title a conversation.
const TITLE_CHARS: usize = 80;
/// Attempts at keeping a turn while other answers raise the label at the same moment.
const KEEP_ATTEMPTS: usize = 8;

/// A conversation as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationInfo {
    pub id: String,
    pub object: &'static str,
    /// The start of its first message; empty until it has one.
    pub title: String,
    /// The banner of the highest label it has reached.
    pub label: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One kept message, with its label as a banner and as a portion mark.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageInfo {
    pub role: String,
    pub content: String,
    pub label: String,
    pub portion: String,
    /// The passages an answer was grounded in, as the answer carried them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub citations: Vec<Value>,
    pub created_at: i64,
}

/// A conversation with its messages.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Kept {
    #[serde(flatten)]
    pub conversation: ConversationInfo,
    pub messages: Vec<MessageInfo>,
}

fn info(c: Conversation) -> ConversationInfo {
    ConversationInfo {
        id: c.id,
        object: "conversation",
        title: c.title,
        label: c.label,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn store_error(e: enclave_store::StoreError) -> Error {
    tracing::error!(error = %e, "conversation store failure");
    Error::Internal
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("there is no conversation `{id}`"))
}

/// Who owns what `principal` keeps: the user, else the key.
fn owner(principal: &Principal) -> &str {
    principal.user.as_deref().unwrap_or(&principal.key_id)
}

/// The conversation's label if `principal` may see it: theirs, in their tenant, dominated by
/// their clearance. A label that no longer parses is never shown.
fn readable(state: &Service, principal: &Principal, c: &Conversation) -> Option<Label> {
    if c.tenant_id != principal.tenant_id || c.owner != owner(principal) {
        return None;
    }
    let clearance = crate::monitor::clearance(&state.policy, principal).ok()?;
    let label = state.policy.scheme.parse(&c.label).ok()?;
    clearance.dominates(&label).then_some(label)
}

async fn load(
    state: &Service,
    principal: &Principal,
    id: &str,
) -> Result<(Conversation, Label), Error> {
    let c = state
        .store
        .conversation(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(id))?;
    let label = readable(state, principal, &c).ok_or_else(|| not_found(id))?;
    Ok((c, label))
}

/// Starts an empty conversation at the scheme's lowest label.
pub async fn create(state: &Service, principal: &Principal) -> Result<ConversationInfo, Error> {
    let now = enclave_store::now();
    let c = Conversation {
        id: format!("conv_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: principal.tenant_id.clone(),
        owner: owner(principal).to_string(),
        title: String::new(),
        label: state.policy.scheme.banner(&state.policy.scheme.lowest()),
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .create_conversation(&c)
        .await
        .map_err(store_error)?;
    Ok(info(c))
}

/// The caller's conversations they may still read, the most recently updated first.
pub async fn list(state: &Service, principal: &Principal) -> Result<Vec<ConversationInfo>, Error> {
    let all = state
        .store
        .list_conversations(&principal.tenant_id, owner(principal))
        .await
        .map_err(store_error)?;
    Ok(all
        .into_iter()
        .filter(|c| readable(state, principal, c).is_some())
        .map(info)
        .collect())
}

/// One conversation with its messages.
pub async fn open(state: &Service, principal: &Principal, id: &str) -> Result<Kept, Error> {
    let (c, _) = load(state, principal, id).await?;
    let scheme = &state.policy.scheme;
    let messages = state
        .store
        .conversation_messages(&c.id)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|m| {
            // Stored banners were written by the scheme; one that no longer parses is shown at
            // the conversation's label, which dominates every message's.
            let portion = scheme
                .parse(&m.label)
                .or_else(|_| scheme.parse(&c.label))
                .map(|l| scheme.portion(&l))
                .unwrap_or_default();
            let citations = m
                .citations
                .as_deref()
                .and_then(|j| serde_json::from_str::<Vec<Value>>(j).ok())
                .unwrap_or_default();
            MessageInfo {
                role: m.role,
                content: m.content,
                label: m.label,
                portion,
                citations,
                created_at: m.created_at,
            }
        })
        .collect();
    Ok(Kept {
        conversation: info(c),
        messages,
    })
}

/// Deletes one of the caller's conversations.
pub async fn delete(state: &Service, principal: &Principal, id: &str) -> Result<(), Error> {
    let (c, _) = load(state, principal, id).await?;
    if state
        .store
        .delete_conversation(&c.id)
        .await
        .map_err(store_error)?
    {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

/// The label a chat continuing conversation `id` is admitted at, at least: the conversation's.
/// With it, the [`Keeper`] that keeps the turn once answered.
pub async fn floor(
    state: &Service,
    principal: &Principal,
    id: &str,
) -> Result<(Label, Keeper), Error> {
    let (c, label) = load(state, principal, id).await?;
    let keeper = Keeper {
        id: c.id,
        store: Arc::clone(&state.store),
        policy: Arc::clone(&state.policy),
    };
    Ok((label, keeper))
}

/// The conversation a chat continues; [`Keeper::keep`] adds its turn when the answer is done.
#[derive(Clone)]
pub struct Keeper {
    id: String,
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper").field("id", &self.id).finish()
    }
}

/// One message to keep, its label a banner the service computed.
#[derive(Debug, Clone)]
pub struct Turn {
    pub role: &'static str,
    pub content: String,
    pub label: String,
    pub citations: Vec<Citation>,
}

impl Keeper {
    /// Adds `turns` and raises the conversation's label to the join of its own and theirs.
    pub async fn keep(&self, turns: &[Turn]) -> Result<(), Error> {
        let scheme = &self.policy.scheme;
        let mut reached = scheme.lowest();
        for t in turns {
            let label = scheme.parse(&t.label).map_err(|e| {
                tracing::error!(label = %t.label, error = %e, "a computed label did not parse");
                Error::Internal
            })?;
            reached = reached.join(&label);
        }
        let at = enclave_store::now();
        let messages: Vec<ConversationMessage> = turns
            .iter()
            .map(|t| ConversationMessage {
                seq: 0,
                role: t.role.to_string(),
                content: t.content.clone(),
                label: t.label.clone(),
                citations: (!t.citations.is_empty())
                    .then(|| serde_json::to_string(&t.citations).ok())
                    .flatten(),
                created_at: at,
            })
            .collect();
        let title: String = turns
            .iter()
            .find(|t| t.role == "user")
            .map(|t| t.content.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
            .chars()
            .take(TITLE_CHARS)
            .collect();
        for _ in 0..KEEP_ATTEMPTS {
            let Some(c) = self
                .store
                .conversation(&self.id)
                .await
                .map_err(store_error)?
            else {
                // Deleted while the answer was being written: nothing to keep it in.
                return Ok(());
            };
            let now = scheme.parse(&c.label).map_err(|_| Error::Internal)?;
            let label = scheme.banner(&now.join(&reached));
            if self
                .store
                .append_to_conversation(&c.id, &c.label, &label, &title, &messages, at)
                .await
                .map_err(store_error)?
            {
                return Ok(());
            }
        }
        tracing::error!(conversation = %self.id, "could not keep a turn: its label kept changing");
        Err(Error::Internal)
    }
}

/// The conversation as Markdown, as a reader prints it: its banner above and below, every
/// message with its portion mark, every citation with its document and portion mark.
pub async fn markdown(state: &Service, principal: &Principal, id: &str) -> Result<String, Error> {
    let kept = open(state, principal, id).await?;
    let mut out = String::new();
    let banner = &kept.conversation.label;
    out.push_str(&format!("**{banner}**\n\n"));
    let title = if kept.conversation.title.is_empty() {
        "Conversation"
    } else {
        kept.conversation.title.as_str()
    };
    out.push_str(&format!("# {title}\n\n"));
    for m in &kept.messages {
        let who = if m.role == "user" { "You" } else { "Assistant" };
        out.push_str(&format!("**{who}** {} {}\n\n", m.portion, m.content.trim()));
        for c in &m.citations {
            let portion = c["label"]
                .as_str()
                .and_then(|l| state.policy.scheme.parse(l).ok())
                .map(|l| state.policy.scheme.portion(&l))
                .unwrap_or_default();
            out.push_str(&format!(
                "> [{}] {portion} {} — {}\n",
                c["index"],
                c["document_name"].as_str().unwrap_or_default(),
                c["text"].as_str().unwrap_or_default().trim()
            ));
        }
        if !m.citations.is_empty() {
            out.push('\n');
        }
    }
    out.push_str(&format!("**{banner}**\n"));
    Ok(out)
}
