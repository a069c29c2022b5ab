//! Tenants under the provider's control: which ones are suspended (known to every node without
//! a query per request or connection), suspending, resuming and deleting them, and how often
//! each may try activation codes that turn out to be wrong.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::licensing::activation::AttemptBudget;
use floatilla_domain::model::Tenant;
use floatilla_domain::{DisconnectReason, TenantId, Timestamp};
use floatilla_store::Store;

use crate::error::{Error, Result};
use crate::gateway::registry::SessionCommand;
use crate::state::AppState;

/// Failed code lookups a tenant may make in a burst.
pub const REDEEM_ATTEMPTS: u32 = 10;
/// How fast the burst refills: one more failed lookup every 6 seconds (10 a minute).
pub const REDEEM_REFILL: chrono::Duration = chrono::Duration::seconds(6);

#[derive(Debug, Default)]
pub struct Tenancy {
    suspended: RwLock<HashSet<TenantId>>,
    /// Only tenants that failed lately have a budget here; a full one is forgotten.
    redeem_budgets: Mutex<HashMap<TenantId, AttemptBudget>>,
}

impl Tenancy {
    /// Reads which tenants are suspended.
    pub async fn load(store: &dyn Store) -> Result<Self> {
        let tenancy = Self::default();
        tenancy.reload(store).await?;
        Ok(tenancy)
    }

    /// Reads again which tenants are suspended: after notifications between nodes were lost.
    pub async fn reload(&self, store: &dyn Store) -> Result<()> {
        let suspended = store.suspended_tenants().await?;
        *self.suspended.write().unwrap_or_else(|p| p.into_inner()) =
            suspended.into_iter().collect();
        Ok(())
    }

    pub fn is_suspended(&self, tenant: TenantId) -> bool {
        self.suspended
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&tenant)
    }

    fn mark(&self, tenant: TenantId, suspended: bool) {
        let mut set = self.suspended.write().unwrap_or_else(|p| p.into_inner());
        if suspended {
            set.insert(tenant);
        } else {
            set.remove(&tenant);
        }
    }

    /// Refuses with `429` while the tenant has used up its failed attempts.
    pub fn check_redeem(&self, tenant: TenantId, now: Timestamp) -> Result<()> {
        let mut budgets = self.budgets();
        let Some(budget) = budgets.get_mut(&tenant) else {
            return Ok(());
        };
        budget.check(now).map_err(|wait| Error::RateLimited {
            retry_after_secs: u64::try_from((wait.num_milliseconds() + 999) / 1000)
                .unwrap_or(1)
                .max(1),
        })
    }

    /// Counts a lookup that found no code for the tenant.
    pub fn redeem_failed(&self, tenant: TenantId, now: Timestamp) {
        let mut budgets = self.budgets();
        budgets
            .entry(tenant)
            .or_insert_with(|| AttemptBudget::new(REDEEM_ATTEMPTS, REDEEM_REFILL, now))
            .spend(now);
        budgets.retain(|_, budget| !budget.is_full(now));
    }

    fn budgets(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, AttemptBudget>> {
        self.redeem_budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// Suspends the tenant (`suspend`) or lifts its suspension, on every node: a suspended tenant's
/// routers are disconnected and refused, and its API tokens refused, until it is resumed.
pub async fn set_suspended(state: &AppState, tenant: TenantId, suspend: bool) -> Result<Tenant> {
    let was_suspended = state
        .store
        .tenant(tenant)
        .await?
        .ok_or(Error::NotFound("tenant"))?
        .suspended_at
        .is_some();
    let now = state.clock.now();
    let updated = state
        .store
        .set_tenant_suspended(tenant, suspend.then_some(now))
        .await?;
    apply_here(state, tenant, Some(&updated));
    crate::cluster::tenant_changed(state, tenant).await;
    if was_suspended != suspend {
        let (kind, message) = if suspend {
            (
                EventKind::TenantSuspended,
                "the provider suspended this tenant: its routers and API tokens are refused",
            )
        } else {
            (
                EventKind::TenantResumed,
                "the provider lifted this tenant's suspension",
            )
        };
        crate::events::record(state, Event::new(tenant, now, kind, None, message)).await;
    }
    Ok(updated)
}

/// Deletes the tenant with everything it holds, ending its routers' sessions on every node.
pub async fn delete(state: &AppState, tenant: TenantId) -> Result<()> {
    state.store.delete_tenant(tenant).await?;
    apply_here(state, tenant, None);
    crate::cluster::tenant_changed(state, tenant).await;
    Ok(())
}

/// Brings this node in line with the tenant as stored (`None`: deleted).
pub fn apply_here(state: &AppState, tenant: TenantId, stored: Option<&Tenant>) {
    let reason = match stored {
        None => Some(DisconnectReason::CredentialRevoked),
        Some(t) if t.suspended_at.is_some() => Some(DisconnectReason::TenantSuspended),
        Some(_) => None,
    };
    state
        .tenancy
        .mark(tenant, reason == Some(DisconnectReason::TenantSuspended));
    if let Some(reason) = reason {
        state
            .sessions
            .broadcast(|| SessionCommand::EndIfTenant { tenant, reason });
    }
    if stored.is_none() {
        state.licensing.forget(tenant);
    }
}
