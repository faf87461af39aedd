//! A gateway in this process on a loopback port, in front of the mock upstream, with keys and
//! an audit log on disk.

#![allow(dead_code, reason = "each test file uses part of the harness")]

pub mod mcp;

use std::net::SocketAddr;
use std::sync::Arc;

use enclave_audit::{AuditLog, ContentVault};
use enclave_gateway::{AppState, app, metrics::Metrics};
use enclave_service::policy::{Policy, PolicyConfig};
use enclave_store::{NewKey, Role, SqliteStore, Store, Tenant, keys, new_id, now};
use serde_json::Value;

pub use enclave_mock_upstream::MockUpstream;

pub struct Gateway {
    pub addr: SocketAddr,
    pub state: AppState,
    pub store: Arc<SqliteStore>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Gateway {
    /// Starts a gateway with the policy `config` (the TOML's tables, as JSON).
    pub async fn start(config: Value) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("db")).await.unwrap());
        let config: PolicyConfig = serde_json::from_value(config).unwrap();
        let policy = Policy::from_config(&config, None).unwrap();
        let audit = AuditLog::open(&dir.path().join("audit"), "test/audit").unwrap();
        let service = enclave_service::Service::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::new(policy),
            audit,
            Arc::new(ContentVault::open(&dir.path().join("audit")).unwrap()),
            &enclave_upstream::Connector,
        )
        .unwrap();
        let specs = service
            .policy
            .tool_servers
            .iter()
            .map(|s| s.spec.clone())
            .collect();
        let service = service.with_tools(Arc::new(enclave_tools::Clients::new(specs)));
        let state = AppState::new(service, Metrics::install().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(state.clone());
        let server = tokio::spawn(async move {
            let _ = enclave_gateway::serve(listener, router, std::future::pending()).await;
        });
        Self {
            addr,
            state,
            store,
            http: reqwest::Client::new(),
            _dir: dir,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A new key of `tenant` (created if need be).
    pub async fn key(&self, tenant: &str, role: Role) -> String {
        let t = match self.store.tenant_by_name(tenant).await.unwrap() {
            Some(t) => t,
            None => {
                let t = Tenant {
                    id: new_id(),
                    name: tenant.into(),
                    created_at: now(),
                };
                self.store.create_tenant(&t).await.unwrap();
                t
            }
        };
        let minted = keys::mint();
        self.store
            .create_key(&NewKey {
                id: minted.id.clone(),
                tenant_id: t.id,
                name: None,
                role,
                clearance: String::new(),
                secret_hash: minted.hash,
                created_at: now(),
                user_id: None,
            })
            .await
            .unwrap();
        minted.secret
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST, and the status with the JSON body.
    pub async fn call(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let r = self.post(path, key, body).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every audit record so far, parsed.
    pub fn records(&self) -> Vec<Value> {
        let size = self.state.audit.size();
        self.state
            .audit
            .records(0, size)
            .into_iter()
            .map(|(_, b)| serde_json::from_slice(&b).unwrap())
            .collect()
    }

    /// The last audit record of an operation.
    pub fn last_record(&self, operation: &str) -> Value {
        self.records()
            .into_iter()
            .rev()
            .find(|r| r["operation"] == operation)
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// An upstream deployment of `model` at `base_url` (OpenAI protocol unless `backend` says).
pub fn upstream(name: &str, model: &str, base_url: &str, extra: Value) -> Value {
    let mut d = serde_json::json!({
        "name": name,
        "model": model,
        "backend": "openai",
        "base_url": base_url,
        "accreditation": "UNCLASSIFIED",
        "jurisdiction": "enclave",
        "first_token_timeout_secs": 2.0,
        "timeout_secs": 5.0,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        d[k] = v;
    }
    d
}

/// The `data:` payloads of an SSE body, and the event names before them.
pub fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut name = None;
    for line in body.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = Some(n.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((name.take(), d.to_string()));
        }
    }
    out
}

/// Polls `check` for up to `secs` seconds.
pub async fn eventually(secs: f64, mut check: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while std::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    check()
}

/// A key of `tenant` (created if need be) cleared to `clearance`.
pub async fn key(gw: &Gateway, tenant: &str, clearance: &str) -> String {
    let store = gw.store.as_ref() as &dyn Store;
    if store.tenant_by_name(tenant).await.unwrap().is_none() {
        enclave_service::admin::create_tenant(store, tenant)
            .await
            .unwrap();
    }
    enclave_service::admin::create_key(
        store,
        &gw.state.policy.scheme,
        tenant,
        Role::User,
        None,
        Some(clearance),
    )
    .await
    .unwrap()
    .secret
}

/// `POST /v1/responses` declared at `label`: the status, the answer's label header, the body.
pub async fn post(gw: &Gateway, key: &str, label: &str, body: &Value) -> (u16, String, Value) {
    let r = gw
        .http
        .post(gw.url("/v1/responses"))
        .bearer_auth(key)
        .header("Enclave-Label", label)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("enclave-label")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, header, r.json().await.unwrap_or(Value::Null))
}
