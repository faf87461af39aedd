//! The registered MCP servers as the policy holds them: each placed like a deployment
//! (accreditation, jurisdiction, operating nation), with the floor its results are labelled at,
//! which of its tools write, and who may use it. Built once at start-up; a wrong entry refuses
//! the whole configuration.

use std::collections::BTreeSet;
use std::time::Duration;

use enclave_label::{Label, Releasability, Scheme};
use enclave_policy::egress::ToolPlacement;
use enclave_policy::{ENCLAVE, Placement};
use enclave_tools::{McpServerConfig, ServerSpec};
use serde::{Deserialize, Serialize};

use crate::policy::{PolicyError, invalid};
use crate::principal::Principal;

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
    pub(crate) fn validated(self) -> Result<Self, PolicyError> {
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

    /// Whether `principal` may use this server at all (the tenant and key allow-lists).
    pub fn admits(&self, principal: &Principal) -> bool {
        let c = &self.config;
        (c.tenants.is_empty() || c.tenants.contains(&principal.tenant_name))
            && (c.keys.is_empty() || c.keys.contains(&principal.key_id))
    }
}

/// The `[[mcp_servers]]` entries, checked and placed under `scheme`.
pub fn servers(
    configs: &[McpServerConfig],
    scheme: &Scheme,
) -> Result<Vec<ToolServer>, PolicyError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(configs.len());
    for (i, c) in configs.iter().enumerate() {
        let at = format!("mcp_servers[{i}] (`{}`)", c.name);
        let spec = c.spec().map_err(|m| invalid(&at, m))?;
        if !names.insert(c.name.clone()) {
            return Err(invalid(at, "another MCP server has this name"));
        }
        let label = |field: &str, value: Option<&str>| -> Result<Label, PolicyError> {
            match value {
                None => Ok(scheme.lowest()),
                Some(v) => scheme.parse(v).map_err(|error| PolicyError::Label {
                    at: format!("{at}.{field}"),
                    value: v.to_string(),
                    scheme: scheme.name().to_string(),
                    error: Box::new(error),
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
