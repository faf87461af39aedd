//! Agents' tools: the MCP servers an administrator registered, reached through MCP's official
//! Rust SDK (`rmcp`) over stdio (a child process) or streamable HTTP: the service's
//! [`ToolClients`] seam, kept out of the service so that it depends on no HTTP stack.
//!
//! It owns the connections: started on first use, shared by every run, dropped and started
//! again when the server dies; listing tools and calling one with a time limit and a cap on the
//! result's size. It must never decide whether a call may run (the policy crate's `egress` rule
//! does, before a call is asked for), never connect to a server a request names rather than one
//! registered, and never keep a result past the call.

use std::collections::BTreeMap;
use std::sync::Arc;

use enclave_service::tool_servers::{
    Output, ServerSpec, ToolClients, ToolError, ToolInfo, Transport,
};
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::Value;
use tokio::sync::Mutex;

type Live = Arc<RunningService<RoleClient, ()>>;

struct Server {
    spec: ServerSpec,
    /// The running connection; `None` until first use and after it died.
    live: Mutex<Option<Live>>,
}

/// Every registered server, by name.
pub struct Clients {
    servers: BTreeMap<String, Server>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Clients {
    pub fn new(specs: Vec<ServerSpec>) -> Self {
        let servers = specs
            .into_iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    Server {
                        spec,
                        live: Mutex::new(None),
                    },
                )
            })
            .collect();
        Self { servers }
    }

    fn server(&self, name: &str) -> Result<&Server, ToolError> {
        self.servers
            .get(name)
            .ok_or_else(|| ToolError::Unknown(name.to_string()))
    }

    /// The tools `server` offers.
    pub async fn list(&self, server: &str) -> Result<Vec<ToolInfo>, ToolError> {
        let s = self.server(server)?;
        let live = s.connect().await?;
        let listed = s.bounded(live.peer().list_all_tools()).await?;
        Ok(listed
            .into_iter()
            .map(|t| ToolInfo {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect())
    }

    /// Calls `tool` on `server` with `arguments` (a JSON object). Dropping the future cancels
    /// the call at the server.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<Output, ToolError> {
        let s = self.server(server)?;
        let live = s.connect().await?;
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = Some(arguments);
        let result = s.bounded(live.peer().call_tool(params)).await?;
        let limit = s.spec.max_result_bytes;
        let mut text = String::new();
        for block in &result.content {
            let piece = match block {
                ContentBlock::Text(t) => t.text.as_str(),
                ContentBlock::Image(_) => "[an image the tool returned; not read]",
                ContentBlock::Audio(_) => "[audio the tool returned; not read]",
                // Resources, links and kinds newer than this client: described, never read.
                _ => "[a resource the tool returned; not read]",
            };
            if text.len() + piece.len() + 1 > limit {
                return Err(ToolError::TooLarge {
                    server: server.to_string(),
                    tool: tool.to_string(),
                    limit,
                });
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(piece);
        }
        if text.is_empty()
            && let Some(structured) = &result.structured_content
        {
            text = structured.to_string();
            if text.len() > limit {
                return Err(ToolError::TooLarge {
                    server: server.to_string(),
                    tool: tool.to_string(),
                    limit,
                });
            }
        }
        Ok(Output {
            text,
            is_error: result.is_error.unwrap_or(false),
        })
    }
}

#[async_trait::async_trait]
impl ToolClients for Clients {
    async fn list(&self, server: &str) -> Result<Vec<ToolInfo>, ToolError> {
        Clients::list(self, server).await
    }

    async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<Output, ToolError> {
        Clients::call(self, server, tool, arguments).await
    }
}

impl Server {
    /// The live connection, started when there is none (or the last one died).
    async fn connect(&self) -> Result<Live, ToolError> {
        let mut slot = self.live.lock().await;
        if let Some(live) = slot.as_ref()
            && !live.is_closed()
        {
            return Ok(Arc::clone(live));
        }
        *slot = None;
        let name = &self.spec.name;
        let fail = |reason: String| ToolError::Connect {
            server: name.clone(),
            reason,
        };
        let started = match &self.spec.transport {
            Transport::Stdio { command } => {
                let Some((program, args)) = command.split_first() else {
                    return Err(fail("its command is empty".into()));
                };
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).kill_on_drop(true);
                let (child, stderr) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| fail(e.to_string()))?;
                if let Some(stderr) = stderr {
                    forward_stderr(name.clone(), stderr);
                }
                tokio::time::timeout(self.spec.timeout, ().serve(child))
                    .await
                    .map_err(|_| self.timeout())?
                    .map_err(|e| fail(e.to_string()))?
            }
            Transport::Http { url } => {
                let transport = StreamableHttpClientTransport::from_uri(url.as_str());
                tokio::time::timeout(self.spec.timeout, ().serve(transport))
                    .await
                    .map_err(|_| self.timeout())?
                    .map_err(|e| fail(e.to_string()))?
            }
        };
        tracing::info!(server = %name, "MCP server connected");
        let live = Arc::new(started);
        *slot = Some(Arc::clone(&live));
        Ok(live)
    }

    fn timeout(&self) -> ToolError {
        ToolError::Timeout {
            server: self.spec.name.clone(),
            secs: self.spec.timeout.as_secs_f64(),
        }
    }

    /// Runs `call` within the server's time limit; a failure that may mean the connection died
    /// drops it, so the next call starts a fresh one.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, rmcp::ServiceError>>,
    ) -> Result<T, ToolError> {
        let outcome = tokio::time::timeout(self.spec.timeout, call).await;
        let err = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(rmcp::ServiceError::McpError(e))) => {
                // The server answered with a protocol error: it is alive.
                return Err(ToolError::Failed {
                    server: self.spec.name.clone(),
                    reason: e.message.to_string(),
                });
            }
            Ok(Err(e)) => ToolError::Failed {
                server: self.spec.name.clone(),
                reason: e.to_string(),
            },
            Err(_) => self.timeout(),
        };
        tracing::warn!(server = %self.spec.name, error = %err, "MCP call failed; the connection will be started again");
        self.live.lock().await.take();
        Err(err)
    }
}

/// A stdio server's own log (its standard error) goes to Enclave's log, a line at a time, so
/// an operator sees why a server failed; it never reaches a context or a client.
fn forward_stderr(server: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(server = %server, "{line}");
        }
    });
}
