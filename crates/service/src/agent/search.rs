//! The `file_search` tool: the model searches the knowledge bases the request names, and reads
//! only what the caller may (passages above the caller's clearance are never retrieved). Each
//! passage keeps its label; the context rises to their join, and what was found is content from
//! documents (a writing tool now needs approval).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;

use super::call::CallResult;
use super::{Agent, Item, McpCall, Search, Target, record};
use crate::conversation::{Conversation, Tool, ToolCall};
use crate::error::Error;
use crate::retrieval;
use crate::types::Mode;

/// The tool's name as the model sees it.
pub const NAME: &str = "file_search";

/// Offers `file_search` when the caller may read knowledge bases and every one named exists.
pub(super) async fn offer(
    agent: &Agent<'_>,
    conversation: &mut Conversation,
    targets: &mut BTreeMap<String, Target>,
    search: &Search,
) -> Result<(), Error> {
    let kbs = retrieval::knowledge_bases(agent.state)?;
    retrieval::require(
        agent.state,
        agent.principal,
        enclave_policy::Action::ReadKnowledgeBases,
    )?;
    if search.stores.is_empty() {
        return Err(Error::invalid(
            "tools",
            "a `file_search` tool needs `vector_store_ids`: the knowledge bases to search",
        ));
    }
    for store in &search.stores {
        kbs.get(&agent.principal.tenant_name, store).await?;
    }
    if targets.contains_key(NAME) {
        return Err(Error::invalid(
            "tools",
            "another tool is named `file_search`",
        ));
    }
    targets.insert(NAME.to_string(), Target::Search);
    conversation.tools.push(Tool {
        name: NAME.to_string(),
        description: Some(
            "Searches the documents this conversation may use; returns numbered passages.".into(),
        ),
        parameters: json!({
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to look for"}},
            "required": ["query"],
        }),
    });
    Ok(())
}

/// Runs one search the model asked for.
pub(super) async fn run(
    agent: &mut Agent<'_>,
    search: &Search,
    call: &ToolCall,
) -> Result<CallResult, Error> {
    let started = Instant::now();
    let before = agent.banner();
    let query = serde_json::from_str::<serde_json::Value>(&call.arguments)
        .ok()
        .and_then(|v| v["query"].as_str().map(str::to_string))
        .unwrap_or_default();
    let kbs = retrieval::knowledge_bases(agent.state)?;
    // The caller's clearance is the ceiling: nothing above it is retrieved at all.
    let ceiling = retrieval::clearance(agent.state, agent.principal)?;
    let mut hits = Vec::new();
    for store in &search.stores {
        hits.extend(
            kbs.search(
                &agent.principal.tenant_name,
                store,
                &ceiling,
                &query,
                search.max_results,
                Mode::Hybrid,
            )
            .await?,
        );
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(search.max_results);
    let found = retrieval::build(hits);
    if let Some(floor) = &found.floor {
        agent.label = agent.label.join(floor);
    }
    agent.tainted = true;
    let after = agent.banner();
    let mut text = String::new();
    for c in &found.citations {
        text.push_str(&format!(
            "[{}] ({}) {}: {}\n",
            c.index, c.label, c.document_name, c.text
        ));
    }
    if text.is_empty() {
        text = "No passages were found.".into();
    }
    metrics::counter!("enclave_agent_tool_calls_total", "outcome" => "searched").increment(1);
    let searched = McpCall {
        id: call.id.clone(),
        server: "knowledge-bases".into(),
        tool: NAME.into(),
        arguments: call.arguments.clone(),
    };
    agent
        .record_call(record::Call {
            call: &searched,
            output: Some(&text),
            code: None,
            detail: format!(
                "searched {} for the model: {} passages",
                search.stores.join(", "),
                found.citations.len()
            ),
            before,
            after: after.clone(),
            latency_ms: record::since(started),
        })
        .await?;
    agent.emit(Item::Searched {
        id: call.id.clone(),
        queries: vec![query],
        results: found.citations,
        label: after,
    });
    Ok(CallResult { text })
}
