//! Browser sign-in with an OpenID provider: the authorization request (code flow, PKCE S256,
//! `state`, `nonce`), the code exchange at the token endpoint, the ID token's verification, and
//! the userinfo response's claims joined to it.

use async_trait::async_trait;
use base64::Engine as _;
use enclave_service::session::{Authorization, BrowserLogin, LoginIssuer};
use enclave_service::token::{TokenClaims, TokenRefused};
use serde_json::Value;
use sha2::Digest as _;

use crate::keys::IssuerKeys;
use crate::{IssuerConfig, Verifier, refuse};

/// The client secret `client_secret_file` or `client_secret_env` names, read at start-up.
pub(crate) fn client_secret(config: &IssuerConfig) -> Result<Option<String>, String> {
    match (&config.client_secret_file, &config.client_secret_env) {
        (Some(_), Some(_)) => {
            Err("give `client_secret_file` or `client_secret_env`, not both".into())
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("client_secret_file {}: {e}", path.display()))?;
            let secret = text.lines().next().unwrap_or_default().trim().to_string();
            if secret.is_empty() {
                return Err(format!("client_secret_file {} is empty", path.display()));
            }
            Ok(Some(secret))
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
            _ => Err(format!(
                "client_secret_env names `{var}`, which is not set in the environment"
            )),
        },
        (None, None) => Ok(None),
    }
}

/// The name `/login?issuer=` takes: the configured one, else the issuer's host.
fn short_name(config: &IssuerConfig) -> String {
    config.name.clone().unwrap_or_else(|| {
        reqwest::Url::parse(&config.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| config.issuer.clone())
    })
}

/// 256 random bits as unpadded base64url: `state`, `nonce` and the PKCE verifier.
fn random() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before HTTP Basic.
fn form_encoded(s: &str) -> String {
    reqwest::Url::parse_with_params("x:", [("", s)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches('=').to_string()))
        .unwrap_or_else(|| s.to_string())
}

impl Verifier {
    fn browser_issuer(&self, name: &str) -> Result<&IssuerKeys, TokenRefused> {
        self.issuers
            .iter()
            .find(|i| i.config.client_id.is_some() && short_name(&i.config) == name)
            .ok_or_else(|| refuse(format!("no issuer named `{name}` signs browsers in")))
    }
}

fn unreachable(issuer: &IssuerKeys, e: impl std::fmt::Display) -> TokenRefused {
    tracing::warn!(issuer = %issuer.config.issuer, error = %e, "browser sign-in: provider unreachable");
    refuse(format!(
        "the provider {} cannot be reached: {e}",
        issuer.config.issuer
    ))
}

#[async_trait]
impl BrowserLogin for Verifier {
    fn issuers(&self) -> Vec<LoginIssuer> {
        self.issuers
            .iter()
            .filter(|i| i.config.client_id.is_some())
            .map(|i| LoginIssuer {
                name: short_name(&i.config),
                issuer: i.config.issuer.clone(),
            })
            .collect()
    }

    async fn authorize(
        &self,
        issuer: &str,
        redirect_uri: &str,
    ) -> Result<Authorization, TokenRefused> {
        let keys = self.browser_issuer(issuer)?;
        let endpoint = keys
            .endpoint("authorization_endpoint")
            .await
            .map_err(|e| unreachable(keys, e))?
            .ok_or_else(|| refuse("the provider names no authorization_endpoint"))?;
        let (state, nonce, verifier) = (random(), random(), random());
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let client_id = keys.config.client_id.as_deref().unwrap_or_default();
        let scope = keys.config.scopes.join(" ");
        let url = reqwest::Url::parse_with_params(
            &endpoint,
            [
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("scope", scope.as_str()),
                ("state", state.as_str()),
                ("nonce", nonce.as_str()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .map_err(|e| refuse(format!("the authorization endpoint `{endpoint}`: {e}")))?;
        Ok(Authorization {
            url: url.to_string(),
            state,
            nonce,
            verifier,
        })
    }

    async fn complete(
        &self,
        issuer: &str,
        code: &str,
        redirect_uri: &str,
        started: &Authorization,
    ) -> Result<TokenClaims, TokenRefused> {
        let keys = self.browser_issuer(issuer)?;
        let client_id = keys.config.client_id.as_deref().unwrap_or_default();
        let endpoint = keys
            .endpoint("token_endpoint")
            .await
            .map_err(|e| unreachable(keys, e))?
            .ok_or_else(|| refuse("the provider names no token_endpoint"))?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", started.verifier.as_str()),
        ];
        let mut request = keys.http().post(&endpoint);
        match &keys.secret {
            Some(secret) => {
                request = request.basic_auth(form_encoded(client_id), Some(form_encoded(secret)));
            }
            None => form.push(("client_id", client_id)),
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable(keys, e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(refuse(format!(
                "the provider refused the code ({status}): {} {}",
                body["error"].as_str().unwrap_or("no error given"),
                body["error_description"].as_str().unwrap_or_default()
            )));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| refuse("the provider's answer has no id_token"))?;
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| refuse(format!("the ID token's header cannot be read: {e}")))?;
        let mut claims = keys
            .decode(id_token, &header, client_id)
            .await
            .map_err(|e| refuse(format!("the ID token is not accepted: {}", e.0)))?;
        if claims["nonce"].as_str() != Some(started.nonce.as_str()) {
            return Err(refuse(
                "the ID token's nonce is not this sign-in's (a replayed token)",
            ));
        }
        if keys.config.userinfo
            && let Some(access) = body["access_token"].as_str()
            && let Some(userinfo) = keys
                .endpoint("userinfo_endpoint")
                .await
                .map_err(|e| unreachable(keys, e))?
        {
            let info: Value = keys
                .http()
                .get(&userinfo)
                .bearer_auth(access)
                .send()
                .await
                .map_err(|e| unreachable(keys, e))?
                .error_for_status()
                .map_err(|e| refuse(format!("userinfo refused: {e}")))?
                .json()
                .await
                .map_err(|e| refuse(format!("userinfo is not JSON: {e}")))?;
            if info["sub"] != claims["sub"] {
                return Err(refuse("userinfo describes another subject"));
            }
            // The ID token's claims stand; userinfo adds the ones it lacks.
            if let (Value::Object(into), Value::Object(from)) = (&mut claims, info) {
                for (name, value) in from {
                    into.entry(name).or_insert(value);
                }
            }
        }
        let exp = claims["exp"].as_i64().unwrap_or_default();
        keys.config
            .claims
            .read(
                &keys.config.issuer,
                &claims,
                exp,
                std::time::Duration::from_secs(keys.config.keys_max_age_seconds),
            )
            .map_err(|e| refuse(format!("the ID token's claims: {e}")))
    }
}
