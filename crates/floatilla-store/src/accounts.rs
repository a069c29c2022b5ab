//! Console accounts, their login sessions, and the audit log.

use async_trait::async_trait;
use floatilla_domain::accounts::{Actor, AuditEntry, User};
use floatilla_domain::{AuditEntryId, TenantId, Timestamp, UserId};

use crate::Result;
use crate::rows::{opt_parse, opt_timestamp, parse, timestamp};

/// A console login as stored (the cookie's secret itself is not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub secret_hash: String,
    pub user_id: UserId,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
}

/// Which audit entries to list. Every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Entries of this actor name (an e-mail address or a token's name).
    pub actor: Option<String>,
    /// Entries whose action contains this text (`devices`, `POST`).
    pub action: Option<String>,
    /// `Some(true)`: only what succeeded; `Some(false)`: only what was refused or failed.
    pub succeeded: Option<bool>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Entries older than this one (the previous page's last).
    pub before: Option<AuditEntryId>,
}

#[async_trait]
pub trait Accounts {
    /// `Conflict` when the e-mail address has an account already.
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn user_by_invitation(&self, invitation_hash: &str) -> Result<Option<User>>;
    /// The tenant's accounts (`None`: the provider's), by e-mail address.
    async fn users(&self, tenant: Option<TenantId>) -> Result<Vec<User>>;
    /// Writes the account's role, status, password, invitation and last login.
    async fn update_user(&self, user: &User) -> Result<()>;
    /// Deletes the account and its sessions.
    async fn delete_user(&self, id: UserId) -> Result<()>;

    async fn create_console_session(&self, session: &ConsoleSession) -> Result<()>;
    /// The session with its account.
    async fn console_session(&self, secret_hash: &str) -> Result<Option<(ConsoleSession, User)>>;
    async fn touch_console_session(&self, secret_hash: &str, at: Timestamp) -> Result<()>;
    async fn delete_console_session(&self, secret_hash: &str) -> Result<()>;
    /// Ends every session of the account (password changed, role changed, disabled).
    async fn delete_user_sessions(&self, user: UserId) -> Result<()>;
    /// Deletes sessions begun before `created_before` or unused since `used_before`.
    async fn prune_console_sessions(
        &self,
        created_before: Timestamp,
        used_before: Timestamp,
    ) -> Result<u64>;

    async fn record_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// The tenant's entries (`None`: the provider's), newest first, at most `limit`.
    async fn audit_entries(
        &self,
        tenant: Option<TenantId>,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditEntry>>;
    /// Deletes at most `at_most` entries older than `before`; answers how many.
    async fn prune_audit(&self, before: Timestamp, at_most: u32) -> Result<u64>;
}

pub(crate) const SELECT_USERS: &str = "SELECT id, tenant_id, email, role, status, password_hash, \
     invitation_hash, invitation_expires_at, created_at, last_login_at FROM users";

/// An account's columns, as [`SELECT_USERS`] reads them.
#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    tenant_id: Option<String>,
    email: String,
    role: String,
    status: String,
    password_hash: Option<String>,
    invitation_hash: Option<String>,
    invitation_expires_at: Option<i64>,
    created_at: i64,
    last_login_at: Option<i64>,
}

pub(crate) fn user(row: UserRow) -> Result<User> {
    let expires = opt_timestamp("users.invitation_expires_at", row.invitation_expires_at)?;
    let invitation = match (row.invitation_hash, expires) {
        (Some(hash), Some(expires_at)) => Some((hash, expires_at)),
        _ => None,
    };
    Ok(User {
        id: parse("users.id", &row.id)?,
        tenant_id: opt_parse("users.tenant_id", row.tenant_id.as_deref())?,
        email: row.email,
        role: parse("users.role", &row.role)?,
        status: parse("users.status", &row.status)?,
        password_hash: row.password_hash,
        invitation,
        created_at: timestamp("users.created_at", row.created_at)?,
        last_login_at: opt_timestamp("users.last_login_at", row.last_login_at)?,
    })
}

/// A console session with its account: [`SELECT_USERS`]'s columns, then the session's.
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    #[sqlx(flatten)]
    user: UserRow,
    csrf_token: String,
    session_created_at: i64,
    last_used_at: i64,
}

pub(crate) fn session(secret_hash: &str, row: SessionRow) -> Result<(ConsoleSession, User)> {
    let user = user(row.user)?;
    Ok((
        ConsoleSession {
            secret_hash: secret_hash.to_owned(),
            user_id: user.id,
            csrf_token: row.csrf_token,
            created_at: timestamp("console_sessions.created_at", row.session_created_at)?,
            last_used_at: timestamp("console_sessions.last_used_at", row.last_used_at)?,
        },
        user,
    ))
}

pub(crate) const SELECT_AUDIT: &str = "SELECT id, tenant_id, at, actor_kind, actor_id, \
     actor_name, action, target, address, status, error FROM audit_log";

pub(crate) type AuditRow = (
    String,
    Option<String>,
    i64,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
);

pub(crate) fn audit_entry(row: AuditRow) -> Result<AuditEntry> {
    let (id, tenant_id, at, kind, actor_id, name, action, target, address, status, error) = row;
    let actor = match (kind.as_str(), actor_id) {
        ("user", Some(id)) => Actor::User {
            id: parse("audit_log.actor_id", &id)?,
            email: name,
        },
        ("token", Some(id)) => Actor::Token {
            id: parse("audit_log.actor_id", &id)?,
            name,
        },
        _ => Actor::Anonymous { claimed: name },
    };
    Ok(AuditEntry {
        id: parse("audit_log.id", &id)?,
        tenant_id: opt_parse("audit_log.tenant_id", tenant_id.as_deref())?,
        at: timestamp("audit_log.at", at)?,
        actor,
        action,
        target,
        address,
        status: u16::try_from(status)
            .map_err(|_| crate::StoreError::Corrupt(format!("audit_log.status: {status}")))?,
        error,
    })
}

/// The WHERE clause of an audit listing for `filter`, numbering its parameters from `$2` on
/// (`$1` is the tenant), with the values to bind in order.
pub(crate) fn audit_where(tenant: Option<TenantId>, filter: &AuditFilter) -> (String, Vec<String>) {
    let mut clauses = vec![match tenant {
        Some(_) => "tenant_id = $1".to_owned(),
        None => "tenant_id IS NULL AND $1 = ''".to_owned(),
    }];
    let mut binds = Vec::new();
    let mut bind = |clause: &str, value: String, binds: &mut Vec<String>| {
        binds.push(value);
        clauses.push(clause.replace('?', &format!("${}", binds.len() + 1)));
    };
    if let Some(actor) = &filter.actor {
        bind("actor_name = ?", actor.to_lowercase(), &mut binds);
    }
    if let Some(action) = &filter.action {
        bind(
            "LOWER(action) LIKE ?",
            format!("%{}%", action.to_lowercase()),
            &mut binds,
        );
    }
    if let Some(before) = filter.before {
        bind("id < ?", before.to_string(), &mut binds);
    }
    match filter.succeeded {
        Some(true) => clauses.push("status BETWEEN 200 AND 299".to_owned()),
        Some(false) => clauses.push("status NOT BETWEEN 200 AND 299".to_owned()),
        None => {}
    }
    if let Some(since) = filter.since {
        clauses.push(format!("at >= {}", crate::rows::millis(since)));
    }
    if let Some(until) = filter.until {
        clauses.push(format!("at < {}", crate::rows::millis(until)));
    }
    (clauses.join(" AND "), binds)
}

/// Implements [`Accounts`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_accounts {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::accounts::Accounts for $store {
            async fn create_user(
                &self,
                user: &::floatilla_domain::accounts::User,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO users (id, tenant_id, email, role, status, password_hash, \
                     invitation_hash, invitation_expires_at, created_at, last_login_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(user.id.to_string())
                .bind(user.tenant_id.map(|t| t.to_string()))
                .bind(&user.email)
                .bind(user.role.as_str())
                .bind(user.status.as_str())
                .bind(&user.password_hash)
                .bind(user.invitation.as_ref().map(|(hash, _)| hash.clone()))
                .bind(
                    user.invitation
                        .as_ref()
                        .map(|(_, at)| $crate::rows::millis(*at)),
                )
                .bind($crate::rows::millis(user.created_at))
                .bind($crate::rows::opt_millis(user.last_login_at))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || format!("{} has an account already", user.email),
                        "tenant",
                    )
                })?;
                Ok(())
            }

            async fn user(
                &self,
                id: ::floatilla_domain::UserId,
            ) -> $crate::Result<Option<::floatilla_domain::accounts::User>> {
                self.user_where("id", &id.to_string()).await
            }

            async fn user_by_email(
                &self,
                email: &str,
            ) -> $crate::Result<Option<::floatilla_domain::accounts::User>> {
                self.user_where("email", email).await
            }

            async fn user_by_invitation(
                &self,
                invitation_hash: &str,
            ) -> $crate::Result<Option<::floatilla_domain::accounts::User>> {
                self.user_where("invitation_hash", invitation_hash).await
            }

            async fn users(
                &self,
                tenant: Option<::floatilla_domain::TenantId>,
            ) -> $crate::Result<Vec<::floatilla_domain::accounts::User>> {
                let rows: Vec<$crate::accounts::UserRow> =
                    ::sqlx::query_as(::sqlx::AssertSqlSafe(format!(
                        "{} WHERE COALESCE(tenant_id, '') = $1 ORDER BY email",
                        $crate::accounts::SELECT_USERS
                    )))
                    .bind(tenant.map(|t| t.to_string()).unwrap_or_default())
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map($crate::accounts::user).collect()
            }

            async fn update_user(
                &self,
                user: &::floatilla_domain::accounts::User,
            ) -> $crate::Result<()> {
                let done = ::sqlx::query(
                    "UPDATE users SET role = $2, status = $3, password_hash = $4, \
                     invitation_hash = $5, invitation_expires_at = $6, last_login_at = $7 \
                     WHERE id = $1",
                )
                .bind(user.id.to_string())
                .bind(user.role.as_str())
                .bind(user.status.as_str())
                .bind(&user.password_hash)
                .bind(user.invitation.as_ref().map(|(hash, _)| hash.clone()))
                .bind(
                    user.invitation
                        .as_ref()
                        .map(|(_, at)| $crate::rows::millis(*at)),
                )
                .bind($crate::rows::opt_millis(user.last_login_at))
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound("user"));
                }
                Ok(())
            }

            async fn delete_user(&self, id: ::floatilla_domain::UserId) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                ::sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                let done = ::sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound("user"));
                }
                tx.commit().await?;
                Ok(())
            }

            async fn create_console_session(
                &self,
                session: &$crate::accounts::ConsoleSession,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO console_sessions (secret_hash, user_id, csrf_token, created_at, \
                     last_used_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&session.secret_hash)
                .bind(session.user_id.to_string())
                .bind(&session.csrf_token)
                .bind($crate::rows::millis(session.created_at))
                .bind($crate::rows::millis(session.last_used_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn console_session(
                &self,
                secret_hash: &str,
            ) -> $crate::Result<
                Option<(
                    $crate::accounts::ConsoleSession,
                    ::floatilla_domain::accounts::User,
                )>,
            > {
                // The account comes in the same statement: this runs on every console request.
                let row: Option<$crate::accounts::SessionRow> =
                    ::sqlx::query_as(::sqlx::AssertSqlSafe(format!(
                        "SELECT u.*, s.csrf_token, s.created_at AS session_created_at, \
                         s.last_used_at FROM ({}) u JOIN console_sessions s ON s.user_id = u.id \
                         WHERE s.secret_hash = $1",
                        $crate::accounts::SELECT_USERS
                    )))
                    .bind(secret_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| $crate::accounts::session(secret_hash, row))
                    .transpose()
            }

            async fn touch_console_session(
                &self,
                secret_hash: &str,
                at: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "UPDATE console_sessions SET last_used_at = $2 WHERE secret_hash = $1",
                )
                .bind(secret_hash)
                .bind($crate::rows::millis(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_console_session(&self, secret_hash: &str) -> $crate::Result<()> {
                ::sqlx::query("DELETE FROM console_sessions WHERE secret_hash = $1")
                    .bind(secret_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_user_sessions(
                &self,
                user: ::floatilla_domain::UserId,
            ) -> $crate::Result<()> {
                ::sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
                    .bind(user.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn prune_console_sessions(
                &self,
                created_before: ::floatilla_domain::Timestamp,
                used_before: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                let done = ::sqlx::query(
                    "DELETE FROM console_sessions WHERE created_at < $1 OR last_used_at < $2",
                )
                .bind($crate::rows::millis(created_before))
                .bind($crate::rows::millis(used_before))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn record_audit(
                &self,
                entry: &::floatilla_domain::accounts::AuditEntry,
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO audit_log (id, tenant_id, at, actor_kind, actor_id, actor_name, \
                     action, target, address, status, error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(entry.id.to_string())
                .bind(entry.tenant_id.map(|t| t.to_string()))
                .bind($crate::rows::millis(entry.at))
                .bind(entry.actor.kind())
                .bind(entry.actor.id())
                .bind(entry.actor.name())
                .bind(&entry.action)
                .bind(&entry.target)
                .bind(&entry.address)
                .bind(i64::from(entry.status))
                .bind(&entry.error)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn audit_entries(
                &self,
                tenant: Option<::floatilla_domain::TenantId>,
                filter: &$crate::accounts::AuditFilter,
                limit: u32,
            ) -> $crate::Result<Vec<::floatilla_domain::accounts::AuditEntry>> {
                let (clause, binds) = $crate::accounts::audit_where(tenant, filter);
                let sql = format!(
                    "{} WHERE {clause} ORDER BY id DESC LIMIT {limit}",
                    $crate::accounts::SELECT_AUDIT
                );
                let mut query =
                    ::sqlx::query_as::<_, $crate::accounts::AuditRow>(::sqlx::AssertSqlSafe(sql))
                        .bind(tenant.map(|t| t.to_string()).unwrap_or_default());
                for value in binds {
                    query = query.bind(value);
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.into_iter()
                    .map($crate::accounts::audit_entry)
                    .collect()
            }

            async fn prune_audit(
                &self,
                before: ::floatilla_domain::Timestamp,
                at_most: u32,
            ) -> $crate::Result<u64> {
                let done = ::sqlx::query(
                    "DELETE FROM audit_log WHERE id IN \
                     (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2)",
                )
                .bind($crate::rows::millis(before))
                .bind(i64::from(at_most))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }
        }

        impl $store {
            /// The account whose `column` (a fixed column name) is `value`.
            async fn user_where(
                &self,
                column: &'static str,
                value: &str,
            ) -> $crate::Result<Option<::floatilla_domain::accounts::User>> {
                let row: Option<$crate::accounts::UserRow> =
                    ::sqlx::query_as(::sqlx::AssertSqlSafe(format!(
                        "{} WHERE {column} = $1",
                        $crate::accounts::SELECT_USERS
                    )))
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map($crate::accounts::user).transpose()
            }
        }
    };
}

pub(crate) use impl_accounts;
