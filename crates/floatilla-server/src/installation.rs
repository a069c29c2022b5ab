//! What an installation is, decided once and kept in the database: its form of operation, its id
//! and, on premises, its single tenant. The server and the admin CLI share this.

use floatilla_domain::LicenseId;
use floatilla_domain::enrollment::EnrollmentPolicy;
use floatilla_domain::licensing::{LicenseTerm, Seats};
use floatilla_domain::model::Tenant;
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

    /// Creates a cloud tenant, with a trial license unless `trial` grants no seats.
    pub async fn create_tenant(
        &self,
        store: &dyn Store,
        clock: &dyn Clock,
        name: &str,
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
