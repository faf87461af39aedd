//! A throwaway PostgreSQL cluster for tests: the real server from the machine's packages
//! (PostgreSQL 15 from Debian), made with `initdb` in a temporary folder, listening on a free
//! loopback port with its socket in that folder, stopped and removed when dropped.
//!
//! It owns nothing but that folder and that process; it must never touch a cluster it did not
//! make, nor listen beyond loopback. Run as root (as CI may be), the server runs as the
//! `postgres` user, since PostgreSQL refuses to run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: `apt-get install postgresql` (scripts/setup.sh does), or set ENCLAVE_PG_BIN to their folder"
    )]
    NotInstalled,
    #[error("running as root, but there is no `postgres` user to run the server as: {0}")]
    NoUser(String),
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running cluster; dropped, it is stopped at once and its folder removed.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as, when this process is root.
    user: Option<String>,
}

/// Where `initdb` and `pg_ctl` are: `ENCLAVE_PG_BIN`, the newest `/usr/lib/postgresql/N/bin`,
/// or the `PATH`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ENCLAVE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, ClusterError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    /// Makes and starts a cluster whose superuser is `postgres`, trusted on loopback only. Its
    /// writes are not flushed to disk (`fsync=off`): right for tests, wrong for measuring.
    pub fn start() -> Result<Self, ClusterError> {
        Self::start_with(false)
    }

    /// [`Cluster::start`] flushing every commit to disk as a production server does (benches).
    pub fn start_durable() -> Result<Self, ClusterError> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self, ClusterError> {
        let bin = bin_dir().ok_or(ClusterError::NotInstalled)?;
        let user = if is_root() {
            let known = Command::new("id").args(["-u", "postgres"]).output()?;
            if !known.status.success() {
                return Err(ClusterError::NoUser(
                    String::from_utf8_lossy(&known.stderr).trim().to_string(),
                ));
            }
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("enclave-pg-").tempdir()?;
        if let Some(u) = &user {
            checked(
                "chown",
                Command::new("chown").arg(u).arg(dir.path()).output()?,
            )?;
        }
        let data = dir.path().join("data");
        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            user,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        // A free port may be taken between the probe and the start: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync={} -c max_connections=200",
                path(cluster.dir.path()),
                if durable { "on" } else { "off" }
            );
            let log = cluster.dir.path().join("server.log");
            match cluster.run(
                "pg_ctl",
                &[
                    "-D",
                    path(&data),
                    "-l",
                    path(&log),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(_) => {
                    cluster.port = port;
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        let log =
            std::fs::read_to_string(cluster.dir.path().join("server.log")).unwrap_or_default();
        Err(match last {
            Some(ClusterError::Failed { what, detail }) => ClusterError::Failed {
                what,
                detail: format!("{detail}\n{log}"),
            },
            Some(e) => e,
            None => ClusterError::Failed {
                what: "pg_ctl start".into(),
                detail: log,
            },
        })
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, ClusterError> {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        )?;
        Ok(self.url(name))
    }

    /// Runs one of the server's programs (as the server's user when this process is root).
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, ClusterError> {
        let exe = self.bin.join(program);
        let exe = if exe.exists() {
            exe
        } else {
            PathBuf::from(program)
        };
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args).current_dir(self.dir.path());
        checked(program, cmd.output()?)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn checked(what: &str, out: Output) -> Result<Output, ClusterError> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(ClusterError::Failed {
            what: what.to_string(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let started = Instant::now();
        let _ = self.run(
            "pg_ctl",
            &["-D", path(&data), "-m", "immediate", "-w", "stop"],
        );
        // The folder goes with the TempDir; give the server a moment to let go of it.
        while started.elapsed() < Duration::from_secs(5) && data.join("postmaster.pid").exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
