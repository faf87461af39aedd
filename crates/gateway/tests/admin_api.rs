//! Administration over the API (`/v1/admin`), as the console calls it: an admin reads and
//! manages their own tenant only; a new key's secret appears once and never in a list; no key
//! is minted above its minter's clearance or as an auditor; a revoked key stops within a
//! second; usage per key is an administrator's to read.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::{Gateway, MockUpstream, upstream};
use enclave_store::{Role, Store};
use serde_json::{Value, json};

async fn get(gw: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let r = gw
        .http
        .get(gw.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn minted(gw: &Gateway, tenant: &str, role: Role, clearance: &str) -> String {
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
        role,
        None,
        Some(clearance),
    )
    .await
    .unwrap()
    .secret
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn admins_manage_their_own_tenant_and_no_more() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [upstream("upstream-1", "m", &mock.url("ok"), json!({"accreditation": "SECRET"}))],
        "tenants": {"agency": {"quota": {"monthly_tokens": 5000}}},
    }))
    .await;
    let admin = minted(&gw, "agency", Role::Admin, "SECRET").await;
    let user = minted(&gw, "agency", Role::User, "SECRET").await;
    let other_admin = minted(&gw, "bureau", Role::Admin, "TOP SECRET").await;
    let auditor = minted(&gw, "agency", Role::Auditor, "SECRET").await;

    // Tenants: an admin sees their own, with its quota; an auditor sees every tenant.
    let (status, tenants) = get(&gw, "/v1/admin/tenants", &admin).await;
    assert_eq!(status, 200, "{tenants}");
    let names: Vec<&str> = tenants["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["agency"]);
    assert_eq!(
        tenants["data"][0]["quota"]["tenant"]["monthly_tokens"],
        5000
    );
    let (_, all) = get(&gw, "/v1/admin/tenants", &auditor).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");
    let (status, body) = get(&gw, "/v1/admin/tenants", &user).await;
    assert_eq!(
        (status, code(&body)),
        (403, "forbidden_by_policy"),
        "{body}"
    );

    // Keys: listed without secrets or hashes; another tenant's admin cannot read them.
    let (status, keys) = get(&gw, "/v1/admin/keys", &admin).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["data"].as_array().unwrap().len(), 3, "{keys}");
    let listed = keys.to_string();
    for secret in [&admin, &user, &auditor] {
        assert!(!listed.contains(secret.as_str()));
    }
    assert!(!listed.contains("hash"));
    let (status, body) = get(&gw, "/v1/admin/keys?tenant=agency", &other_admin).await;
    assert_eq!((status, code(&body)), (403, "forbidden_by_policy"));
    let (status, body) = get(&gw, "/v1/admin/users?tenant=agency", &other_admin).await;
    assert_eq!((status, code(&body)), (403, "forbidden_by_policy"));

    // Minting: the secret once; it works; it is never listed again.
    let (status, key) = gw
        .call(
            "/v1/admin/keys",
            &admin,
            &json!({"name": "ingest bot", "clearance": "CONFIDENTIAL"}),
        )
        .await;
    assert_eq!(status, 200, "{key}");
    let secret = key["secret"].as_str().unwrap().to_string();
    assert_eq!(
        (key["role"].as_str(), key["clearance"].as_str()),
        (Some("user"), Some("CONFIDENTIAL//NOFORN"))
    );
    let (status, _) = get(&gw, "/v1/models", &secret).await;
    assert_eq!(status, 200);
    let (_, keys) = get(&gw, "/v1/admin/keys", &admin).await;
    assert!(!keys.to_string().contains(&secret));
    assert!(
        keys["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == key["id"] && k["name"] == "ingest bot")
    );

    // Never above the minter's clearance, never an auditor key, never by a user.
    let (status, body) = gw
        .call(
            "/v1/admin/keys",
            &admin,
            &json!({"clearance": "TOP SECRET"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, "label_exceeds_clearance"),
        "{body}"
    );
    let (status, body) = gw
        .call("/v1/admin/keys", &admin, &json!({"role": "auditor"}))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_value"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("operator"),
        "{body}"
    );
    let (status, body) = gw.call("/v1/admin/keys", &user, &json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (403, "forbidden_by_policy"),
        "{body}"
    );

    // Revoking: another tenant's admin cannot; the tenant's admin can, and the key stops.
    let path = format!("/v1/admin/keys/{}", key["id"].as_str().unwrap());
    let r = gw
        .http
        .delete(gw.url(&path))
        .bearer_auth(&other_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = gw
        .http
        .delete(gw.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, body) = get(&gw, "/v1/models", &secret).await;
    assert_eq!(status, 401, "{body}");

    // Usage by key: the admin's to read, not a user's.
    let (status, _) = gw
        .call("/v1/chat/completions", &user, &json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    let (status, usage) = get(&gw, "/v1/usage?by=key", &admin).await;
    assert_eq!(status, 200, "{usage}");
    let bucket = &usage["data"][0];
    assert!(
        bucket["key_id"].as_str().is_some_and(|k| !k.is_empty()),
        "{usage}"
    );
    assert_eq!(bucket["requests"], 1);
    let (status, body) = get(&gw, "/v1/usage?by=key", &user).await;
    assert_eq!(
        (status, code(&body)),
        (403, "forbidden_by_policy"),
        "{body}"
    );
    let (_, plain) = get(&gw, "/v1/usage", &user).await;
    assert!(plain["data"][0].get("key_id").is_none(), "{plain}");

    // Deployments with their accreditation, jurisdiction and breaker.
    let (status, deployments) = get(&gw, "/v1/admin/deployments", &admin).await;
    assert_eq!(status, 200, "{deployments}");
    assert_eq!(
        deployments["data"][0],
        json!({"name": "upstream-1", "model": "m", "backend": "openai", "accreditation": "SECRET//NOFORN", "jurisdiction": "enclave", "breaker": "closed"})
    );
}
