//! What both backends share: the [`Store`](crate::Store) implementation, written once with
//! `$n` placeholders (which the SQLite driver accepts too) and expanded for each store type by
//! [`impl_store!`], plus the helpers it calls.
//!
//! The expansion relies on each store type providing:
//! - a `pool` field (`SqlitePool` or `PgPool`);
//! - `const BACKEND: Backend`;
//! - `const ROUTER_SEARCH: &str`, the condition that a router's serial or name contains the
//!   `LIKE` pattern `{pattern}` (a placeholder such as `$4`), ignoring case;
//! - `const SEARCH_PLANNING: Option<&str>`, a statement run before a router search in its
//!   transaction;
//! - `async fn begin_write(&self)` and `async fn begin_read(&self)`, which start a transaction
//!   that will write (and must therefore take the write lock up front on SQLite) or only read
//!   (and should see one snapshot throughout).

use floatilla_domain::TenantId;
use floatilla_domain::model::{Device, DeviceFilter, Page, PageRequest};
use sqlx::migrate::Migrator;

use crate::{Result, StoreError};

/// Maps a failed write: a unique violation becomes `Conflict(conflict())` and a foreign-key
/// violation `NotFound(missing)` (the record the row refers to does not exist).
pub(crate) fn write_error(
    error: sqlx::Error,
    conflict: impl FnOnce() -> String,
    missing: &'static str,
) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(conflict()),
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound(missing),
        _ => StoreError::Database(error),
    }
}

/// `NotFound(what)` unless a statement matched a row: for updates and deletes by id.
pub(crate) fn found(rows_affected: u64, what: &'static str) -> Result<()> {
    if rows_affected == 0 {
        return Err(StoreError::NotFound(what));
    }
    Ok(())
}

/// Refuses a database on which a newer build applied migrations this one does not have: running
/// on it would misread or damage data written in a shape this build does not know. Otherwise
/// logs the upgrade about to happen, if any.
pub(crate) fn check_schema_version(newest_applied: Option<i64>, migrator: &Migrator) -> Result<()> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match newest_applied {
        Some(found) if found > known => Err(StoreError::SchemaTooNew { found, known }),
        Some(found) if found == known => Ok(()),
        _ => {
            tracing::info!(from = ?newest_applied, to = known, "migrating the database schema");
            Ok(())
        }
    }
}

/// The columns of a [`DeviceRow`](crate::rows::DeviceRow): a device with its group's name.
/// The caller appends the WHERE clause (the device table is `d`).
/// Routers per statement when recording heartbeats: two parameters each, well inside both
/// backends' limits.
pub(crate) const LAST_SEEN_CHUNK: usize = 500;

/// Revokes, at `$now` (milliseconds), every unrevoked credential of `$device` but `$except`
/// (an `Option<CredentialId>`), with `$executor` (a pool or a transaction); answers how many.
macro_rules! revoke_credentials {
    ($executor:expr, $device:expr, $except:expr, $now:expr) => {{
        let except: Option<::floatilla_domain::CredentialId> = $except;
        ::sqlx::query(
            "UPDATE credentials SET revoked_at = $2 \
             WHERE device_id = $1 AND revoked_at IS NULL AND id <> COALESCE($3, '')",
        )
        .bind($device.to_string())
        .bind($now)
        .bind(except.map(|id| id.to_string()))
        .execute($executor)
        .await
        .map(|done| done.rows_affected())
    }};
}
pub(crate) use revoke_credentials;

macro_rules! select_devices {
    ($where:literal) => {
        concat!(
            "SELECT d.id, d.tenant_id, d.serial, d.name, d.model, d.firmware, d.agent_version, ",
            "d.group_id, g.name AS group_name, g.ping_interval_secs AS group_ping_interval_secs, ",
            "g.pong_timeout_secs AS group_pong_timeout_secs, d.enrollment, d.connection_state, d.connected_since, ",
            "d.last_seen, d.last_disconnect_at, d.last_disconnect_reason, d.status, ",
            "d.reenroll_allowed_until, d.license_state, d.license_reason, d.managed, d.pinned, ",
            "d.created_at ",
            "FROM devices d LEFT JOIN groups g ON g.id = d.group_id ",
            $where
        )
    };
}
pub(crate) use select_devices;

/// The SQL and parameters of one page of a fleet listing. The filter is assembled from only the
/// conditions in use, rather than `($n IS NULL OR …)` for each, so that PostgreSQL can plan each
/// shape against the matching index.
pub(crate) struct DeviceListing {
    pub(crate) count_sql: String,
    pub(crate) page_sql: String,
    /// The text parameters: the first `count_params` are the count's, all of them the page's.
    pub(crate) params: Vec<String>,
    pub(crate) count_params: usize,
    /// The page query's last parameter: one row more than the page holds, to learn whether
    /// another page follows.
    pub(crate) fetch: i64,
    /// Whether the listing searches serials and names.
    pub(crate) searches: bool,
    limit: usize,
}

impl DeviceListing {
    pub(crate) fn new(
        tenant: TenantId,
        filter: &DeviceFilter,
        page: &PageRequest,
        router_search: &str,
    ) -> Self {
        let mut params = vec![tenant.to_string()];
        let mut conditions = vec!["d.tenant_id = $1".to_owned()];
        if let Some(state) = filter.connection_state {
            params.push(state.as_str().to_owned());
            conditions.push(format!("d.connection_state = ${}", params.len()));
        }
        if let Some(enrollment) = filter.enrollment {
            params.push(enrollment.as_str().to_owned());
            conditions.push(format!("d.enrollment = ${}", params.len()));
        }
        if let Some(state) = filter.license_state {
            params.push(state.as_str().to_owned());
            conditions.push(format!("d.license_state = ${}", params.len()));
        }
        if let Some(group) = filter.group_id {
            params.push(group.to_string());
            conditions.push(format!("d.group_id = ${}", params.len()));
        }
        if let Some(model) = &filter.model {
            params.push(model.clone());
            conditions.push(format!("d.model = ${}", params.len()));
        }
        if let Some(firmware) = &filter.firmware {
            params.push(firmware.clone());
            conditions.push(format!("d.firmware = ${}", params.len()));
        }
        // A set of the tag's routers read once from its index, rather than one lookup per
        // router of the tenant (which made a tag filter over 100,000 routers take 0.4 s).
        for tag in &filter.tags {
            params.push(tag.clone());
            conditions.push(format!(
                "d.id IN (SELECT t.device_id FROM device_tags t WHERE t.tenant_id = $1 AND t.tag = ${})",
                params.len()
            ));
        }
        let search = filter.query.as_deref().filter(|q| !q.is_empty());
        if let Some(query) = search {
            params.push(format!("%{}%", escape_like(query)));
            conditions.push(router_search.replace("{pattern}", &format!("${}", params.len())));
        }
        let count_sql = format!(
            "SELECT COUNT(*) FROM devices d WHERE {}",
            conditions.join(" AND ")
        );
        let count_params = params.len();
        if let Some(after) = &page.after {
            params.push(after.clone());
            conditions.push(format!("d.serial > ${}", params.len()));
        }
        let page_sql = format!(
            "{}WHERE {} ORDER BY d.serial LIMIT ${}",
            select_devices!(""),
            conditions.join(" AND "),
            params.len() + 1
        );
        let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
        Self {
            count_sql,
            page_sql,
            params,
            count_params,
            fetch: i64::from(page.limit) + 1,
            searches: search.is_some(),
            limit,
        }
    }

    /// The page from the fetched rows (up to one more than the limit) and the filter's count.
    pub(crate) fn page(&self, total: i64, mut items: Vec<Device>) -> Result<Page<Device>> {
        let more = items.len() > self.limit;
        items.truncate(self.limit);
        let next_after = if more {
            items.last().map(|device| device.serial.clone())
        } else {
            None
        };
        Ok(Page {
            items,
            total: u64::try_from(total)
                .map_err(|_| StoreError::Corrupt(format!("device count {total}")))?,
            next_after,
        })
    }
}

/// Makes `%`, `_` and the escape character itself match literally in a `LIKE … ESCAPE '\'`.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Implements [`Store`](crate::Store) for a store type (see the module documentation for what
/// the type must provide). Every method that writes more than one statement, or must see one
/// snapshot, runs in a transaction; dropping an uncommitted transaction rolls it back.
macro_rules! impl_store {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> $crate::Backend {
                Self::BACKEND
            }

            async fn ping(&self) -> $crate::Result<()> {
                ::sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn setting(&self, key: &str) -> $crate::Result<Option<String>> {
                Ok(
                    ::sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn init_setting(&self, key: &str, value: &str) -> $crate::Result<String> {
                let mut tx = self.begin_write().await?;
                // On PostgreSQL a concurrent insert of the same key makes this wait for the other
                // transaction and then do nothing; the SELECT (a new statement, so a new snapshot
                // under READ COMMITTED) then sees the winner's value.
                ::sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
                let value: String =
                    ::sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(value)
            }

            async fn create_tenant(
                &self,
                tenant: &::floatilla_domain::model::Tenant,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO tenants (id, name, enrollment_policy, created_at, suspended_at, \
                     contact_email) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(tenant.id.to_string())
                .bind(&tenant.name)
                .bind(tenant.enrollment_policy.as_str())
                .bind($crate::rows::millis(tenant.created_at))
                .bind($crate::rows::opt_millis(tenant.suspended_at))
                .bind(&tenant.contact_email)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        $crate::shared::write_error(
                            e,
                            || format!("tenant {} already exists", tenant.id),
                            "tenant",
                        )
                    })?;
                Ok(())
            }

            async fn tenant(
                &self,
                id: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Option<::floatilla_domain::model::Tenant>> {
                let row: Option<$crate::rows::TenantRow> =
                    ::sqlx::query_as("SELECT * FROM tenants WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn tenants(&self) -> $crate::Result<Vec<::floatilla_domain::model::Tenant>> {
                let rows: Vec<$crate::rows::TenantRow> = ::sqlx::query_as(
                    "SELECT * FROM tenants ORDER BY created_at, id",
                )
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn create_group(
                &self,
                group: &::floatilla_domain::model::Group,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO groups (id, tenant_id, name, ping_interval_secs, \
                     pong_timeout_secs, created_at, maintenance_window) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(group.id.to_string())
                .bind(group.tenant_id.to_string())
                .bind(&group.name)
                .bind(group.timer_profile.map(|p| i64::from(p.ping_interval_secs)))
                .bind(group.timer_profile.map(|p| i64::from(p.pong_timeout_secs)))
                .bind($crate::rows::millis(group.created_at))
                .bind(group.maintenance_window.map(|w| w.to_string()))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || format!("a group named {} already exists", group.name),
                        "tenant",
                    )
                })?;
                Ok(())
            }

            async fn groups(
                &self,
                tenant: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Vec<::floatilla_domain::model::Group>> {
                let rows: Vec<$crate::rows::GroupRow> = ::sqlx::query_as(
                    "SELECT * FROM groups \
                     WHERE tenant_id = $1 ORDER BY name",
                )
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn group(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::GroupId,
            ) -> $crate::Result<Option<::floatilla_domain::model::Group>> {
                let row: Option<$crate::rows::GroupRow> = ::sqlx::query_as(
                    "SELECT * FROM groups \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn group_by_name(
                &self,
                tenant: ::floatilla_domain::TenantId,
                name: &str,
            ) -> $crate::Result<Option<::floatilla_domain::model::Group>> {
                let row: Option<$crate::rows::GroupRow> = ::sqlx::query_as(
                    "SELECT * FROM groups \
                     WHERE tenant_id = $1 AND name = $2",
                )
                .bind(tenant.to_string())
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn update_group(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::GroupId,
                patch: &$crate::GroupPatch,
            ) -> $crate::Result<::floatilla_domain::model::Group> {
                let mut tx = self.begin_write().await?;
                if let Some(name) = &patch.name {
                    ::sqlx::query("UPDATE groups SET name = $3 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(id.to_string())
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            $crate::shared::write_error(
                                e,
                                || format!("a group named {name} already exists"),
                                "group",
                            )
                        })?;
                }
                if let Some(profile) = patch.timer_profile {
                    ::sqlx::query(
                        "UPDATE groups SET ping_interval_secs = $3, pong_timeout_secs = $4 \
                         WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .bind(profile.map(|p| i64::from(p.ping_interval_secs)))
                    .bind(profile.map(|p| i64::from(p.pong_timeout_secs)))
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(window) = patch.maintenance_window {
                    ::sqlx::query(
                        "UPDATE groups SET maintenance_window = $3 WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .bind(window.map(|w| w.to_string()))
                    .execute(&mut *tx)
                    .await?;
                }
                let row: Option<$crate::rows::GroupRow> =
                    ::sqlx::query_as("SELECT * FROM groups WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                let group = row.ok_or($crate::StoreError::NotFound("group"))?.try_into()?;
                tx.commit().await?;
                Ok(group)
            }

            async fn delete_group(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::GroupId,
            ) -> $crate::Result<()> {
                // The foreign keys' ON DELETE SET NULL detaches the group's routers and tokens.
                let deleted = ::sqlx::query("DELETE FROM groups WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                $crate::shared::found(deleted, "group")
            }

            async fn create_enrollment_token(
                &self,
                token: &::floatilla_domain::model::EnrollmentToken,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO enrollment_tokens (id, tenant_id, name, secret_hash, max_uses, \
                     uses, expires_at, group_id, revoked_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(token.id.to_string())
                .bind(token.tenant_id.to_string())
                .bind(&token.name)
                .bind(&token.secret_hash)
                .bind(token.max_uses.map(i64::from))
                .bind(i64::from(token.uses))
                .bind($crate::rows::opt_millis(token.expires_at))
                .bind(token.group_id.map(|g| g.to_string()))
                .bind($crate::rows::opt_millis(token.revoked_at))
                .bind($crate::rows::millis(token.created_at))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || "an enrollment token with this id or secret already exists".to_owned(),
                        "tenant or group",
                    )
                })?;
                Ok(())
            }

            async fn enrollment_tokens(
                &self,
                tenant: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Vec<::floatilla_domain::model::EnrollmentToken>> {
                let rows: Vec<$crate::rows::EnrollmentTokenRow> = ::sqlx::query_as(
                    "SELECT * FROM enrollment_tokens WHERE tenant_id = $1 \
                     ORDER BY created_at DESC, id DESC",
                )
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn enrollment_token(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::EnrollmentTokenId,
            ) -> $crate::Result<Option<::floatilla_domain::model::EnrollmentToken>> {
                let row: Option<$crate::rows::EnrollmentTokenRow> = ::sqlx::query_as(
                    "SELECT * FROM enrollment_tokens WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn enrollment_token_by_hash(
                &self,
                secret_hash: &str,
            ) -> $crate::Result<Option<::floatilla_domain::model::EnrollmentToken>> {
                let row: Option<$crate::rows::EnrollmentTokenRow> =
                    ::sqlx::query_as("SELECT * FROM enrollment_tokens WHERE secret_hash = $1")
                        .bind(secret_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn revoke_enrollment_token(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::EnrollmentTokenId,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<()> {
                // Revoking twice keeps the first revocation time.
                let revoked = ::sqlx::query(
                    "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind($crate::rows::millis(now))
                .execute(&self.pool)
                .await?
                .rows_affected();
                $crate::shared::found(revoked, "enrollment token")
            }

            async fn enroll(
                &self,
                enrollment: &$crate::Enrollment,
            ) -> $crate::Result<
                Result<::floatilla_domain::model::Device, ::floatilla_domain::model::TokenRefusal>,
            > {
                let now = $crate::rows::millis(enrollment.now);
                let mut tx = self.begin_write().await?;
                // Checking and counting in one statement is what makes max_uses hold when many
                // routers enroll at once: concurrent updates of the row are serialised (by
                // SQLite's write lock, or PostgreSQL's row lock and re-check of the condition).
                let counted = ::sqlx::query(
                    "UPDATE enrollment_tokens SET uses = uses + 1 \
                     WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > $3) \
                     AND (max_uses IS NULL OR uses < max_uses)",
                )
                .bind(enrollment.token_id.to_string())
                .bind(enrollment.tenant_id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if counted == 0 {
                    let row: Option<$crate::rows::EnrollmentTokenRow> = ::sqlx::query_as(
                        "SELECT * FROM enrollment_tokens WHERE id = $1 AND tenant_id = $2",
                    )
                    .bind(enrollment.token_id.to_string())
                    .bind(enrollment.tenant_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let token: ::floatilla_domain::model::EnrollmentToken = row
                        .ok_or($crate::StoreError::NotFound("enrollment token"))?
                        .try_into()?;
                    // A token never becomes usable again once refused, so the refusal is found.
                    return token.refusal(enrollment.now).map(Err).ok_or_else(|| {
                        $crate::StoreError::Conflict(format!(
                            "enrollment token {} changed during enrollment",
                            token.id
                        ))
                    });
                }

                let device_id = match enrollment.existing_device {
                    Some(id) => {
                        // A pre-registered router without a group joins the token's.
                        let updated = ::sqlx::query(
                            "UPDATE devices SET model = $3, firmware = $4, agent_version = $5, \
                             reenroll_allowed_until = NULL, group_id = CASE \
                             WHEN enrollment = 'preregistered' THEN COALESCE(group_id, $6) \
                             ELSE group_id END, enrollment = $7 \
                             WHERE id = $1 AND tenant_id = $2",
                        )
                        .bind(id.to_string())
                        .bind(enrollment.tenant_id.to_string())
                        .bind(&enrollment.model)
                        .bind(&enrollment.firmware)
                        .bind(&enrollment.agent_version)
                        .bind(enrollment.group_id.map(|g| g.to_string()))
                        .bind(enrollment.state.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        $crate::shared::found(updated, "device")?;
                        $crate::shared::revoke_credentials!(&mut *tx, id, None, now)?;
                        id
                    }
                    None => {
                        let status = $crate::rows::status_json(
                            &::floatilla_domain::model::DeviceStatus::default(),
                        )?;
                        ::sqlx::query(
                            "INSERT INTO devices (id, tenant_id, serial, name, model, firmware, \
                             agent_version, group_id, enrollment, connection_state, status, \
                             created_at) \
                             VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $10, 'offline', $8, $9)",
                        )
                        .bind(enrollment.new_device_id.to_string())
                        .bind(enrollment.tenant_id.to_string())
                        .bind(&enrollment.serial)
                        .bind(&enrollment.model)
                        .bind(&enrollment.firmware)
                        .bind(&enrollment.agent_version)
                        .bind(enrollment.group_id.map(|g| g.to_string()))
                        .bind(status)
                        .bind(now)
                        .bind(enrollment.state.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            $crate::shared::write_error(
                                e,
                                || {
                                    format!(
                                        "a router with serial {} is already enrolled",
                                        enrollment.serial
                                    )
                                },
                                "group",
                            )
                        })?;
                        enrollment.new_device_id
                    }
                };

                // The credential always belongs to the device just created or re-keyed.
                let credential = &enrollment.credential;
                ::sqlx::query(
                    "INSERT INTO credentials (id, device_id, secret_hash, created_at, expires_at, \
                     revoked_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(credential.id.to_string())
                .bind(device_id.to_string())
                .bind(&credential.secret_hash)
                .bind($crate::rows::millis(credential.created_at))
                .bind($crate::rows::millis(credential.expires_at))
                .bind($crate::rows::opt_millis(credential.revoked_at))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || format!("credential {} already exists", credential.id),
                        "device",
                    )
                })?;

                $crate::events::insert_event!(&mut *tx, &enrollment.event)?;
                let row: $crate::rows::DeviceRow =
                    ::sqlx::query_as($crate::shared::select_devices!("WHERE d.id = $1"))
                        .bind(device_id.to_string())
                        .fetch_one(&mut *tx)
                        .await?;
                let device = row.try_into()?;
                tx.commit().await?;
                Ok(Ok(device))
            }

            async fn device(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::DeviceId,
            ) -> $crate::Result<Option<::floatilla_domain::model::Device>> {
                let row: Option<$crate::rows::DeviceRow> = ::sqlx::query_as(
                    $crate::shared::select_devices!("WHERE d.tenant_id = $1 AND d.id = $2"),
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn device_by_id(
                &self,
                id: ::floatilla_domain::DeviceId,
            ) -> $crate::Result<Option<::floatilla_domain::model::Device>> {
                let row: Option<$crate::rows::DeviceRow> =
                    ::sqlx::query_as($crate::shared::select_devices!("WHERE d.id = $1"))
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn device_by_serial(
                &self,
                tenant: ::floatilla_domain::TenantId,
                serial: &str,
            ) -> $crate::Result<Option<::floatilla_domain::model::Device>> {
                let row: Option<$crate::rows::DeviceRow> = ::sqlx::query_as(
                    $crate::shared::select_devices!("WHERE d.tenant_id = $1 AND d.serial = $2"),
                )
                .bind(tenant.to_string())
                .bind(serial)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn device_serials(
                &self,
                tenant: ::floatilla_domain::TenantId,
                ids: &[::floatilla_domain::DeviceId],
            ) -> $crate::Result<
                ::std::collections::HashMap<::floatilla_domain::DeviceId, String>,
            > {
                let mut serials = ::std::collections::HashMap::with_capacity(ids.len());
                for chunk in ids.chunks($crate::tags::TAG_CHUNK) {
                    let sql = format!(
                        "SELECT id, serial FROM devices WHERE tenant_id = $1 AND id IN ({})",
                        $crate::tags::placeholders(2, chunk.len())
                    );
                    let mut query = ::sqlx::query_as::<_, (String, String)>(
                        ::sqlx::AssertSqlSafe(sql),
                    )
                    .bind(tenant.to_string());
                    for id in chunk {
                        query = query.bind(id.to_string());
                    }
                    for (id, serial) in query.fetch_all(&self.pool).await? {
                        serials.insert($crate::rows::parse("devices.id", &id)?, serial);
                    }
                }
                Ok(serials)
            }

            async fn list_devices(
                &self,
                tenant: ::floatilla_domain::TenantId,
                filter: &::floatilla_domain::model::DeviceFilter,
                page: &::floatilla_domain::model::PageRequest,
            ) -> $crate::Result<
                ::floatilla_domain::model::Page<::floatilla_domain::model::Device>,
            > {
                let listing = $crate::shared::DeviceListing::new(
                    tenant,
                    filter,
                    page,
                    Self::ROUTER_SEARCH,
                );
                let mut tx = self.begin_read().await?;
                if let Some(setup) = Self::SEARCH_PLANNING
                    && listing.searches
                {
                    ::sqlx::query(setup).execute(&mut *tx).await?;
                }
                let mut count =
                    ::sqlx::query_scalar(::sqlx::AssertSqlSafe(listing.count_sql.as_str()));
                for param in &listing.params[..listing.count_params] {
                    count = count.bind(param.as_str());
                }
                let total: i64 = count.fetch_one(&mut *tx).await?;
                let mut query = ::sqlx::query_as(::sqlx::AssertSqlSafe(listing.page_sql.as_str()));
                for param in &listing.params {
                    query = query.bind(param.as_str());
                }
                let rows: Vec<$crate::rows::DeviceRow> =
                    query.bind(listing.fetch).fetch_all(&mut *tx).await?;
                tx.commit().await?;
                listing.page(total, $crate::rows::convert(rows)?)
            }

            async fn update_device(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::DeviceId,
                patch: &$crate::DevicePatch,
            ) -> $crate::Result<::floatilla_domain::model::Device> {
                let mut tx = self.begin_write().await?;
                if let Some(name) = &patch.name {
                    ::sqlx::query("UPDATE devices SET name = $3 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(id.to_string())
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(group) = patch.group_id {
                    // The foreign key only proves the group exists; it must also be this
                    // tenant's.
                    if let Some(group) = group {
                        let known: i64 = ::sqlx::query_scalar(
                            "SELECT COUNT(*) FROM groups WHERE tenant_id = $1 AND id = $2",
                        )
                        .bind(tenant.to_string())
                        .bind(group.to_string())
                        .fetch_one(&mut *tx)
                        .await?;
                        if known == 0 {
                            return Err($crate::StoreError::NotFound("group"));
                        }
                    }
                    ::sqlx::query(
                        "UPDATE devices SET group_id = $3 WHERE tenant_id = $1 AND id = $2",
                    )
                    .bind(tenant.to_string())
                    .bind(id.to_string())
                    .bind(group.map(|g| g.to_string()))
                    .execute(&mut *tx)
                    .await?;
                }
                let row: Option<$crate::rows::DeviceRow> = ::sqlx::query_as(
                    $crate::shared::select_devices!("WHERE d.tenant_id = $1 AND d.id = $2"),
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let device = row.ok_or($crate::StoreError::NotFound("device"))?.try_into()?;
                tx.commit().await?;
                Ok(device)
            }

            async fn delete_device(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::DeviceId,
            ) -> $crate::Result<()> {
                // ON DELETE CASCADE removes the credentials and the connection history.
                let deleted =
                    ::sqlx::query("DELETE FROM devices WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant.to_string())
                        .bind(id.to_string())
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                $crate::shared::found(deleted, "device")
            }

            async fn allow_reenrollment(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::DeviceId,
                until: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<()> {
                let updated = ::sqlx::query(
                    "UPDATE devices SET reenroll_allowed_until = $3 \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind($crate::rows::millis(until))
                .execute(&self.pool)
                .await?
                .rows_affected();
                $crate::shared::found(updated, "device")
            }

            async fn record_inventory(
                &self,
                id: ::floatilla_domain::DeviceId,
                model: &str,
                firmware: &str,
                agent_version: &str,
            ) -> $crate::Result<()> {
                let updated = ::sqlx::query(
                    "UPDATE devices SET model = $2, firmware = $3, agent_version = $4 \
                     WHERE id = $1",
                )
                .bind(id.to_string())
                .bind(model)
                .bind(firmware)
                .bind(agent_version)
                .execute(&self.pool)
                .await?
                .rows_affected();
                $crate::shared::found(updated, "device")
            }

            async fn record_status(
                &self,
                id: ::floatilla_domain::DeviceId,
                status: &::floatilla_domain::model::DeviceStatus,
            ) -> $crate::Result<()> {
                let updated = ::sqlx::query("UPDATE devices SET status = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind($crate::rows::status_json(status)?)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                $crate::shared::found(updated, "device")
            }

            async fn credential(
                &self,
                id: ::floatilla_domain::CredentialId,
            ) -> $crate::Result<Option<::floatilla_domain::model::Credential>> {
                let row: Option<$crate::rows::CredentialRow> =
                    ::sqlx::query_as("SELECT * FROM credentials WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn add_credential(
                &self,
                credential: &::floatilla_domain::model::Credential,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO credentials (id, device_id, secret_hash, created_at, expires_at, \
                     revoked_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(credential.id.to_string())
                .bind(credential.device_id.to_string())
                .bind(&credential.secret_hash)
                .bind($crate::rows::millis(credential.created_at))
                .bind($crate::rows::millis(credential.expires_at))
                .bind($crate::rows::opt_millis(credential.revoked_at))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || format!("credential {} already exists", credential.id),
                        "device",
                    )
                })?;
                Ok(())
            }

            async fn revoke_credential(
                &self,
                id: ::floatilla_domain::CredentialId,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<()> {
                let revoked = ::sqlx::query(
                    "UPDATE credentials SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                )
                .bind(id.to_string())
                .bind($crate::rows::millis(now))
                .execute(&self.pool)
                .await?
                .rows_affected();
                $crate::shared::found(revoked, "credential")
            }

            async fn revoke_device_credentials(
                &self,
                device: ::floatilla_domain::DeviceId,
                except: Option<::floatilla_domain::CredentialId>,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                Ok($crate::shared::revoke_credentials!(
                    &self.pool,
                    device,
                    except,
                    $crate::rows::millis(now)
                )?)
            }

            async fn record_connect(
                &self,
                record: &::floatilla_domain::model::ConnectionRecord,
                only_credential: Option<::floatilla_domain::CredentialId>,
            ) -> $crate::Result<()> {
                let connected_at = $crate::rows::millis(record.connected_at);
                let mut tx = self.begin_write().await?;
                // The device row first, as in every method that touches both tables, so that
                // PostgreSQL transactions lock rows in the same order and cannot deadlock.
                let updated = ::sqlx::query(
                    "UPDATE devices SET connection_state = 'online', current_session_id = $2, \
                     connected_since = $3, last_seen = $3 WHERE id = $1",
                )
                .bind(record.device_id.to_string())
                .bind(record.session_id.to_string())
                .bind(connected_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                $crate::shared::found(updated, "device")?;
                // The new connection replaces any the router still has open, here or on another
                // node (live, or left behind by a node that died): its history shows one open
                // session from now on.
                ::sqlx::query(
                    "UPDATE connection_history SET disconnected_at = $2, reason = 'superseded' \
                     WHERE device_id = $1 AND disconnected_at IS NULL",
                )
                .bind(record.device_id.to_string())
                .bind(connected_at)
                .execute(&mut *tx)
                .await?;
                ::sqlx::query(
                    "INSERT INTO connection_history (session_id, device_id, node_id, remote_addr, \
                     connected_at, disconnected_at, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(record.session_id.to_string())
                .bind(record.device_id.to_string())
                .bind(&record.node_id)
                .bind(&record.remote_addr)
                .bind(connected_at)
                .bind($crate::rows::opt_millis(record.disconnected_at))
                .bind(record.reason.map(|r| r.as_str()))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || format!("session {} was already recorded", record.session_id),
                        "device",
                    )
                })?;
                if only_credential.is_some() {
                    $crate::shared::revoke_credentials!(
                        &mut *tx,
                        record.device_id,
                        only_credential,
                        connected_at
                    )?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn record_disconnect(
                &self,
                session: ::floatilla_domain::SessionId,
                device: ::floatilla_domain::DeviceId,
                at: ::floatilla_domain::Timestamp,
                reason: ::floatilla_domain::DisconnectReason,
            ) -> $crate::Result<()> {
                let at = $crate::rows::millis(at);
                let mut tx = self.begin_write().await?;
                ::sqlx::query(
                    "UPDATE devices SET connection_state = 'offline', last_disconnect_at = $3, \
                     last_disconnect_reason = $4, connected_since = NULL, \
                     current_session_id = NULL WHERE id = $1 AND current_session_id = $2",
                )
                .bind(device.to_string())
                .bind(session.to_string())
                .bind(at)
                .bind(reason.as_str())
                .execute(&mut *tx)
                .await?;
                ::sqlx::query(
                    "UPDATE connection_history SET disconnected_at = $2, reason = $3 \
                     WHERE session_id = $1 AND disconnected_at IS NULL",
                )
                .bind(session.to_string())
                .bind(at)
                .bind(reason.as_str())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_last_seen(
                &self,
                seen: &[(::floatilla_domain::DeviceId, ::floatilla_domain::Timestamp)],
            ) -> $crate::Result<()> {
                // Updating in id order keeps concurrent batches on PostgreSQL from locking the
                // same rows in opposite orders (a deadlock).
                let mut seen = seen.to_vec();
                seen.sort_unstable_by_key(|(id, _)| *id);
                let mut tx = self.begin_write().await?;
                // One statement per chunk, not one per router: a round trip each on PostgreSQL.
                for chunk in seen.chunks($crate::shared::LAST_SEEN_CHUNK) {
                    let rows = (0..chunk.len())
                        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                        .collect::<Vec<_>>()
                        .join(", ");
                    // Never moves backwards: batches from different nodes may arrive out of order.
                    let sql = format!(
                        "WITH seen (id, at) AS (VALUES {rows}) \
                         UPDATE devices SET last_seen = seen.at FROM seen \
                         WHERE devices.id = seen.id \
                         AND (devices.last_seen IS NULL OR devices.last_seen < seen.at)"
                    );
                    let mut query = ::sqlx::query(::sqlx::AssertSqlSafe(sql));
                    for (id, at) in chunk {
                        query = query.bind(id.to_string()).bind($crate::rows::millis(*at));
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn close_node_sessions(
                &self,
                node_id: &str,
                at: ::floatilla_domain::Timestamp,
                reason: ::floatilla_domain::DisconnectReason,
            ) -> $crate::Result<Vec<$crate::ClosedSession>> {
                let at = $crate::rows::millis(at);
                let mut tx = self.begin_write().await?;
                // Only devices whose current session is one of the node's: a device that has
                // since reconnected elsewhere stays online.
                ::sqlx::query(
                    "UPDATE devices SET connection_state = 'offline', last_disconnect_at = $2, \
                     last_disconnect_reason = $3, connected_since = NULL, \
                     current_session_id = NULL WHERE current_session_id IN (\
                     SELECT session_id FROM connection_history \
                     WHERE node_id = $1 AND disconnected_at IS NULL)",
                )
                .bind(node_id)
                .bind(at)
                .bind(reason.as_str())
                .execute(&mut *tx)
                .await?;
                let closed: Vec<(String, String, String)> = ::sqlx::query_as(
                    "UPDATE connection_history SET disconnected_at = $2, reason = $3 \
                     WHERE node_id = $1 AND disconnected_at IS NULL \
                     RETURNING (SELECT tenant_id FROM devices d \
                     WHERE d.id = connection_history.device_id), device_id, session_id",
                )
                .bind(node_id)
                .bind(at)
                .bind(reason.as_str())
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                closed
                    .into_iter()
                    .map(|(tenant, device, session)| {
                        let corrupt = |e: ::uuid::Error| {
                            $crate::StoreError::Corrupt(format!("connection_history: {e}"))
                        };
                        Ok($crate::ClosedSession {
                            tenant: tenant.parse().map_err(corrupt)?,
                            device: device.parse().map_err(corrupt)?,
                            session: session.parse().map_err(corrupt)?,
                        })
                    })
                    .collect()
            }

            async fn connection_history(
                &self,
                device: ::floatilla_domain::DeviceId,
                limit: u32,
            ) -> $crate::Result<Vec<::floatilla_domain::model::ConnectionRecord>> {
                let rows: Vec<$crate::rows::ConnectionRow> = ::sqlx::query_as(
                    "SELECT * FROM connection_history WHERE device_id = $1 \
                     ORDER BY connected_at DESC, session_id DESC LIMIT $2",
                )
                .bind(device.to_string())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn prune_connection_history(
                &self,
                ended_before: ::floatilla_domain::Timestamp,
                at_most: u32,
            ) -> $crate::Result<u64> {
                Ok(::sqlx::query(
                    "DELETE FROM connection_history WHERE session_id IN (\
                     SELECT session_id FROM connection_history \
                     WHERE disconnected_at IS NOT NULL AND disconnected_at < $1 LIMIT $2)",
                )
                .bind($crate::rows::millis(ended_before))
                .bind(i64::from(at_most))
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn create_api_token(
                &self,
                token: &::floatilla_domain::model::ApiToken,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO api_tokens (id, tenant_id, name, role, secret_hash, created_at, \
                     revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(token.id.to_string())
                .bind(token.tenant_id.map(|t| t.to_string()))
                .bind(&token.name)
                .bind(token.role.as_str())
                .bind(&token.secret_hash)
                .bind($crate::rows::millis(token.created_at))
                .bind($crate::rows::opt_millis(token.revoked_at))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || "an API token with this id or secret already exists".to_owned(),
                        "tenant",
                    )
                })?;
                Ok(())
            }

            async fn api_token_by_hash(
                &self,
                secret_hash: &str,
            ) -> $crate::Result<Option<::floatilla_domain::model::ApiToken>> {
                let row: Option<$crate::rows::ApiTokenRow> =
                    ::sqlx::query_as("SELECT * FROM api_tokens WHERE secret_hash = $1")
                        .bind(secret_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn api_tokens(
                &self,
                tenant: ::floatilla_domain::TenantId,
            ) -> $crate::Result<Vec<::floatilla_domain::model::ApiToken>> {
                let rows: Vec<$crate::rows::ApiTokenRow> = ::sqlx::query_as(
                    "SELECT * FROM api_tokens WHERE tenant_id = $1 \
                     ORDER BY created_at DESC, id DESC",
                )
                .bind(tenant.to_string())
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn revoke_api_token(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::ApiTokenId,
                now: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<()> {
                let revoked = ::sqlx::query(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .bind($crate::rows::millis(now))
                .execute(&self.pool)
                .await?
                .rows_affected();
                $crate::shared::found(revoked, "API token")
            }
        }
    };
}
pub(crate) use impl_store;
