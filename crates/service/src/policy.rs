//! The policy in force: marking scheme, deployments, tenant policies and Cedar authorization,
//! built once at start-up from the configuration and refused whole if any part is wrong.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use enclave_label::{Label, Scheme, SchemeDef};
use enclave_policy::{Authorizer, ENCLAVE, Inspector, Placement, TenantPolicy};
use enclave_quota::Limits;
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::upstream::{Protocol, Timeouts, UpstreamSpec};
use crate::{CHAT_MODEL, EMBEDDING_MODEL};

/// The model name of the one deployment that serves every fine-tuned model (`ft:…`): embedded,
/// inside the enclave. It is not a model anyone calls by this name, and is never listed.
pub const FINE_TUNED: &str = "ft:*";

/// The `scheme`, `policy_file`, `[[deployments]]` and `[tenants.NAME]` parts of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    /// `US`, `DE`, `NATO`, `EU`, or a table defining the operator's own scheme.
    pub scheme: SchemeChoice,
    /// Cedar policies added to the defaults; validated against the schema at start-up.
    pub policy_file: Option<PathBuf>,
    pub deployments: Vec<DeploymentConfig>,
    pub tenants: BTreeMap<String, TenantConfig>,
    /// `[[mcp_servers]]`: the MCP servers agents may call, each placed like a deployment.
    pub mcp_servers: Vec<crate::tool_servers::McpServerConfig>,
    /// `[agents]`: limits on every agent run.
    pub agents: crate::tool_servers::AgentLimits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SchemeChoice {
    Builtin(String),
    Custom(Box<SchemeDef>),
}

impl Default for SchemeChoice {
    fn default() -> Self {
        SchemeChoice::Builtin("US".to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The models Enclave runs itself.
    Embedded,
    /// Any server speaking OpenAI's chat completions API (vLLM, TGI, llama.cpp, Ollama, ...).
    Openai,
    /// A server speaking Anthropic's Messages API.
    Anthropic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Unique; appears in answers and audit records.
    pub name: String,
    /// The model name clients send. Several deployments may serve one model.
    pub model: String,
    pub backend: BackendKind,
    /// Upstreams: `chat` (default) or `embedding` (OpenAI protocol only).
    #[serde(default)]
    pub kind: Option<ModelKind>,
    /// The highest label it may process. Embedded: system high when unset. Required otherwise.
    #[serde(default)]
    pub accreditation: Option<String>,
    /// `enclave`, or where data goes (`eu`, `us`, ...). Embedded: always `enclave`.
    #[serde(default)]
    pub jurisdiction: Option<String>,
    /// The nation (or organisation code) that operates it, such as `DEU`. Content goes to it only
    /// if this nation is in the content's releasability, so `NOFORN` stays with the scheme's
    /// owner. Inside the enclave it defaults to the scheme's owner; required elsewhere.
    #[serde(default)]
    pub nation: Option<String>,
    /// Upstreams: the base URL, such as `http://10.0.0.5:8000/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Upstreams: the model name upstream; the `model` when unset.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Upstreams: the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Upstreams: a file holding the API key, such as a mounted secret.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Among deployments of one model and priority, the share of traffic (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Lower is tried first; higher priorities are fallbacks (default 0).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Upstreams: retries on this deployment before falling back (default 2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Upstreams: milliseconds to establish a connection (default 2000).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Upstreams: seconds to the first token, and the longest pause between tokens (default 30).
    #[serde(default)]
    pub first_token_timeout_secs: Option<f64>,
    /// Upstreams: seconds before a call is abandoned (default 120).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Upstreams: failures in a row that open the circuit (default 5).
    #[serde(default)]
    pub breaker_failures: Option<u32>,
    /// Upstreams: seconds an open circuit keeps the deployment out before a probe (default 30).
    #[serde(default)]
    pub breaker_cooldown_secs: Option<f64>,
    /// Upstreams: the model reads images (`image_url` parts, `input_image` items).
    #[serde(default)]
    pub vision: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// The label of a request that declares none; the scheme's lowest when unset.
    pub default_label: Option<String>,
    /// Jurisdictions outside the enclave this tenant's data may go to.
    pub jurisdictions: Vec<String>,
    /// Of those, where personal data may go after redaction.
    pub redact_pii_for: Vec<String>,
    /// Keep what was asked and answered, sealed per tenant beside the audit log.
    pub keep_content: bool,
    /// The highest clearance a signed token may give anyone of this tenant: a token claiming
    /// more gets this. Unset: the scheme's lowest level (tokens grant nothing above it).
    pub ceiling: Option<String>,
    /// Limits on the whole tenant.
    pub quota: Limits,
    /// Limits on each key of the tenant.
    pub key_quota: Limits,
    /// Limits on the tenant's use of one model, by model name.
    pub model_quota: BTreeMap<String, Limits>,
}

/// A tenant's quotas, per scope.
#[derive(Debug, Clone, Default)]
pub struct TenantQuota {
    pub tenant: Limits,
    pub key: Limits,
    pub models: BTreeMap<String, Limits>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Backend {
    Embedded,
    /// What the service's connector makes the deployment's client from.
    Upstream(Box<UpstreamSpec>),
}

/// When a deployment's circuit opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open it.
    pub failures: u32,
    pub cooldown: Duration,
}

/// A deployment in force: plain data. Its runtime parts (client, circuit breaker) are in the
/// service's registry, at [`Deployment::slot`].
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Its position in [`Policy::deployments`].
    pub slot: usize,
    /// The placement's accreditation as a banner, written once for the decisions that name it.
    pub accreditation: String,
    pub placement: Placement,
    pub model: String,
    pub kind: ModelKind,
    pub backend: Backend,
    pub weight: u32,
    pub priority: u32,
    pub retries: u32,
    pub breaker: BreakerConfig,
    /// It reads images; only such deployments are sent a request carrying one.
    pub vision: bool,
}

impl Deployment {
    fn embedded(
        placement: Placement,
        model: &str,
        kind: ModelKind,
        d: Option<&DeploymentConfig>,
    ) -> Self {
        Self {
            slot: 0,
            accreditation: String::new(),
            // The embedded engine is never skipped: its own refusals say when it cannot answer.
            breaker: BreakerConfig {
                failures: u32::MAX,
                cooldown: Duration::ZERO,
            },
            placement,
            model: model.to_string(),
            kind,
            backend: Backend::Embedded,
            weight: d.and_then(|d| d.weight).unwrap_or(1),
            priority: d.and_then(|d| d.priority).unwrap_or(0),
            retries: 0,
            // The embedded engine reads text only.
            vision: false,
        }
    }
}

fn describe_limits(l: &Limits) -> String {
    [
        (l.requests_per_minute, "requests/min"),
        (l.tokens_per_minute, "tokens/min"),
        (l.monthly_tokens, "tokens/month"),
        (l.concurrency, "at once"),
    ]
    .iter()
    .filter_map(|(v, unit)| v.map(|v| format!("{v} {unit}")))
    .collect::<Vec<_>>()
    .join(", ")
}

fn seconds(at: &str, field: &str, v: Option<f64>, default: f64) -> Result<Duration, PolicyError> {
    let v = v.unwrap_or(default);
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(
                at,
                format!("`{field}` must be a positive number of seconds; got {v}"),
            )
        })
}

/// A configuration that cannot be served, said so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("scheme: `{0}` is not a built-in scheme (US, DE, NATO, EU); define it as a table")]
    UnknownScheme(String),
    #[error("scheme: {0}")]
    Scheme(#[from] enclave_label::SchemeError),
    #[error("{at}: `{value}` is not a label of scheme {scheme}: {error}")]
    Label {
        at: String,
        value: String,
        scheme: String,
        error: Box<enclave_label::ParseError>,
    },
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    #[error("content inspection: {0}")]
    Inspector(#[from] enclave_policy::inspect::BuildError),
    #[error("{0}")]
    Authz(#[from] enclave_policy::AuthzError),
}

/// Everything the reference monitor needs, built once.
#[derive(Debug)]
pub struct Policy {
    pub scheme: Scheme,
    pub inspector: Inspector,
    pub authz: Authorizer,
    pub deployments: Vec<Deployment>,
    tenants: HashMap<String, TenantPolicy>,
    default_tenant: TenantPolicy,
    keep_content: BTreeSet<String>,
    ceilings: HashMap<String, Label>,
    quotas: HashMap<String, TenantQuota>,
    no_quota: TenantQuota,
    /// The registered MCP servers, their labels parsed against the scheme.
    pub tool_servers: Vec<crate::tool_servers::ToolServer>,
    pub agents: crate::tool_servers::AgentLimits,
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        at: at.into(),
        message: message.into(),
    }
}

impl PolicyConfig {
    /// The marking scheme alone, for commands that need no more of the policy.
    pub fn scheme(&self) -> Result<Scheme, PolicyError> {
        match &self.scheme {
            SchemeChoice::Builtin(name) => {
                Scheme::builtin(name).ok_or_else(|| PolicyError::UnknownScheme(name.clone()))
            }
            SchemeChoice::Custom(def) => Ok(Scheme::new(def.as_ref().clone())?),
        }
    }
}

impl Policy {
    /// The built-in default: US scheme, the embedded models at system high in the enclave.
    pub fn default_policy() -> Result<Self, PolicyError> {
        Self::from_config(&PolicyConfig::default(), None)
    }

    /// Builds the policy; `cedar` is the operator's policy file (name, text) when there is one.
    pub fn from_config(
        config: &PolicyConfig,
        cedar: Option<(&str, &str)>,
    ) -> Result<Self, PolicyError> {
        Self::from_config_with(config, cedar, &[])
    }

    /// [`Policy::from_config`] where the operator has added embedded models of their own
    /// (`enclave models add`): each is served as an embedded deployment, at the accreditation
    /// a configured deployment gives it, or at system high like the built-in models.
    pub fn from_config_with(
        config: &PolicyConfig,
        cedar: Option<(&str, &str)>,
        local_models: &[(String, ModelKind)],
    ) -> Result<Self, PolicyError> {
        let scheme = config.scheme()?;
        let label = |at: &str, value: &str| {
            scheme.parse(value).map_err(|error| PolicyError::Label {
                at: at.to_string(),
                value: value.to_string(),
                scheme: scheme.name().to_string(),
                error: Box::new(error),
            })
        };
        let mut deployments = Vec::new();
        let mut names = BTreeSet::new();
        for (i, d) in config.deployments.iter().enumerate() {
            let at = format!("deployments[{i}] (`{}`)", d.name);
            if d.name.is_empty() || d.model.is_empty() {
                return Err(invalid(at, "`name` and `model` must not be empty"));
            }
            if !names.insert(d.name.clone()) {
                return Err(invalid(at, "another deployment has this name"));
            }
            // Fine-tuned models carry the labels of what they learned and are served only by
            // their own engines inside the enclave: no configured deployment may claim them.
            if d.model.starts_with("ft:") {
                return Err(invalid(
                    at,
                    "model names starting with `ft:` are the fine-tuned models Enclave makes; they are served only inside the enclave, by Enclave itself",
                ));
            }
            // A deployment reads as its operating nation does: its accreditation's releasability
            // is that nation alone, so dominance also decides releasability (`NOFORN`, `REL TO`).
            let inside = d.jurisdiction.as_deref().is_none_or(|j| j == ENCLAVE)
                || d.backend == BackendKind::Embedded;
            let nation = match (&d.nation, inside) {
                (Some(n), _) => {
                    let n = n.trim().to_uppercase();
                    if !(2..=4).contains(&n.len()) || !n.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(invalid(
                            &at,
                            format!(
                                "`nation = \"{n}\"` is not a code of 2 to 4 capital letters, such as `DEU`"
                            ),
                        ));
                    }
                    n
                }
                (None, true) => scheme.owner().to_string(),
                (None, false) => {
                    return Err(invalid(
                        &at,
                        format!(
                            "a deployment outside the enclave needs `nation`: the code of the nation that operates it (such as `DEU`, `USA`), which decides what content may go to it (`NOFORN` only to {})",
                            scheme.owner()
                        ),
                    ));
                }
            };
            let operated_by = enclave_label::Releasability::To(BTreeSet::from([nation]));
            let accreditation = d
                .accreditation
                .as_deref()
                .map(|a| label(&format!("{at}.accreditation"), a))
                .transpose()?
                .map(|mut l| {
                    l.releasability = operated_by.clone();
                    l
                });
            let deployment = match d.backend {
                BackendKind::Embedded => {
                    let local = local_models.iter().find(|(name, _)| *name == d.model);
                    let kind = match (d.model.as_str(), local) {
                        (CHAT_MODEL, _) => ModelKind::Chat,
                        (EMBEDDING_MODEL, _) => ModelKind::Embedding,
                        (_, Some((_, kind))) => *kind,
                        (other, None) => {
                            let mut known = vec![CHAT_MODEL, EMBEDDING_MODEL];
                            known.extend(local_models.iter().map(|(n, _)| n.as_str()));
                            return Err(invalid(
                                at,
                                format!(
                                    "`{other}` is not an embedded model ({}); add your own with `enclave models add`",
                                    known
                                        .iter()
                                        .map(|m| format!("`{m}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                        }
                    };
                    if d.jurisdiction.as_deref().is_some_and(|j| j != ENCLAVE) {
                        return Err(invalid(
                            at,
                            "an embedded deployment's jurisdiction is `enclave`",
                        ));
                    }
                    if d.vision == Some(true) {
                        return Err(invalid(
                            at,
                            "the embedded engine reads text only: `vision` is for upstream deployments",
                        ));
                    }
                    if d.base_url.is_some()
                        || d.upstream_model.is_some()
                        || d.api_key_env.is_some()
                        || d.api_key_file.is_some()
                    {
                        return Err(invalid(
                            at,
                            "`base_url`, `upstream_model`, `api_key_env` and `api_key_file` are for upstream backends",
                        ));
                    }
                    Deployment::embedded(
                        Placement {
                            name: d.name.clone(),
                            accreditation: accreditation.unwrap_or_else(|| {
                                let mut high = scheme.system_high();
                                high.releasability = operated_by.clone();
                                high
                            }),
                            jurisdiction: ENCLAVE.to_string(),
                        },
                        &d.model,
                        kind,
                        Some(d),
                    )
                }
                BackendKind::Openai | BackendKind::Anthropic => {
                    let base_url = d
                        .base_url
                        .clone()
                        .ok_or_else(|| invalid(&at, "an upstream deployment needs `base_url`"))?;
                    let accreditation = accreditation.ok_or_else(|| {
                        invalid(
                            &at,
                            "an upstream deployment needs an explicit `accreditation`: the highest label it may receive",
                        )
                    })?;
                    let jurisdiction = d.jurisdiction.clone().ok_or_else(|| {
                        invalid(
                            &at,
                            "an upstream deployment needs a `jurisdiction`: `enclave` if it runs on your hardware, else where it is (`eu`, `us`, ...)",
                        )
                    })?;
                    let api_key = match (&d.api_key_env, &d.api_key_file) {
                        (Some(_), Some(_)) => {
                            return Err(invalid(
                                &at,
                                "give the credential by `api_key_env` or `api_key_file`, not both",
                            ));
                        }
                        (Some(var), None) => Some(std::env::var(var).map_err(|_| {
                            invalid(
                                &at,
                                format!("the variable `{var}` named by `api_key_env` is not set"),
                            )
                        })?),
                        (None, Some(path)) => Some(
                            std::fs::read_to_string(path)
                                .map_err(|e| {
                                    invalid(
                                        &at,
                                        format!(
                                            "cannot read `api_key_file` {}: {e}",
                                            path.display()
                                        ),
                                    )
                                })?
                                .trim()
                                .to_string(),
                        ),
                        (None, None) => None,
                    };
                    let timeouts = Timeouts {
                        connect: Duration::from_millis(d.connect_timeout_ms.unwrap_or(2000).max(1)),
                        first_token: seconds(
                            &at,
                            "first_token_timeout_secs",
                            d.first_token_timeout_secs,
                            30.0,
                        )?,
                        total: seconds(&at, "timeout_secs", d.timeout_secs, 120.0)?,
                    };
                    let protocol = match d.backend {
                        BackendKind::Anthropic => Protocol::Anthropic,
                        _ => Protocol::OpenAi,
                    };
                    let kind = d.kind.unwrap_or(ModelKind::Chat);
                    if kind == ModelKind::Embedding && protocol == Protocol::Anthropic {
                        return Err(invalid(
                            &at,
                            "Anthropic's API has no embeddings: use `backend = \"openai\"` for an embedding model",
                        ));
                    }
                    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                        return Err(invalid(
                            &at,
                            format!(
                                "`base_url` must start with http:// or https://; got `{base_url}`"
                            ),
                        ));
                    }
                    let upstream = UpstreamSpec {
                        protocol,
                        base_url: base_url.clone(),
                        model: d.upstream_model.clone().unwrap_or_else(|| d.model.clone()),
                        credential: api_key,
                        timeouts,
                        pool_idle: 256,
                    };
                    let cooldown =
                        seconds(&at, "breaker_cooldown_secs", d.breaker_cooldown_secs, 30.0)?;
                    Deployment {
                        slot: 0,
                        accreditation: String::new(),
                        breaker: BreakerConfig {
                            failures: d.breaker_failures.unwrap_or(5).max(1),
                            cooldown,
                        },
                        placement: Placement {
                            name: d.name.clone(),
                            accreditation,
                            jurisdiction,
                        },
                        model: d.model.clone(),
                        kind,
                        backend: Backend::Upstream(Box::new(upstream)),
                        weight: d.weight.unwrap_or(1),
                        priority: d.priority.unwrap_or(0),
                        retries: d.retries.unwrap_or(2),
                        vision: d.vision.unwrap_or(false),
                    }
                }
            };
            deployments.push(deployment);
        }
        // The embedded models are deployments too, unless configured above.
        let builtin = [
            (CHAT_MODEL, ModelKind::Chat, "embedded-chat".to_string()),
            (
                EMBEDDING_MODEL,
                ModelKind::Embedding,
                "embedded-embeddings".to_string(),
            ),
        ];
        let local = local_models
            .iter()
            .map(|(model, kind)| (model.as_str(), *kind, format!("embedded-{model}")));
        let fine_tuned = (
            FINE_TUNED,
            ModelKind::Chat,
            "embedded-fine-tuned".to_string(),
        );
        for (model, kind, name) in builtin.into_iter().chain(local).chain([fine_tuned]) {
            let configured = deployments
                .iter()
                .any(|d| d.model == model && matches!(d.backend, Backend::Embedded));
            if !configured && !names.contains(name.as_str()) {
                deployments.push(Deployment::embedded(
                    Placement {
                        name: name.to_string(),
                        accreditation: scheme.system_high(),
                        jurisdiction: ENCLAVE.to_string(),
                    },
                    model,
                    kind,
                    None,
                ));
            }
        }
        let mut tenants = HashMap::new();
        let keep_content = config
            .tenants
            .iter()
            .filter(|(_, t)| t.keep_content)
            .map(|(n, _)| n.clone())
            .collect();
        for (name, t) in &config.tenants {
            let at = format!("tenants.{name}");
            let default_label = match &t.default_label {
                Some(l) => label(&format!("{at}.default_label"), l)?,
                None => scheme.lowest(),
            };
            let jurisdictions: BTreeSet<String> = t.jurisdictions.iter().cloned().collect();
            let redact: BTreeSet<String> = t.redact_pii_for.iter().cloned().collect();
            if let Some(j) = redact.difference(&jurisdictions).next() {
                return Err(invalid(
                    at,
                    format!("`redact_pii_for` names `{j}`, which `jurisdictions` does not allow"),
                ));
            }
            if redact.contains(ENCLAVE) {
                return Err(invalid(
                    at,
                    "personal data is never redacted inside the enclave; remove `enclave` from `redact_pii_for`",
                ));
            }
            tenants.insert(
                name.clone(),
                TenantPolicy {
                    default_label,
                    jurisdictions,
                    redact_pii_for: redact,
                },
            );
        }
        let mut ceilings = HashMap::new();
        for (name, t) in &config.tenants {
            if let Some(c) = &t.ceiling {
                let ceiling = label(&format!("tenants.{name}.ceiling"), c)?;
                ceilings.insert(name.clone(), scheme.clearance(ceiling));
            }
        }
        let mut quotas = HashMap::new();
        for (name, t) in &config.tenants {
            for m in t.model_quota.keys() {
                if !deployments.iter().any(|d| &d.model == m) {
                    return Err(invalid(
                        format!("tenants.{name}.model_quota"),
                        format!("`{m}` is not a model any deployment serves"),
                    ));
                }
            }
            quotas.insert(
                name.clone(),
                TenantQuota {
                    tenant: t.quota,
                    key: t.key_quota,
                    models: t.model_quota.clone(),
                },
            );
        }
        let tool_servers = crate::tool_servers::servers(&config.mcp_servers, &scheme)
            .map_err(|e| invalid(e.at, e.message))?;
        for (slot, d) in deployments.iter_mut().enumerate() {
            d.slot = slot;
            d.accreditation = scheme.banner(&d.placement.accreditation);
        }
        let inspector = Inspector::new(scheme.clone())?;
        let authz = Authorizer::new(cedar)?;
        let default_tenant = TenantPolicy::enclave_only(scheme.lowest());
        Ok(Self {
            scheme,
            inspector,
            authz,
            deployments,
            tenants,
            default_tenant,
            keep_content,
            ceilings,
            quotas,
            no_quota: TenantQuota::default(),
            tool_servers,
            agents: config
                .agents
                .validated()
                .map_err(|e| invalid(e.at, e.message))?,
        })
    }

    /// A tenant's quotas; a tenant not configured has none.
    pub fn quota(&self, tenant: &str) -> &TenantQuota {
        self.quotas.get(tenant).unwrap_or(&self.no_quota)
    }

    /// Whether this tenant's policy keeps request and answer content (sealed).
    pub fn keeps_content(&self, tenant: &str) -> bool {
        self.keep_content.contains(tenant)
    }

    /// The highest clearance a signed token may give in `tenant`: its configured ceiling, else
    /// the scheme's lowest level.
    pub fn token_ceiling(&self, tenant: &str) -> Label {
        self.ceilings
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.scheme.clearance(self.scheme.lowest()))
    }

    /// The policy of a tenant; one not configured keeps its data in the enclave.
    pub fn tenant(&self, name: &str) -> &TenantPolicy {
        self.tenants.get(name).unwrap_or(&self.default_tenant)
    }

    /// A key's clearance: its stored banner, or the scheme's lowest level when empty; the owner
    /// nation is added when it names none.
    pub fn clearance(&self, stored: &str) -> Result<Label, enclave_label::ParseError> {
        if stored.trim().is_empty() {
            return Ok(self.scheme.clearance(self.scheme.lowest()));
        }
        self.scheme.parse(stored).map(|l| self.scheme.clearance(l))
    }

    /// The deployments serving `model`, in order of preference. A fine-tuned model (`ft:…`) is
    /// served only by the embedded deployment of fine-tuned models, inside the enclave.
    pub fn deployments_for<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Deployment> {
        let fine_tuned = model.starts_with("ft:");
        self.deployments.iter().filter(move |d| {
            if fine_tuned {
                d.model == FINE_TUNED
            } else {
                d.model == model
            }
        })
    }

    /// Distinct model names, in configuration order, with their kind.
    pub fn models(&self) -> Vec<(&str, ModelKind)> {
        let mut seen = BTreeSet::new();
        self.deployments
            .iter()
            .filter(|d| d.model != FINE_TUNED && seen.insert(d.model.as_str()))
            .map(|d| (d.model.as_str(), d.kind))
            .collect()
    }

    /// What the server understood, for `enclave config check`.
    pub fn describe(&self, tenants: &[&str]) -> String {
        let s = &self.scheme;
        let mut out = String::new();
        let _ = writeln!(out, "marking scheme: {} (owner {})", s.name(), s.owner());
        let levels: Vec<String> = s
            .def()
            .levels
            .iter()
            .map(|l| format!("{} ({})", l.name, l.portion))
            .collect();
        let _ = writeln!(out, "  levels, low to high: {}", levels.join(" < "));
        let _ = writeln!(out, "  system high: {}", s.banner(&s.system_high()));
        let _ = writeln!(out, "deployments:");
        for d in &self.deployments {
            let backend = match &d.backend {
                Backend::Embedded => "embedded".to_string(),
                Backend::Upstream(u) => format!(
                    "{} {}, weight {}, priority {}",
                    match u.protocol {
                        Protocol::OpenAi => "openai",
                        Protocol::Anthropic => "anthropic",
                    },
                    u.base_url,
                    d.weight,
                    d.priority
                ),
            };
            // The nation operating it decides what it may receive (NOFORN, REL TO).
            let nation = match &d.placement.accreditation.releasability {
                enclave_label::Releasability::To(nations) => {
                    nations.iter().cloned().collect::<Vec<_>>().join(", ")
                }
                enclave_label::Releasability::Unrestricted => "any".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<22} model {:<24} {:<9} jurisdiction {:<8} nation {:<4} accredited to {}  [{backend}]",
                d.placement.name,
                d.model,
                d.kind.as_str(),
                d.placement.jurisdiction,
                nation,
                s.banner(&d.placement.accreditation)
            );
        }
        let _ = writeln!(out, "tenants:");
        let mut names: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
        names.extend(tenants.iter().filter(|t| !self.tenants.contains_key(**t)));
        names.sort_unstable();
        names.dedup();
        let _ = writeln!(
            out,
            "  (any tenant not listed: default label {}, data stays in the enclave)",
            s.banner(&self.default_tenant.default_label)
        );
        for name in names {
            let t = self.tenant(name);
            let list = |set: &BTreeSet<String>| {
                if set.is_empty() {
                    "none".to_string()
                } else {
                    set.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            };
            let _ = writeln!(
                out,
                "  {:<22} default label {}; may go to: enclave{}{}; personal data may leave redacted to: {}",
                name,
                s.banner(&t.default_label),
                if t.jurisdictions.is_empty() { "" } else { ", " },
                t.jurisdictions
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                list(&t.redact_pii_for)
            );
            if let Some(q) = self.quotas.get(name) {
                let mut scopes = vec![
                    ("tenant".to_string(), q.tenant),
                    ("each key".to_string(), q.key),
                ];
                scopes.extend(q.models.iter().map(|(m, l)| (format!("model {m}"), *l)));
                let parts: Vec<String> = scopes
                    .into_iter()
                    .filter(|(_, l)| !l.is_unlimited())
                    .map(|(scope, l)| format!("{scope}: {}", describe_limits(&l)))
                    .collect();
                if !parts.is_empty() {
                    let _ = writeln!(out, "  {:<22} quotas: {}", "", parts.join("; "));
                }
            }
        }
        let _ = writeln!(
            out,
            "authorization: {} Cedar policies, valid against the schema (strict)",
            self.authz.policy_count()
        );
        out
    }
}
