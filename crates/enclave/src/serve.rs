//! `enclave serve`: opening the store, the audit log and the knowledge bases, recording what was
//! loaded, starting the embedded engines (each in a supervised worker) and the HTTP server, and
//! stopping cleanly on a signal.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use enclave_engine::models;
use enclave_engine::{ChatProcess, EmbeddingEngine, WorkerCommand};
use enclave_gateway::{AppState, metrics::Metrics};
use enclave_service::Service;
use enclave_store::Role;

use crate::audit_cli::AUDIT_ORIGIN;
use crate::config::{Config, Transport};
use crate::models_cli::{missing, pull_all};
use crate::{admin_record, create_key, create_tenant, ingest_admin_events, open_stores};

/// Width of all-MiniLM-L6-v2's vectors, which the knowledge bases index.
const MINILM_DIMS: usize = 384;

pub(crate) async fn serve(config: Config, no_pull: bool) -> Result<()> {
    // Refused before anything is opened: a server that would speak in the clear across the
    // network never starts.
    let transport = config.transport()?;
    if let Some(warning) = config.transport_warning() {
        tracing::warn!("{warning}");
    }
    let (store, postgres) = open_stores(&config).await?;
    if models::CATALOG.iter().any(|s| missing(&config, s)) {
        if no_pull {
            bail!(
                "models are missing or corrupt in {}: run `enclave models pull`",
                config.models_dir().display()
            );
        }
        let pull_config = config.clone();
        tokio::task::spawn_blocking(move || pull_all(&pull_config)).await??;
    }
    let policy = Arc::new(config.policy()?);
    if store.list_tenants().await?.is_empty() {
        let tenant = create_tenant(store.as_ref(), "default").await?;
        eprintln!("first start: created tenant `default`");
        create_key(
            store.as_ref(),
            &policy.scheme,
            &tenant.name,
            Role::Admin,
            Some("first admin".into()),
            None,
        )
        .await?;
    }

    let metrics = Metrics::install()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    // Servers sharing a database append to one log in it, signed with one key; one server
    // alone keeps its log in its data directory.
    let audit_dir = config.data_dir.join("audit");
    let audit = match (&postgres, config.database_url()) {
        (Some(pg), Some(url)) => {
            let records = enclave_store::PgAuditStorage::connect(url).with_context(|| {
                format!("cannot reach the audit log in {}", config.database_shown())
            })?;
            let log =
                enclave_audit::AuditLog::open_shared(&audit_dir, AUDIT_ORIGIN, Box::new(records))
                    .context("cannot open the audit log")?;
            pg.claim_audit_key(&log.public_key())
                .await
                .context("this server cannot sign the platform's audit log")?;
            log
        }
        _ => enclave_audit::AuditLog::open(&audit_dir, AUDIT_ORIGIN)
            .context("cannot open the audit log")?,
    };
    for spec in models::CATALOG {
        for file in spec.files {
            let mut record = admin_record(
                "models.verify",
                format!("{} sha256 {}", file.name, file.sha256),
            );
            record.model = Some(spec.id.to_string());
            audit
                .append(&record)
                .await
                .context("cannot write the audit log")?;
        }
    }
    for model in enclave_engine::local::list(&config.models_dir())? {
        let mut record = admin_record(
            "models.verify",
            format!(
                "{} sha256 {} (added by {})",
                model.file, model.sha256, model.added_by
            ),
        );
        record.model = Some(model.name.clone());
        audit
            .append(&record)
            .await
            .context("cannot write the audit log")?;
    }
    let policy_digest = match &config.policy.policy_file {
        Some(path) => std::fs::read(path)
            .map(|b| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)))
            .unwrap_or_default(),
        None => "none".into(),
    };
    let deployments: Vec<String> = policy
        .deployments
        .iter()
        .map(|d| {
            format!(
                "{} ({}, {})",
                d.placement.name,
                d.placement.jurisdiction,
                policy.scheme.banner(&d.placement.accreditation)
            )
        })
        .collect();
    let loaded = admin_record(
        "policy.load",
        format!(
            "scheme {}; {} Cedar policies, file sha256 {policy_digest}; deployments: {}",
            policy.scheme.name(),
            policy.authz.policy_count(),
            deployments.join(", ")
        ),
    );
    audit
        .append(&loaded)
        .await
        .context("cannot write the audit log")?;
    ingest_admin_events(store.as_ref(), &audit).await?;
    let content = Arc::new(
        enclave_audit::ContentVault::open(&config.data_dir.join("audit"))
            .context("cannot open the content vault")?,
    );
    // Servers sharing a database share one exact quota ledger in it; one server alone keeps its
    // ledger in memory, seeded with the month's usage.
    let quotas = match &postgres {
        Some(pg) => enclave_service::quota::Quotas::new(Arc::new(enclave_store::PgLedger::new(pg))),
        None => enclave_service::quota::Quotas::load(store.as_ref())
            .await
            .context("cannot read this month's usage to start the quotas")?,
    };
    let service = Service::new(
        Arc::clone(&store) as Arc<dyn enclave_store::Store>,
        policy,
        audit,
        content,
        &enclave_upstream::Connector,
    )
    .map_err(anyhow::Error::msg)
    .context("cannot start the upstream clients")?
    .with_quotas(quotas)
    .with_node(config.node());
    // The registered MCP servers, started on first use.
    let tool_specs = service
        .policy
        .tool_servers
        .iter()
        .map(|s| s.spec.clone())
        .collect();
    let service = service.with_tools(Arc::new(enclave_tools::Clients::new(tool_specs)));
    let service = if config.identity.issuers.is_empty() {
        service
    } else {
        let verifier = Arc::new(enclave_identity::Verifier::new(&config.identity.issuers)?);
        let service = service.with_tokens(Arc::clone(&verifier) as _);
        if config.identity.browsers() {
            service.with_logins(verifier, config.identity.session_limits())
        } else {
            service
        }
    };
    let embedder = Arc::new(enclave_service::retrieval::EngineEmbedder(Arc::clone(
        &service.models,
    )));
    let kb_dir = config.data_dir.join("kb");
    // Servers sharing a database share the knowledge-base catalog; each keeps its own indexes,
    // which follow it.
    let kb = match config.database_url() {
        Some(url) => {
            let catalog = enclave_kb::catalog::PgCatalog::open(url, 4)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the knowledge-base catalog in {}",
                        config.database_shown()
                    )
                })?;
            enclave_kb::KnowledgeBases::open_with(
                &kb_dir,
                Arc::new(catalog),
                service.policy.scheme.clone(),
                embedder,
                MINILM_DIMS,
            )
            .await
        }
        None => {
            enclave_kb::KnowledgeBases::open(
                &kb_dir,
                service.policy.scheme.clone(),
                embedder,
                MINILM_DIMS,
            )
            .await
        }
    }
    .context("cannot open the knowledge bases")?;
    let site = enclave_gateway::browser::Site {
        public_url: config.identity.public_url.clone(),
        https: matches!(transport, Transport::Tls { .. }),
    };
    let service = service.with_fine_tuning(fine_tuning_setup(&config)?);
    let state = AppState::with_site(service.with_knowledge_bases(kb), metrics, site);
    {
        // Actions the CLI takes while the server runs reach the log within a second, and the
        // last ones before a stop do too.
        let (store, audit) = (Arc::clone(&store), state.audit.clone());
        state.background.spawn("admin-event pump", |stop| async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                let stopping = tokio::select! {
                    () = stop.cancelled() => true,
                    _ = tick.tick() => false,
                };
                if let Err(e) = ingest_admin_events(store.as_ref(), &audit).await {
                    tracing::error!(error = %e, "cannot move administrative actions into the audit log");
                }
                if stopping {
                    break;
                }
            }
        });
    }
    {
        // Fine-tuning: one job at a time; a job a stopped server left running is queued again.
        let service = (*state).clone();
        state.background.spawn("fine-tuning", |stop| {
            enclave_service::fine_tuning::work(service, stop)
        });
    }
    {
        // Batches: lines answered in the background by the same handler code as calls, and
        // resumed after a restart where they stopped.
        let (service, lines) = (
            (*state).clone(),
            Arc::new(enclave_gateway::batches::Lines(state.clone())),
        );
        state.background.spawn("batches", |stop| {
            enclave_service::batches::work(service, lines, stop)
        });
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = match transport {
        Transport::Plain => "http",
        Transport::Tls { .. } => "https",
    };
    tracing::info!(%addr, scheme, "listening; loading models");
    eprintln!("enclave listening on {scheme}://{addr} (OpenAI base URL {scheme}://{addr}/v1)");

    let loading = {
        let state = state.clone();
        let config = config.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || load_models(&config, &state, &runtime))
    };
    if let Transport::Tls { setup, .. } = &transport {
        // Certificate sign-ins and refusals enter the audit log (appended off the handshake).
        let audit = state.audit.clone();
        let runtime = tokio::runtime::Handle::current();
        setup.sign_ins.install(Arc::new(move |event| {
            let record = sign_in_record(&event);
            let audit = audit.clone();
            runtime.spawn(async move {
                if let Err(e) = audit.append(&record).await {
                    tracing::error!(error = %e, "cannot record a certificate sign-in");
                }
            });
        }));
    }
    let shutdown = state.clone();
    let app = enclave_gateway::app(state);
    let server = match transport {
        Transport::Plain => tokio::spawn(enclave_gateway::serve(listener, app, shutdown_signal())),
        Transport::Tls { setup: tls, .. } => tokio::spawn(enclave_gateway::serve_tls(
            listener,
            tls,
            app,
            shutdown_signal(),
        )),
    };
    match loading.await? {
        Ok(()) => tracing::info!("models loaded; ready"),
        Err(e) => {
            server.abort();
            return Err(e.context("cannot load the models"));
        }
    }
    server.await??;
    // In-flight calls have ended; the background work finishes what it holds.
    shutdown.service().shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts engines serving the embedded chat model with a fine-tuned adapter, each in its own
/// supervised worker process like the others, with fewer sequences (a tenant's own model).
struct AdapterEngines {
    base: std::path::PathBuf,
    settings: enclave_engine::ChatConfig,
    runtime: tokio::runtime::Handle,
}

impl enclave_service::fine_tuning::FineTunedEngines for AdapterEngines {
    fn start(&self, adapter: &std::path::Path) -> Result<Arc<ChatProcess>, String> {
        let worker = WorkerCommand {
            program: std::env::current_exe().map_err(|e| e.to_string())?,
            args: vec!["engine-worker".to_string()],
        };
        let mut settings = self.settings.clone();
        settings.adapter = Some(adapter.to_path_buf());
        ChatProcess::start(&self.base, settings, worker, &self.runtime)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

fn fine_tuning_setup(config: &Config) -> Result<enclave_service::fine_tuning::Setup> {
    let spec = &models::SMOLLM2;
    let file = spec.files.first().context("the chat model has no file")?;
    let base = spec.path(&config.models_dir(), file.name);
    let mut settings = config.chat_config();
    settings.slots = settings.slots.min(4);
    Ok(enclave_service::fine_tuning::Setup::new(
        base.clone(),
        file.sha256.to_string(),
        config.data_dir.join("fine_tuning"),
        Arc::new(AdapterEngines {
            base,
            settings,
            runtime: tokio::runtime::Handle::current(),
        }),
    ))
}

fn load_models(config: &Config, state: &AppState, runtime: &tokio::runtime::Handle) -> Result<()> {
    let dir = config.models_dir();
    let embed_spec = &models::MINILM;
    models::verify(&dir, embed_spec)?;
    let embedding = EmbeddingEngine::load(&embed_spec.dir(&dir))?;
    let _ = state.models.embedding.set(Arc::new(embedding));

    let chat_spec = &models::SMOLLM2;
    models::verify(&dir, chat_spec)?;
    let file = chat_spec
        .files
        .first()
        .context("the chat model has no file")?;
    // The engine runs in a worker process this one supervises: a crash in llama.cpp restarts the
    // worker instead of ending the server.
    let worker = WorkerCommand {
        program: std::env::current_exe().context("cannot find this program to start the engine")?,
        args: vec!["engine-worker".to_string()],
    };
    let chat = ChatProcess::start(
        &chat_spec.path(&dir, file.name),
        config.chat_config(),
        worker,
        runtime,
    )?;
    let _ = state.models.chat.set(Arc::new(chat));

    // The operator's own models, each in its own supervised worker.
    let mut local = std::collections::BTreeMap::new();
    for model in enclave_engine::local::list(&dir)? {
        enclave_engine::local::verify(&dir, &model)
            .with_context(|| format!("the model `{}` fails its check", model.name))?;
        let mut settings = config.chat_config();
        if let Some(context) = model.context {
            settings.ctx_per_slot = context;
        }
        settings.chat_template.clone_from(&model.chat_template);
        let worker = WorkerCommand {
            program: std::env::current_exe()
                .context("cannot find this program to start the engine")?,
            args: vec!["engine-worker".to_string()],
        };
        let engine = ChatProcess::start(&model.path(&dir), settings, worker, runtime)
            .with_context(|| format!("cannot start the model `{}`", model.name))?;
        local.insert(model.name.clone(), Arc::new(engine));
    }
    let _ = state.models.local.set(local);
    // The models fine-tuning jobs made, each served from its adapter.
    runtime.block_on(enclave_service::fine_tuning::serve_existing(state));
    let mut pinned: Vec<enclave_service::PinnedModel> = [embed_spec, chat_spec]
        .iter()
        .map(|spec| enclave_service::PinnedModel {
            id: spec.id.to_string(),
            kind: format!("{:?}", spec.kind).to_lowercase(),
            source: format!("{} {} (built in)", spec.package, spec.version),
            files: spec
                .files
                .iter()
                .map(|f| (f.name.to_string(), f.sha256.to_string()))
                .collect(),
        })
        .collect();
    for model in enclave_engine::local::list(&dir)? {
        pinned.push(enclave_service::PinnedModel {
            id: model.name.clone(),
            kind: format!("{:?}", model.kind.model_kind()).to_lowercase(),
            source: format!("added by {}", model.added_by),
            files: vec![(model.file.clone(), model.sha256.clone())],
        });
    }
    let _ = state.models.pinned.set(pinned);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// A certificate sign-in as an audit record: `kind` `signin`, operation `certificate`; status 200
/// when the certificate maps to a name, 401 `certificate_not_mapped` when it does not, and 495
/// `certificate_refused` when the handshake refused it. The detail holds the certificate's SHA-256
/// and subject, and the name or the reason.
fn sign_in_record(event: &enclave_gateway::client_auth::SignIn) -> enclave_audit::Record {
    let (status, code, outcome) = match &event.outcome {
        Ok(Ok(name)) => (200, None, format!("maps to `{name}`")),
        Ok(Err(why)) => (
            401,
            Some("certificate_not_mapped"),
            format!("maps to no one: {why}"),
        ),
        Err(why) => (495, Some("certificate_refused"), format!("refused: {why}")),
    };
    let mut record = admin_record(
        "certificate",
        format!(
            "sha256 {}; subject {}; {outcome}",
            event.fingerprint, event.subject
        ),
    );
    record.kind = "signin".into();
    record.status = status;
    record.code = code.map(str::to_string);
    record.client = event.peer.map(|p| p.ip().to_string());
    record
}
