//! Images (agencies analyse satellite and aerial imagery): `image_url` parts in chat
//! completions, `input_image` items in the Responses API and `image` blocks in Anthropic's
//! Messages, as base64 `data:` URLs only, passed to deployments that declare `vision` and
//! refused elsewhere; the request works at its declared label or the tenant's default, and the
//! audit record names each image by its SHA-256.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use base64::Engine as _;
use common::{Gateway, MockUpstream, upstream};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn data_url() -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(PNG)
    )
}

async fn post(
    gw: &Gateway,
    key: &str,
    path: &str,
    label: Option<&str>,
    body: &Value,
) -> (u16, String, Value) {
    let mut r = gw.http.post(gw.url(path)).bearer_auth(key).json(body);
    if let Some(l) = label {
        r = r.header("Enclave-Label", l);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let label = r
        .headers()
        .get("enclave-label")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, label, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn images_go_only_to_vision_deployments_and_are_named_in_the_audit_record() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [
            upstream("eyes", "eyes", &mock.url("ok"), json!({"vision": true, "accreditation": "SECRET"})),
            upstream("blind", "blind", &mock.url("ok"), json!({"accreditation": "SECRET"})),
            upstream("abroad", "abroad", &mock.url("ok"), json!({"vision": true, "jurisdiction": "eu", "nation": "DEU"})),
        ],
        "tenants": {"agency": {"jurisdictions": ["eu"]}},
    }))
    .await;
    let key = common::key(&gw, "agency", "SECRET").await;
    let digest = hex::encode(Sha256::digest(PNG));
    let chat = |model: &str, url: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}]})
    };

    // Chat completions: passed on as a part, the record names it.
    let (status, label, r) = post(
        &gw,
        &key,
        "/v1/chat/completions",
        None,
        &chat("eyes", &data_url()),
    )
    .await;
    assert_eq!((status, label.as_str()), (200, "UNCLASSIFIED"), "{r}");
    let sent = &mock.stats()["last_request"]["messages"][0]["content"];
    assert_eq!(sent[1]["type"], "image_url", "{sent}");
    assert_eq!(sent[1]["image_url"]["url"], data_url().as_str());
    let record = gw.last_record("POST /v1/chat/completions");
    assert_eq!(record["images"], json!([digest]), "{record}");

    // Declared higher: served at the declared label.
    let (status, label, _) = post(
        &gw,
        &key,
        "/v1/chat/completions",
        Some("CONFIDENTIAL"),
        &chat("eyes", &data_url()),
    )
    .await;
    assert_eq!((status, label.as_str()), (200, "CONFIDENTIAL"));

    // Elsewhere, and by URL: refused, saying why.
    let (status, _, e) = post(
        &gw,
        &key,
        "/v1/chat/completions",
        None,
        &chat("blind", &data_url()),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("images_not_supported")),
        "{e}"
    );
    // Outside the enclave, even a model that reads images gets none: they cannot be inspected
    // or redacted. The same model takes text.
    let (status, _, e) = post(
        &gw,
        &key,
        "/v1/chat/completions",
        None,
        &chat("abroad", &data_url()),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("images_not_supported")),
        "{e}"
    );
    let text =
        json!({"model": "abroad", "messages": [{"role": "user", "content": "Plain words."}]});
    let (status, _, r) = post(&gw, &key, "/v1/chat/completions", None, &text).await;
    assert_eq!(status, 200, "{r}");
    let (status, _, e) = post(
        &gw,
        &key,
        "/v1/chat/completions",
        None,
        &chat("eyes", "https://imagery.example/tile.png"),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never fetches"),
        "{e}"
    );
    let (status, _, e) = post(
        &gw,
        &key,
        "/v1/chat/completions",
        None,
        &chat("eyes", "data:text/html;base64,PGI+"),
    )
    .await;
    assert_eq!(status, 400, "{e}");

    // The Responses API: an `input_image` item.
    let body = json!({"model": "eyes", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "Describe the tile."},
        {"type": "input_image", "image_url": data_url()},
    ]}]});
    let (status, _, r) = post(&gw, &key, "/v1/responses", None, &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        mock.stats()["last_request"]["messages"][0]["content"][1]["type"],
        "image_url"
    );
    assert_eq!(
        gw.last_record("POST /v1/responses")["images"],
        json!([digest])
    );

    // Anthropic's Messages: an `image` block.
    let body = json!({"model": "eyes", "max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
            "data": base64::engine::general_purpose::STANDARD.encode(PNG)}},
        {"type": "text", "text": "What is this?"},
    ]}]});
    let (status, _, r) = post(&gw, &key, "/v1/messages", None, &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        gw.last_record("POST /v1/messages")["images"],
        json!([digest])
    );
}
