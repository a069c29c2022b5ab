//! Tags on routers: labels in the tenant's own words ("site:hamburg", "pilot") that select
//! routers for listings, bulk changes and jobs, besides their one group.

use std::collections::HashMap;

use async_trait::async_trait;
use floatilla_domain::{DeviceId, TenantId};

use crate::Result;

/// Routers per statement when reading or writing tags: well inside both backends' limits on
/// parameters.
pub(crate) const TAG_CHUNK: usize = 500;

#[async_trait]
pub trait Tags {
    /// Replaces the router's tags (checked and lower case already).
    async fn set_device_tags(
        &self,
        tenant: TenantId,
        device: DeviceId,
        tags: &[String],
    ) -> Result<()>;
    /// Adds `add` to and removes `remove` from each of `devices`, in one transaction; routers
    /// not of the tenant are left alone. Answers how many routers of the tenant were given.
    async fn change_tags(
        &self,
        tenant: TenantId,
        devices: &[DeviceId],
        add: &[String],
        remove: &[String],
    ) -> Result<u64>;
    /// The tags of each of `devices` that has any, in name order.
    async fn device_tags(
        &self,
        tenant: TenantId,
        devices: &[DeviceId],
    ) -> Result<HashMap<DeviceId, Vec<String>>>;
    /// Every tag the tenant uses, by name, with how many routers carry it.
    async fn tags(&self, tenant: TenantId) -> Result<Vec<(String, u64)>>;
}

/// `$first, $first+1, …` for `count` parameters.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Implements [`Tags`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_tags {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::Tags for $store {
            async fn set_device_tags(
                &self,
                tenant: ::floatilla_domain::TenantId,
                device: ::floatilla_domain::DeviceId,
                tags: &[String],
            ) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                let found: Option<String> =
                    ::sqlx::query_scalar("SELECT id FROM devices WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(device.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    return Err($crate::StoreError::NotFound("device"));
                }
                ::sqlx::query("DELETE FROM device_tags WHERE device_id = $1")
                    .bind(device.to_string())
                    .execute(&mut *tx)
                    .await?;
                for tag in tags {
                    ::sqlx::query(
                        "INSERT INTO device_tags (device_id, tenant_id, tag) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(device.to_string())
                    .bind(tenant.to_string())
                    .bind(tag)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn change_tags(
                &self,
                tenant: ::floatilla_domain::TenantId,
                devices: &[::floatilla_domain::DeviceId],
                add: &[String],
                remove: &[String],
            ) -> $crate::Result<u64> {
                let mut tx = self.begin_write().await?;
                let mut changed = 0;
                for chunk in devices.chunks($crate::tags::TAG_CHUNK) {
                    let sql = format!(
                        "SELECT id FROM devices WHERE tenant_id = $1 AND id IN ({})",
                        $crate::tags::placeholders(2, chunk.len())
                    );
                    let mut query =
                        ::sqlx::query_scalar(::sqlx::AssertSqlSafe(sql)).bind(tenant.to_string());
                    for device in chunk {
                        query = query.bind(device.to_string());
                    }
                    let found: Vec<String> = query.fetch_all(&mut *tx).await?;
                    changed += found.len() as u64;
                    for device in &found {
                        for tag in add {
                            ::sqlx::query(
                                "INSERT INTO device_tags (device_id, tenant_id, tag) \
                                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                            )
                            .bind(device)
                            .bind(tenant.to_string())
                            .bind(tag)
                            .execute(&mut *tx)
                            .await?;
                        }
                        for tag in remove {
                            ::sqlx::query(
                                "DELETE FROM device_tags WHERE device_id = $1 AND tag = $2",
                            )
                            .bind(device)
                            .bind(tag)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn device_tags(
                &self,
                tenant: ::floatilla_domain::TenantId,
                devices: &[::floatilla_domain::DeviceId],
            ) -> $crate::Result<
                ::std::collections::HashMap<::floatilla_domain::DeviceId, Vec<String>>,
            > {
                let mut tags: ::std::collections::HashMap<_, Vec<String>> =
                    ::std::collections::HashMap::new();
                for chunk in devices.chunks($crate::tags::TAG_CHUNK) {
                    let sql = format!(
                        "SELECT device_id, tag FROM device_tags WHERE tenant_id = $1 \
                         AND device_id IN ({}) ORDER BY device_id, tag",
                        $crate::tags::placeholders(2, chunk.len())
                    );
                    let mut query =
                        ::sqlx::query_as::<_, (String, String)>(::sqlx::AssertSqlSafe(sql))
                            .bind(tenant.to_string());
                    for device in chunk {
                        query = query.bind(device.to_string());
                    }
                    for (device, tag) in query.fetch_all(&self.pool).await? {
                        let device: ::floatilla_domain::DeviceId =
                            $crate::rows::parse("device_tags.device_id", &device)?;
                        tags.entry(device).or_default().push(tag);
                    }
                }
                Ok(tags)
            }

            async fn tags(
                &self,
                tenant: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Vec<(String, u64)>> {
                let rows: Vec<(String, i64)> = ::sqlx::query_as(
                    "SELECT tag, COUNT(*) FROM device_tags WHERE tenant_id = $1 \
                     GROUP BY tag ORDER BY tag",
                )
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(tag, count)| (tag, u64::try_from(count).unwrap_or_default()))
                    .collect())
            }
        }
    };
}
pub(crate) use impl_tags;
