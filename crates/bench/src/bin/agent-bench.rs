//! `agent-bench`: what the label decision adds to each tool call of an agent run, beside the
//! call itself, measured in one run.
//!
//! The decision is everything Enclave does for a call besides making it: the egress rule before
//! it (jurisdiction, accreditation against the context label, approval) and, after it, labelling
//! the result (its server's floor joined with every marking inspection finds in it), checking it
//! against the caller's clearance and raising the context. It runs over results of 1 KB, 16 KB
//! and 256 KB of text with portion marks. The peer is the call it guards: the same result fetched
//! from a real MCP server (`tests/mcp/server.py`, the official `mcp` package, over stdio through
//! the `rmcp` client Enclave uses), when `--python` has the `mcp` package.
//!
//! ```sh
//! cargo run --release -p enclave-bench --bin agent-bench -- --python .venv/bin/python
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use enclave_policy::egress::{self, Context as Ctx, Egress, ToolPlacement};
use enclave_policy::{Placement, TenantPolicy, check_clearance, label_request};
use enclave_service::policy::Policy;

/// Times the label decision per tool call beside the MCP call itself.
#[derive(Debug, Parser)]
struct Args {
    /// Python with the `mcp` package, for the MCP call beside the decision; without it the
    /// decision is measured alone.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Decisions timed per result size.
    #[arg(long, default_value_t = 20_000)]
    decisions: usize,
    /// MCP calls timed per result size.
    #[arg(long, default_value_t = 200)]
    calls: usize,
}

/// A result of about `bytes` bytes: paragraphs with portion marks, as documents carry them.
fn result_text(bytes: usize) -> String {
    let paragraphs = [
        "(U) The office is closed on Friday for maintenance of the heating system.",
        "(CUI) Staff roster for building 4, with shift times and desk numbers.",
        "(S) The convoy leaves at dawn from the northern depot; escorts as planned.",
    ];
    let mut out = String::new();
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(paragraphs[i % paragraphs.len()]);
        out.push('\n');
        i += 1;
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let policy = Policy::default_policy().context("the default policy")?;
    let scheme = &policy.scheme;
    let tenant = TenantPolicy::enclave_only(scheme.lowest());
    let tool = ToolPlacement {
        placement: Placement {
            name: "records.fetch".into(),
            accreditation: scheme.parse("TOP SECRET")?,
            jurisdiction: "enclave".into(),
        },
        writes: false,
        safe: false,
    };
    let floor = scheme.parse("CUI")?;
    let clearance = policy.clearance("TOP SECRET")?;
    let context = scheme.parse("CONFIDENTIAL")?;

    let sizes = [1usize << 10, 16 << 10, 256 << 10];
    let dir = tempfile::tempdir()?;
    let docs: serde_json::Map<String, serde_json::Value> = sizes
        .iter()
        .map(|s| (s.to_string(), serde_json::Value::String(result_text(*s))))
        .collect();
    std::fs::write(
        dir.path().join("docs.json"),
        serde_json::Value::Object(docs).to_string(),
    )?;
    let clients = args.python.as_ref().map(|python| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp/server.py");
        enclave_tools::Clients::new(vec![enclave_service::tool_servers::ServerSpec {
            name: "records".into(),
            transport: enclave_service::tool_servers::Transport::Stdio {
                command: vec![
                    "env".into(),
                    format!("MCP_DOCS={}", dir.path().join("docs.json").display()),
                    python.display().to_string(),
                    script.display().to_string(),
                    "stdio".into(),
                ],
            },
            timeout: Duration::from_secs(30),
            max_result_bytes: 4 << 20,
        }])
    });

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| result | decision p50 | decision p99 | MCP call p50 (peer) | MCP call p99 | decision / call |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for size in sizes {
        let text = result_text(size);
        let mut times = Vec::with_capacity(args.decisions);
        for _ in 0..args.decisions {
            let started = Instant::now();
            let decided = egress::tool_call(
                scheme,
                &tenant,
                &tool,
                Ctx {
                    label: &context,
                    tainted: true,
                    approved: false,
                },
            );
            assert_eq!(decided, Egress::Run);
            let labelled = label_request(&policy.inspector, &floor, [text.as_str()]);
            let after = context.join(&labelled.label);
            let allowed = check_clearance(scheme, &clearance, &after).is_ok();
            times.push(started.elapsed());
            assert!(allowed && labelled.findings[0].len() > 1);
        }
        times.sort();
        let (d50, d99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        let peer = match &clients {
            Some(c) => {
                let mut calls = Vec::with_capacity(args.calls);
                for i in 0..=args.calls {
                    let mut a = serde_json::Map::new();
                    a.insert("name".into(), size.to_string().into());
                    let started = Instant::now();
                    let out = c.call("records", "fetch", a).await?;
                    // The first call starts the server: not counted.
                    if i > 0 {
                        calls.push(started.elapsed());
                    }
                    assert_eq!(out.text.len(), text.len());
                }
                calls.sort();
                Some((percentile(&calls, 0.5), percentile(&calls, 0.99)))
            }
            None => None,
        };
        let kb = size >> 10;
        match peer {
            Some((c50, c99)) => writeln!(
                out,
                "| {kb} KB | {:.1} µs | {:.1} µs | {:.0} µs | {:.0} µs | {:.1}% |",
                d50.as_secs_f64() * 1e6,
                d99.as_secs_f64() * 1e6,
                c50.as_secs_f64() * 1e6,
                c99.as_secs_f64() * 1e6,
                100.0 * d50.as_secs_f64() / c50.as_secs_f64()
            )?,
            None => writeln!(
                out,
                "| {kb} KB | {:.1} µs | {:.1} µs | (no --python) | | |",
                d50.as_secs_f64() * 1e6,
                d99.as_secs_f64() * 1e6
            )?,
        }
    }
    Ok(())
}
