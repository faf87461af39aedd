//! `[[mcp_servers]]`: the MCP servers an administrator registers, with what Enclave needs to
//! decide calls to them. Labels are strings here; the service parses them against the scheme
//! in force at start-up and refuses the whole configuration if one is wrong.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ServerSpec, Transport};

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
