//! Signed tokens from the agency's identity providers: which issuers are trusted, their signing
//! keys (fetched from each issuer's JWKS, cached, refreshed on an unknown key id at a bounded
//! rate), and how a verified token's claims name a user, tenant, role and clearance. Signatures
//! are checked with `ring` (module `ring_verify`).
//!
//! It must never accept a token it could not verify: an unsigned (`alg: none`) or HMAC token, an
//! issuer that is not configured, a key the issuer does not publish, another audience, or a token
//! outside its validity (beyond a small clock skew). What the claims may grant is the service's
//! decision ([`enclave_service::token`]), not this crate's.

mod browser;
mod claims;
mod keys;
mod ring_verify;

use std::time::Duration;

use async_trait::async_trait;
use enclave_service::token::{TokenClaims, TokenRefused, TokenVerifier};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use claims::ClaimMap;
use keys::IssuerKeys;

/// One trusted issuer, as `[[identity.issuers]]` configures it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry; its discovery document is read from
    /// `<issuer>/.well-known/openid-configuration` unless `jwks_uri` is given.
    pub issuer: String,
    /// The `aud` a bearer token must carry to be accepted here. Without it the issuer serves
    /// browser sign-in only.
    pub audience: Option<String>,
    pub jwks_uri: Option<String>,
    /// The short name `/login?issuer=` takes; the issuer's host when not given.
    pub name: Option<String>,
    /// Enclave's client id at this provider: set it to let browsers sign in here (authorization
    /// code flow with PKCE; the ID token's audience).
    pub client_id: Option<String>,
    /// A file holding the client secret (its first line).
    pub client_secret_file: Option<std::path::PathBuf>,
    /// An environment variable holding the client secret. Without a secret, Enclave signs in as
    /// a public client (PKCE alone).
    pub client_secret_env: Option<String>,
    /// Scopes asked for at browser sign-in.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// PEM file of the CA certificates the provider's HTTPS certificate chains to (an agency's
    /// own PKI). When given, only these are trusted for this issuer.
    pub ca_file: Option<std::path::PathBuf>,
    /// Whether the userinfo response's claims join the ID token's at browser sign-in.
    #[serde(default = "default_true")]
    pub userinfo: bool,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// The least time between two fetches of the issuer's keys, in seconds: an unknown key id
    /// triggers a fetch no more often than this.
    #[serde(default = "default_refresh")]
    pub min_refresh_seconds: u64,
    /// Keys are fetched again once held this long, in seconds, so a key the issuer dropped stops
    /// verifying tokens.
    #[serde(default = "default_max_age")]
    pub keys_max_age_seconds: u64,
    #[serde(default)]
    pub claims: ClaimMap,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

fn default_true() -> bool {
    true
}

fn default_leeway() -> u64 {
    60
}

fn default_refresh() -> u64 {
    30
}

fn default_max_age() -> u64 {
    300
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity issuer {issuer}: {message}")]
    Invalid { issuer: String, message: String },
    #[error("cannot build the HTTP client for identity issuers: {0}")]
    Client(String),
}

/// Signatures a token may carry. Never `none`, never HMAC: a shared secret is not the issuer's
/// signature.
const ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The verifier of every configured issuer's tokens.
#[derive(Debug)]
pub struct Verifier {
    issuers: Vec<IssuerKeys>,
}

impl Verifier {
    pub fn new(issuers: &[IssuerConfig]) -> Result<Self, IdentityError> {
        // reqwest is built without a bundled crypto provider; the process uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ring_verify::install();
        let http = client()
            .build()
            .map_err(|e| IdentityError::Client(e.to_string()))?;
        let mut out = Vec::new();
        for config in issuers {
            config
                .claims
                .check()
                .map_err(|message| IdentityError::Invalid {
                    issuer: config.issuer.clone(),
                    message,
                })?;
            let invalid = |message: &str| IdentityError::Invalid {
                issuer: config.issuer.clone(),
                message: message.into(),
            };
            if config.audience.as_deref().is_none_or(str::is_empty)
                && config.client_id.as_deref().is_none_or(str::is_empty)
            {
                return Err(invalid(
                    "give `audience` (to accept its bearer tokens), `client_id` (to let browsers sign in), or both",
                ));
            }
            if config.client_id.is_some() && !config.scopes.iter().any(|s| s == "openid") {
                return Err(invalid("`scopes` must include `openid`"));
            }
            let secret = browser::client_secret(config).map_err(|m| invalid(&m))?;
            let http = match &config.ca_file {
                None => http.clone(),
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| invalid(&format!("ca_file {}: {e}", path.display())))?;
                    let roots = reqwest::Certificate::from_pem_bundle(&pem)
                        .ok()
                        .filter(|r| !r.is_empty())
                        .ok_or_else(|| {
                            invalid(&format!(
                                "ca_file {} holds no PEM certificate",
                                path.display()
                            ))
                        })?;
                    client()
                        .tls_certs_only(roots)
                        .build()
                        .map_err(|e| IdentityError::Client(format!("{}: {e}", config.issuer)))?
                }
            };
            out.push(IssuerKeys::new(config.clone(), http, secret));
        }
        Ok(Self { issuers: out })
    }
}

/// The HTTP client issuers are asked with: bounded in time, never following a redirect to
/// another origin for keys or tokens.
fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
}

fn refuse(message: impl Into<String>) -> TokenRefused {
    TokenRefused(message.into())
}

#[async_trait]
impl TokenVerifier for Verifier {
    fn user_hint(&self, token: &str) -> Option<String> {
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
        let iss = unverified["iss"].as_str()?;
        let issuer = self.issuers.iter().find(|i| i.config.issuer == iss)?;
        issuer.config.claims.user_of(&unverified)
    }

    async fn verify(&self, token: &str) -> Result<TokenClaims, TokenRefused> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            refuse(format!(
                "its header is not a signed JWT header ({e}); unsigned tokens are never accepted"
            ))
        })?;
        // Which issuer to ask is read before the signature is checked; nothing else is trusted
        // until it is.
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| refuse(format!("its claims cannot be read: {e}")))?;
        let iss = unverified["iss"].as_str().unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| refuse(format!("the issuer `{iss}` is not configured")))?;
        let audience = issuer.config.audience.as_deref().ok_or_else(|| {
            refuse(format!(
                "{} is configured for browser sign-in only (no `audience`), not bearer tokens",
                issuer.config.issuer
            ))
        })?;
        let claims = issuer.decode(token, &header, audience).await?;
        let exp = claims["exp"].as_i64().unwrap_or_default();
        issuer
            .config
            .claims
            .read(
                &issuer.config.issuer,
                &claims,
                exp,
                Duration::from_secs(issuer.config.keys_max_age_seconds),
            )
            .map_err(refuse)
    }
}

impl IssuerKeys {
    /// The claims of `token`, signed by one of this issuer's keys, for `audience`, within its
    /// validity.
    pub(crate) async fn decode(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        audience: &str,
    ) -> Result<Value, TokenRefused> {
        if !ALLOWED.contains(&header.alg) {
            return Err(refuse(format!(
                "it is signed with {:?}, which is not an issuer's public-key signature",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[audience]);
        validation.leeway = self.config.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            refuse(match e.kind() {
                ErrorKind::ExpiredSignature => "it has expired".to_string(),
                ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_string(),
                ErrorKind::InvalidAudience => {
                    format!("it is not for this audience (expected `{audience}`)")
                }
                ErrorKind::InvalidIssuer => "its issuer does not match".to_string(),
                ErrorKind::InvalidSignature => "its signature does not verify".to_string(),
                ErrorKind::MissingRequiredClaim(c) => format!("it has no `{c}` claim"),
                _ => format!("it does not verify: {e}"),
            })
        })?;
        Ok(data.claims)
    }
}
