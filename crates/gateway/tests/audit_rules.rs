//! The audit step inside the router, with storage we control: when the log cannot write, calls
//! fail closed and `/readyz` says so; who may read which records.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use enclave_audit::log::Storage;
use enclave_audit::{AuditLog, ContentVault, LogKey};
use enclave_gateway::{AppState, app, metrics::Metrics};
use enclave_service::policy::Policy;
use enclave_store::{NewKey, Role, SqliteStore, Store, Tenant, keys, new_id, now};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Storage whose syncs fail while `broken` is set.
#[derive(Clone, Default)]
struct Switchable(Arc<Mutex<(Vec<u8>, bool)>>);

impl Storage for Switchable {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().0.extend_from_slice(bytes);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        if self.0.lock().unwrap().1 {
            return Err(std::io::Error::other("disk gone"));
        }
        Ok(())
    }
    fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        Ok(self.0.lock().unwrap().0.clone())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().0.truncate(len as usize);
        Ok(())
    }
}

async fn key(store: &SqliteStore, tenant: &str, role: Role) -> String {
    let t = match store.tenant_by_name(tenant).await.unwrap() {
        Some(t) => t,
        None => {
            let t = Tenant {
                id: new_id(),
                name: tenant.into(),
                created_at: now(),
            };
            store.create_tenant(&t).await.unwrap();
            t
        }
    };
    let minted = keys::mint();
    store
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

async fn get(app: &axum::Router, path: &str, key: &str) -> (StatusCode, Value) {
    let r = app
        .clone()
        .oneshot(
            Request::get(path)
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_fails_closed_while_the_log_cannot_write_and_records_are_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).await.unwrap();
    let user = key(&store, "agency-a", Role::User).await;
    let admin_a = key(&store, "agency-a", Role::Admin).await;
    let user_b = key(&store, "agency-b", Role::User).await;
    let auditor = key(&store, "oversight", Role::Auditor).await;
    let storage = Switchable::default();
    let log = AuditLog::with_storage(
        Box::new(storage.clone()),
        LogKey::load_or_create(&dir.path().join("k"), "test/audit").unwrap(),
    )
    .unwrap();
    let service = enclave_service::Service::new(
        Arc::new(store),
        Arc::new(Policy::default_policy().unwrap()),
        log,
        Arc::new(ContentVault::open(dir.path()).unwrap()),
        &enclave_service::upstream::NoUpstreams,
    )
    .unwrap();
    let state = AppState::new(service, Metrics::install().unwrap());
    let app = app(state);

    assert_eq!(get(&app, "/v1/models", &user).await.0, StatusCode::OK);
    assert_eq!(get(&app, "/v1/models", &user_b).await.0, StatusCode::OK);

    // Records: auditors read every tenant, admins their own, users none.
    let (status, all) = get(&app, "/v1/audit/records", &auditor).await;
    assert_eq!(status, StatusCode::OK);
    let tenants: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["record"]["tenant"].as_str())
        .collect();
    assert!(
        tenants.contains(&"agency-a") && tenants.contains(&"agency-b"),
        "{all}"
    );
    let (status, own) = get(&app, "/v1/audit/records", &admin_a).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        own["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["record"]["tenant"] == "agency-a"),
        "{own}"
    );
    assert_eq!(
        get(&app, "/v1/audit/records?tenant=agency-b", &admin_a)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = get(&app, "/v1/audit/records", &user).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden_by_policy"))
    );

    // The disk goes away: nothing is served unaudited, and readiness says why.
    storage.0.lock().unwrap().1 = true;
    let (status, body) = get(&app, "/v1/models", &user).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "audit_unavailable");
    let (status, ready) = get(&app, "/readyz", &user).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["audit"], "failing");
    // It comes back: so does the API.
    storage.0.lock().unwrap().1 = false;
    assert_eq!(get(&app, "/v1/models", &user).await.0, StatusCode::OK);
}
