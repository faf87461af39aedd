//! A real OpenID provider on loopback: the `oidc-provider` package from the npm registry, run on
//! the machine's Node.js by `tests/oidc/provider.mjs`. Installed once into `target/oidc`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const PACKAGE: &str = "oidc-provider@9.13.3";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The provider module's entry file, installing the package first if needed.
fn module() -> PathBuf {
    super::npm_package("oidc", PACKAGE, "oidc-provider/lib/index.js")
}

/// A program (client-credentials client) and the claims its tokens carry.
pub struct Program<'a> {
    pub id: &'a str,
    pub claims: Value,
    pub audience: &'a str,
    pub ttl_seconds: u64,
}

pub struct Provider {
    child: Child,
    pub issuer: String,
    spec: PathBuf,
    /// The CA its HTTPS certificate chains to, when it serves HTTPS.
    root: Option<reqwest::Certificate>,
    _dir: tempfile::TempDir,
}

pub const SECRET: &str = "program-secret-program-secret-program-secret";
/// The client id browsers sign in to Enclave with.
pub const WEB_CLIENT: &str = "enclave-web";

impl Provider {
    /// Starts a provider signing with `keys` (names; the first signs) for `programs`.
    pub fn start(keys: &[&str], programs: &[Program<'_>]) -> Provider {
        Self::start_spec(keys, programs, json!({}))
    }

    /// Starts a provider that signs `people` (name → their claims) in through browsers, for the
    /// web client [`WEB_CLIENT`] with the secret [`SECRET`].
    pub fn start_for_browsers(keys: &[&str], people: Value) -> Provider {
        Self::start_spec(
            keys,
            &[],
            json!({"web": {"client_id": WEB_CLIENT, "client_secret": SECRET}, "people": people}),
        )
    }

    /// An Enclave configuration file in `dir` that signs browsers in here as [`WEB_CLIENT`] (its
    /// secret in a file), with tenant `default` under `ceiling`; `claims` are more TOML lines for
    /// `[identity.issuers.claims]` after the user (`preferred_username`), tenant and clearance.
    pub fn browser_config(&self, dir: &Path, ceiling: &str, claims: &str) -> String {
        let secret = dir.join("client-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let config = dir.join("enclave.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[tenants.default]
ceiling = "{ceiling}"

[[identity.issuers]]
issuer = "{issuer}"
name = "agency"
client_id = "{WEB_CLIENT}"
client_secret_file = "{secret}"
scopes = ["openid", "profile"]
[identity.issuers.claims]
user = "preferred_username"
tenant = "tenant"
clearance = "clearance"
{claims}
"#,
                issuer = self.issuer,
                secret = secret.display()
            ),
        )
        .unwrap();
        config.display().to_string()
    }

    /// [`Provider::start`] over HTTPS, its certificate `cert` (key `key`) issued by `root`.
    pub fn start_tls(
        keys: &[&str],
        programs: &[Program<'_>],
        cert: &Path,
        key: &Path,
        root: reqwest::Certificate,
    ) -> Provider {
        let mut provider =
            Self::start_spec(keys, programs, json!({"tls": {"cert": cert, "key": key}}));
        provider.root = Some(root);
        provider
    }

    fn start_spec(keys: &[&str], programs: &[Program<'_>], extra: Value) -> Provider {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.json");
        let clients: Vec<Value> = programs
            .iter()
            .map(|p| {
                json!({
                    "client_id": p.id, "client_secret": SECRET, "claims": p.claims,
                    "audience": p.audience, "ttl": p.ttl_seconds,
                })
            })
            .collect();
        let mut body = json!({"port": 0, "keys_dir": dir.path(), "keys": keys, "clients": clients});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        std::fs::write(&spec, body.to_string()).unwrap();
        let (child, issuer) = launch(&spec);
        Provider {
            child,
            issuer,
            spec,
            root: None,
            _dir: dir,
        }
    }

    /// Restarts on the same port signing with `keys` (a rotation: new first, old after, then
    /// the old one dropped).
    pub fn restart_with_keys(&mut self, keys: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut spec: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.spec).unwrap()).unwrap();
        let port: u16 = self.issuer.rsplit(':').next().unwrap().parse().unwrap();
        spec["port"] = json!(port);
        spec["keys"] = json!(keys);
        std::fs::write(&self.spec, spec.to_string()).unwrap();
        let (child, issuer) = launch(&self.spec);
        assert_eq!(issuer, self.issuer);
        self.child = child;
    }

    /// A fresh access token for `program`.
    pub async fn token(&self, program: &str) -> String {
        let mut client = super::http();
        if let Some(root) = &self.root {
            client = client.tls_certs_only([root.clone()]);
        }
        let body: Value = client
            .build()
            .unwrap()
            .post(format!("{}/token", self.issuer))
            .basic_auth(program, Some(SECRET))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "api"),
                ("resource", "urn:enclave"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token for {program}: {body}"))
            .to_string()
    }
}

fn launch(spec: &Path) -> (Child, String) {
    let mut child = Command::new("node")
        .arg(workspace().join("tests/oidc/provider.mjs"))
        .arg(spec)
        .env("OIDC_PROVIDER_MODULE", module())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node is needed for the OpenID provider tests");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if let Some(issuer) = line.strip_prefix("issuer ") {
                let _ = tx.send(issuer.to_string());
            }
        }
    });
    let issuer = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the OpenID provider did not start");
    (child, issuer)
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
