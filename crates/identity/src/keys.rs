//! An issuer's signing keys: its JWKS, fetched when first needed and again when a token names a
//! key id the cached set lacks (a rotation), but no more often than the issuer's
//! `min_refresh_seconds`, so forged key ids cannot make Enclave hammer the provider.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use enclave_service::token::TokenRefused;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::IssuerConfig;

#[derive(Debug)]
pub(crate) struct IssuerKeys {
    pub(crate) config: IssuerConfig,
    http: reqwest::Client,
    /// Key id → key. Keys without an id are kept under "".
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the set was last fetched; one fetch at a time.
    fetched: Mutex<Option<Instant>>,
    /// The client secret for browser sign-in, if any.
    pub(crate) secret: Option<String>,
    /// The discovery document, once read.
    discovery: tokio::sync::OnceCell<Value>,
}

impl IssuerKeys {
    pub(crate) fn new(config: IssuerConfig, http: reqwest::Client, secret: Option<String>) -> Self {
        Self {
            config,
            http,
            keys: RwLock::default(),
            fetched: Mutex::new(None),
            secret,
            discovery: tokio::sync::OnceCell::new(),
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The issuer's discovery document (`/.well-known/openid-configuration`), fetched once; a
    /// failed fetch is tried again at the next need.
    pub(crate) async fn discovery(&self) -> Result<&Value, String> {
        self.discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc = self.get_json(&url).await?;
                if doc["issuer"].as_str() != Some(self.config.issuer.as_str()) {
                    return Err(format!(
                        "{url} names issuer {}, not {}",
                        doc["issuer"], self.config.issuer
                    ));
                }
                Ok(doc)
            })
            .await
    }

    /// An endpoint the discovery document names.
    pub(crate) async fn endpoint(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.discovery().await?[name].as_str().map(str::to_string))
    }

    /// The key `kid` names (a token without `kid` may use the set's only key).
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, TokenRefused> {
        let max_age = Duration::from_secs(self.config.keys_max_age_seconds);
        let stale = self
            .fetched
            .lock()
            .await
            .is_none_or(|at| at.elapsed() >= max_age);
        if !stale && let Some(key) = self.cached(kid).await {
            return Ok(key);
        }
        // Unknown key id (a rotation) or keys held too long (a key the issuer dropped must stop
        // working): fetch again.
        self.refresh().await?;
        self.cached(kid).await.ok_or_else(|| {
            TokenRefused(format!(
                "it is signed ({alg:?}) by a key `{}` that {} does not publish",
                kid.unwrap_or("(no key id)"),
                self.config.issuer
            ))
        })
    }

    async fn cached(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// Fetches the key set unless it was fetched within `min_refresh_seconds`.
    async fn refresh(&self) -> Result<(), TokenRefused> {
        let mut fetched = self.fetched.lock().await;
        let min = Duration::from_secs(self.config.min_refresh_seconds);
        if fetched.is_some_and(|at| at.elapsed() < min) {
            return Ok(());
        }
        *fetched = Some(Instant::now());
        let set = self.fetch().await.map_err(|e| {
            tracing::warn!(issuer = %self.config.issuer, error = %e, "cannot fetch the issuer's keys");
            TokenRefused(format!(
                "the keys of {} cannot be fetched: {e}",
                self.config.issuer
            ))
        })?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            // Encryption keys and keys of kinds this build cannot verify are passed over.
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
            }
        }
        tracing::info!(issuer = %self.config.issuer, keys = keys.len(), "fetched the issuer's signing keys");
        *self.keys.write().await = keys;
        Ok(())
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let jwks_uri = match &self.config.jwks_uri {
            Some(uri) => uri.clone(),
            None => self
                .endpoint("jwks_uri")
                .await?
                .ok_or_else(|| format!("{}'s discovery names no jwks_uri", self.config.issuer))?,
        };
        let set: Value = self.get_json(&jwks_uri).await?;
        serde_json::from_value(set).map_err(|e| format!("{jwks_uri} is not a JWK set: {e}"))
    }

    pub(crate) async fn get_json(&self, url: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{url} answered {}", r.status()));
        }
        r.json().await.map_err(|e| format!("{url}: {e}"))
    }
}
