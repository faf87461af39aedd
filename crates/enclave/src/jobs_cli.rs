//! `enclave jobs`: batches from the command line, through a running server's API, with a
//! progress bar while one runs.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::kb_cli::{Api, Client};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List your tenant's batches (those your clearance may see), newest first.
    List,
    /// Show one batch as JSON: status, request counts, output and error files.
    Show { id: String },
    /// Ask a running batch to stop; lines already answered stay in its files.
    Cancel { id: String },
    /// Follow a batch with a progress bar until it ends.
    ///
    /// Example: enclave jobs watch batch_0193... --key $KEY
    Watch { id: String },
}

fn counts(b: &Value) -> (u64, u64, u64) {
    let c = &b["request_counts"];
    (
        c["total"].as_u64().unwrap_or(0),
        c["completed"].as_u64().unwrap_or(0),
        c["failed"].as_u64().unwrap_or(0),
    )
}

fn ended(b: &Value) -> bool {
    matches!(
        b["status"].as_str(),
        Some("completed" | "failed" | "expired" | "cancelled")
    )
}

pub async fn run(client: Client, cmd: JobsCommand) -> Result<()> {
    let api = Api::under(&client, "/v1/batches")?;
    let mut out = std::io::stdout().lock();
    match cmd {
        JobsCommand::List => {
            let list = api.get("").await?;
            for b in list["data"].as_array().into_iter().flatten() {
                let (total, done, failed) = counts(b);
                writeln!(
                    out,
                    "{}\t{}\t{done}/{total} done, {failed} failed\t{}\t{}",
                    b["id"].as_str().unwrap_or(""),
                    b["status"].as_str().unwrap_or(""),
                    b["endpoint"].as_str().unwrap_or(""),
                    b["enclave"]["label"].as_str().unwrap_or(""),
                )?;
            }
        }
        JobsCommand::Show { id } => {
            let b = api.get(&format!("/{id}")).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&b)?)?;
        }
        JobsCommand::Cancel { id } => {
            let b = api.post(&format!("/{id}/cancel"), &json!({}), None).await?;
            writeln!(
                out,
                "{}\t{}",
                b["id"].as_str().unwrap_or(""),
                b["status"].as_str().unwrap_or("")
            )?;
        }
        JobsCommand::Watch { id } => {
            let mut b = api.get(&format!("/{id}")).await?;
            let bar = ProgressBar::new(counts(&b).0);
            bar.set_style(
                ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} lines ({eta})")?
                    .progress_chars("=> "),
            );
            while !ended(&b) {
                let (_, done, failed) = counts(&b);
                bar.set_position(done + failed);
                bar.set_message(b["status"].as_str().unwrap_or("").to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
                b = api.get(&format!("/{id}")).await?;
            }
            let (total, done, failed) = counts(&b);
            bar.set_position(done + failed);
            bar.finish_with_message(b["status"].as_str().unwrap_or("").to_string());
            writeln!(
                out,
                "{}: {done} of {total} lines answered, {failed} failed; output {}, errors {}",
                b["status"].as_str().unwrap_or(""),
                b["output_file_id"].as_str().unwrap_or("none"),
                b["error_file_id"].as_str().unwrap_or("none"),
            )?;
        }
    }
    Ok(())
}
