//! `enclave keys`: API keys for programs, and keys belonging to a user.

use std::io::Write as _;

use anyhow::Result;
use clap::Subcommand;
use enclave_service::admin::{self, MintedKey};
use enclave_store::{Role, Store};

use crate::config::Config;
use crate::{tenant_filter, timestamp};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key. The key is printed once, alone on standard output; only its hash is kept.
    ///
    /// A program's key belongs to a tenant (`--tenant`). A user's key (`--user`) belongs to the
    /// user's tenant, stops working when the user is disabled, and never reads above the user's
    /// clearance of the moment.
    ///
    /// Examples:
    ///   KEY=$(enclave keys create --tenant default --clearance SECRET --role user)
    ///   KEY=$(enclave keys create --user alice@agency.example --name laptop)
    Create {
        /// The tenant the key belongs to.
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        tenant: Option<String>,
        /// The user the key belongs to (see `enclave users list`).
        #[arg(long)]
        user: Option<String>,
        /// `user` calls models; `admin` manages its tenant; `auditor` reads audit records.
        /// Default: `user`, or a user's own role for their key.
        #[arg(long)]
        role: Option<Role>,
        /// The highest label the key may read, e.g. `SECRET//NOFORN` or `TS//SI//REL TO USA, GBR`.
        /// A clearance without releasability carries the scheme's owner nation. Default: the
        /// scheme's lowest level, or a user's own clearance for their key.
        #[arg(long, value_name = "LABEL")]
        clearance: Option<String>,
        /// A note to recognise the key by in lists.
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a key by its id (the 12 hex characters after `ek_`).
    Revoke { id: String },
    /// List keys (never their secrets).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub(crate) async fn keys_command(
    config: &Config,
    store: &dyn Store,
    cmd: KeysCommand,
) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            tenant,
            user,
            role,
            name,
            clearance,
        } => {
            let scheme = config.policy.scheme()?;
            let minted = match (user, tenant) {
                (Some(user), _) => {
                    admin::create_user_key(store, &scheme, &user, role, name, clearance.as_deref())
                        .await?
                }
                (None, tenant) => {
                    let tenant = tenant.unwrap_or_default();
                    let role = role.unwrap_or(Role::User);
                    admin::create_key(store, &scheme, &tenant, role, name, clearance.as_deref())
                        .await?
                }
            };
            print_minted(&minted)
        }
        KeysCommand::Revoke { id } => {
            let id = admin::revoke_key(store, &id).await?;
            eprintln!("revoked key {id}");
            Ok(())
        }
        KeysCommand::List { tenant } => {
            let tenant_id = tenant_filter(store, tenant.as_deref()).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<14} {:<20} {:<8} {:<20} {:<10} {:<28} {:<24} NAME",
                "ID", "TENANT", "ROLE", "CREATED", "STATE", "CLEARANCE", "USER"
            )?;
            for k in store.list_keys(tenant_id.as_deref()).await? {
                let state = match (&k.revoked_at, &k.owner) {
                    (Some(_), _) => "revoked",
                    (None, Some(owner)) if owner.disabled_at.is_some() => "user-off",
                    _ => "active",
                };
                writeln!(
                    out,
                    "{:<14} {:<20} {:<8} {:<20} {:<10} {:<28} {:<24} {}",
                    k.id,
                    k.tenant_name,
                    k.role.as_str(),
                    timestamp(k.created_at),
                    state,
                    if k.clearance.is_empty() {
                        "(lowest)"
                    } else {
                        &k.clearance
                    },
                    k.owner.as_ref().map_or("-", |o| o.name.as_str()),
                    k.name.unwrap_or_default()
                )?;
            }
            Ok(())
        }
    }
}

/// Prints a new key's secret alone on stdout and its details on stderr.
pub(crate) fn print_minted(minted: &MintedKey) -> Result<()> {
    let whose = minted
        .user
        .as_ref()
        .map_or(String::new(), |u| format!(" belonging to `{u}`"));
    eprintln!(
        "created {} key {}{whose} for tenant `{}`, cleared to {}; it is shown once, store it now:",
        minted.role, minted.id, minted.tenant.name, minted.clearance
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", minted.secret)?;
    out.flush()?;
    Ok(())
}
