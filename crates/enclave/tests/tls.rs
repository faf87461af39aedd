//! HTTPS in Enclave itself: `[tls] cert` and `key` make `serve` speak TLS (HTTP/2 and HTTP/1.1)
//! with a certificate from a test PKI made here; plain HTTP is refused off loopback unless the
//! operator allows it, and `config check` says what the server will do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::pki::Pki;
use common::{CHAT, Server, bin, http, python};

fn env_for(pki: &Pki) -> Vec<(String, String)> {
    vec![
        (
            "ENCLAVE_TLS__CERT".into(),
            pki.path("server.pem").display().to_string(),
        ),
        (
            "ENCLAVE_TLS__KEY".into(),
            pki.path("server.key").display().to_string(),
        ),
    ]
}

#[tokio::test]
async fn serve_speaks_https_with_http2_and_http1_and_the_openai_sdk_works_over_it() {
    let pki = Pki::new(90);
    let env = env_for(&pki);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with(&env);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "the server says it serves HTTPS: {}",
        server.base
    );

    // HTTP/2 by ALPN, and HTTP/1.1 for a client that offers only that.
    for (client, version) in [
        (
            http().add_root_certificate(pki.root()).build().unwrap(),
            reqwest::Version::HTTP_2,
        ),
        (
            http()
                .add_root_certificate(pki.root())
                .http1_only()
                .build()
                .unwrap(),
            reqwest::Version::HTTP_11,
        ),
    ] {
        let r = client
            .get(server.url("/v1/models"))
            .bearer_auth(&server.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["data"].to_string().contains(CHAT), "{body}");
    }

    // A client that does not trust the root is refused in the handshake.
    let untrusting = http().build().unwrap();
    let err = untrusting
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("certificate") || format!("{err:?}").contains("UnknownIssuer"),
        "{err:?}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer, and the server keeps serving.
    let plain_url = server.base.replacen("https://", "http://", 1) + "/healthz";
    let plain = http().build().unwrap().get(&plain_url).send().await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status() == 400),
        "plain HTTP on the TLS port: {plain:?}"
    );

    // The official openai SDK, unchanged, trusting the test root: a streamed chat answer.
    let script = r#"
import sys, httpx, openai
base, key, ca, model = sys.argv[1:5]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, http_client=httpx.Client(verify=ca))
stream = client.chat.completions.create(model=model, stream=True, max_tokens=8,
    messages=[{"role": "user", "content": "Say hello."}])
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert text.strip(), "empty answer"
print("OK", repr(text))
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&server.base)
        .arg(&server.admin_key)
        .arg(pki.path("root.pem"))
        .arg(CHAT)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("OK"),
        "openai SDK over HTTPS: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The call is audited with the client's address, as over plain HTTP.
    let auditor = server.key("default", "auditor");
    let r = http()
        .add_root_certificate(pki.root())
        .build()
        .unwrap()
        .get(server.url("/v1/audit/records?limit=1000"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    let records = r.text().await.unwrap();
    assert!(
        records.contains("POST /v1/chat/completions") && records.contains("127.0.0.1"),
        "{records}"
    );
}

fn config_check(file: &Path) -> (bool, String, String) {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["config", "check"])
        .arg(file)
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("enclave.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn plain_http_off_loopback_is_refused_unless_allowed_and_config_check_says_so() {
    let dir = tempfile::tempdir().unwrap();

    // `serve` on every address without TLS stops before opening anything.
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--no-pull", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0")
            && stderr.contains("allow_plaintext"),
        "{stderr}"
    );
    assert!(
        !data.path().join("enclave.db").exists(),
        "nothing is created by a refused start"
    );

    let refused = write_config(dir.path(), "listen = \"0.0.0.0:8080\"\n");
    let (ok, _, err) = config_check(&refused);
    assert!(!ok);
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");

    let allowed = write_config(
        dir.path(),
        "listen = \"0.0.0.0:8080\"\n[tls]\nallow_plaintext = true\n",
    );
    let (ok, out, err) = config_check(&allowed);
    assert!(ok, "{err}");
    assert!(out.contains("transport: plain HTTP"), "{out}");
    assert!(
        out.contains("warning: plain HTTP on 0.0.0.0:8080, which is not a loopback address"),
        "{out}"
    );

    // Loopback needs nothing and warns of nothing.
    let loopback = write_config(dir.path(), "listen = \"127.0.0.1:8080\"\n");
    let (ok, out, _) = config_check(&loopback);
    assert!(ok && !out.contains("warning"), "{out}");
}

#[test]
fn config_check_describes_the_certificate_and_refuses_broken_tls_settings() {
    let pki = Pki::new(90);
    let dir = tempfile::tempdir().unwrap();
    let tls = |cert: &str, key: &str| {
        format!(
            "listen = \"0.0.0.0:8443\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.path(cert).display(),
            pki.path(key).display()
        )
    };

    let good = write_config(dir.path(), &tls("server.pem", "server.key"));
    let (ok, out, err) = config_check(&good);
    assert!(ok, "{err}");
    assert!(
        out.contains("transport: HTTPS (HTTP/2, HTTP/1.1), certificate CN=enclave.test for localhost, 127.0.0.1"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");

    // A key that is not the certificate's.
    let mismatched = write_config(dir.path(), &tls("server.pem", "other.key"));
    let (ok, _, err) = config_check(&mismatched);
    assert!(!ok);
    assert!(err.contains("cannot serve TLS"), "{err}");

    // A key file given as the certificate, and a missing file.
    let swapped = write_config(dir.path(), &tls("server.key", "server.key"));
    let (ok, _, err) = config_check(&swapped);
    assert!(!ok);
    assert!(err.contains("holds no PEM certificate"), "{err}");
    let missing = write_config(dir.path(), &tls("absent.pem", "server.key"));
    let (ok, _, err) = config_check(&missing);
    assert!(!ok);
    assert!(
        err.contains("cannot read") && err.contains("absent.pem"),
        "{err}"
    );

    // Only half of the pair.
    let half = write_config(
        dir.path(),
        &format!("[tls]\ncert = \"{}\"\n", pki.path("server.pem").display()),
    );
    let (ok, _, err) = config_check(&half);
    assert!(!ok);
    assert!(err.contains("needs both `cert` and `key`"), "{err}");

    // A certificate about to expire is served, with a warning.
    let soon = Pki::new(10);
    let expiring = write_config(
        dir.path(),
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            soon.path("server.pem").display(),
            soon.path("server.key").display()
        ),
    );
    let (ok, out, err) = config_check(&expiring);
    assert!(ok, "{err}");
    assert!(
        out.contains("warning: the certificate expires within 30 days"),
        "{out}"
    );
}
