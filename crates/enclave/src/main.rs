//! The `enclave` binary: command line, configuration and server start-up.
//!
//! Owns process concerns only: parsing flags, loading the one configuration, logging, signals, and
//! wiring the library crates together. Request handling lives in `enclave-gateway`, compute in
//! `enclave-engine`, state in `enclave-store`.

mod audit_cli;
mod config;
mod config_check;
mod jobs_cli;
mod kb_cli;
mod keys_cli;
mod models_cli;
mod serve;
mod users_cli;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use enclave_engine::models;
use enclave_store::{PgStore, Role, SqliteStore, Store, Tenant, now};

use crate::audit_cli::{AuditCommand, audit_command};
use crate::config::Config;
use crate::models_cli::{ModelsCommand, add_model, list_models, pull_all, version};

/// Enclave serves AI models behind an OpenAI-compatible API, on hardware you control.
///
/// Start with `enclave serve`: on first start it fetches the embedded models, creates a tenant
/// named `default` with an admin key (printed once), and listens on 127.0.0.1:8080. Point any
/// OpenAI client at http://127.0.0.1:8080/v1 with that key.
///
/// Every option can also come from a TOML file (`--config`) or an `ENCLAVE_*` variable:
/// `ENCLAVE_LISTEN`, `ENCLAVE_DATA_DIR`, `ENCLAVE_MODELS_DIR`, `ENCLAVE_PYTHON`,
/// `ENCLAVE_WHEELHOUSE`, and `ENCLAVE_CHAT__SLOTS` for the `[chat]` section's `slots`.
#[derive(Debug, Parser)]
#[command(name = "enclave", version, about, long_about, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// TOML configuration file.
    #[arg(long, global = true, env = "ENCLAVE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where Enclave keeps its state [default: $XDG_DATA_HOME/enclave] [env: ENCLAVE_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where model files live [default: <data-dir>/models] [env: ENCLAVE_MODELS_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server (fetching missing models first).
    ///
    /// On an empty data directory it creates a tenant `default` and an admin key, printed once on
    /// standard output. `/readyz` answers 200 once the models are loaded.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080] [env: ENCLAVE_LISTEN].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Do not fetch missing models; fail instead.
        #[arg(long)]
        no_pull: bool,
    },
    /// Fetch, verify and list the embedded models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Manage tenants (agencies).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(keys_cli::KeysCommand),
    /// Manage the people and programs who sign in by client certificate ([tls.client_auth]) or
    /// signed token ([[identity.issuers]]).
    #[command(subcommand)]
    Users(users_cli::UsersCommand),
    /// Parse, print and compare classification labels in the scheme in force.
    #[command(subcommand)]
    Label(LabelCommand),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The tamper-evident audit log: its public key, exports, and offline verification.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Knowledge bases: create, add documents (with a progress bar), search, ask, delete.
    ///
    /// These commands talk to a running server (`--url`, default http://127.0.0.1:8080) with an
    /// API key (`--key` or ENCLAVE_KEY), so labels, clearances and the audit log apply as to any
    /// other client.
    Kb {
        #[command(flatten)]
        client: kb_cli::Client,
        #[command(subcommand)]
        command: kb_cli::KbCommand,
    },
    /// Batches and fine-tuning jobs: list, show, cancel, and watch one with a progress bar.
    ///
    /// Like `kb`, these talk to a running server (`--url`) with an API key (`--key` or
    /// ENCLAVE_KEY). Start a job with any OpenAI client: upload a file with purpose `batch`
    /// and `POST /v1/batches`, or with purpose `fine-tune` and `POST /v1/fine_tuning/jobs`.
    Jobs {
        #[command(flatten)]
        client: kb_cli::Client,
        #[command(subcommand)]
        command: jobs_cli::JobsCommand,
    },
    /// Print the version, the llama.cpp CPU kernels chosen for this CPU (and why each other
    /// variant was not), and whether a GPU backend found a device.
    Version,
    /// Internal: the chat engine's worker process, started and supervised by `enclave serve`.
    /// It speaks JSON lines on stdin and stdout; not for people.
    #[command(hide = true)]
    EngineWorker {
        #[arg(long)]
        model: PathBuf,
        /// The engine settings, as JSON.
        #[arg(long)]
        settings: String,
    },
}

#[derive(Debug, Subcommand)]
enum LabelCommand {
    /// Parse a banner or portion marking and print its canonical forms and parts.
    ///
    /// Example: enclave label check "(TS//SI//REL TO USA, GBR)"
    Check {
        /// A banner such as `SECRET//NOFORN` or a portion mark such as `(S//NF)`.
        label: String,
    },
    /// Print how two labels relate: equal, dominates, is dominated by, or incomparable.
    ///
    /// Example: enclave label compare "TS//SI" "S//NF"
    Compare { a: String, b: String },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (scheme, deployments, tenants, Cedar policies) and print
    /// what Enclave understood from it. Exits non-zero on the first problem.
    ///
    /// Example: enclave config check /etc/enclave/enclave.toml
    Check {
        /// The file to check; the one from `--config`/`ENCLAVE_CONFIG` when omitted.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// A unique name, e.g. `bundesamt-x` or `dept-of-health`.
        name: String,
    },
    /// List tenants.
    List,
}

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// (JSON, headers, records), and glibc's malloc was a sixth of the gateway's CPU time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut config =
        Config::load(cli.global.config.as_deref()).context("cannot load the configuration")?;
    // `config check FILE` reads another file; a directory given here still counts for it.
    let data_dir_given = cli.global.data_dir.clone();
    if let Some(dir) = cli.global.data_dir {
        config.data_dir = dir;
    }
    if let Some(dir) = cli.global.models_dir {
        config.models_dir = Some(dir);
    }
    init_tracing(&config);
    if let Command::EngineWorker { model, settings } = &cli.command {
        // Its own small runtime, not the server's: the worker is a separate process.
        return enclave_engine::process::run_worker(model, settings)
            .context("the chat engine worker failed");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command, config, data_dir_given))
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command, mut config: Config, data_dir_given: Option<PathBuf>) -> Result<()> {
    match command {
        Command::Serve { listen, no_pull } => {
            if let Some(addr) = listen {
                config.listen = addr;
            }
            serve::serve(config, no_pull).await
        }
        Command::Models(ModelsCommand::Pull) => {
            pull_all(&config)?;
            // The pull and the hashes it verified enter the audit log (through the store's
            // queue, as the server may own the log right now).
            if config.db_path().exists() {
                let store = open_store(&config).await?;
                let store = store.as_ref();
                for spec in models::CATALOG {
                    let hashes: Vec<String> = spec
                        .files
                        .iter()
                        .map(|f| format!("{} sha256 {}", f.name, f.sha256))
                        .collect();
                    admin_event(
                        store,
                        "models.pull",
                        None,
                        None,
                        format!("{} verified: {}", spec.id, hashes.join(", ")),
                    )
                    .await?;
                }
            }
            Ok(())
        }
        Command::Models(ModelsCommand::List) => list_models(&config),
        Command::Models(ModelsCommand::Add {
            name,
            file,
            sha256,
            kind: _,
            context,
            chat_template,
        }) => {
            let chat_template = chat_template
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read the chat template {}", p.display()))
                })
                .transpose()?;
            // Who ran the command: the login name, else the numeric user id (services and
            // containers often set no `USER`).
            let added_by = std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .ok()
                .filter(|u| !u.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/proc/self/status")
                        .ok()
                        .and_then(|s| {
                            let uid = s.lines().find(|l| l.starts_with("Uid:"))?;
                            Some(format!("uid {}", uid.split_whitespace().nth(1)?))
                        })
                })
                .unwrap_or_else(|| "unknown".to_string());
            let model = add_model(
                &config,
                enclave_engine::local::AddRequest {
                    name,
                    source: file.clone(),
                    sha256,
                    kind: enclave_engine::local::LocalKind::Chat,
                    context,
                    chat_template,
                    added_by: added_by.clone(),
                    added_at: now(),
                },
            )?;
            let store = open_store(&config).await?;
            let store = store.as_ref();
            admin_event(
                store,
                "models.add",
                None,
                None,
                format!(
                    "{}: {} ({} bytes, {}) from {}, sha256 {}, added by {added_by}",
                    model.name,
                    model.file,
                    model.size,
                    model.architecture,
                    file.display(),
                    model.sha256
                ),
            )
            .await?;
            eprintln!(
                "added `{}` ({} bytes, sha256 {}); restart `enclave serve` to serve it",
                model.name, model.size, model.sha256
            );
            Ok(())
        }
        Command::Models(ModelsCommand::Remove { name }) => {
            let model = enclave_engine::local::remove(&config.models_dir(), &name)?;
            let store = open_store(&config).await?;
            let store = store.as_ref();
            admin_event(
                store,
                "models.remove",
                None,
                None,
                format!("{}: {} sha256 {}", model.name, model.file, model.sha256),
            )
            .await?;
            eprintln!(
                "removed `{}`; restart `enclave serve` to stop serving it",
                model.name
            );
            Ok(())
        }
        Command::Version => version(&config),
        Command::EngineWorker { .. } => bail!("the engine worker runs before the server runtime"),
        Command::Label(cmd) => label_command(&config, cmd),
        Command::Kb { client, command } => kb_cli::run(client, command).await,
        Command::Jobs { client, command } => jobs_cli::run(client, command).await,
        Command::Audit(cmd) => audit_command(&config, cmd).await,
        Command::Config(ConfigCommand::Check { file }) => {
            config_check::config_check(file, config, data_dir_given).await
        }
        Command::Tenants(cmd) => {
            let store = open_store(&config).await?;
            let store = store.as_ref();
            match cmd {
                TenantsCommand::Create { name } => {
                    let tenant = create_tenant(store, &name).await?;
                    eprintln!("created tenant `{}` ({})", tenant.name, tenant.id);
                }
                TenantsCommand::List => {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{:<38} {:<24} CREATED", "ID", "NAME")?;
                    for t in store.list_tenants().await? {
                        writeln!(
                            out,
                            "{:<38} {:<24} {}",
                            t.id,
                            t.name,
                            timestamp(t.created_at)
                        )?;
                    }
                }
            }
            Ok(())
        }
        Command::Users(cmd) => {
            let store = open_store(&config).await?;
            let store = store.as_ref();
            users_cli::users_command(&config, store, cmd).await
        }
        Command::Keys(cmd) => {
            let store = open_store(&config).await?;
            let store = store.as_ref();
            keys_cli::keys_command(&config, store, cmd).await
        }
    }
}

fn label_command(config: &Config, cmd: LabelCommand) -> Result<()> {
    let scheme = &config.policy.scheme()?;
    let parse = |text: &str| {
        scheme
            .parse(text)
            .with_context(|| format!("`{text}` is not a label of scheme {}", scheme.name()))
    };
    let mut out = std::io::stdout().lock();
    match cmd {
        LabelCommand::Check { label } => {
            let l = parse(&label)?;
            for (part, value) in scheme.describe(&l) {
                writeln!(out, "{:<14} {value}", format!("{part}:"))?;
            }
        }
        LabelCommand::Compare { a, b } => {
            let (la, lb) = (parse(&a)?, parse(&b)?);
            let (ba, bb) = (scheme.banner(&la), scheme.banner(&lb));
            writeln!(out, "{ba} {} {bb}", la.relation(&lb))?;
            writeln!(
                out,
                "join (high-water mark): {}",
                scheme.banner(&la.join(&lb))
            )?;
            if let Some(why) = scheme.explain_shortfall(&la, &lb) {
                writeln!(out, "a holder of {ba} may not read {bb}: {why}")?;
            }
        }
    }
    Ok(())
}

pub(crate) fn timestamp(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// The id of the tenant a `--tenant` filter names (`None`: every tenant).
pub(crate) async fn tenant_filter(store: &dyn Store, name: Option<&str>) -> Result<Option<String>> {
    let Some(name) = name else { return Ok(None) };
    Ok(Some(
        store
            .tenant_by_name(name)
            .await?
            .with_context(|| format!("no tenant named `{name}`"))?
            .id,
    ))
}

/// The store the configuration names: PostgreSQL at `database_url` (migrated at open), else
/// SQLite in the data directory.
async fn open_store(config: &Config) -> Result<std::sync::Arc<dyn Store>> {
    Ok(open_stores(config).await?.0)
}

/// [`open_store`], and the PostgreSQL store itself when there is one (the quota ledger shares
/// its database).
pub(crate) async fn open_stores(
    config: &Config,
) -> Result<(std::sync::Arc<dyn Store>, Option<PgStore>)> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    if let Some(url) = config.database_url() {
        let store = PgStore::open(url, config.database_max_connections.max(1))
            .await
            .with_context(|| format!("cannot open the database {}", config.database_shown()))?;
        return Ok((std::sync::Arc::new(store.clone()), Some(store)));
    }
    let store = SqliteStore::open(&config.db_path())
        .await
        .with_context(|| format!("cannot open the database {}", config.db_path().display()))?;
    Ok((std::sync::Arc::new(store), None))
}

use enclave_service::admin::{self, record as admin_record};

async fn create_tenant(store: &dyn Store, name: &str) -> Result<Tenant> {
    Ok(admin::create_tenant(store, name).await?)
}

/// Queues an administrative action for the audit log (the server appends it, running or next
/// start).
async fn admin_event(
    store: &dyn Store,
    operation: &str,
    tenant: Option<&str>,
    key_id: Option<&str>,
    detail: String,
) -> Result<()> {
    Ok(admin::record_event(store, operation, tenant, key_id, detail).await?)
}

async fn ingest_admin_events(store: &dyn Store, audit: &enclave_audit::AuditLog) -> Result<()> {
    Ok(admin::ingest_events(store, audit).await?)
}

/// Mints a key, prints the secret alone on stdout and the details on stderr.
async fn create_key(
    store: &dyn Store,
    scheme: &enclave_label::Scheme,
    tenant: &str,
    role: Role,
    name: Option<String>,
    clearance: Option<&str>,
) -> Result<()> {
    let minted = admin::create_key(store, scheme, tenant, role, name, clearance).await?;
    keys_cli::print_minted(&minted)
}
