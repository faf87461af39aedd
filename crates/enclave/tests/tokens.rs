//! Signed tokens for programs: a JWT from a configured issuer — a real OpenID provider
//! (`oidc-provider` from the npm registry, on Node.js) — is accepted wherever an API key is, by
//! the official `openai` SDK too; the claims make a user with a clearance clamped to the tenant's
//! ceiling; every token that should be refused is, with 401 `invalid_token` and the reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::oidc::{Program, Provider};
use common::{CHAT, Server, http, python};
use serde_json::{Value, json};

fn program<'a>(id: &'a str, claims: Value) -> Program<'a> {
    Program {
        id,
        claims,
        audience: "enclave",
        ttl_seconds: 300,
    }
}

/// `GET /v1/models` with `token` as the bearer: the status and the error code, if any.
async fn call(server: &Server, token: &str) -> (u16, String, String) {
    let r = http()
        .build()
        .unwrap()
        .get(server.url("/v1/models"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn tokens_from_the_agency_provider_are_accepted_like_keys_and_bad_ones_refused() {
    let tenant = |clearance: &str, groups: &[&str]| json!({"tenant": "default", "clearance": clearance, "groups": groups});
    let mut provider = Provider::start(
        &["k1"],
        &[
            program("analyst", tenant("SECRET", &["staff"])),
            program("chief", tenant("TOP SECRET", &["enclave-admins"])),
            program("typo", tenant("SEKRIT", &["staff"])),
            program("nameless", json!({"tenant": "default"})),
            program(
                "stranger",
                json!({"tenant": "no-such-tenant", "clearance": "SECRET"}),
            ),
            Program {
                audience: "another-service",
                ..program("misdirected", tenant("SECRET", &[]))
            },
            Program {
                ttl_seconds: 1,
                ..program("brief", tenant("SECRET", &[]))
            },
        ],
    );
    let other = Provider::start(&["k1"], &[program("analyst", tenant("SECRET", &[]))]);

    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            r#"
[tenants.default]
ceiling = "SECRET"

[[identity.issuers]]
issuer = "{}"
audience = "enclave"
leeway_seconds = 1
min_refresh_seconds = 1
keys_max_age_seconds = 2
[identity.issuers.claims]
user = "sub"
tenant = "tenant"
clearance = "clearance"
groups = "groups"
[identity.issuers.claims.roles]
enclave-admins = "admin"
"#,
            provider.issuer
        ),
    )
    .unwrap();
    let config_path = config.path().display().to_string();
    let server = Server::start_with(&[("ENCLAVE_CONFIG", config_path.as_str())]);

    // The official openai SDK, with the provider's token as its api_key, unchanged.
    let analyst = provider.token("analyst").await;
    let script = r#"
import sys, openai
base, token, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base + "/v1", api_key=token)
r = client.chat.completions.with_raw_response.create(model=model, max_tokens=4,
    messages=[{"role": "user", "content": "(S) Where is the harbour crane?"}])
print(r.headers["enclave-label"], r.parse().usage.total_tokens)
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&server.base)
        .arg(&analyst)
        .arg(CHAT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("SECRET "),
        "openai SDK with a token: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The first sign-in made users from the claims; the chief's TOP SECRET claim is clamped to
    // the tenant's SECRET ceiling, and the group gave the admin role.
    assert_eq!(call(&server, &provider.token("chief").await).await.0, 200);
    let (ok, users, err) = server.cli(&["users", "list"]);
    assert!(ok, "{err}");
    let line = |name: &str| {
        users
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no user {name}: {users}"))
            .to_string()
    };
    assert!(
        line("analyst").contains(" user ")
            && line("analyst").ends_with(" enabled   SECRET//NOFORN"),
        "{users}"
    );
    assert!(
        line("chief").contains(" admin ") && line("chief").ends_with(" enabled   SECRET//NOFORN"),
        "the TOP SECRET claim is clamped to the ceiling: {users}"
    );

    // Refusals, each with its reason.
    let refused = |(status, code, message): (u16, String, String), why: &str| {
        assert_eq!(
            (status, code.as_str()),
            (401, "invalid_token"),
            "{why}: {message}"
        );
        assert!(message.contains(why), "expected `{why}` in: {message}");
    };
    refused(
        call(&server, &provider.token("typo").await).await,
        "the clearance claim `SEKRIT` is not a label of scheme US",
    );
    refused(
        call(&server, &provider.token("nameless").await).await,
        "it has no `clearance` claim",
    );
    refused(
        call(&server, &provider.token("misdirected").await).await,
        "not for this audience",
    );
    refused(
        call(&server, &provider.token("stranger").await).await,
        "tenant `no-such-tenant`, which does not exist",
    );
    refused(
        call(&server, &other.token("analyst").await).await,
        &format!("the issuer `{}` is not configured", other.issuer),
    );
    let brief = provider.token("brief").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    refused(call(&server, &brief).await, "it has expired");

    // Unsigned, and signed by a key the issuer never published.
    let claims = json!({
        "iss": provider.issuer, "aud": "enclave", "sub": "analyst", "tenant": "default",
        "clearance": "SECRET", "exp": 4_000_000_000u64,
    });
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims));
    refused(
        call(&server, &unsigned).await,
        "unsigned tokens are never accepted",
    );
    let rogue = rcgen::KeyPair::generate().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("rogue".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&rogue.serialize_der()),
    )
    .unwrap();
    refused(call(&server, &forged).await, "by a key `rogue`");
    // An HMAC token "signed" with a guessable secret is not a signature of the issuer.
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret").unwrap(),
    )
    .unwrap();
    refused(
        call(&server, &hmac).await,
        "not an issuer's public-key signature",
    );

    // Key rotation: the provider signs with a new key and still publishes the old one; then it
    // drops the old one, and tokens it signed stop.
    let old = provider.token("analyst").await;
    provider.restart_with_keys(&["k2", "k1"]);
    let new = provider.token("analyst").await;
    assert_ne!(new.split('.').next(), old.split('.').next(), "a new key id");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&server, &new).await.0, 200, "the new key is picked up");
    assert_eq!(
        call(&server, &old).await.0,
        200,
        "the old key still published"
    );
    provider.restart_with_keys(&["k2"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    refused(call(&server, &old).await, "by a key `k1`");
    assert_eq!(call(&server, &new).await.0, 200);

    // A disabled user's tokens stop within a second.
    let (ok, _, err) = server.cli(&["users", "disable", "analyst"]);
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, code, _) = call(&server, &new).await;
    assert_eq!((status, code.as_str()), (401, "user_disabled"));

    // API keys keep working beside tokens.
    assert_eq!(call(&server, &server.admin_key).await.0, 200);

    // Sign-ins and refusals are counted by source and reason.
    let metrics = common::http_get(&server.url("/metrics"));
    for series in [
        r#"enclave_sign_ins_total{source="token",outcome="accepted",reason="verified"}"#,
        r#"enclave_sign_ins_total{source="token",outcome="refused",reason="invalid_token"}"#,
        r#"enclave_sign_ins_total{source="token",outcome="refused",reason="user_disabled"}"#,
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}

#[tokio::test]
async fn an_issuer_under_the_agency_pki_is_trusted_through_its_ca_file_only() {
    let pki = common::pki::Pki::new(30);
    let provider = Provider::start_tls(
        &["k1"],
        &[program(
            "analyst",
            json!({"tenant": "default", "clearance": "SECRET"}),
        )],
        &pki.path("server.pem"),
        &pki.path("server.key"),
        pki.root(),
    );
    assert!(provider.issuer.starts_with("https://"));
    let token = provider.token("analyst").await;
    let config = |ca: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            format!(
                "[[identity.issuers]]\nissuer = \"{}\"\naudience = \"enclave\"\n{ca}\n\
                 [identity.issuers.claims]\ntenant = \"tenant\"\n",
                provider.issuer
            ),
        )
        .unwrap();
        file
    };
    let trusted = config(&format!("ca_file = \"{}\"", pki.path("root.pem").display()));
    let path = trusted.path().display().to_string();
    let server = Server::start_with(&[("ENCLAVE_CONFIG", path.as_str())]);
    assert_eq!(call(&server, &token).await.0, 200);
    drop(server);

    // Without it, the agency's CA is not a public root: its keys cannot be fetched.
    let untrusted = config("");
    let path = untrusted.path().display().to_string();
    let server = Server::start_with(&[("ENCLAVE_CONFIG", path.as_str())]);
    let (status, code, message) = call(&server, &token).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"), "{message}");
    assert!(message.contains("cannot be fetched"), "{message}");
}
