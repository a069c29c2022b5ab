//! What an installation is, decided once and kept in the database: its form of operation, its id
//! and, on premises, its single tenant. The server and the admin CLI share this.

use floatilla_domain::enrollment::EnrollmentPolicy;
use floatilla_domain::licensing::{LicenseTerm, Seats};
use floatilla_domain::model::ApiToken;
use floatilla_domain::model::Tenant;
use floatilla_domain::{ApiTokenId, LicenseId, Role};
use floatilla_domain::{Clock, Mode, TenantId};
use floatilla_store::{License, Store};
use uuid::Uuid;

use crate::error::{Error, Result, checked_name};

const MODE_SETTING: &str = "installation.mode";
const ID_SETTING: &str = "installation.id";
const TENANT_SETTING: &str = "installation.tenant";

#[derive(Debug, Clone)]
pub struct Installation {
    pub id: String,
    pub mode: Mode,
    /// The one tenant of an on-premises installation.
    pub on_prem_tenant: Option<TenantId>,
}

impl Installation {
    /// Reads the installation, initialising it on first use with `mode`. A database initialised
    /// in another mode is refused: switching would leave tenants in an undefined state.
    pub async fn open(store: &dyn Store, clock: &dyn Clock, mode: Mode) -> Result<Self> {
        let stored_mode = store.init_setting(MODE_SETTING, mode.as_str()).await?;
        if stored_mode != mode.as_str() {
            return Err(Error::invalid(
                "mode_mismatch",
                format!(
                    "this database belongs to a {stored_mode} installation; start it with --mode {stored_mode}"
                ),
            ));
        }
        Self::load(store, clock, mode).await
    }

    /// Reads the installation in whatever mode it was initialised (on premises when new).
    pub async fn open_existing(store: &dyn Store, clock: &dyn Clock) -> Result<Self> {
        let mode = match store.setting(MODE_SETTING).await? {
            Some(stored) => stored
                .parse()
                .map_err(|e: String| Error::Store(floatilla_store::StoreError::Corrupt(e)))?,
            None => Mode::OnPrem,
        };
        Self::open(store, clock, mode).await
    }

    async fn load(store: &dyn Store, clock: &dyn Clock, mode: Mode) -> Result<Self> {
        let id = store
            .init_setting(ID_SETTING, &Uuid::new_v4().to_string())
            .await?;
        let on_prem_tenant = match mode {
            Mode::Cloud => None,
            Mode::OnPrem => Some(Self::on_prem_tenant(store, clock).await?),
        };
        Ok(Self {
            id,
            mode,
            on_prem_tenant,
        })
    }

    async fn on_prem_tenant(store: &dyn Store, clock: &dyn Clock) -> Result<TenantId> {
        let chosen = store
            .init_setting(TENANT_SETTING, &TenantId::new().to_string())
            .await?;
        let id: TenantId = chosen.parse().map_err(|_| {
            Error::Store(floatilla_store::StoreError::Corrupt(format!(
                "installation tenant id `{chosen}`"
            )))
        })?;
        if store.tenant(id).await?.is_none() {
            let tenant = Tenant {
                id,
                name: "default".into(),
                enrollment_policy: EnrollmentPolicy::Open,
                created_at: clock.now(),
                suspended_at: None,
                contact_email: None,
            };
            match store.create_tenant(&tenant).await {
                Ok(()) | Err(floatilla_store::StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(id)
    }

    /// The tenant a command acts on: the given one, or on premises the only one.
    pub async fn resolve_tenant(
        &self,
        store: &dyn Store,
        given: Option<TenantId>,
    ) -> Result<TenantId> {
        match (given, self.on_prem_tenant) {
            (Some(id), _) => store
                .tenant(id)
                .await?
                .map(|tenant| tenant.id)
                .ok_or(Error::NotFound("tenant")),
            (None, Some(only)) => Ok(only),
            (None, None) => Err(Error::invalid(
                "tenant_required",
                "a cloud installation has many tenants: name one with --tenant",
            )),
        }
    }

    /// Creates an API token: a provider token (cloud only, in no tenant) or a tenant role's in
    /// `tenant` (resolved as for any command). Answers the token and its text, shown once.
    pub async fn create_api_token(
        &self,
        store: &dyn Store,
        clock: &dyn Clock,
        role: Role,
        name: &str,
        tenant: Option<TenantId>,
    ) -> Result<(ApiToken, String)> {
        let tenant_id = match (role, self.mode) {
            (Role::Provider, Mode::OnPrem) => {
                return Err(Error::invalid(
                    "provider_needs_cloud",
                    "only a cloud installation has a provider",
                ));
            }
            (Role::Provider, Mode::Cloud) if tenant.is_some() => {
                return Err(Error::invalid(
                    "provider_has_no_tenant",
                    "a provider token belongs to no tenant: leave out --tenant",
                ));
            }
            (Role::Provider, Mode::Cloud) => None,
            _ => Some(self.resolve_tenant(store, tenant).await?),
        };
        let (text, secret_hash) = crate::api::auth::new_api_token_secret();
        let token = ApiToken {
            id: ApiTokenId::new(),
            tenant_id,
            name: checked_name("token", name, 200)?,
            role,
            secret_hash,
            created_at: clock.now(),
            revoked_at: None,
        };
        store.create_api_token(&token).await?;
        Ok((token, text))
    }

    /// Creates a cloud tenant, with a trial license unless `trial` grants no seats.
    pub async fn create_tenant(
        &self,
        store: &dyn Store,
        clock: &dyn Clock,
        name: &str,
        contact_email: Option<&str>,
        trial: Trial,
    ) -> Result<Tenant> {
        if self.mode != Mode::Cloud {
            return Err(Error::invalid(
                "single_tenant",
                "an on-premises installation has exactly one tenant",
            ));
        }
        let tenant = Tenant {
            id: TenantId::new(),
            name: checked_name("tenant", name, 200)?,
            enrollment_policy: EnrollmentPolicy::Open,
            created_at: clock.now(),
            suspended_at: None,
            contact_email: contact_email.map(checked_email).transpose()?,
        };
        store.create_tenant(&tenant).await?;
        if trial.seats > 0 && trial.days > 0 {
            let now = clock.now();
            let license = License {
                id: LicenseId::new(),
                tenant_id: tenant.id,
                name: format!("trial: {} seats for {} days", trial.seats, trial.days),
                term: LicenseTerm {
                    seats: Seats::Count(trial.seats),
                    not_before: now,
                    not_after: Some(now + chrono::Duration::days(trial.days.into())),
                    grace_until: None,
                },
                signed: None,
                created_at: now,
            };
            store.add_license(&license).await?;
        }
        Ok(tenant)
    }
}

/// An e-mail address as given, trimmed, if it is one (`invalid_email` otherwise).
pub fn checked_email(address: &str) -> Result<String> {
    let address = address.trim();
    address
        .parse::<lettre::Address>()
        .map(|_| address.to_owned())
        .map_err(|e| Error::invalid("invalid_email", format!("{address:?}: {e}")))
}

/// The license a new cloud tenant starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial {
    pub days: u32,
    /// No trial when 0.
    pub seats: u32,
}

impl Default for Trial {
    /// 25 seats for 45 days.
    fn default() -> Self {
        Self {
            days: 45,
            seats: 25,
        }
    }
}
