//! What the provider of a cloud service keeps: its tenants' standing (suspended or not, whom to
//! e-mail) and the activation codes it sells, which tenants redeem for licenses.

use async_trait::async_trait;
use floatilla_domain::licensing::activation::ActivationCode;
use floatilla_domain::model::Tenant;
use floatilla_domain::{CodeBatchId, LicenseId, TenantId, Timestamp};
use sqlx::FromRow;

use crate::rows::{opt_parse, opt_timestamp, parse, timestamp};
use crate::{License, Result, StoreError};

/// An activation code as issued, and its redemption if it was redeemed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    pub code: ActivationCode,
    pub batch_id: CodeBatchId,
    pub seats: u32,
    pub term_months: u32,
    pub created_at: Timestamp,
    pub redemption: Option<CodeRedemption>,
}

/// Who redeemed a code, when, and the license it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRedemption {
    pub at: Timestamp,
    /// `None` once that tenant was deleted.
    pub tenant_id: Option<TenantId>,
    pub license_id: Option<LicenseId>,
}

/// Which codes a listing shows, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeFilter {
    /// `Some(true)`: only redeemed codes; `Some(false)`: only those still available.
    pub redeemed: Option<bool>,
    pub batch: Option<CodeBatchId>,
    pub limit: u32,
}

/// What a redemption attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The code is now the tenant's license.
    Redeemed {
        code: IssuedCode,
        license: Box<License>,
    },
    /// The tenant redeemed this code before, at that time.
    AlreadyRedeemed { at: Timestamp },
    /// No such code for this tenant: none was issued, or another tenant redeemed it.
    Unknown,
}

/// A change to a tenant's particulars; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantUpdate {
    pub name: Option<String>,
    /// `Some(None)` clears the address.
    pub contact_email: Option<Option<String>>,
}

#[async_trait]
pub trait Provider {
    /// Changes the tenant's name or contact address; answers the tenant as it now is.
    async fn update_tenant(&self, id: TenantId, update: &TenantUpdate) -> Result<Tenant>;
    /// Suspends the tenant as of `at`, or (`None`) lifts its suspension. Suspending a suspended
    /// tenant keeps its first suspension time.
    async fn set_tenant_suspended(&self, id: TenantId, at: Option<Timestamp>) -> Result<Tenant>;
    /// Deletes the tenant with everything it holds; codes it redeemed stay redeemed.
    async fn delete_tenant(&self, id: TenantId) -> Result<()>;
    async fn suspended_tenants(&self) -> Result<Vec<TenantId>>;
    /// Stores a batch of new codes, all or none.
    async fn create_activation_codes(&self, codes: &[IssuedCode]) -> Result<()>;
    async fn activation_codes(&self, filter: &CodeFilter) -> Result<Vec<IssuedCode>>;
    /// Redeems `code` for `tenant` at `now`: in one transaction marks it redeemed and adds the
    /// license `license_id` it grants (its seats, from `now` for its term), unless it was
    /// redeemed before.
    async fn redeem_activation_code(
        &self,
        tenant: TenantId,
        code: &ActivationCode,
        license_id: LicenseId,
        now: Timestamp,
    ) -> Result<Redemption>;
}

#[derive(FromRow)]
pub(crate) struct IssuedCodeRow {
    code: String,
    batch_id: String,
    seats: i64,
    term_months: i64,
    created_at: i64,
    redeemed_at: Option<i64>,
    redeemed_by: Option<String>,
    license_id: Option<String>,
}

impl TryFrom<IssuedCodeRow> for IssuedCode {
    type Error = StoreError;
    fn try_from(row: IssuedCodeRow) -> Result<Self> {
        let count = |column: &str, value: i64| {
            u32::try_from(value)
                .map_err(|_| StoreError::Corrupt(format!("activation_codes.{column} {value}")))
        };
        Ok(IssuedCode {
            code: parse("activation_codes.code", &row.code)?,
            batch_id: parse("activation_codes.batch_id", &row.batch_id)?,
            seats: count("seats", row.seats)?,
            term_months: count("term_months", row.term_months)?,
            created_at: timestamp("activation_codes.created_at", row.created_at)?,
            redemption: match opt_timestamp("activation_codes.redeemed_at", row.redeemed_at)? {
                None => None,
                Some(at) => Some(CodeRedemption {
                    at,
                    tenant_id: opt_parse(
                        "activation_codes.redeemed_by",
                        row.redeemed_by.as_deref(),
                    )?,
                    license_id: opt_parse(
                        "activation_codes.license_id",
                        row.license_id.as_deref(),
                    )?,
                }),
            },
        })
    }
}

/// The license a code grants when redeemed at `now`.
pub(crate) fn license_from_code(
    tenant: TenantId,
    code: &IssuedCode,
    license_id: LicenseId,
    now: Timestamp,
) -> Result<License> {
    let not_after = floatilla_domain::licensing::activation::term_end(now, code.term_months)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "activation code {} has a term of {} months, beyond the calendar",
                code.code, code.term_months
            ))
        })?;
    Ok(License {
        id: license_id,
        tenant_id: tenant,
        name: format!(
            "activation code {}: {} seats for {} months",
            code.code, code.seats, code.term_months
        ),
        term: floatilla_domain::licensing::LicenseTerm {
            seats: floatilla_domain::licensing::Seats::Count(code.seats),
            not_before: now,
            not_after: Some(not_after),
            grace_until: None,
        },
        signed: None,
        created_at: now,
    })
}

/// Implements [`Provider`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_provider {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::Provider for $store {
            async fn update_tenant(
                &self,
                id: ::floatilla_domain::TenantId,
                update: &$crate::TenantUpdate,
            ) -> $crate::Result<::floatilla_domain::model::Tenant> {
                let mut tx = self.begin_write().await?;
                if let Some(name) = &update.name {
                    ::sqlx::query("UPDATE tenants SET name = $2 WHERE id = $1")
                        .bind(id.to_string())
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(contact) = &update.contact_email {
                    ::sqlx::query("UPDATE tenants SET contact_email = $2 WHERE id = $1")
                        .bind(id.to_string())
                        .bind(contact)
                        .execute(&mut *tx)
                        .await?;
                }
                let row: Option<$crate::rows::TenantRow> =
                    ::sqlx::query_as("SELECT * FROM tenants WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                let tenant = row
                    .ok_or($crate::StoreError::NotFound("tenant"))?
                    .try_into()?;
                tx.commit().await?;
                Ok(tenant)
            }

            async fn set_tenant_suspended(
                &self,
                id: ::floatilla_domain::TenantId,
                at: Option<::floatilla_domain::Timestamp>,
            ) -> $crate::Result<::floatilla_domain::model::Tenant> {
                let row: Option<$crate::rows::TenantRow> = ::sqlx::query_as(
                    "UPDATE tenants SET suspended_at = CASE WHEN $2 IS NULL THEN NULL \
                     ELSE COALESCE(suspended_at, $2) END WHERE id = $1 RETURNING *",
                )
                .bind(id.to_string())
                .bind($crate::rows::opt_millis(at))
                .fetch_optional(&self.pool)
                .await?;
                row.ok_or($crate::StoreError::NotFound("tenant"))?
                    .try_into()
            }

            async fn delete_tenant(&self, id: ::floatilla_domain::TenantId) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                let deleted = ::sqlx::query("DELETE FROM tenants WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                $crate::shared::found(deleted, "tenant")?;
                tx.commit().await?;
                Ok(())
            }

            async fn suspended_tenants(&self) -> $crate::Result<Vec<::floatilla_domain::TenantId>> {
                let ids: Vec<String> =
                    ::sqlx::query_scalar("SELECT id FROM tenants WHERE suspended_at IS NOT NULL")
                        .fetch_all(&self.pool)
                        .await?;
                ids.iter()
                    .map(|id| $crate::rows::parse("tenants.id", id))
                    .collect()
            }

            async fn create_activation_codes(
                &self,
                codes: &[$crate::IssuedCode],
            ) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                for code in codes {
                    ::sqlx::query(
                        "INSERT INTO activation_codes (code, batch_id, seats, term_months, \
                         created_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(code.code.canonical())
                    .bind(code.batch_id.to_string())
                    .bind(i64::from(code.seats))
                    .bind(i64::from(code.term_months))
                    .bind($crate::rows::millis(code.created_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        $crate::shared::write_error(
                            e,
                            || format!("activation code {} exists already", code.code),
                            "activation code",
                        )
                    })?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn activation_codes(
                &self,
                filter: &$crate::CodeFilter,
            ) -> $crate::Result<Vec<$crate::IssuedCode>> {
                let rows: Vec<$crate::provider::IssuedCodeRow> = ::sqlx::query_as(
                    "SELECT * FROM activation_codes \
                     WHERE ($1 IS NULL OR (redeemed_at IS NOT NULL) = $1) \
                     AND ($2 IS NULL OR batch_id = $2) \
                     ORDER BY created_at DESC, code LIMIT $3",
                )
                .bind(filter.redeemed)
                .bind(filter.batch.map(|b| b.to_string()))
                .bind(i64::from(filter.limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn redeem_activation_code(
                &self,
                tenant: ::floatilla_domain::TenantId,
                code: &::floatilla_domain::licensing::activation::ActivationCode,
                license_id: ::floatilla_domain::LicenseId,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<$crate::Redemption> {
                let mut tx = self.begin_write().await?;
                let row: Option<$crate::provider::IssuedCodeRow> =
                    ::sqlx::query_as("SELECT * FROM activation_codes WHERE code = $1")
                        .bind(code.canonical())
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(issued) = row.map($crate::IssuedCode::try_from).transpose()? else {
                    return Ok($crate::Redemption::Unknown);
                };
                if let Some(redemption) = &issued.redemption {
                    return Ok(if redemption.tenant_id == Some(tenant) {
                        $crate::Redemption::AlreadyRedeemed { at: redemption.at }
                    } else {
                        $crate::Redemption::Unknown
                    });
                }
                let claimed = ::sqlx::query(
                    "UPDATE activation_codes SET redeemed_at = $2, redeemed_by = $3, \
                     license_id = $4 WHERE code = $1 AND redeemed_at IS NULL",
                )
                .bind(code.canonical())
                .bind($crate::rows::millis(now))
                .bind(tenant.to_string())
                .bind(license_id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if claimed == 0 {
                    return Ok($crate::Redemption::Unknown);
                }
                let license =
                    $crate::provider::license_from_code(tenant, &issued, license_id, now)?;
                $crate::licensing::insert_license!(&mut *tx, &license)?;
                $crate::licensing::bump_licenses!(&mut *tx, tenant)?;
                tx.commit().await?;
                let code = $crate::IssuedCode {
                    redemption: Some($crate::CodeRedemption {
                        at: now,
                        tenant_id: Some(tenant),
                        license_id: Some(license_id),
                    }),
                    ..issued
                };
                Ok($crate::Redemption::Redeemed {
                    code,
                    license: Box::new(license),
                })
            }
        }
    };
}
pub(crate) use impl_provider;
