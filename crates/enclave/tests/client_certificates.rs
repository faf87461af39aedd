//! Smart-card sign-in (mTLS): a certificate from the agency's PKI that is valid, unrevoked,
//! asserts the PIV authentication policy and names a registered user is that user, with no key;
//! every other certificate is refused, in the handshake or with 401 and a code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use common::pki::{Client, PIV_AUTH, Pki};
use common::{CHAT, Server, http};
use serde_json::{Value, json};

/// A fresh client (no pooled connection: each call makes a new handshake).
fn client(pki: &Pki, identity: Option<&str>) -> reqwest::Client {
    let mut b = http().add_root_certificate(pki.root());
    if let Some(name) = identity {
        b = b.identity(pki.identity(name));
    }
    b.build().unwrap()
}

async fn models(c: &reqwest::Client, s: &Server) -> Result<(u16, Value), String> {
    let r = c
        .get(s.url("/v1/models"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// Refused in the handshake: no HTTP answer at all (the client sees an alert, a reset or a
/// broken pipe, depending on when it reads); the reason is in the server's log and audit records.
fn refused_in_handshake(result: &Result<(u16, Value), String>) -> bool {
    result.is_err()
}

#[tokio::test]
async fn a_smart_card_certificate_signs_in_as_its_user_and_every_bad_one_is_refused() {
    let mut pki = Pki::new(90);
    let alice = pki.client(
        "alice",
        &Client {
            upn: Some("alice@agency.example"),
            ..Client::default()
        },
    );
    let _ = alice;
    pki.client(
        "bob",
        &Client {
            upn: Some("bob@agency.example"),
            ..Client::default()
        },
    );
    pki.client(
        "carol",
        &Client {
            upn: Some("carol@agency.example"),
            piv_policy: false,
            ..Client::default()
        },
    );
    let dave = pki.client(
        "dave",
        &Client {
            upn: Some("dave@agency.example"),
            ..Client::default()
        },
    );
    pki.client(
        "erin",
        &Client {
            upn: Some("erin@agency.example"),
            valid_days: -1,
            ..Client::default()
        },
    );
    pki.client(
        "frank",
        &Client {
            upn: None,
            email: Some("frank@agency.example"),
            ..Client::default()
        },
    );
    // A stranger's PKI: same names, other keys (a forged card claiming our issuing CA).
    let mut stranger = Pki::new(90);
    stranger.client(
        "mallory",
        &Client {
            upn: Some("alice@agency.example"),
            ..Client::default()
        },
    );

    let config = pki.dir().join("enclave.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[tls.client_auth]\nca = \"{}\"\ncrls = [\"{}\"]\nrequired_policies = [\"{PIV_AUTH}\"]\nmap = \"upn\"\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
            pki.path("root.pem").display(),
            pki.path("issuing.crl").display(),
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let server = Server::start_with(&[("ENCLAVE_CONFIG", config.as_str())]);

    for (name, clearance) in [
        ("alice@agency.example", "SECRET"),
        ("dave@agency.example", "UNCLASSIFIED"),
    ] {
        let (ok, _, err) = server.cli(&[
            "users",
            "add",
            name,
            "--tenant",
            "default",
            "--clearance",
            clearance,
        ]);
        assert!(ok, "users add {name}: {err}");
    }
    let (ok, out, _) = server.cli(&["users", "list"]);
    assert!(
        ok && out.contains("alice@agency.example") && out.contains("enabled"),
        "{out}"
    );

    // Alice: no key, her card only.
    let as_alice = client(&pki, Some("alice"));
    let (status, body) = models(&as_alice, &server).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains(CHAT));
    // Her clearance is the one registered for her: SECRET text is hers to send.
    let secret_prompt = json!({
        "model": CHAT, "max_tokens": 4,
        "messages": [{"role": "user", "content": "(S) Where is the harbour crane?"}]
    });
    let r = as_alice
        .post(server.url("/v1/chat/completions"))
        .json(&secret_prompt)
        .send()
        .await
        .unwrap();
    let label = r.headers().get("enclave-label").cloned();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(label.unwrap(), "SECRET");
    // Dave, cleared UNCLASSIFIED, is refused the same prompt.
    let as_dave = client(&pki, Some("dave"));
    let r = as_dave
        .post(server.url("/v1/chat/completions"))
        .json(&secret_prompt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "label_exceeds_clearance", "{e}");

    // Valid and trusted, but nobody registered it: 401 with a code, not a handshake error.
    let (status, body) = models(&client(&pki, Some("bob")), &server).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "certificate_not_mapped", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bob@agency.example")
    );
    // Valid, but the map finds no UPN in it.
    let (status, body) = models(&client(&pki, Some("frank")), &server).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "certificate_not_mapped", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no UPN"),
        "{body}"
    );

    // Refused in the handshake: no PIV policy, expired, another PKI's root.
    for who in ["carol", "erin"] {
        let result = models(&client(&pki, Some(who)), &server).await;
        assert!(refused_in_handshake(&result), "{who}: {result:?}");
    }
    let mallory = http()
        .add_root_certificate(pki.root())
        .identity(stranger.identity("mallory"))
        .build()
        .unwrap();
    let result = models(&mallory, &server).await;
    assert!(refused_in_handshake(&result), "mallory: {result:?}");

    // Dave's card is revoked: the new list is read at the next handshake.
    assert_eq!(models(&as_dave, &server).await.unwrap().0, 200);
    pki.write_crl(&[dave]);
    let result = models(&client(&pki, Some("dave")), &server).await;
    assert!(refused_in_handshake(&result), "revoked dave: {result:?}");
    // Alice, from the same issuer, is not.
    assert_eq!(
        models(&client(&pki, Some("alice")), &server)
            .await
            .unwrap()
            .0,
        200
    );

    // A disabled user stops at the next request, on a connection already open.
    let (ok, _, err) = server.cli(&["users", "disable", "alice@agency.example"]);
    assert!(ok, "{err}");
    let (ok, shown, err) = server.cli(&["users", "show", "alice@agency.example"]);
    assert!(ok, "{err}");
    assert!(
        shown.contains("clearance: SECRET//NOFORN") && shown.contains("state:     disabled at "),
        "{shown}"
    );
    let (status, body) = models(&as_alice, &server).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "user_disabled", "{body}");

    // Without a certificate, API keys work as before (client certificates are optional here).
    let r = client(&pki, None)
        .get(server.url("/v1/models"))
        .bearer_auth(&server.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = models(&client(&pki, None), &server).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "missing_api_key", "{body}");

    // Every certificate sign-in and refusal is an audit record, with the certificate's SHA-256.
    let auditor = server.key("default", "auditor");
    let records: Value = client(&pki, None)
        .get(server.url("/v1/audit/records?limit=1000"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sign_ins: Vec<&Value> = records["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["record"])
        .filter(|r| r["kind"] == "signin")
        .collect();
    let find = |needle: &str, status: u64| {
        sign_ins.iter().any(|r| {
            r["status"] == status
                && r["detail"].as_str().unwrap().contains(needle)
                && r["detail"].as_str().unwrap().contains("sha256 ")
        })
    };
    assert!(find("maps to `alice@agency.example`", 200), "{sign_ins:#?}");
    assert!(
        find("maps to no one: the certificate has no UPN", 401),
        "{sign_ins:#?}"
    );
    assert!(find("CN=Test Person", 495), "{sign_ins:#?}");
    assert!(
        find("asserts none of the required policies", 495),
        "{sign_ins:#?}"
    );
    assert!(find("Revoked", 495), "{sign_ins:#?}");
    assert!(find("certificate expired", 495), "{sign_ins:#?}");
    // Mallory's issuing CA bears our issuing CA's name, so her card chains by name to ours and
    // fails on the signature.
    assert!(find("BadSignature", 495), "{sign_ins:#?}");
    // Her calls are recorded as hers: the user's id stands where a key's would.
    let alice_id = out
        .lines()
        .find(|l| l.contains("alice@agency.example"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(
        records["data"].as_array().unwrap().iter().any(|r| {
            let r = &r["record"];
            r["operation"] == "POST /v1/chat/completions"
                && r["status"] == 200
                && r["key_id"] == alice_id.as_str()
                && r["tenant"] == "default"
                && r["request_label"] == "SECRET"
        }),
        "{records:#}"
    );
    let metrics = client(&pki, None)
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("enclave_sign_ins_total") && l.contains("outcome=\"refused\"")),
        "{metrics}"
    );

    // The server logged why each handshake was refused.
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.contains("asserts none of the required policies"),
        "{log}"
    );
    assert!(log.contains("Revoked") || log.contains("revoked"), "{log}");
}
