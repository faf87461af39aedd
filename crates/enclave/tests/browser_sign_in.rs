//! Browser sign-in: a person goes to `/login`, signs in at the agency's OpenID provider (a real
//! one: `oidc-provider` from the npm registry on Node.js, its own login and consent pages, posted
//! as a browser would), and comes back with a server-side session whose cookie then works on the
//! API. The cases the issue names are refused: a replayed callback, a callback from a browser
//! that did not begin the sign-in, a malformed clearance claim, a cookie after logout, an idle or
//! expired session, and a disabled user's live session. Each sign-in, refusal and end is audited
//! and counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly at the line that broke"
)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::oidc::{Provider, WEB_CLIENT};
use common::{CHAT, Server, http, python};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// A browser: cookies by host and port, redirects followed by hand so each hop can be seen.
struct Browser {
    client: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
}

fn origin(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    )
}

impl Browser {
    fn new() -> Self {
        Self {
            client: http()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: HashMap::new(),
        }
    }

    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar.get(&origin(url))?.get(name).cloned()
    }

    fn cookie_header(&self, url: &str) -> String {
        self.jar
            .get(&origin(url))
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    async fn send(&mut self, request: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        let response = request
            .header(COOKIE, self.cookie_header(url))
            .send()
            .await
            .unwrap();
        let jar = self.jar.entry(origin(url)).or_default();
        for set in response.headers().get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_string(), value.to_string());
            }
        }
        response
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let request = self.client.get(url);
        self.send(request, url).await
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let request = self.client.post(url).form(form);
        self.send(request, url).await
    }

    /// The anti-forgery token the console page carries for this browser's session.
    async fn csrf(&mut self, server: &Server) -> String {
        let page = self
            .get(&server.url("/console"))
            .await
            .text()
            .await
            .unwrap();
        let token = regex::Regex::new(r#"name="enclave-csrf" content="([0-9a-f]{64})""#).unwrap();
        token
            .captures(&page)
            .unwrap_or_else(|| panic!("no token in the console page: {page}"))[1]
            .to_string()
    }

    /// A JSON post from the console page: with its anti-forgery token.
    async fn post_json(&mut self, server: &Server, path: &str, body: &Value) -> reqwest::Response {
        let token = self.csrf(server).await;
        let url = server.url(path);
        let request = self
            .client
            .post(&url)
            .header("enclave-csrf", token)
            .json(body);
        self.send(request, &url).await
    }

    /// From `/login` through the provider's pages, signing in as `person` when it asks: the URL
    /// the provider finally sends the browser back to Enclave with (not yet visited).
    async fn through_provider(&mut self, server: &Server, person: &str) -> String {
        let form = regex::Regex::new(r#"<form[^>]*action="([^"]+)""#).unwrap();
        let prompt = regex::Regex::new(r#"name="prompt" value="(\w+)""#).unwrap();
        let mut url = server.url("/login");
        for _ in 0..12 {
            if url.starts_with(&server.base) && url.contains("/auth/callback") {
                return url;
            }
            let r = self.get(&url).await;
            let (status, base) = (r.status(), r.url().clone());
            if status.is_redirection() {
                let location = r.headers()[LOCATION].to_str().unwrap();
                url = base.join(location).unwrap().to_string();
                continue;
            }
            let page = r.text().await.unwrap();
            assert_eq!(status, 200, "{url}: {page}");
            let action = base
                .join(&form.captures(&page).expect(&page)[1])
                .unwrap()
                .to_string();
            let step = prompt.captures(&page).unwrap()[1].to_string();
            let r = if step == "login" {
                self.post_form(
                    &action,
                    &[("prompt", "login"), ("login", person), ("password", "x")],
                )
                .await
            } else {
                self.post_form(&action, &[("prompt", step.as_str())]).await
            };
            assert!(r.status().is_redirection(), "{action}: {}", r.status());
            url = base
                .join(r.headers()[LOCATION].to_str().unwrap())
                .unwrap()
                .to_string();
        }
        panic!("the sign-in never came back to Enclave (last at {url})");
    }
}

/// `GET /v1/models` with the browser's cookies: the status and error code.
async fn models(browser: &mut Browser, server: &Server) -> (u16, String, String) {
    let r = browser.get(&server.url("/v1/models")).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().into(),
        body["error"]["message"].as_str().unwrap_or_default().into(),
    )
}

fn set_cookie_of(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|h| h.to_str().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

fn sql(server: &Server, statement: &str) {
    let db = server.data.path().join("enclave.db");
    let out = Command::new(python())
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()",
        ])
        .arg(&db)
        .arg(statement)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn people_sign_in_with_a_browser_and_their_sessions_end_when_they_should() {
    let person = |clearance: &str| json!({"tenant": "default", "clearance": clearance, "groups": ["staff"], "citizenship": "USA"});
    let provider = Provider::start_for_browsers(
        &["k1"],
        json!({
            "alice": person("TOP SECRET"),
            "bob": person("SEKRIT"),
            "carol": person("CONFIDENTIAL"),
            "dave": {"tenant": "default", "clearance": "SECRET", "groups": ["staff", "sigint-cell"], "citizenship": ["GBR"]},
            "erin": {"tenant": "default", "clearance": "SECRET", "citizenship": "UK"},
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = provider.browser_config(
        dir.path(),
        "SECRET//SI",
        "groups = \"groups\"\ncitizenship = \"citizenship\"\n\
         [identity.issuers.claims.group_compartments]\nsigint-cell = \"SI\"",
    );
    let server = Server::start_with(&[("ENCLAVE_CONFIG", config.as_str())]);

    // `/login` sends the browser to the provider: code flow, PKCE S256, state and nonce, and a
    // login cookie binding the sign-in to this browser.
    let mut alice = Browser::new();
    let login = alice.get(&server.url("/login")).await;
    assert_eq!(login.status(), 303);
    let to = login.headers()[LOCATION].to_str().unwrap().to_string();
    let to = reqwest::Url::parse(&to).unwrap();
    assert!(to.as_str().starts_with(&provider.issuer), "{to}");
    let params: HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], WEB_CLIENT);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["redirect_uri"], server.url("/auth/callback"));
    assert!(params["state"].len() >= 43 && params["nonce"].len() >= 43);
    let binding = set_cookie_of(&login, "enclave_login");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/auth"] {
        assert!(binding.contains(attribute), "{binding}");
    }

    // Through the provider's own pages (login form, consent), back to the callback.
    alice.jar.clear();
    let callback = alice.through_provider(&server, "alice").await;
    let r = alice.get(&callback).await;
    let session = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|h| h.to_str().unwrap().to_string())
        .find(|c| c.starts_with("enclave_session="));
    let page = r.text().await.unwrap();
    let session = session.unwrap_or_else(|| panic!("no session: {page}"));
    assert!(
        page.contains("Signed in as <strong>alice</strong>"),
        "{page}"
    );
    // TOP SECRET claimed, the tenant's ceiling given.
    assert!(
        page.contains("cleared to <strong>SECRET//NOFORN</strong>"),
        "{page}"
    );
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(
        page.contains("http-equiv=\"refresh\""),
        "the callback moves on from this site, so the Strict cookie is sent: {page}"
    );

    // The session works on the API, at the clamped clearance.
    assert_eq!(models(&mut alice, &server).await.0, 200);
    let chat = |text: &str| json!({"model": CHAT, "max_tokens": 4, "messages": [{"role": "user", "content": text}]});
    let url = server.url("/v1/chat/completions");
    let r = alice
        .post_json(
            &server,
            "/v1/chat/completions",
            &chat("(S) Where is the crane?"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["enclave-label"], "SECRET");
    let r = alice
        .post_json(
            &server,
            "/v1/chat/completions",
            &chat("(TS) Where is the crane?"),
        )
        .await;
    assert_eq!(
        r.status(),
        403,
        "above the ceiling the claim was clamped to"
    );
    // `/` is the console once signed in; it says who and at what clearance.
    let home = alice.get(&server.url("/")).await;
    assert_eq!(home.status(), 303);
    assert_eq!(home.headers()[LOCATION], "/console");
    let console = alice
        .get(&server.url("/console"))
        .await
        .text()
        .await
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(
        console.contains("alice · default · user · cleared to SECRET//NOFORN"),
        "{console}"
    );
    // The session cookie alone cannot change anything: a forged request lacks the page's token,
    // or comes from another site.
    let r = alice
        .send(alice.client.post(&url).json(&chat("(U) hi")), &url)
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf_refused", "{body}");
    let token = alice.csrf(&server).await;
    let forged = alice
        .client
        .post(&url)
        .header("enclave-csrf", token)
        .header("sec-fetch-site", "cross-site")
        .json(&chat("(U) hi"));
    let r = alice.send(forged, &url).await;
    assert_eq!(r.status(), 403);

    // The same callback again (a replay): the sign-in was used.
    let mut replay = Browser::new();
    replay.jar = alice.jar.clone();
    let r = replay.get(&callback).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("sign_in_failed"));

    // A callback in a browser that did not begin the sign-in (a login forced on a victim).
    let mut attacker = Browser::new();
    let callback = attacker.through_provider(&server, "carol").await;
    let mut victim = Browser::new();
    let r = victim.get(&callback).await;
    assert_eq!(r.status(), 401);
    let page = r.text().await.unwrap();
    assert!(page.contains("begun by another browser"), "{page}");
    assert!(victim.cookie(&server.base, "enclave_session").is_none());

    // A clearance claim that does not parse is a refusal, not a default.
    let mut bob = Browser::new();
    let callback = bob.through_provider(&server, "bob").await;
    let r = bob.get(&callback).await;
    assert_eq!(r.status(), 401);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("SEKRIT") && page.contains("is not a label"),
        "{page}"
    );
    assert!(bob.cookie(&server.base, "enclave_session").is_none());

    // Compartments from groups and citizenship from the provider: a British analyst in the
    // SIGINT cell reads SI material released to Britain, not NOFORN material.
    let mut dave = Browser::new();
    let callback = dave.through_provider(&server, "dave").await;
    let page = dave.get(&callback).await.text().await.unwrap();
    assert!(
        page.contains("cleared to <strong>SECRET//SI//REL TO USA, GBR</strong>"),
        "{page}"
    );
    for (text, status) in [
        ("(S//SI//REL TO USA, GBR) The crane is north.", 200),
        ("(S//NF) The crane is north.", 403),
        ("(S//TK//REL TO USA, GBR) The crane is north.", 403),
    ] {
        let r = dave
            .post_json(&server, "/v1/chat/completions", &chat(text))
            .await;
        assert_eq!(r.status(), status, "{text}");
    }
    let mut erin = Browser::new();
    let callback = erin.through_provider(&server, "erin").await;
    let page = erin.get(&callback).await.text().await.unwrap();
    assert!(page.contains("`UK` is not an ISO 3166 trigraph"), "{page}");

    // Logout ends the session; the cookie replayed afterwards is refused.
    let cookie = alice.cookie(&server.base, "enclave_session").unwrap();
    let forged = alice.post_form(&server.url("/logout"), &[]).await;
    assert_eq!(forged.status(), 403, "a sign-out without the page's token");
    let token = alice.csrf(&server).await;
    let r = alice
        .post_form(&server.url("/logout"), &[("csrf", token.as_str())])
        .await;
    assert_eq!(r.status(), 200);
    assert!(set_cookie_of(&r, "enclave_session").contains("Max-Age=0"));
    assert!(alice.cookie(&server.base, "enclave_session").is_none());
    let replayed = http()
        .build()
        .unwrap()
        .get(server.url("/v1/models"))
        .header(COOKIE, format!("enclave_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    let body: Value = replayed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_ended", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("logout")
    );

    // Idle and absolute timeouts, the clock moved on in the store.
    let sign_in = |who: &'static str| {
        let server = &server;
        async move {
            let mut b = Browser::new();
            let callback = b.through_provider(server, who).await;
            assert_eq!(b.get(&callback).await.status(), 200);
            assert_eq!(models(&mut b, server).await.0, 200);
            b
        }
    };
    let mut idle = sign_in("carol").await;
    sql(
        &server,
        "UPDATE sessions SET last_seen = last_seen - 1801 WHERE ended_at IS NULL",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, code, message) = models(&mut idle, &server).await;
    assert_eq!((status, code.as_str()), (401, "session_ended"), "{message}");
    assert!(message.contains("idle"), "{message}");
    let mut old = sign_in("carol").await;
    sql(
        &server,
        "UPDATE sessions SET expires_at = created_at WHERE ended_at IS NULL",
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, code, message) = models(&mut old, &server).await;
    assert_eq!((status, code.as_str()), (401, "session_ended"), "{message}");
    assert!(message.contains("expired"), "{message}");

    // A disabled user's live session stops within a second.
    let mut alice = sign_in("alice").await;
    let (ok, out, err) = server.cli(&["users", "disable", "alice"]);
    assert!(ok, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, code, message) = models(&mut alice, &server).await;
    assert_eq!((status, code.as_str()), (401, "session_ended"), "{message}");
    assert!(message.contains("user disabled"), "{message}");
    // And she cannot sign in again.
    let mut again = Browser::new();
    let callback = again.through_provider(&server, "alice").await;
    let r = again.get(&callback).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("user_disabled"));

    // Every start, end and refusal is in the audit log; sign-ins are counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events: Vec<(String, String)> = server
        .audit_records()
        .await
        .iter()
        .filter(|r| r["kind"] == "admin")
        .map(|r| {
            (
                r["operation"].as_str().unwrap_or_default().to_string(),
                r["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let has = |op: &str, needle: &str| events.iter().any(|(o, d)| o == op && d.contains(needle));
    assert!(
        has("sessions.start", "`alice`, user cleared to SECRET"),
        "{events:#?}"
    );
    for reason in ["logout", "idle", "expired"] {
        assert!(has("sessions.end", reason), "{reason}: {events:#?}");
    }
    assert!(
        has("signin.refuse", "begun by another browser"),
        "{events:#?}"
    );
    assert!(has("signin.refuse", "SEKRIT"), "{events:#?}");
    assert!(
        has("users.disable", "1 live session(s) ended"),
        "{events:#?}"
    );
    let metrics = common::http_get(&server.url("/metrics"));
    assert!(
        metrics.contains(
            r#"enclave_sign_ins_total{source="oidc",outcome="accepted",reason="verified"} 5"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"enclave_sign_ins_total{source="oidc",outcome="refused",reason="sign_in_failed"} 3"#
        ),
        "{metrics}"
    );
}
