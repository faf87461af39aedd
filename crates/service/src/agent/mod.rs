//! Agent runs: model turns and tool calls in a loop, each through the service core, with labels
//! flowing through every step by rule.
//!
//! The context label is the join of everything in the context: instructions, input, each model
//! turn's answer and each tool result (its server's floor joined with the markings found in it).
//! It never falls: every model turn is admitted at no less than it, so a turn whose context is
//! above a deployment's accreditation goes to an accredited one or the run stops with
//! `no_accredited_deployment`. A tool call runs only where the egress rule says so
//! ([`enclave_policy::egress`]); a refused call is an item the model and the client both see,
//! and nothing is sent. A result that would raise the context above the caller's clearance ends
//! the run (403 `label_exceeds_clearance`) and is never shown. Every model turn and every tool
//! call is its own audit record, linked to the run.
//!
//! The loop knows nothing of a wire format: a surface turns [`Item`]s into its own.

mod call;
mod record;
mod search;
mod turn;

pub use crate::tool_servers::{AgentLimits, ToolServer};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::tool_servers::ToolInfo;
use enclave_label::Label;
use tokio::sync::mpsc::UnboundedSender;

use crate::Service;
use crate::conversation::{Conversation, Role, Tool, ToolCall, Turn};
use crate::dispatch::UpstreamClock;
use crate::error::Error;
use crate::info::EnclaveInfo;
use crate::monitor::{self, Declared};
use crate::note::CallNote;
use crate::principal::Principal;

/// Which calls to an MCP server's tools the client wants to approve itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    Always,
    Never,
    /// These tools ask; the others do not.
    Only(BTreeSet<String>),
    /// These tools do not ask; the others do.
    Except(BTreeSet<String>),
}

impl Approval {
    pub fn asks(&self, tool: &str) -> bool {
        match self {
            Approval::Always => true,
            Approval::Never => false,
            Approval::Only(tools) => tools.contains(tool),
            Approval::Except(tools) => !tools.contains(tool),
        }
    }
}

/// An MCP server a request offers the model.
#[derive(Debug, Clone)]
pub struct Offer {
    /// A registered server's name (the request's `server_label`).
    pub server: String,
    /// The tools offered; `None`: all the server lists.
    pub allowed: Option<Vec<String>>,
    pub approval: Approval,
}

/// A call the model asked for on an MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpCall {
    pub id: String,
    pub server: String,
    pub tool: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

/// A person's answer to an approval request of an earlier response.
#[derive(Debug, Clone)]
pub struct Decided {
    pub call: McpCall,
    pub approve: bool,
}

/// Why a tool call did not give a result: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    /// What the model is told, and the `error` a client sends back into a later context. A
    /// refusal's full sentence names labels, which inspection rightly reads as markings: in the
    /// context they would raise it. So refusals are told by kind only; `message` keeps the
    /// sentence for the client.
    pub fn told(&self) -> String {
        match self.code {
            "tool_not_accredited" => "Enclave refused this call: the tool is not accredited for what this conversation holds, so nothing was sent.".into(),
            "tool_jurisdiction_not_allowed" => "Enclave refused this call: the tool's data would go to a jurisdiction this tenant does not allow, so nothing was sent.".into(),
            "approval_declined" => "The user did not approve this call; nothing was sent.".into(),
            "approval_required" => "This call needs a person's approval; nothing was sent.".into(),
            "tool_not_offered" => "No tool of that name is offered here.".into(),
            "tool_error" => format!("The tool reported an error: {}", self.message),
            code => format!("The call failed ({code}): {}", self.message),
        }
    }
}

/// What a run produced, in order.
#[derive(Debug, Clone)]
pub enum Item {
    /// The tools a server offered.
    Listed {
        server: String,
        tools: Vec<ToolInfo>,
    },
    /// The model's text in one turn, and the context's label after it.
    Message { text: String, label: String },
    /// A call to a tool the client runs: the run has returned control.
    FunctionCall(ToolCall),
    /// An MCP call that ran (`output`), or was refused or failed (`error`); `label` is the
    /// context's label after it.
    Called {
        call: McpCall,
        output: Option<String>,
        error: Option<Failure>,
        label: String,
    },
    /// A call held until a person approves it; the run has returned.
    ApprovalRequested { call: McpCall, reason: String },
    /// A search of knowledge bases: the passages found, each with its label, and the context's
    /// label after them.
    Searched {
        id: String,
        queries: Vec<String>,
        results: Vec<crate::info::Citation>,
        label: String,
    },
}

/// What a streaming surface hears as the run goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A piece of the model's text in the current turn.
    Text(String),
    /// An item is complete (a message's text has been sent as `Text` first).
    Item(Item),
}

/// One run's inputs.
#[derive(Debug)]
pub struct Run {
    /// The run's id (the response id): audit records of its steps carry it.
    pub id: String,
    pub model: String,
    pub declared: Option<Declared>,
    /// The turns so far and the client's function tools.
    pub conversation: Conversation,
    /// The label of what the run continues: the context never falls below it.
    pub floor: Option<Label>,
    pub offers: Vec<Offer>,
    /// Knowledge bases the model may search (`file_search`).
    pub search: Option<Search>,
    /// Answers to approval requests the run continues from.
    pub decided: Vec<Decided>,
}

/// The `file_search` tool: Enclave's knowledge bases, read as the caller may read them.
#[derive(Debug, Clone)]
pub struct Search {
    /// Knowledge-base ids or names (the request's `vector_store_ids`).
    pub stores: Vec<String>,
    /// Passages per search, 1 to 50.
    pub max_results: usize,
}

/// Why a run stopped before the model was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    MaxSteps,
    MaxTime,
}

impl Stopped {
    pub fn as_str(self) -> &'static str {
        match self {
            Stopped::MaxSteps => "max_steps",
            Stopped::MaxTime => "max_time",
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Ran {
    pub items: Vec<Item>,
    /// The context label at the end, as a banner.
    pub label: String,
    /// The last model turn's: deployment, jurisdiction, redaction.
    pub info: EnclaveInfo,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
    pub stopped: Option<Stopped>,
}

/// Where each tool name the model may call leads.
enum Target {
    Function,
    Mcp { server: usize, offer: usize },
    Search,
}

/// A run under way.
struct Agent<'a> {
    state: &'a Service,
    principal: &'a Principal,
    id: String,
    label: Label,
    clearance: Label,
    /// Content from a tool or a document is in the context.
    tainted: bool,
    items: Vec<Item>,
    progress: Option<&'a UnboundedSender<Progress>>,
    deadline: Instant,
}

impl Agent<'_> {
    fn banner(&self) -> String {
        self.state.policy.scheme.banner(&self.label)
    }

    /// Records one tool call of this run.
    async fn record_call(&self, c: record::Call<'_>) -> Result<(), Error> {
        record::call(self.state, self.principal, &self.id, c).await
    }

    fn emit(&mut self, item: Item) {
        if let Some(p) = self.progress {
            // A surface that went away stops hearing; the run's own record is unaffected.
            let _ = p.send(Progress::Item(item.clone()));
        }
        self.items.push(item);
    }
}

/// Runs model turns and MCP tool calls until the model answers without a call, calls a tool the
/// client runs, a call waits for approval, or a limit is reached.
pub async fn run(
    state: &Service,
    principal: &Principal,
    run: Run,
    note: &mut CallNote,
    clock: &UpstreamClock,
    progress: Option<&UnboundedSender<Progress>>,
) -> Result<Ran, Error> {
    let limits = state.policy.agents;
    let Run {
        id,
        model,
        declared,
        mut conversation,
        floor,
        offers,
        search,
        decided,
    } = run;
    let clearance = monitor::clearance(&state.policy, principal)?;
    let mut agent = Agent {
        state,
        principal,
        id,
        label: floor.unwrap_or_else(|| state.policy.scheme.lowest()),
        clearance,
        tainted: conversation.turns.iter().any(|t| t.role == Role::Tool),
        items: Vec::new(),
        progress,
        deadline: Instant::now() + limits.max_time(),
    };
    let mut targets = offer_tools(&mut agent, &mut conversation, &offers).await?;
    if let Some(search) = &search {
        search::offer(&agent, &mut conversation, &mut targets, search).await?;
    }

    // Calls a person has answered since the run this continues.
    for d in decided {
        let turn = assistant_calls(
            String::new(),
            vec![ToolCall {
                id: d.call.id.clone(),
                name: d.call.tool.clone(),
                arguments: d.call.arguments.clone(),
            }],
        );
        conversation.turns.push(turn);
        let server = targets.values().find_map(|t| match t {
            Target::Mcp { server, offer } if offers[*offer].server == d.call.server => {
                Some(*server)
            }
            _ => None,
        });
        let result = match (server, d.approve) {
            (Some(s), true) => call::mcp(&mut agent, s, &d.call, true).await?,
            (Some(_), false) => call::declined(&mut agent, &d.call).await?,
            (None, _) => call::not_offered(&mut agent, &d.call).await?,
        };
        conversation.turns.push(result.turn(&d.call.id));
    }

    let mut used = (0u32, 0u32, 0u32);
    let mut info = None;
    let mut stopped = None;
    let mut steps = 0;
    loop {
        if steps == limits.max_steps {
            stopped = Some(Stopped::MaxSteps);
            break;
        }
        if Instant::now() >= agent.deadline {
            stopped = Some(Stopped::MaxTime);
            break;
        }
        steps += 1;
        let Some(turn) = turn::model_turn(
            &mut agent,
            &model,
            declared.as_ref(),
            &conversation,
            clock,
            note,
        )
        .await?
        else {
            stopped = Some(Stopped::MaxTime);
            break;
        };
        used.0 += turn.prompt_tokens;
        used.1 += turn.completion_tokens;
        used.2 += turn.cached_tokens;
        info = Some(turn.info);
        if !turn.text.is_empty() {
            let label = agent.banner();
            agent.emit(Item::Message {
                text: turn.text.clone(),
                label,
            });
        }
        if turn.calls.is_empty() {
            break;
        }
        conversation
            .turns
            .push(assistant_calls(turn.text, turn.calls.clone()));
        let mut returned = false;
        for c in turn.calls {
            match targets.get(&c.name) {
                Some(Target::Function) => {
                    agent.emit(Item::FunctionCall(c));
                    returned = true;
                }
                Some(Target::Search) => {
                    let Some(search) = &search else {
                        return Err(Error::Internal);
                    };
                    let result = search::run(&mut agent, search, &c).await?;
                    conversation.turns.push(result.turn(&c.id));
                }
                Some(Target::Mcp { server, offer }) => {
                    let mcp = McpCall {
                        id: c.id.clone(),
                        server: offers[*offer].server.clone(),
                        tool: c.name.clone(),
                        arguments: c.arguments.clone(),
                    };
                    let asks = offers[*offer].approval.asks(&c.name);
                    match call::gated(&mut agent, *server, &mcp, asks).await? {
                        Some(result) => conversation.turns.push(result.turn(&c.id)),
                        None => returned = true,
                    }
                }
                None => {
                    let mcp = McpCall {
                        id: c.id.clone(),
                        server: String::new(),
                        tool: c.name.clone(),
                        arguments: c.arguments,
                    };
                    let result = call::not_offered(&mut agent, &mcp).await?;
                    conversation.turns.push(result.turn(&c.id));
                }
            }
        }
        if returned {
            break;
        }
    }
    let label = agent.banner();
    note.model = Some(model.clone());
    note.outcome.tokens(used.0.into(), used.1.into());
    note.outcome.label(label.clone());
    let info = info.unwrap_or_else(|| EnclaveInfo {
        label: label.clone(),
        deployment: String::new(),
        jurisdiction: String::new(),
        redacted: false,
        citations: Vec::new(),
    });
    Ok(Ran {
        items: agent.items,
        label,
        info,
        prompt_tokens: used.0,
        completion_tokens: used.1,
        cached_tokens: used.2,
        stopped,
    })
}

/// Whether `principal` may use `server` at all (its tenant and key allow-lists).
fn admits(server: &ToolServer, principal: &Principal) -> bool {
    let c = &server.config;
    (c.tenants.is_empty() || c.tenants.contains(&principal.tenant_name))
        && (c.keys.is_empty() || c.keys.contains(&principal.key_id))
}

/// The assistant turn that made `calls`.
fn assistant_calls(text: String, calls: Vec<ToolCall>) -> Turn {
    let mut t = Turn::new(Role::Assistant, text);
    t.tool_calls = calls;
    t
}

/// Lists each offered server's tools (refusing servers that are unknown or not this caller's)
/// and adds them to the tools the model may call. Every name leads to one tool.
async fn offer_tools(
    agent: &mut Agent<'_>,
    conversation: &mut Conversation,
    offers: &[Offer],
) -> Result<BTreeMap<String, Target>, Error> {
    let mut targets: BTreeMap<String, Target> = conversation
        .tools
        .iter()
        .map(|t| (t.name.clone(), Target::Function))
        .collect();
    let servers = &agent.state.policy.tool_servers;
    for (o, offer) in offers.iter().enumerate() {
        let Some(s) = servers.iter().position(|s| s.config.name == offer.server) else {
            let known: Vec<&str> = servers.iter().map(|s| s.config.name.as_str()).collect();
            return Err(Error::UnknownToolServer(format!(
                "no MCP server named `{}` is registered{}; Enclave connects only to servers an administrator registered",
                offer.server,
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (registered: `{}`)", known.join("`, `"))
                }
            )));
        };
        let server = &servers[s];
        if !admits(server, agent.principal) {
            return Err(Error::ToolNotAllowed(format!(
                "the MCP server `{}` is not available to this key of tenant `{}`",
                offer.server, agent.principal.tenant_name
            )));
        }
        let listed =
            agent
                .state
                .tools
                .list(&offer.server)
                .await
                .map_err(|e| Error::ToolServerFailed {
                    code: e.code(),
                    message: e.to_string(),
                })?;
        let tools: Vec<ToolInfo> = listed
            .into_iter()
            .filter(|t| offer.allowed.as_ref().is_none_or(|a| a.contains(&t.name)))
            .collect();
        if tools.is_empty() {
            return Err(Error::invalid(
                "tools",
                format!(
                    "the `mcp` tool for `{}` offers no tools: `allowed_tools` names none the server lists",
                    offer.server
                ),
            ));
        }
        for t in &tools {
            if targets.contains_key(&t.name) {
                return Err(Error::invalid(
                    "tools",
                    format!(
                        "two tools are named `{}`; the model could not tell them apart: narrow `allowed_tools`",
                        t.name
                    ),
                ));
            }
            targets.insert(
                t.name.clone(),
                Target::Mcp {
                    server: s,
                    offer: o,
                },
            );
            conversation.tools.push(Tool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.input_schema.clone(),
            });
        }
        agent.emit(Item::Listed {
            server: offer.server.clone(),
            tools,
        });
    }
    Ok(targets)
}
