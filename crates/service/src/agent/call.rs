//! One MCP tool call inside a run: the egress rule first, then the call, then its result's
//! label. Every outcome is an item and an audit record; only a result above the caller's
//! clearance ends the run, and that result is never shown.

use std::time::Instant;

use enclave_policy::egress::{self, Context, Egress};
use enclave_policy::{check_clearance, label_request};

use super::{Agent, Failure, Item, McpCall, record};
use crate::conversation::{Role, Turn};
use crate::error::Error;
use crate::monitor;

/// What the model is told a call gave.
pub(super) struct CallResult {
    pub(super) text: String,
}

impl CallResult {
    /// The tool turn answering the model's call `id`.
    pub(super) fn turn(self, id: &str) -> Turn {
        let mut t = Turn::new(Role::Tool, self.text);
        t.tool_call_id = Some(id.to_string());
        t
    }
}

/// A call the model made: refused, held for approval (`None`: the run returns), or run.
/// `asks`: the request wants to approve calls to this tool.
pub(super) async fn gated(
    agent: &mut Agent<'_>,
    server: usize,
    call: &McpCall,
    asks: bool,
) -> Result<Option<CallResult>, Error> {
    match decide(agent, server, call, false) {
        Egress::Refused { code, reason } => refuse(agent, call, code, reason).await.map(Some),
        Egress::NeedsApproval(reason) => {
            hold(agent, call, reason).await?;
            Ok(None)
        }
        Egress::Run if asks => {
            let reason = format!(
                "the request asks to approve calls to `{}` on `{}`",
                call.tool, call.server
            );
            hold(agent, call, reason).await?;
            Ok(None)
        }
        Egress::Run => execute(agent, server, call).await.map(Some),
    }
}

/// A call a person approved: the label rule still applies, as it does to every call.
pub(super) async fn mcp(
    agent: &mut Agent<'_>,
    server: usize,
    call: &McpCall,
    approved: bool,
) -> Result<CallResult, Error> {
    match decide(agent, server, call, approved) {
        Egress::Refused { code, reason } => refuse(agent, call, code, reason).await,
        Egress::NeedsApproval(reason) => refuse(agent, call, "approval_required", reason).await,
        Egress::Run => execute(agent, server, call).await,
    }
}

/// A call a person declined.
pub(super) async fn declined(agent: &mut Agent<'_>, call: &McpCall) -> Result<CallResult, Error> {
    let reason = format!("the user did not approve the call to `{}`", call.tool);
    refuse(agent, call, "approval_declined", reason).await
}

/// A call to a tool the request does not offer.
pub(super) async fn not_offered(
    agent: &mut Agent<'_>,
    call: &McpCall,
) -> Result<CallResult, Error> {
    let reason = format!("no tool named `{}` is offered in this request", call.tool);
    refuse(agent, call, "tool_not_offered", reason).await
}

fn decide(agent: &Agent<'_>, server: usize, call: &McpCall, approved: bool) -> Egress {
    let policy = &agent.state.policy;
    let Some(s) = policy.tool_servers.get(server) else {
        return Egress::Refused {
            code: "unknown_mcp_server",
            reason: format!("no MCP server named `{}` is registered", call.server),
        };
    };
    egress::tool_call(
        &policy.scheme,
        policy.tenant(&agent.principal.tenant_name),
        &s.placement(&call.tool),
        Context {
            label: &agent.label,
            tainted: agent.tainted,
            approved,
        },
    )
}

/// Nothing is sent: the model and the client see why, the log records it.
async fn refuse(
    agent: &mut Agent<'_>,
    call: &McpCall,
    code: &'static str,
    reason: String,
) -> Result<CallResult, Error> {
    let failure = Failure {
        code,
        message: reason,
    };
    unanswered(agent, call, failure, "refused", 0).await
}

/// Held for a person: the run returns with the request.
async fn hold(agent: &mut Agent<'_>, call: &McpCall, reason: String) -> Result<(), Error> {
    let banner = agent.banner();
    agent
        .record_call(record::Call {
            call,
            output: None,
            code: Some("approval_requested"),
            detail: format!("held for approval: {reason}"),
            before: banner.clone(),
            after: banner,
            latency_ms: 0,
        })
        .await?;
    agent.emit(Item::ApprovalRequested {
        call: call.clone(),
        reason,
    });
    Ok(())
}

/// Calls the server, then labels the result: its server's floor joined with the markings in it.
async fn execute(
    agent: &mut Agent<'_>,
    server: usize,
    call: &McpCall,
) -> Result<CallResult, Error> {
    let started = Instant::now();
    let before = agent.banner();
    let arguments = match call.arguments.trim() {
        "" => Ok(serde_json::Map::new()),
        text => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => Err(()),
        },
    };
    let Ok(arguments) = arguments else {
        return fail(
            agent,
            call,
            Failure {
                code: "invalid_tool_arguments",
                message: "the call's arguments are not a JSON object".into(),
            },
            started,
        )
        .await;
    };
    let remaining = agent.deadline.saturating_duration_since(Instant::now());
    let answered = tokio::time::timeout(
        remaining,
        agent.state.tools.call(&call.server, &call.tool, arguments),
    )
    .await;
    let output = match answered {
        Err(_) => {
            let message = "the run's time ran out during the call; it was cancelled".to_string();
            return fail(
                agent,
                call,
                Failure {
                    code: "max_time",
                    message,
                },
                started,
            )
            .await;
        }
        Ok(Err(e)) => {
            // A server's own error message is content it sent, unlabelled: it goes to the log,
            // never into the context or to the client.
            let message = match &e {
                crate::tool_servers::ToolError::Failed { server, reason } => {
                    tracing::warn!(server = %server, reason = %reason, "MCP call failed");
                    format!(
                        "the MCP server `{server}` failed the call (its message is in the server log)"
                    )
                }
                other => other.to_string(),
            };
            let failure = Failure {
                code: e.code(),
                message,
            };
            return fail(agent, call, failure, started).await;
        }
        Ok(Ok(output)) => output,
    };
    let policy = &agent.state.policy;
    let Some(s) = policy.tool_servers.get(server) else {
        return Err(Error::Internal);
    };
    let labelled = label_request(&policy.inspector, &s.floor, [output.text.as_str()]);
    let texts = [output.text];
    // The marking itself is content of unknown label: the sentence does not quote it.
    if monitor::unrecognized(&policy.scheme, &texts, &labelled.findings).is_some() {
        let message = format!(
            "the result was withheld: it carries a marking with a control scheme {} does not know, and a marking Enclave cannot read is never ignored",
            policy.scheme.name()
        );
        let failure = Failure {
            code: "unrecognized_marking",
            message,
        };
        return fail(agent, call, failure, started).await;
    }
    let [text] = texts;
    let after = agent.label.join(&labelled.label);
    let latency_ms = record::since(started);
    if let Err(why) = check_clearance(&policy.scheme, &agent.clearance, &after) {
        metrics::counter!("enclave_agent_tool_calls_total", "outcome" => "above_clearance")
            .increment(1);
        let banner = policy.scheme.banner(&after);
        agent
            .record_call(record::Call {
                call,
                output: Some(&text),
                code: Some("label_exceeds_clearance"),
                detail: format!("result withheld, run ended: labelled {banner}: {why}"),
                before,
                after: banner.clone(),
                latency_ms,
            })
            .await?;
        return Err(Error::LabelExceedsClearance(format!(
            "a result of the tool `{}` raised the context to {banner}: {why}; the run has ended and the result was not shown",
            call.tool
        )));
    }
    agent.label = after;
    agent.tainted = true;
    let banner = agent.banner();
    metrics::counter!("enclave_agent_tool_calls_total", "outcome" => "ran").increment(1);
    agent
        .record_call(record::Call {
            call,
            output: Some(&text),
            code: output.is_error.then_some("tool_error"),
            detail: format!(
                "`{}` on `{}` {}",
                call.tool,
                call.server,
                if output.is_error {
                    "reported an error"
                } else {
                    "ran"
                }
            ),
            before,
            after: banner.clone(),
            latency_ms,
        })
        .await?;
    let (item_output, error, told) = if output.is_error {
        let failure = Failure {
            code: "tool_error",
            message: text,
        };
        let told = failure.told();
        (None, Some(failure), told)
    } else {
        (Some(text.clone()), None, text)
    };
    agent.emit(Item::Called {
        call: call.clone(),
        output: item_output,
        error,
        label: banner,
    });
    Ok(CallResult { text: told })
}

/// The call did not give a result: the model and the client see why.
async fn fail(
    agent: &mut Agent<'_>,
    call: &McpCall,
    failure: Failure,
    started: Instant,
) -> Result<CallResult, Error> {
    tracing::warn!(server = %call.server, tool = %call.tool, code = failure.code, error = %failure.message, "tool call failed");
    unanswered(agent, call, failure, "failed", record::since(started)).await
}

/// A call that gave no result (`outcome`: `refused` or `failed`): counted, recorded with the
/// context unchanged, and shown to the model (by kind) and to the client.
async fn unanswered(
    agent: &mut Agent<'_>,
    call: &McpCall,
    failure: Failure,
    outcome: &'static str,
    latency_ms: u64,
) -> Result<CallResult, Error> {
    metrics::counter!("enclave_agent_tool_calls_total", "outcome" => outcome).increment(1);
    tracing::info!(server = %call.server, tool = %call.tool, code = failure.code, outcome, "tool call gave no result");
    let banner = agent.banner();
    agent
        .record_call(record::Call {
            call,
            output: None,
            code: Some(failure.code),
            detail: format!("{outcome}: {}", failure.message),
            before: banner.clone(),
            after: banner.clone(),
            latency_ms,
        })
        .await?;
    let text = failure.told();
    agent.emit(Item::Called {
        call: call.clone(),
        output: None,
        error: Some(failure),
        label: banner,
    });
    Ok(CallResult { text })
}
