//! The Responses API (`/v1/responses`) over the mock upstream, which calls the first tool it is
//! offered until a result comes back: text answers, function tools returning control to the
//! client and continued with `previous_response_id`, the streamed events in order, stored
//! responses read, listed and deleted, and labels that never fall across a continuation or reach
//! a reader cleared lower.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::{Gateway, MockUpstream, key, post, sse_events, upstream};
use serde_json::{Value, json};

const RESPONSES: &str = "/v1/responses";

async fn get(gw: &Gateway, key: &str, path: &str) -> (u16, Value) {
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

fn lookup_tool() -> Value {
    json!([{"type": "function", "name": "lookup", "description": "Looks a site up.",
        "parameters": {"type": "object", "properties": {"site": {"type": "string"}}}}])
}

#[tokio::test]
async fn responses_answer_call_tools_continue_and_are_kept_at_their_labels() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [upstream("p", "m", &mock.url("ok"), json!({"accreditation": "TOP SECRET"}))],
    }))
    .await;
    let secret = key(&gw, "agency", "SECRET").await;
    let low = key(&gw, "agency", "UNCLASSIFIED").await;

    // Text.
    let (status, label, r) = post(
        &gw,
        &secret,
        "UNCLASSIFIED",
        &json!({"model": "m", "input": "hello there", "instructions": "Be brief."}),
    )
    .await;
    assert_eq!((status, label.as_str()), (200, "UNCLASSIFIED"), "{r}");
    assert_eq!(
        (r["object"].as_str(), r["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["type"], "output_text");
    assert!(
        !r["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(r["instructions"], "Be brief.");
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r["enclave"]["label"], "UNCLASSIFIED");

    // A function tool: the model calls it, the client answers with previous_response_id.
    let (status, label, first) = post(
        &gw,
        &secret,
        "SECRET",
        &json!({"model": "m", "input": "Where is the site?", "tools": lookup_tool()}),
    )
    .await;
    assert_eq!((status, label.as_str()), (200, "SECRET"), "{first}");
    let call = &first["output"][0];
    assert_eq!(
        (
            call["type"].as_str(),
            call["name"].as_str(),
            call["status"].as_str()
        ),
        (Some("function_call"), Some("lookup"), Some("completed")),
        "{first}"
    );
    let call_id = call["call_id"].as_str().unwrap().to_string();
    assert_eq!(call["enclave"]["label"], "SECRET");

    // Continued at a lower declared label: the context never falls.
    let first_id = first["id"].as_str().unwrap().to_string();
    let (status, label, second) = post(
        &gw,
        &secret,
        "UNCLASSIFIED",
        &json!({
            "model": "m", "previous_response_id": first_id, "tools": lookup_tool(),
            "input": [{"type": "function_call_output", "call_id": call_id, "output": "north pier"}],
        }),
    )
    .await;
    assert_eq!((status, label.as_str()), (200, "SECRET"), "{second}");
    assert_eq!(second["previous_response_id"], first["id"]);
    let text = second["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("north pier"),
        "the tool's result reached the model: {second}"
    );
    // What the upstream received: the first question, the call and its output, in order.
    let transcript = mock.stats()["last_request"].to_string();
    assert!(
        transcript.contains("Where is the site?") && transcript.contains("north pier"),
        "{transcript}"
    );

    // Stored: read back, its input items, invisible to a lower clearance, deleted.
    let second_id = second["id"].as_str().unwrap().to_string();
    let (status, got) = get(&gw, &secret, &format!("{RESPONSES}/{second_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got, second);
    let (status, items) = get(
        &gw,
        &secret,
        &format!("{RESPONSES}/{second_id}/input_items"),
    )
    .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"][0]["type"], "function_call_output");
    let (status, body) = get(&gw, &low, &format!("{RESPONSES}/{second_id}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, _, body) = post(
        &gw,
        &low,
        "UNCLASSIFIED",
        &json!({"model": "m", "previous_response_id": second_id, "input": "and?"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let r = gw
        .http
        .delete(gw.url(&format!("{RESPONSES}/{second_id}")))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = get(&gw, &secret, &format!("{RESPONSES}/{second_id}")).await;
    assert_eq!(status, 404);

    // Not stored when asked not to be.
    let (_, _, unkept) = post(
        &gw,
        &secret,
        "UNCLASSIFIED",
        &json!({"model": "m", "input": "hi", "store": false}),
    )
    .await;
    let (status, _) = get(
        &gw,
        &secret,
        &format!("{RESPONSES}/{}", unkept["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 404);

    // Refused clearly: tools this server does not run, items it does not read, above clearance.
    for (body, param) in [
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "mcp", "server_label": "s", "server_url": "http://127.0.0.1:9"}]}),
            "tools[0].server_url",
        ),
        (
            json!({"model": "m", "input": [{"type": "reasoning", "summary": []}]}),
            "input[0]",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]}),
            "input[0]",
        ),
        (json!({"model": "m", "input": []}), "input"),
    ] {
        let (status, _, r) = post(&gw, &secret, "UNCLASSIFIED", &body).await;
        assert_eq!(
            (status, r["error"]["param"].as_str()),
            (400, Some(param)),
            "{r}"
        );
    }
    let (status, _, r) = post(&gw, &low, "SECRET", &json!({"model": "m", "input": "x"})).await;
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (403, Some("label_exceeds_clearance")),
        "{r}"
    );
}

#[tokio::test]
async fn a_streamed_response_sends_the_responses_events_in_order() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(json!({
        "deployments": [upstream("p", "m", &mock.url("ok"), json!({"accreditation": "TOP SECRET"}))],
    }))
    .await;
    let secret = key(&gw, "agency", "SECRET").await;
    let stream = |body: Value| {
        let (gw, secret) = (&gw, &secret);
        async move {
            let r = gw
                .http
                .post(gw.url(RESPONSES))
                .bearer_auth(secret)
                .header("Enclave-Label", "SECRET")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let events = sse_events(&r.text().await.unwrap());
            events
                .into_iter()
                .map(|(name, data)| {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    assert_eq!(
                        name.as_deref(),
                        v["type"].as_str(),
                        "the SSE event name is the type"
                    );
                    v
                })
                .collect::<Vec<Value>>()
        }
    };

    // Long enough to stream in several pieces past the inspection's 64-byte hold-back.
    let long: Vec<String> = (0..60).map(|i| format!("word{i}")).collect();
    let events = stream(json!({"model": "m", "input": long.join(" "), "stream": true})).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    assert!(deltas >= 2, "{kinds:?}");
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "{e}");
    }
    let streamed: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], streamed.as_str());
    assert_eq!(done["enclave"]["label"], "SECRET");
    // Kept as streamed.
    let (status, got) = get(
        &gw,
        &secret,
        &format!("{RESPONSES}/{}", done["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!((status, &got), (200, done));

    // A streamed function call.
    let events = stream(
        json!({"model": "m", "input": "look it up", "stream": true, "tools": lookup_tool()}),
    )
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"response.function_call_arguments.delta"),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"response.function_call_arguments.done"),
        "{kinds:?}"
    );
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["output"][0]["type"], "function_call", "{done}");
    let args = events
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap()["arguments"]
        .clone();
    assert_eq!(done["output"][0]["arguments"], args);
    assert!(
        serde_json::from_str::<Value>(args.as_str().unwrap()).is_ok(),
        "{args}"
    );
}
