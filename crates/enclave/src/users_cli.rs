//! `enclave users`: people and programs who sign in by client certificate or signed token, with
//! the tenant, role and clearance their identity is given.

use std::io::Write as _;

use anyhow::{Context, Result};
use clap::Subcommand;
use enclave_service::admin;
use enclave_store::{Role, Store};

use crate::config::Config;
use crate::timestamp;

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Register a person. NAME is what their certificate maps to under [tls.client_auth] `map`:
    /// the UPN or e-mail address in its subject alternative name, or the subject pattern's
    /// `user` group.
    ///
    /// Example: enclave users add alice@agency.example --tenant default --clearance SECRET
    Add {
        name: String,
        /// The tenant the user belongs to.
        #[arg(long)]
        tenant: String,
        /// `user` calls models; `admin` manages its tenant; `auditor` reads audit records.
        #[arg(long, default_value = "user")]
        role: Role,
        /// The highest label the user may read. Default: the scheme's lowest level.
        #[arg(long, value_name = "LABEL")]
        clearance: Option<String>,
    },
    /// List users.
    List {
        /// Only this tenant's users.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one user: tenant, role, clearance, state, and when they were created and disabled.
    Show { name: String },
    /// Disable a user: their certificate and tokens stop working within a second.
    Disable { name: String },
}

pub(crate) async fn users_command(
    config: &Config,
    store: &dyn Store,
    cmd: UsersCommand,
) -> Result<()> {
    match cmd {
        UsersCommand::Add {
            name,
            tenant,
            role,
            clearance,
        } => {
            let scheme = config.policy.scheme()?;
            let user =
                admin::create_user(store, &scheme, &tenant, &name, role, clearance.as_deref())
                    .await?;
            eprintln!(
                "registered `{}` in tenant `{}` as {}, cleared to {}",
                user.name, user.tenant_name, user.role, user.clearance
            );
        }
        UsersCommand::Show { name } => {
            let u = store.user_by_name(&name).await?.with_context(|| {
                format!("no user named `{name}`: `enclave users list` shows them")
            })?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "name:      {}", u.name)?;
            writeln!(out, "id:        {} (key_id in audit records)", u.id)?;
            writeln!(out, "tenant:    {}", u.tenant_name)?;
            writeln!(out, "role:      {}", u.role)?;
            writeln!(out, "clearance: {}", u.clearance)?;
            writeln!(out, "created:   {}", timestamp(u.created_at))?;
            match u.disabled_at {
                Some(at) => writeln!(out, "state:     disabled at {}", timestamp(at))?,
                None => writeln!(out, "state:     enabled")?,
            }
        }
        UsersCommand::Disable { name } => {
            admin::disable_user(store, &name).await?;
            eprintln!("disabled user `{name}`");
        }
        UsersCommand::List { tenant } => {
            let tenant_id = crate::tenant_filter(store, tenant.as_deref()).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<36} {:<32} {:<20} {:<8} {:<20} {:<9} CLEARANCE",
                "ID (key_id in records)", "NAME", "TENANT", "ROLE", "CREATED", "STATE"
            )?;
            for u in store.list_users(tenant_id.as_deref()).await? {
                writeln!(
                    out,
                    "{:<36} {:<32} {:<20} {:<8} {:<20} {:<9} {}",
                    u.id,
                    u.name,
                    u.tenant_name,
                    u.role.as_str(),
                    timestamp(u.created_at),
                    if u.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "enabled"
                    },
                    u.clearance
                )?;
            }
        }
    }
    Ok(())
}
