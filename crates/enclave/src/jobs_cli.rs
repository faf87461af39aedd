//! `enclave jobs`: batches and fine-tuning jobs from the command line, through a running
//! server's API, with a progress bar while one runs. A job is told by its id: `batch_…` or
//! `ftjob-…`.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::kb_cli::{Api, Client};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List your tenant's batches and fine-tuning jobs (those your clearance may see), newest
    /// first within each kind.
    List,
    /// Show one job as JSON: a batch's status, request counts and files; a fine-tuning job's
    /// status, hyperparameters, model and lineage.
    Show { id: String },
    /// Ask a job to stop: a batch keeps the lines already answered; a fine-tuning job stops at
    /// its next step.
    Cancel { id: String },
    /// Follow a job with a progress bar (lines answered, or training steps) until it ends.
    ///
    /// Example: enclave jobs watch ftjob-0193... --key $KEY
    Watch { id: String },
}

/// Which API a job id belongs to.
fn api_of(client: &Client, id: &str) -> Result<Api> {
    if id.starts_with("ftjob-") {
        Api::under(client, "/v1/fine_tuning/jobs")
    } else {
        Api::under(client, "/v1/batches")
    }
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
        Some("completed" | "failed" | "expired" | "cancelled" | "succeeded")
    )
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub async fn run(client: Client, cmd: JobsCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        JobsCommand::List => {
            let batches = Api::under(&client, "/v1/batches")?.get("").await?;
            for b in batches["data"].as_array().into_iter().flatten() {
                let (total, done, failed) = counts(b);
                writeln!(
                    out,
                    "{}\t{}\t{done}/{total} done, {failed} failed\t{}\t{}\t{} priority",
                    text(&b["id"]),
                    text(&b["status"]),
                    text(&b["endpoint"]),
                    text(&b["enclave"]["label"]),
                    text(&b["enclave"]["priority"]),
                )?;
            }
            let tunes = Api::under(&client, "/v1/fine_tuning/jobs")?.get("").await?;
            for j in tunes["data"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{} priority",
                    text(&j["id"]),
                    text(&j["status"]),
                    text(&j["model"]),
                    j["fine_tuned_model"].as_str().unwrap_or("-"),
                    text(&j["enclave"]["label"]),
                    text(&j["enclave"]["priority"]),
                )?;
            }
        }
        JobsCommand::Show { id } => {
            let b = api_of(&client, &id)?.get(&format!("/{id}")).await?;
            writeln!(out, "{}", serde_json::to_string_pretty(&b)?)?;
        }
        JobsCommand::Cancel { id } => {
            let b = api_of(&client, &id)?
                .post(&format!("/{id}/cancel"), &json!({}), None)
                .await?;
            writeln!(out, "{}\t{}", text(&b["id"]), text(&b["status"]))?;
        }
        JobsCommand::Watch { id } if id.starts_with("ftjob-") => {
            watch_fine_tune(&api_of(&client, &id)?, &id, &mut out).await?;
        }
        JobsCommand::Watch { id } => {
            let api = api_of(&client, &id)?;
            let mut b = api.get(&format!("/{id}")).await?;
            let bar = ProgressBar::new(counts(&b).0);
            bar.set_style(
                ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} lines ({eta})")?
                    .progress_chars("=> "),
            );
            while !ended(&b) {
                let (_, done, failed) = counts(&b);
                bar.set_position(done + failed);
                bar.set_message(text(&b["status"]).to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
                b = api.get(&format!("/{id}")).await?;
            }
            let (total, done, failed) = counts(&b);
            bar.set_position(done + failed);
            bar.finish_with_message(text(&b["status"]).to_string());
            writeln!(
                out,
                "{}: {done} of {total} lines answered, {failed} failed; output {}, errors {}",
                text(&b["status"]),
                b["output_file_id"].as_str().unwrap_or("none"),
                b["error_file_id"].as_str().unwrap_or("none"),
            )?;
        }
    }
    Ok(())
}

/// Follows a fine-tuning job by its step events, the latest training loss beside the bar.
async fn watch_fine_tune(api: &Api, id: &str, out: &mut impl std::io::Write) -> Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] step {pos}/{len} ({eta})")?
            .progress_chars("=> "),
    );
    let mut job = api.get(&format!("/{id}")).await?;
    loop {
        let events = api.get(&format!("/{id}/events")).await?;
        // Newest first: the latest step says where training is.
        let latest = events["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["data"]["total_steps"].is_u64());
        if let Some(e) = latest {
            bar.set_length(e["data"]["total_steps"].as_u64().unwrap_or(0));
            bar.set_position(e["data"]["step"].as_u64().unwrap_or(0));
            bar.set_message(format!(
                "loss {:.3}",
                e["data"]["train_loss"].as_f64().unwrap_or(f64::NAN)
            ));
        } else {
            bar.set_message(text(&job["status"]).to_string());
        }
        if ended(&job) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = api.get(&format!("/{id}")).await?;
    }
    bar.finish();
    match job["fine_tuned_model"].as_str() {
        Some(model) => writeln!(
            out,
            "{}: {model} at {}, {} tokens trained",
            text(&job["status"]),
            text(&job["enclave"]["label"]),
            job["trained_tokens"].as_u64().unwrap_or(0)
        )?,
        None => writeln!(
            out,
            "{}{}",
            text(&job["status"]),
            job["error"]["message"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )?,
    }
    Ok(())
}
