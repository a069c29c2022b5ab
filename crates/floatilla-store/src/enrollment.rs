//! Enrollment under an admin's control: the tenant's policy, serials imported ahead of their
//! routers, and the decision on a pending router.

use async_trait::async_trait;
use floatilla_domain::enrollment::{EnrollmentDecision, EnrollmentPolicy};
use floatilla_domain::events::Event;
use floatilla_domain::model::Device;
use floatilla_domain::{DeviceId, GroupId, TenantId, Timestamp};

use crate::Result;

/// One serial to import, with the name and group its router gets when it enrolls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preregistration {
    pub serial: String,
    pub name: String,
    pub group_id: Option<GroupId>,
}

/// What importing one serial did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preregistered {
    /// A new router record waits for its router to enroll.
    Created(DeviceId),
    /// The serial was known: its name and group were replaced.
    Updated(DeviceId),
}

#[async_trait]
pub trait EnrollmentControl {
    async fn set_enrollment_policy(&self, tenant: TenantId, policy: EnrollmentPolicy)
    -> Result<()>;
    /// Imports serials in one transaction, an outcome per entry in order. The caller checks the
    /// entries first (and that serials are not repeated).
    async fn preregister(
        &self,
        tenant: TenantId,
        entries: &[Preregistration],
        now: Timestamp,
    ) -> Result<Vec<Preregistered>>;
    /// Accepts or rejects a router that is not merely pre-registered (`Conflict` if it is), and
    /// records `event` in the same transaction. Rejecting revokes its credentials; accepting a
    /// rejected router lets it enroll again until `reenroll_until` (its credentials were revoked
    /// when it was rejected).
    async fn decide_enrollment(
        &self,
        tenant: TenantId,
        id: DeviceId,
        decision: EnrollmentDecision,
        reenroll_until: Timestamp,
        event: &Event,
    ) -> Result<Device>;
}

/// Implements [`EnrollmentControl`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_enrollment_control {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::EnrollmentControl for $store {
            async fn set_enrollment_policy(
                &self,
                tenant: ::floatilla_domain::TenantId,
                policy: ::floatilla_domain::enrollment::EnrollmentPolicy,
            ) -> $crate::Result<()> {
                let updated = ::sqlx::query("UPDATE tenants SET enrollment_policy = $2 WHERE id = $1")
                    .bind(tenant.to_string())
                    .bind(policy.as_str())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                $crate::shared::found(updated, "tenant")
            }

            async fn preregister(
                &self,
                tenant: ::floatilla_domain::TenantId,
                entries: &[$crate::Preregistration],
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<Vec<$crate::Preregistered>> {
                let status = $crate::rows::status_json(
                    &::floatilla_domain::model::DeviceStatus::default(),
                )?;
                let mut outcomes = Vec::with_capacity(entries.len());
                let mut tx = self.begin_write().await?;
                for entry in entries {
                    let group = entry.group_id.map(|g| g.to_string());
                    let known: Option<String> = ::sqlx::query_scalar(
                        "UPDATE devices SET name = $3, group_id = $4 \
                         WHERE tenant_id = $1 AND serial = $2 RETURNING id",
                    )
                    .bind(tenant.to_string())
                    .bind(&entry.serial)
                    .bind(&entry.name)
                    .bind(&group)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(id) = known {
                        let id = id.parse().map_err(|e| {
                            $crate::StoreError::Corrupt(format!("devices.id `{id}`: {e}"))
                        })?;
                        outcomes.push($crate::Preregistered::Updated(id));
                        continue;
                    }
                    let id = ::floatilla_domain::DeviceId::new();
                    ::sqlx::query(
                        "INSERT INTO devices (id, tenant_id, serial, name, model, firmware, \
                         agent_version, group_id, enrollment, connection_state, status, \
                         created_at) \
                         VALUES ($1, $2, $3, $4, '', '', '', $5, 'preregistered', 'offline', $6, $7)",
                    )
                    .bind(id.to_string())
                    .bind(tenant.to_string())
                    .bind(&entry.serial)
                    .bind(&entry.name)
                    .bind(&group)
                    .bind(&status)
                    .bind($crate::rows::millis(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::shared::write_error(
                        e,
                        || format!("serial {} is imported twice", entry.serial),
                        "tenant or group",
                    ))?;
                    outcomes.push($crate::Preregistered::Created(id));
                }
                tx.commit().await?;
                Ok(outcomes)
            }

            async fn decide_enrollment(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::DeviceId,
                decision: ::floatilla_domain::enrollment::EnrollmentDecision,
                reenroll_until: ::floatilla_domain::Timestamp,
                event: &::floatilla_domain::events::Event,
            ) -> $crate::Result<::floatilla_domain::model::Device> {
                let state = decision.state();
                let mut tx = self.begin_write().await?;
                let decided = ::sqlx::query(
                    "UPDATE devices SET enrollment = $3, reenroll_allowed_until = CASE \
                     WHEN enrollment = 'rejected' AND $3 = 'accepted' THEN $4 \
                     ELSE reenroll_allowed_until END \
                     WHERE tenant_id = $1 AND id = $2 AND enrollment <> 'preregistered'",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind(state.as_str())
                .bind($crate::rows::millis(reenroll_until))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if decided > 0 {
                    $crate::events::insert_event!(&mut *tx, event)?;
                }
                if decided > 0 && decision == ::floatilla_domain::enrollment::EnrollmentDecision::Reject {
                    $crate::shared::revoke_credentials!(
                        &mut *tx,
                        id,
                        None,
                        $crate::rows::millis(event.at)
                    )?;
                }
                let row: Option<$crate::rows::DeviceRow> = ::sqlx::query_as(
                    $crate::shared::select_devices!("WHERE d.tenant_id = $1 AND d.id = $2"),
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let device: ::floatilla_domain::model::Device =
                    row.ok_or($crate::StoreError::NotFound("device"))?.try_into()?;
                if decided == 0 {
                    return Err($crate::StoreError::Conflict(format!(
                        "router {} is pre-registered: it has not enrolled yet",
                        device.serial
                    )));
                }
                tx.commit().await?;
                Ok(device)
            }
        }
    };
}
pub(crate) use impl_enrollment_control;
