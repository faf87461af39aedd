//! The OpenAPI document names every route the gateway serves, and `schemathesis` (from PyPI)
//! finds no server error and no response off its documented schema, against the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::Server;
use serde_json::Value;

/// Every (method, path) the route table in `routes.rs` serves, read from its source.
fn routes() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gateway/src/routes.rs"
    ))
    .unwrap();
    let mut out = BTreeSet::new();
    for (prefix, part) in [
        ("/v1", "let v1"),
        ("", "Router::new()\n        .route(\"/healthz\""),
    ] {
        let start = source.find(part).unwrap();
        let block = &source[start..];
        let block = &block[..block.find(';').unwrap_or(block.len())];
        for route in block.split(".route(").skip(1) {
            let path = route.split('"').nth(1).unwrap();
            for method in ["get", "post", "delete", "put", "patch"] {
                if route.contains(&format!("{method}(")) {
                    out.insert((method.to_string(), format!("{prefix}{path}")));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_route_and_schemathesis_finds_nothing() {
    let s = Server::start();
    let doc: Value = common::http()
        .build()
        .unwrap()
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let served = routes();
    assert!(served.len() >= 20, "{served:?}");
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without documentation: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&served).collect();
    assert!(
        stale.is_empty(),
        "documented routes that are not served: {stale:?}"
    );

    let schemathesis = common::python().with_file_name("schemathesis");
    let url = s.url("/openapi.json");
    let key = s.admin_key.clone();
    // schemathesis keeps a cache where it runs: in a folder of its own, not the source tree.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&schemathesis)
            .current_dir(&cwd)
            .args(["run", &url, "-H"])
            .arg(format!("Authorization: Bearer {key}"))
            .args([
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--phases",
                "coverage,fuzzing",
                "--max-examples",
                "25",
                "--seed",
                "20261130",
                "--workers",
                "2",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", schemathesis.display()))
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(text.contains(" passed"), "{text}");
    assert!(
        !s.log.lock().unwrap().contains("panicked"),
        "the server panicked"
    );
}
