//! `signin-bench`: what resolving the caller costs a request, for each way of signing in (key,
//! certificate, token, browser session), beside the API key in the same run. Goal (issue 15):
//! each source adds at most 0.2 ms at p99.
//!
//! The service is the real one over a SQLite store in a temporary folder; the token issuer is a
//! loopback HTTP server publishing one ES256 key as a JWKS, so a token's first use fetches and
//! verifies as in production.
//!
//! Run: `cargo run --release -p enclave-bench --bin signin-bench`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine as _;
use enclave_service::Service;
use enclave_service::policy::{Policy, PolicyConfig};
use enclave_store::{Role, SqliteStore, Store};
use serde_json::json;

const CALLS: usize = 20_000;
/// Tokens seen for the first time: each is fetched-key-verified and its user looked up.
const FRESH_TOKENS: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

async fn measure<F, Fut>(n: usize, mut call: F) -> Result<(f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        call(i).await?;
        times.push(start.elapsed());
    }
    times.sort_unstable();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("enclave.db")).await?);
    let tenant = enclave_service::admin::create_tenant(store.as_ref(), "bench").await?;
    let mut config = PolicyConfig::default();
    config.tenants.insert(
        "bench".into(),
        enclave_service::policy::TenantConfig {
            ceiling: Some("SECRET".into()),
            ..Default::default()
        },
    );
    let policy = Arc::new(Policy::from_config(&config, None)?);
    let scheme = policy.scheme.clone();
    let key = enclave_service::admin::create_key(
        store.as_ref(),
        &scheme,
        "bench",
        Role::User,
        None,
        Some("SECRET"),
    )
    .await?;
    enclave_service::admin::create_user(
        store.as_ref(),
        &scheme,
        "bench",
        "alice@agency.example",
        Role::User,
        Some("SECRET"),
    )
    .await?;

    // The issuer: one ES256 key, published at /jwks on loopback.
    let signing = rcgen::KeyPair::generate()?;
    let point = signing.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "use": "sig",
        "x": b64(point.get(1..33).context("P-256 point")?),
        "y": b64(point.get(33..65).context("P-256 point")?),
    }]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let verifier = enclave_identity::Verifier::new(&[serde_json::from_value(json!({
        "issuer": issuer, "audience": "enclave", "jwks_uri": format!("{issuer}/jwks"),
        "claims": {"tenant_value": "bench"},
    }))?])?;

    let audit = enclave_audit::AuditLog::open(&dir.path().join("audit"), "bench/audit")?;
    let content = Arc::new(enclave_audit::ContentVault::open(
        &dir.path().join("audit"),
    )?);
    let service = Service::new(
        Arc::clone(&store) as Arc<dyn Store>,
        policy,
        audit,
        content,
        &enclave_upstream::Connector,
    )
    .map_err(anyhow::Error::msg)?
    .with_tokens(Arc::new(verifier));
    let verifier = service.tokens.clone().context("verifier")?;

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".into());
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&signing.serialize_der());
    let token = |n: usize| {
        jsonwebtoken::encode(
            &header,
            &json!({
                "iss": issuer, "aud": "enclave", "sub": "bob@agency.example",
                "clearance": "SECRET", "exp": 4_000_000_000u64, "jti": n,
            }),
            &encoding,
        )
    };
    let fresh: Vec<String> = (0..FRESH_TOKENS).map(token).collect::<Result<_, _>>()?;
    let reused = token(usize::MAX)?;
    // The first sign-in creates the user and fetches the keys; not what a request pays after.
    enclave_service::token::authenticate_token(&service, &reused).await?;

    let service = &service;
    let secret = key.secret.as_str();
    let api_key = measure(CALLS, |_| async move {
        enclave_service::principal::authenticate_key(service, secret).await?;
        Ok(())
    })
    .await?;
    let certificate = measure(CALLS, |_| async move {
        enclave_service::principal::authenticate_user(service, "alice@agency.example").await?;
        Ok(())
    })
    .await?;
    let reused_ref = reused.as_str();
    let token_reused = measure(CALLS, |_| async move {
        enclave_service::token::authenticate_token(service, reused_ref).await?;
        Ok(())
    })
    .await?;
    let fresh = &fresh;
    let verifier = &verifier;
    let verify_only = measure(FRESH_TOKENS, |i| async move {
        let t = fresh.get(i).context("token")?;
        verifier.verify(t).await.map_err(|e| anyhow::anyhow!(e))?;
        Ok(())
    })
    .await?;
    let token_fresh = measure(FRESH_TOKENS, |i| async move {
        let t = fresh.get(i).context("token")?;
        enclave_service::token::authenticate_token(service, t).await?;
        Ok(())
    })
    .await?;

    // The same tokens a second later: the principal has lapsed (a disabled user must stop
    // within a second), the verified claims have not, so only the store is asked.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token_again = measure(FRESH_TOKENS, |i| async move {
        let t = fresh.get(i).context("token")?;
        enclave_service::token::authenticate_token(service, t).await?;
        Ok(())
    })
    .await?;

    // Browser sessions of alice's, as sign-ins at /login leave them: stored by the SHA-256 of
    // their cookies. Within a second a session's principal is cached; a session not seen in the
    // last second is read from the store with its user (one query).
    let alice = store
        .user_by_name("alice@agency.example")
        .await?
        .context("alice")?;
    let cookies: Vec<String> = (0..FRESH_TOKENS)
        .map(|i| format!("bench-session-{i:08}"))
        .collect();
    for cookie in &cookies {
        store
            .create_session(&enclave_store::NewSession {
                id: <sha2::Sha256 as sha2::Digest>::digest(cookie.as_bytes()).into(),
                user_id: alice.id.clone(),
                issuer: issuer.clone(),
                created_at: enclave_store::now(),
                expires_at: enclave_store::now() + 3600,
            })
            .await?;
    }
    let cookies = &cookies;
    let session_store = measure(FRESH_TOKENS, |i| async move {
        let c = cookies.get(i).context("cookie")?;
        enclave_service::session::authenticate_session(service, c).await?;
        Ok(())
    })
    .await?;
    let one = cookies.first().context("cookie")?.as_str();
    let session_cached = measure(CALLS, |_| async move {
        enclave_service::session::authenticate_session(service, one).await?;
        Ok(())
    })
    .await?;

    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nprincipal resolution per request (goal: p99 ≤ 200 µs for every source)"
    )?;
    writeln!(
        out,
        "{:<58} {:>9} {:>9} {:>10}",
        "source", "p50 µs", "p99 µs", "p99 ÷ key"
    )?;
    let rows = [
        ("API key (the peer; cached 1 s, secret compared)", api_key),
        (
            "client certificate → user (store lookup each request)",
            certificate,
        ),
        ("signed token, seen within 1 s (cached)", token_reused),
        ("  its signature and claims alone (no store)", verify_only),
        (
            "signed token, first use (ES256 verify ∥ user lookup)",
            token_fresh,
        ),
        (
            "signed token, again after 1 s (claims kept, user lookup)",
            token_again,
        ),
        ("browser session, seen within 1 s (cached)", session_cached),
        (
            "browser session, unseen for 1 s (one store query)",
            session_store,
        ),
    ];
    for (name, (p50, p99)) in rows {
        writeln!(
            out,
            "{name:<58} {p50:>9.1} {p99:>9.1} {:>9.1}×",
            p99 / api_key.1.max(f64::EPSILON)
        )?;
    }
    let _ = tenant;
    Ok(())
}
