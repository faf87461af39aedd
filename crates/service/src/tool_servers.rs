//! Agents' tools as the service knows them, with no transport in it: the `[[mcp_servers]]` an
//! administrator registers, each placed like a deployment (accreditation, jurisdiction,
//! operating nation) with the floor its results are labelled at and which of its tools write;
//! the `[agents]` limits; and the [`ToolClients`] seam an MCP client implements (the
//! `enclave-tools` crate, over stdio and streamable HTTP), so the service depends on no HTTP
//! stack. Labels are strings in the configuration, parsed at start-up; a wrong entry refuses
//! the whole configuration.

use std::collections::BTreeSet;
use std::time::Duration;

use enclave_label::{Label, Releasability, Scheme};
use enclave_policy::egress::ToolPlacement;
use enclave_policy::{ENCLAVE, Placement};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A configuration entry that cannot be served: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub at: String,
    pub message: String,
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        at: at.into(),
        message: message.into(),
    }
}

/// What calls MCP servers: the `enclave-tools` crate in a server; [`NoTools`] where none is
/// given. Dropping a call's future cancels the call.
#[async_trait::async_trait]
pub trait ToolClients: Send + Sync {
    /// The tools `server` offers.
    async fn list(&self, server: &str) -> Result<Vec<ToolInfo>, ToolError>;
    /// Calls `tool` on `server` with `arguments`.
    async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<Output, ToolError>;
}

/// No MCP client in this process: every server is unavailable, saying so.
#[derive(Debug, Default)]
pub struct NoTools;

#[async_trait::async_trait]
impl ToolClients for NoTools {
    async fn list(&self, server: &str) -> Result<Vec<ToolInfo>, ToolError> {
        Err(ToolError::Connect {
            server: server.to_string(),
            reason: "this process has no MCP client".into(),
        })
    }

    async fn call(
        &self,
        server: &str,
        _tool: &str,
        _arguments: serde_json::Map<String, Value>,
    ) -> Result<Output, ToolError> {
        self.list(server).await.map(|_| Output {
            text: String::new(),
            is_error: true,
        })
    }
}

/// How to reach one server, and its limits.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    pub transport: Transport,
    /// The longest a call (or start-up and listing) may take.
    pub timeout: Duration,
    /// The largest result, in bytes of text, that is read into a context.
    pub max_result_bytes: usize,
}

#[derive(Debug, Clone)]
pub enum Transport {
    /// A program and its arguments, speaking MCP over its standard input and output.
    Stdio { command: Vec<String> },
    /// An MCP streamable HTTP endpoint.
    Http { url: String },
}

/// A tool a server offers, as the model is shown it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema object.
    pub input_schema: Value,
}

/// A tool's result as text: its text blocks joined, other blocks described.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub text: String,
    /// The tool said its call failed (MCP's `isError`); the text says why.
    pub is_error: bool,
}

/// Why a server could not be used; every one ends the call with a clear error, never the server.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("no MCP server named `{0}` is registered")]
    Unknown(String),
    #[error("cannot start or reach the MCP server `{server}`: {reason}")]
    Connect { server: String, reason: String },
    #[error("the MCP server `{server}` did not answer within {secs} s")]
    Timeout { server: String, secs: f64 },
    #[error("the MCP server `{server}` failed: {reason}")]
    Failed { server: String, reason: String },
    #[error(
        "the result of `{tool}` from `{server}` is over the {limit}-byte limit; nothing of it was used"
    )]
    TooLarge {
        server: String,
        tool: String,
        limit: usize,
    },
}

impl ToolError {
    /// The stable code an error item and the audit record carry.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unknown(_) => "unknown_mcp_server",
            Self::Connect { .. } => "mcp_unavailable",
            Self::Timeout { .. } => "mcp_timeout",
            Self::Failed { .. } => "mcp_failed",
            Self::TooLarge { .. } => "mcp_result_too_large",
        }
    }
}

/// One registered MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Unique: requests name it as the `mcp` tool's `server_label`.
    pub name: String,
    /// Start it as a child process speaking MCP over stdio: the program, then its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Or reach it over MCP's streamable HTTP at this URL.
    #[serde(default)]
    pub url: Option<String>,
    /// The highest label a call's context may carry (default: the scheme's lowest label).
    #[serde(default)]
    pub accreditation: Option<String>,
    /// What its results are labelled at least (default: the scheme's lowest label).
    #[serde(default)]
    pub floor: Option<String>,
    /// Where its data goes: `enclave` (the default) or a jurisdiction the tenant must allow.
    #[serde(default)]
    pub jurisdiction: Option<String>,
    /// The code of the nation that operates it (such as `DEU`); needed outside the enclave.
    #[serde(default)]
    pub nation: Option<String>,
    /// Its tools that write or send (have effects outside the conversation); `["*"]`: all.
    #[serde(default)]
    pub writes: Vec<String>,
    /// Writing tools the administrator marks safe: no approval is asked for them.
    #[serde(default)]
    pub safe: Vec<String>,
    /// Tenants that may use it; empty: every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// API key ids that may use it; empty: every key of a tenant that may.
    #[serde(default)]
    pub keys: Vec<String>,
    /// The longest a call may take, in seconds (default 30).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// The largest result read into a context, in bytes (default 1 MiB).
    #[serde(default)]
    pub max_result_bytes: Option<usize>,
}

impl McpServerConfig {
    /// Whether `tool` writes or sends.
    pub fn writes(&self, tool: &str) -> bool {
        self.writes.iter().any(|w| w == "*" || w == tool)
    }

    /// Whether the administrator marked `tool`'s writes safe.
    pub fn safe(&self, tool: &str) -> bool {
        self.safe.iter().any(|w| w == "*" || w == tool)
    }

    /// How to reach it, or a sentence saying what is wrong with the entry.
    pub fn spec(&self) -> Result<ServerSpec, String> {
        if self.name.is_empty() {
            return Err("`name` must not be empty".into());
        }
        let transport = match (&self.url, self.command.is_empty()) {
            (Some(url), true) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "`url = \"{url}\"` must be an http:// or https:// URL"
                    ));
                }
                Transport::Http { url: url.clone() }
            }
            (None, false) => Transport::Stdio {
                command: self.command.clone(),
            },
            _ => {
                return Err(
                    "give exactly one of `command` (a stdio server) and `url` (streamable HTTP)"
                        .into(),
                );
            }
        };
        let secs = self.timeout_secs.unwrap_or(30.0);
        let timeout = Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("`timeout_secs` must be a positive number; got {secs}"))?;
        let max_result_bytes = self.max_result_bytes.unwrap_or(1 << 20);
        if max_result_bytes == 0 {
            return Err("`max_result_bytes` must be at least 1".into());
        }
        Ok(ServerSpec {
            name: self.name.clone(),
            transport,
            timeout,
            max_result_bytes,
        })
    }
}

/// `[agents]`: limits on every agent run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentLimits {
    /// Model turns in one run (one request) at most.
    pub max_steps: u32,
    /// Seconds one run may take, tool calls included.
    pub max_secs: f64,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            max_steps: 8,
            max_secs: 120.0,
        }
    }
}

impl AgentLimits {
    pub(crate) fn validated(self) -> Result<Self, ConfigError> {
        if self.max_steps == 0 {
            return Err(invalid("agents.max_steps", "must be at least 1"));
        }
        if Duration::try_from_secs_f64(self.max_secs).map_or(true, |d| d.is_zero()) {
            return Err(invalid(
                "agents.max_secs",
                format!(
                    "must be a positive number of seconds; got {}",
                    self.max_secs
                ),
            ));
        }
        Ok(self)
    }

    pub fn max_time(&self) -> Duration {
        Duration::try_from_secs_f64(self.max_secs).unwrap_or(Duration::from_secs(120))
    }
}

/// One registered MCP server, ready for decisions.
#[derive(Debug, Clone)]
pub struct ToolServer {
    pub config: McpServerConfig,
    pub spec: ServerSpec,
    /// Its accreditation, releasable only to the nation that operates it.
    pub accreditation: Label,
    /// What its results are labelled at least.
    pub floor: Label,
    pub jurisdiction: String,
}

impl ToolServer {
    /// What the egress rule knows of `tool` on this server.
    pub fn placement(&self, tool: &str) -> ToolPlacement {
        ToolPlacement {
            placement: Placement {
                name: format!("{}.{tool}", self.config.name),
                accreditation: self.accreditation.clone(),
                jurisdiction: self.jurisdiction.clone(),
            },
            writes: self.config.writes(tool),
            safe: self.config.safe(tool),
        }
    }
}

/// The `[[mcp_servers]]` entries, checked and placed under `scheme`.
pub fn servers(
    configs: &[McpServerConfig],
    scheme: &Scheme,
) -> Result<Vec<ToolServer>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(configs.len());
    for (i, c) in configs.iter().enumerate() {
        let at = format!("mcp_servers[{i}] (`{}`)", c.name);
        let spec = c.spec().map_err(|m| invalid(&at, m))?;
        if !names.insert(c.name.clone()) {
            return Err(invalid(at, "another MCP server has this name"));
        }
        let label = |field: &str, value: Option<&str>| -> Result<Label, ConfigError> {
            match value {
                None => Ok(scheme.lowest()),
                Some(v) => scheme.parse(v).map_err(|error| {
                    invalid(
                        format!("{at}.{field}"),
                        format!("`{v}` is not a label of scheme {}: {error}", scheme.name()),
                    )
                }),
            }
        };
        let jurisdiction = c
            .jurisdiction
            .clone()
            .unwrap_or_else(|| ENCLAVE.to_string());
        let nation = match (&c.nation, jurisdiction == ENCLAVE) {
            (Some(n), _) => n.trim().to_uppercase(),
            (None, true) => scheme.owner().to_string(),
            (None, false) => {
                return Err(invalid(
                    at,
                    "an MCP server outside the enclave needs `nation`: the code of the nation that operates it (such as `DEU`), which decides what may be sent to it",
                ));
            }
        };
        let mut accreditation = label("accreditation", c.accreditation.as_deref())?;
        accreditation.releasability = Releasability::To(BTreeSet::from([nation]));
        let floor = label("floor", c.floor.as_deref())?;
        for tool in &c.safe {
            if tool != "*" && !c.writes(tool) {
                return Err(invalid(
                    at,
                    format!("`safe` names `{tool}`, which is not in `writes`"),
                ));
            }
        }
        out.push(ToolServer {
            config: c.clone(),
            spec,
            accreditation,
            floor,
            jurisdiction,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Entries are built through serde_json, which reads the same fields as TOML.
    fn entry(json: &str) -> McpServerConfig {
        match serde_json::from_str(json) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn exactly_one_transport() {
        let both = entry(r#"{"name":"a","command":["x"],"url":"http://h/mcp"}"#);
        assert!(both.spec().is_err());
        let none = entry(r#"{"name":"a"}"#);
        assert!(none.spec().is_err());
        let ftp = entry(r#"{"name":"a","url":"ftp://h"}"#);
        assert!(ftp.spec().unwrap_err().contains("http"));
        let stdio = entry(r#"{"name":"a","command":["python3","s.py"]}"#);
        assert!(matches!(
            stdio.spec().unwrap().transport,
            Transport::Stdio { .. }
        ));
    }

    #[test]
    fn writes_and_safe_name_tools_or_all() {
        let c = entry(r#"{"name":"a","command":["x"],"writes":["send"],"safe":["*"]}"#);
        assert!(c.writes("send") && !c.writes("read"));
        assert!(c.safe("anything"));
        let unknown =
            serde_json::from_str::<McpServerConfig>(r#"{"name":"a","command":["x"],"timeout":1}"#);
        assert!(unknown.is_err(), "an unknown field is refused");
        let zero = entry(r#"{"name":"a","command":["x"],"timeout_secs":0}"#);
        assert!(zero.spec().unwrap_err().contains("timeout_secs"));
    }
}
