//! `floatilla admin`: works on the database directly, so it needs no running server; a running
//! server honours what it creates at once (it reads tokens and tenants from the database).

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Subcommand};
use floatilla_domain::{Role, SystemClock, TenantId};
use floatilla_server::tls::CertificateAuthority;
use floatilla_server::{Installation, Trial};

use crate::options::read_config_file;
use crate::storage::StorageOptions;

#[derive(Debug, Args)]
pub struct AdminCommand {
    /// A TOML config file (the same as `serve` reads; only the storage keys matter here).
    #[arg(long, env = "FLOATILLA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    storage: StorageOptions,
    #[command(subcommand)]
    action: AdminAction,
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Print the installation's CA certificate (PEM), for routers given `--ca-cert`.
    CaCertificate,
    /// Print the installation's id: the vendor issues signed licenses for it.
    InstallationId,
    /// Create a tenant (cloud mode) with a trial license; prints its id.
    CreateTenant {
        name: String,
        /// How long the trial license lasts, in days [default: 45].
        #[arg(long)]
        trial_days: Option<u32>,
        /// The trial license's seats; 0 gives no trial [default: 25].
        #[arg(long)]
        trial_seats: Option<u32>,
    },
    /// Create an API token; prints the token.
    CreateToken {
        /// viewer, operator or admin (of a tenant), or provider (cloud mode, no tenant).
        #[arg(long, value_parser = Role::from_str)]
        role: Role,
        /// A name that says who or what uses it [default: "admin CLI"].
        #[arg(long)]
        name: Option<String>,
        /// The tenant (required in cloud mode, except for a provider token).
        #[arg(long)]
        tenant: Option<TenantId>,
    },
    /// Create a console account. Prints a generated one-time password as the last line, unless
    /// --password-stdin reads one.
    CreateUser {
        #[arg(long)]
        email: String,
        /// viewer, operator or admin (of a tenant), or provider (cloud mode, no tenant).
        #[arg(long, value_parser = Role::from_str)]
        role: Role,
        /// The tenant (required in cloud mode, except for a provider account).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Read the password from the first line of standard input instead.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// The parts of a config file `admin` reads; other keys are ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct AdminFile {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    trial_days: Option<u32>,
    trial_seats: Option<u32>,
}

impl AdminCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let file: AdminFile = read_config_file(self.config.as_deref())?;
        let storage = self.storage.or(StorageOptions {
            data_dir: file.data_dir,
            database_url: file.database_url,
        });
        let store = storage.open().await?;
        let clock = SystemClock;
        let installation = Installation::open_existing(store.as_ref(), &clock).await?;
        match self.action {
            AdminAction::CaCertificate => {
                let ca = CertificateAuthority::load_or_create(store.as_ref()).await?;
                print!("{}", ca.certificate_pem());
            }
            AdminAction::InstallationId => println!("{}", installation.id),
            AdminAction::CreateTenant {
                name,
                trial_days,
                trial_seats,
            } => {
                let defaults = Trial::default();
                let trial = Trial {
                    days: trial_days.or(file.trial_days).unwrap_or(defaults.days),
                    seats: trial_seats.or(file.trial_seats).unwrap_or(defaults.seats),
                };
                let tenant = installation
                    .create_tenant(store.as_ref(), &clock, &name, None, trial)
                    .await?;
                println!("{}", tenant.id);
            }
            AdminAction::CreateToken { role, name, tenant } => {
                let name = name.unwrap_or_else(|| "admin CLI".to_owned());
                let (_, text) = installation
                    .create_api_token(store.as_ref(), &clock, role, &name, tenant)
                    .await?;
                println!("{text}");
            }
            AdminAction::CreateUser {
                email,
                role,
                tenant,
                password_stdin,
            } => {
                let tenant = match (tenant, role) {
                    (None, role) if role.is_tenant_role() => installation.on_prem_tenant,
                    (tenant, _) => tenant,
                };
                if let Some(tenant) = tenant
                    && store.tenant(tenant).await?.is_none()
                {
                    anyhow::bail!("there is no tenant {tenant}");
                }
                let (password, generated) = if password_stdin {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    (line.trim_end_matches(['\r', '\n']).to_owned(), false)
                } else {
                    (floatilla_server::accounts::generated_password(), true)
                };
                let user = floatilla_server::accounts::create_user(
                    store.as_ref(),
                    floatilla_domain::Clock::now(&clock),
                    &email,
                    role,
                    tenant,
                    password.clone(),
                )
                .await?;
                println!(
                    "created {} ({}) {}",
                    user.email,
                    user.role.as_str(),
                    user.id
                );
                if generated {
                    println!("{password}");
                }
            }
        }
        Ok(())
    }
}
