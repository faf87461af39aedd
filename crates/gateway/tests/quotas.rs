//! Quotas hold under concurrency, refuse with 429 + `Retry-After` naming the limit, and usage
//! is metered per tenant, model and day.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::{Gateway, MockUpstream, upstream};
use enclave_store::Role;
use serde_json::{Value, json};

const CHAT: &str = "/v1/chat/completions";

fn ask(max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "m", "max_tokens": max_tokens, "stream": stream,
        "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}],
    })
}

#[tokio::test]
async fn two_hundred_concurrent_clients_cannot_overspend_the_monthly_budget() {
    let mock = MockUpstream::start().await.unwrap();
    let budget = 1_000u64;
    let max_tokens = 8u32;
    let gw = Gateway::start(json!({
        "deployments": [upstream("p", "m", &mock.url("ok"), json!({}))],
        "tenants": {"agency": {"quota": {"monthly_tokens": budget}}},
    }))
    .await;
    let key = gw.key("agency", Role::User).await;
    let gw = std::sync::Arc::new(gw);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (gw, key) = (std::sync::Arc::clone(&gw), key.clone());
        tasks.push(tokio::spawn(async move {
            let r = gw.post(CHAT, &key, &ask(max_tokens, i % 2 == 0)).await;
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").cloned();
            let text = r.text().await.unwrap();
            (status, retry_after, text)
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, retry_after, text) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert!(retry_after.is_some());
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(body["error"]["code"], "insufficient_quota");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("tokens this month")
                );
            }
            other => panic!("{other}: {text}"),
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    // The truth is what the upstream served, counted by the upstream.
    let stats = mock.stats();
    let served =
        stats["prompt_tokens"].as_u64().unwrap() + stats["completion_tokens"].as_u64().unwrap();
    assert!(
        served <= budget + u64::from(max_tokens),
        "served {served} tokens against a budget of {budget}"
    );
    // Most of the budget was usable: reservations are settled to what was used.
    assert!(served > budget / 2, "served only {served}");
    // Usage agrees with the upstream's count.
    let usage: Value = gw
        .http
        .get(gw.url("/v1/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = &usage["total"];
    assert_eq!(total["requests"].as_u64().unwrap(), ok);
    assert_eq!(
        total["input_tokens"].as_u64().unwrap() + total["output_tokens"].as_u64().unwrap(),
        served
    );
}

#[tokio::test]
async fn rate_limits_name_the_limit_and_the_scope() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [
            upstream("p", "m", &mock.url("ok"), json!({})),
            upstream("s", "slow", &mock.url("slow-400"), json!({})),
        ],
        "tenants": {"agency": {
            "key_quota": {"requests_per_minute": 3},
            "quota": {"tokens_per_minute": 100},
            "model_quota": {"slow": {"concurrency": 1}},
        }},
    }))
    .await;
    let key = gw.key("agency", Role::User).await;
    let other_key = gw.key("agency", Role::User).await;
    for _ in 0..3 {
        assert_eq!(gw.call(CHAT, &key, &ask(4, false)).await.0, 200);
    }
    let r = gw.post(CHAT, &key, &ask(4, false)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("key `") && message.contains("3 of its 3 requests per minute"),
        "{message}"
    );
    // Another key of the tenant has its own per-key limit.
    assert_eq!(gw.call(CHAT, &other_key, &ask(4, false)).await.0, 200);

    // One request larger than the tenant's minute.
    let (status, body) = gw.call(CHAT, &other_key, &ask(500, false)).await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lower `max_tokens`")
    );

    // Concurrency on one model: the second of two at once waits its turn.
    let slow_a =
        json!({"model": "slow", "max_tokens": 2, "messages": [{"role": "user", "content": "a"}]});
    let a = gw.post(CHAT, &other_key, &slow_a);
    let third = gw.key("agency", Role::User).await;
    let b = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        gw.call(CHAT, &third, &json!({"model": "slow", "max_tokens": 2, "messages": [{"role": "user", "content": "b"}]})).await
    };
    let (a, (status_b, body_b)) = tokio::join!(a, b);
    assert_eq!(a.status(), 200);
    assert_eq!(status_b, 429, "{body_b}");
    assert!(
        body_b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent requests")
    );
    // Refusals are audited with the code.
    let refused = gw
        .records()
        .into_iter()
        .filter(|r| r["code"] == "rate_limit_exceeded")
        .count();
    assert_eq!(refused, 3);
}

#[tokio::test]
async fn usage_is_per_tenant_by_model_and_day() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [upstream("p", "m", &mock.url("ok"), json!({}))],
    }))
    .await;
    let a = gw.key("agency-a", Role::User).await;
    let b = gw.key("agency-b", Role::User).await;
    let auditor = gw.key("oversight", Role::Auditor).await;
    assert_eq!(gw.call(CHAT, &a, &ask(4, false)).await.0, 200);
    // Streamed answers are metered when they finish.
    let r = gw.post(CHAT, &a, &ask(4, true)).await;
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let get = |key: String, query: &'static str| {
        let gw = &gw;
        async move {
            let r = gw
                .http
                .get(gw.url(&format!("/v1/usage{query}")))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, mine) = get(a.clone(), "").await;
    assert_eq!(status, 200);
    let rows = mine["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{mine}");
    assert_eq!(rows[0]["model"], "m");
    assert_eq!(rows[0]["tenant"], "agency-a");
    assert_eq!(rows[0]["requests"], 2);
    // Mock: 11 words in, "You said: one ... four" is capped at 4 out.
    assert_eq!(rows[0]["input_tokens"], 22);
    assert_eq!(rows[0]["output_tokens"], 8);
    // Another tenant sees nothing of it, and may not ask for it.
    let (_, theirs) = get(b.clone(), "").await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0);
    let (status, _) = get(b, "?tenant=agency-a").await;
    assert_eq!(status, 403);
    let (status, all) = get(auditor, "?tenant=*").await;
    assert_eq!(status, 200);
    assert_eq!(all["total"]["requests"], 2);
    let (status, body) = get(a, "?from=yesterday").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "from");
}
