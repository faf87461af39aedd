//! `enclave audit`: the verifier key, exports, offline verification, kept content, tail, key
//! rotation.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use enclave_store::now;

use crate::config::Config;

/// The name of the log in checkpoints and keys.
pub(crate) const AUDIT_ORIGIN: &str = "enclave/audit";

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the log's verifier key (signed-note form), to give to auditors.
    PublicKey,
    /// Write every record and a signed checkpoint to a directory an auditor verifies offline.
    ///
    /// Example: enclave audit export --out /media/usb/audit-2026-11-22
    Export {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Verify an export against a public key, trusting nothing else: recomputes every leaf and
    /// the tree, checks the checkpoint's signature, and names the first record that fails.
    ///
    /// Example: enclave audit verify /media/usb/audit-2026-11-22 --public-key "enclave/audit+1a2b3c4d+AbC..."
    Verify {
        dir: PathBuf,
        /// The verifier key as `enclave audit public-key` prints it, or the path of a file
        /// holding it.
        #[arg(long, value_name = "KEY|FILE")]
        public_key: String,
    },
    /// Print the content kept for a record, for tenants whose policy keeps content (decrypted).
    ///
    /// Example: enclave audit content 1042 --tenant citizen-services
    Content {
        index: u64,
        #[arg(long)]
        tenant: String,
    },
    /// Follow the log: print each new record as it becomes durable (Ctrl-C to stop).
    Tail {
        /// Start this many records before the end.
        #[arg(long, default_value_t = 10)]
        last: u64,
    },
    /// Replace the signing key. The old key is kept (renamed) so checkpoints it signed stay
    /// verifiable with its public key; restart `enclave serve` to sign with the new one.
    RotateKey,
}

pub(crate) async fn audit_command(config: &Config, cmd: AuditCommand) -> Result<()> {
    let dir = config.data_dir.join("audit");
    let mut out = std::io::stdout().lock();
    match cmd {
        AuditCommand::PublicKey => {
            std::fs::create_dir_all(&dir)?;
            let key = enclave_audit::LogKey::load_or_create(&dir.join("log.key"), AUDIT_ORIGIN)?;
            writeln!(out, "{}", key.public_key())?;
        }
        AuditCommand::Export { out: target } => {
            let log = match config.database_url() {
                // The platform's one log, from the database every server shares.
                Some(url) => {
                    let key =
                        enclave_audit::LogKey::load_or_create(&dir.join("log.key"), AUDIT_ORIGIN)?;
                    let store =
                        enclave_store::PgStore::connect(url, 1)
                            .await
                            .with_context(|| {
                                format!(
                                    "cannot connect to the database {}",
                                    config.database_shown()
                                )
                            })?;
                    store
                        .claim_audit_key(&key.public_key())
                        .await
                        .context("this data directory's key cannot sign the platform's log")?;
                    let records =
                        enclave_store::PgAuditStorage::connect(url).with_context(|| {
                            format!("cannot reach the audit log in {}", config.database_shown())
                        })?;
                    enclave_audit::AuditLog::read_only_shared(Box::new(records), key)
                        .context("cannot read the audit log")?
                }
                None => enclave_audit::AuditLog::open_read_only(&dir, AUDIT_ORIGIN)
                    .context("cannot open the audit log (has `enclave serve` run here?)")?,
            };
            log.export(&target)?;
            eprintln!(
                "exported {} records and a signed checkpoint to {}",
                log.size(),
                target.display()
            );
        }
        AuditCommand::Tail { .. } if config.database_url().is_some() => {
            anyhow::bail!(
                "`audit tail` follows a server's own log file; with a shared database, export the platform's log with `enclave audit export DIR`"
            );
        }
        AuditCommand::Tail { last } => {
            use enclave_audit::log::read_records_from;
            let (all, mut offset) = read_records_from(&dir, 0)
                .context("cannot open the audit log (has `enclave serve` run here?)")?;
            let mut index = all.len() as u64;
            let skip = all
                .len()
                .saturating_sub(usize::try_from(last).unwrap_or(usize::MAX));
            for (i, bytes) in all.iter().enumerate().skip(skip) {
                writeln!(out, "{i:>8} {}", String::from_utf8_lossy(bytes))?;
            }
            loop {
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_secs(1));
                let (new, next) = read_records_from(&dir, offset)?;
                offset = next;
                for bytes in new {
                    writeln!(out, "{index:>8} {}", String::from_utf8_lossy(&bytes))?;
                    index += 1;
                }
            }
        }
        AuditCommand::Content { index, tenant } => {
            let vault = enclave_audit::ContentVault::open(&dir)?;
            let plain = vault.open_sealed(&tenant, index)?;
            writeln!(out, "{}", String::from_utf8_lossy(&plain))?;
        }
        AuditCommand::RotateKey => {
            let current = dir.join("log.key");
            if current.exists() {
                let old = enclave_audit::LogKey::load_or_create(&current, AUDIT_ORIGIN)?;
                let retired = dir.join(format!("log.key.retired-{}", now()));
                std::fs::rename(&current, &retired)?;
                eprintln!(
                    "retired key {} (kept as {})",
                    old.public_key(),
                    retired.display()
                );
            }
            std::fs::create_dir_all(&dir)?;
            let new = enclave_audit::LogKey::load_or_create(&current, AUDIT_ORIGIN)?;
            eprintln!("restart `enclave serve` to sign checkpoints with the new key:");
            writeln!(out, "{}", new.public_key())?;
        }
        AuditCommand::Verify { dir, public_key } => {
            // A path to the file `audit public-key` wrote works as well as the key itself.
            let key_file = std::path::Path::new(&public_key);
            let public_key = if key_file.is_file() {
                std::fs::read_to_string(key_file)
                    .with_context(|| format!("cannot read the key file {}", key_file.display()))?
                    .trim()
                    .to_string()
            } else {
                public_key
            };
            match enclave_audit::verify_export(&dir, &public_key) {
                Ok(v) => writeln!(
                    out,
                    "OK: {} records; the signed checkpoint covers {} and matches",
                    v.records, v.checkpoint_size
                )?,
                Err(e) => bail!("the export does NOT verify: {e}"),
            }
        }
    }
    Ok(())
}
