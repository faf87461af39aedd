//! `gateway-bench`: what Enclave adds in front of a model server, beside LiteLLM's proxy, measured
//! in one run on one machine with `oha` as the load generator on loopback.
//!
//! One mock upstream (`enclave-mock-upstream`, a fixed small delay per answer) is measured three
//! ways: alone, behind Enclave, behind LiteLLM. Enclave runs as a user runs it: API keys, quotas
//! (generous, but checked and settled on every call), label inspection and the durable audit log
//! all on. For each target and for whole and streamed answers: the highest throughput at 64
//! connections, then p50/p99 latency at a fixed rate below saturation (1,000 requests/s, or half
//! the target's maximum when that is lower), failures, and peak resident memory. "Added" is the
//! target's latency minus the mock's at the same rate.

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::Value;

/// Measures Enclave's added latency and throughput against a mock upstream, beside LiteLLM.
///
/// `bench/gateway.sh` installs `oha` and LiteLLM, builds in release mode and runs this.
#[derive(Debug, Parser)]
struct Args {
    /// The `oha` load generator.
    #[arg(long, default_value = "target/tools/bin/oha")]
    oha: PathBuf,
    /// LiteLLM's proxy command; skipped when it does not exist.
    #[arg(long, default_value = "target/litellm-venv/bin/litellm")]
    litellm: PathBuf,
    /// Models directory for `enclave serve` (the embedded models load beside the upstream).
    #[arg(long, default_value = "target/test-models")]
    models_dir: PathBuf,
    /// The mock upstream's delay per answer, in milliseconds.
    #[arg(long, default_value_t = 1)]
    delay_ms: u64,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// The fixed rate for latency figures, requests per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
}

const LITELLM_KEY: &str = "sk-enclave-bench-0123456789abcdef0123456789abcdef";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Peak resident memory so far, MiB (Linux `VmHWM`).
    fn peak_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

/// Starts `cmd`, returning it and the first stderr line containing `marker`.
fn spawn_until(mut cmd: Command, marker: &str, wait: Duration) -> Result<(Proc, String)> {
    cmd.stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&wanted) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    let line = rx
        .recv_timeout(wait)
        .with_context(|| format!("{cmd:?} did not report `{marker}`"))?;
    Ok((Proc(child), line))
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory")?;
    let p = dir.join(name);
    if !p.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release -p enclave -p enclave-mock-upstream`",
            p.display()
        );
    }
    Ok(p)
}

fn wait_for_port(addr: &str) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("nothing listens on {addr}")
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: u64,
}

/// One `oha` run: `rate` None is as fast as 64 connections go.
fn oha(args: &Args, url: &str, key: Option<&str>, body: &str, rate: Option<u64>) -> Result<Run> {
    let mut cmd = Command::new(&args.oha);
    cmd.args(["--no-tui", "--output-format", "json", "-m", "POST", "-T"])
        .arg("application/json")
        .args(["-d", body, "-z"])
        .arg(format!("{}s", args.seconds));
    if let Some(k) = key {
        cmd.args(["-H", &format!("Authorization: Bearer {k}")]);
    }
    match rate {
        Some(q) => {
            cmd.args(["-q", &q.to_string(), "--latency-correction", "-c", "64"]);
        }
        None => {
            cmd.args(["-c", "64"]);
        }
    }
    cmd.arg(url);
    let out = cmd.output().context("cannot run oha")?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    let ok: u64 = v["statusCodeDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() == "200")
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let all: u64 = v["statusCodeDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    // Requests still in flight when the duration ends are cut off by oha, not failed.
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let pct = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    Ok(Run {
        rps: ok as f64 / args.seconds as f64,
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
        failures: all - ok + errors,
    })
}

struct Target<'a> {
    name: &'static str,
    url: String,
    key: Option<&'a str>,
    proc: &'a Proc,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.oha.exists() {
        bail!(
            "{} is missing: `cargo install --locked --root target/tools oha` (bench/gateway.sh does)",
            args.oha.display()
        );
    }
    let scratch = tempfile::tempdir()?;

    // The mock upstream.
    let mut cmd = Command::new(sibling("enclave-mock-upstream")?);
    cmd.args(["--delay-ms", &args.delay_ms.to_string()]);
    let (mock, line) = spawn_until(cmd, "listening on http://", Duration::from_secs(10))?;
    let mock_addr = line
        .rsplit("http://")
        .next()
        .context("mock address")?
        .trim()
        .to_string();
    let mock_base = format!("http://{mock_addr}/ok/v1");

    // Enclave in front of it, as a user runs it.
    let config = scratch.path().join("enclave.toml");
    std::fs::write(
        &config,
        format!(
            "[[deployments]]\nname = \"mock\"\nmodel = \"mock\"\nbackend = \"openai\"\n\
             base_url = \"{mock_base}\"\naccreditation = \"UNCLASSIFIED\"\njurisdiction = \"enclave\"\n\n\
             [tenants.default.quota]\nrequests_per_minute = 100000000\ntokens_per_minute = 100000000000\n\
             monthly_tokens = 1000000000000\n\n[tenants.default.key_quota]\nrequests_per_minute = 100000000\n\n\
             [chat]\nslots = 1\nctx_per_slot = 512\n"
        ),
    )?;
    let mut cmd = Command::new(sibling("enclave")?);
    cmd.args([
        "serve",
        "--no-pull",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(scratch.path().join("data"))
    .arg("--models-dir")
    .arg(&args.models_dir)
    .env("ENCLAVE_CONFIG", &config)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot start enclave")?;
    let mut key = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut key)?;
    let key = key.trim().to_string();
    let stderr = child.stderr.take().context("stderr")?;
    let enclave = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let enclave_addr = rx
        .recv_timeout(Duration::from_secs(120))
        .context("enclave did not start")?;

    // LiteLLM's proxy in front of the same mock: its defaults, a master key, no database.
    let litellm = if args.litellm.exists() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let yaml = scratch.path().join("litellm.yaml");
        std::fs::write(
            &yaml,
            format!(
                "model_list:\n  - model_name: mock\n    litellm_params:\n      model: openai/mock\n      api_base: {mock_base}\n      api_key: none\n"
            ),
        )?;
        let child = Command::new(&args.litellm)
            .args(["--config"])
            .arg(&yaml)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--num_workers",
                "2",
            ])
            .env("LITELLM_LOG", "ERROR")
            // Its proxy refuses to start without a key; with one (and no database) it checks
            // the key on every call, as Enclave does.
            .env("LITELLM_MASTER_KEY", LITELLM_KEY)
            // Offline: LiteLLM would otherwise try to fetch its model price list at start.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start litellm")?;
        let p = Proc(child);
        wait_for_port(&format!("127.0.0.1:{port}"))?;
        Some((p, port))
    } else {
        eprintln!("{} not found: LiteLLM is skipped", args.litellm.display());
        None
    };

    let mut targets = vec![
        Target {
            name: "mock alone",
            url: format!("{mock_base}/chat/completions"),
            key: None,
            proc: &mock,
        },
        Target {
            name: "Enclave",
            url: format!("http://{enclave_addr}/v1/chat/completions"),
            key: Some(&key),
            proc: &enclave,
        },
    ];
    if let Some((p, port)) = &litellm {
        targets.push(Target {
            name: "LiteLLM",
            url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
            key: Some(LITELLM_KEY),
            proc: p,
        });
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "mock upstream delay {} ms; {} s per figure; oha on loopback; 64 connections",
        args.delay_ms, args.seconds
    )?;
    writeln!(
        out,
        "| answer | target | max req/s | rate | p50 ms | p99 ms | added p50 ms | added p99 ms | failures | peak RSS MiB |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for stream in [false, true] {
        let body = format!(
            r#"{{"model":"mock","max_tokens":16,"stream":{stream},"messages":[{{"role":"user","content":"Summarise the quarterly report for the board in two sentences."}}]}}"#
        );
        // Warm every target (connections, pools, caches) before measuring.
        for t in &targets {
            let mut warm = Args::parse();
            warm.seconds = 2;
            oha(&warm, &t.url, t.key, &body, None)?;
        }
        let mut mock_at: Vec<(u64, Run)> = Vec::new();
        let mut max_enclave = 0.0;
        let mut max_litellm = 0.0;
        for t in &targets {
            let max = oha(&args, &t.url, t.key, &body, None)?;
            let rate = args.rate.min((max.rps / 2.0) as u64).max(1);
            let fixed = oha(&args, &t.url, t.key, &body, Some(rate))?;
            // The mock at the same rate, for the added latency.
            let base = match mock_at.iter().find(|(r, _)| *r == rate) {
                Some((_, b)) => *b,
                None => {
                    let b = if t.name == "mock alone" {
                        fixed
                    } else {
                        oha(&args, &targets[0].url, None, &body, Some(rate))?
                    };
                    mock_at.push((rate, b));
                    b
                }
            };
            match t.name {
                "Enclave" => max_enclave = max.rps,
                "LiteLLM" => max_litellm = max.rps,
                _ => {}
            }
            let added = |a: f64, b: f64| {
                if t.name == "mock alone" {
                    "—".to_string()
                } else {
                    format!("{:.3}", a - b)
                }
            };
            writeln!(
                out,
                "| {} | {} | {:.0} | {rate} | {:.3} | {:.3} | {} | {} | {} | {:.0} |",
                if stream { "streamed" } else { "whole" },
                t.name,
                max.rps,
                fixed.p50_ms,
                fixed.p99_ms,
                added(fixed.p50_ms, base.p50_ms),
                added(fixed.p99_ms, base.p99_ms),
                max.failures + fixed.failures,
                t.proc.peak_mib(),
            )?;
        }
        if max_litellm > 0.0 {
            writeln!(
                out,
                "| {} | Enclave ÷ LiteLLM max throughput | {:.1}× | | | | | | | |",
                if stream { "streamed" } else { "whole" },
                max_enclave / max_litellm
            )?;
        }
    }
    let records = std::fs::metadata(scratch.path().join("data/audit")).is_ok();
    writeln!(
        out,
        "\nEnclave ran with authentication, quotas, label inspection and the durable audit log on{}.",
        if records {
            ""
        } else {
            " (audit directory not found!)"
        }
    )?;
    Ok(())
}
