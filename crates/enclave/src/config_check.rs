//! `enclave config check`: the configuration read and validated as `serve` would, and what it
//! will do said in words — transport and certificate, client certificates, token issuers,
//! deployments and tenants.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use enclave_store::{PgStore, SqliteStore, Store};

use crate::config::{Config, Transport};
use crate::timestamp;

pub(crate) async fn config_check(
    file: Option<PathBuf>,
    config: Config,
    data_dir_given: Option<PathBuf>,
) -> Result<()> {
    let config = match file {
        Some(path) => {
            if !path.exists() {
                bail!("no file {}", path.display());
            }
            let mut checked = Config::load(Some(&path))
                .with_context(|| format!("{} is not a valid configuration", path.display()))?;
            // Directories given on the command line still count (`--models-dir` holds the
            // operator's models the file's deployments may name).
            if checked.models_dir.is_none() {
                checked.models_dir.clone_from(&config.models_dir);
            }
            if let Some(dir) = data_dir_given {
                checked.data_dir = dir;
            }
            checked
        }
        None => config,
    };
    let policy = config.policy()?;
    // Tenants known to the database, if there is one (checking never creates it or changes it).
    let mut tenants: Vec<String> = Vec::new();
    let mut database = format!("SQLite at {}", config.db_path().display());
    if let Some(url) = config.database_url() {
        let shown = config.database_shown();
        let store = PgStore::connect(url, 1)
            .await
            .with_context(|| format!("cannot connect to the database {shown}"))?;
        let version = store
            .server_version()
            .await
            .with_context(|| format!("cannot query the database {shown}"))?;
        database = format!("PostgreSQL {version} at {shown}");
        match store.list_tenants().await {
            Ok(ts) => tenants = ts.into_iter().map(|t| t.name).collect(),
            Err(_) => database.push_str(" (no tables yet: `enclave serve` creates them)"),
        }
    } else if config.db_path().exists()
        && let Ok(store) = SqliteStore::open(&config.db_path()).await
    {
        tenants = store
            .list_tenants()
            .await
            .map(|ts| ts.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
    }
    let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "listen: {}", config.listen)?;
    match config.transport()? {
        Transport::Plain => writeln!(out, "transport: plain HTTP")?,
        Transport::Tls { cert, .. } => {
            let summary = enclave_gateway::tls::summarize(&cert)?;
            writeln!(
                out,
                "transport: HTTPS (HTTP/2, HTTP/1.1), certificate {} for {}, valid {} to {}",
                summary.subject,
                if summary.names.is_empty() {
                    "no alternative names".to_string()
                } else {
                    summary.names.join(", ")
                },
                timestamp(summary.not_before),
                timestamp(summary.not_after),
            )?;
            if let Some(auth) = &config.tls.client_auth {
                let anchors = enclave_gateway::tls::read_certificates(&auth.ca)?.len();
                writeln!(
                    out,
                    "client certificates: {}, {anchors} trust anchor(s) from {}, {} revocation list(s), policies [{}], user named by {}",
                    if auth.required {
                        "required"
                    } else {
                        "accepted beside API keys"
                    },
                    auth.ca.display(),
                    auth.crls.len(),
                    auth.required_policies.join(", "),
                    if auth.map.is_empty() {
                        "upn"
                    } else {
                        &auth.map
                    },
                )?;
            }
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            if summary.not_after < now {
                writeln!(
                    out,
                    "warning: the certificate has expired; clients will refuse it"
                )?;
            } else if summary.not_after < now + 30 * 86_400 {
                writeln!(out, "warning: the certificate expires within 30 days")?;
            } else if summary.not_before > now {
                writeln!(out, "warning: the certificate is not valid yet")?;
            }
        }
    }
    if let Some(warning) = config.transport_warning() {
        writeln!(out, "warning: {warning}")?;
    }
    if !config.identity.issuers.is_empty() {
        enclave_identity::Verifier::new(&config.identity.issuers)?;
    }
    for issuer in &config.identity.issuers {
        let accepts = match (&issuer.audience, &issuer.client_id) {
            (Some(aud), Some(client)) => {
                format!("tokens for audience `{aud}` and browser sign-in as client `{client}`")
            }
            (Some(aud), None) => format!("tokens for audience `{aud}`"),
            (None, Some(client)) => format!("browser sign-in as client `{client}`"),
            (None, None) => "nothing".into(),
        };
        writeln!(
            out,
            "{} accepts {accepts}: user from `{}`, tenant {}, clearance from `{}`",
            issuer.issuer,
            issuer.claims.user,
            match (&issuer.claims.tenant, &issuer.claims.tenant_value) {
                (Some(claim), _) => format!("from `{claim}`"),
                (None, Some(fixed)) => format!("`{fixed}`"),
                (None, None) => "(none)".into(),
            },
            issuer.claims.clearance,
        )?;
    }
    if config.identity.browsers() {
        let callback = match &config.identity.public_url {
            Some(url) => format!("{}/auth/callback", url.trim_end_matches('/')),
            None => "<scheme>://<Host of the request>/auth/callback (set [identity] public_url to fix it)".into(),
        };
        writeln!(
            out,
            "browser sign-in at /login; register the redirect URI {callback}; sessions end after {} min idle, {} h at most",
            config.identity.session_idle_minutes, config.identity.session_max_hours
        )?;
    }
    writeln!(out, "data dir: {}", config.data_dir.display())?;
    writeln!(out, "database: {database}")?;
    write!(out, "{}", policy.describe(&names))?;
    writeln!(out, "configuration OK")?;
    Ok(())
}
