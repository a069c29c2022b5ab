//! Artifacts: the files jobs install, kept in the database in chunks of
//! [`ARTIFACT_CHUNK_BYTES`], so every node serves every artifact and a download can start at
//! any byte without reading what comes before.

use async_trait::async_trait;
use floatilla_domain::jobs::{ArtifactKind, ExecutionState};
use floatilla_domain::{ArtifactId, DeviceId, ExecutionId, TenantId, Timestamp};
use sqlx::FromRow;

use crate::Result;
use crate::rows::{parse, timestamp};

/// The size of every chunk but an artifact's last.
pub const ARTIFACT_CHUNK_BYTES: usize = 1024 * 1024;

/// A file jobs install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub id: ArtifactId,
    pub tenant_id: TenantId,
    pub kind: ArtifactKind,
    pub name: String,
    pub version: String,
    /// The router models it is for; empty: any.
    pub models: Vec<String>,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

impl Artifact {
    /// Whether a router of `model` may install it.
    pub fn fits(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m.eq_ignore_ascii_case(model))
    }
}

#[async_trait]
pub trait Artifacts {
    /// Starts an upload: the artifact exists, unlisted, until [`Artifacts::finish_artifact`].
    /// Its `size` and `sha256` are ignored. `Conflict` if the tenant has an artifact of that
    /// kind, name and version.
    async fn begin_artifact(&self, artifact: &Artifact) -> Result<()>;
    /// Stores chunk `seq` (from 0) of an upload.
    async fn put_artifact_chunk(&self, id: ArtifactId, seq: u64, data: &[u8]) -> Result<()>;
    /// Completes an upload: from now on it is listed and jobs may carry it.
    async fn finish_artifact(&self, id: ArtifactId, size: u64, sha256: &str) -> Result<()>;
    /// Removes an upload that did not complete, with its chunks.
    async fn abandon_artifact(&self, id: ArtifactId) -> Result<()>;
    /// Removes uploads started before `before` that never completed (the node that took them
    /// stopped); answers how many.
    async fn abandon_stale_uploads(&self, before: Timestamp) -> Result<u64>;
    /// A complete artifact of the tenant.
    async fn artifact(&self, tenant: TenantId, id: ArtifactId) -> Result<Option<Artifact>>;
    /// The tenant's complete artifacts, newest first, of one kind if given.
    async fn artifacts(
        &self,
        tenant: TenantId,
        kind: Option<ArtifactKind>,
    ) -> Result<Vec<Artifact>>;
    /// `NotFound` unless the tenant has it; `Conflict` while a job carries it.
    async fn delete_artifact(&self, tenant: TenantId, id: ArtifactId) -> Result<()>;
    /// One chunk's bytes.
    async fn artifact_chunk(&self, id: ArtifactId, seq: u64) -> Result<Option<Vec<u8>>>;
    /// The artifact of the router's execution, with where the execution stands: what a
    /// download is authorized by.
    async fn execution_artifact(
        &self,
        device: DeviceId,
        execution: ExecutionId,
    ) -> Result<Option<(Artifact, ExecutionState)>>;
}

#[derive(FromRow)]
pub(crate) struct ArtifactRow {
    id: String,
    tenant_id: String,
    kind: String,
    name: String,
    version: String,
    models: String,
    size: Option<i64>,
    sha256: Option<String>,
    created_by: String,
    created_at: i64,
}

impl TryFrom<ArtifactRow> for Artifact {
    type Error = crate::StoreError;
    fn try_from(row: ArtifactRow) -> Result<Self> {
        let corrupt = |what: &str| crate::StoreError::Corrupt(format!("artifacts.{what}"));
        Ok(Artifact {
            id: parse("artifacts.id", &row.id)?,
            tenant_id: parse("artifacts.tenant_id", &row.tenant_id)?,
            kind: parse("artifacts.kind", &row.kind)?,
            name: row.name,
            version: row.version,
            models: serde_json::from_str(&row.models).map_err(|_| corrupt("models"))?,
            size: row
                .size
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(|| corrupt("size"))?,
            sha256: row.sha256.ok_or_else(|| corrupt("sha256"))?,
            created_by: row.created_by,
            created_at: timestamp("artifacts.created_at", row.created_at)?,
        })
    }
}

/// Implements [`Artifacts`] for a store type (see `impl_store!` for what it provides).
macro_rules! impl_artifacts {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::Artifacts for $store {
            async fn begin_artifact(&self, artifact: &$crate::Artifact) -> $crate::Result<()> {
                let models = ::serde_json::to_string(&artifact.models)
                    .map_err(|e| $crate::StoreError::Corrupt(e.to_string()))?;
                ::sqlx::query(
                    "INSERT INTO artifacts (id, tenant_id, kind, name, version, models, size, \
                     sha256, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8)",
                )
                .bind(artifact.id.to_string())
                .bind(artifact.tenant_id.to_string())
                .bind(artifact.kind.as_str())
                .bind(&artifact.name)
                .bind(&artifact.version)
                .bind(models)
                .bind(&artifact.created_by)
                .bind($crate::rows::millis(artifact.created_at))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(
                        e,
                        || {
                            format!(
                                "a {} artifact named {} version {} exists",
                                artifact.kind, artifact.name, artifact.version
                            )
                        },
                        "tenant",
                    )
                })?;
                Ok(())
            }

            async fn put_artifact_chunk(
                &self,
                id: ::floatilla_domain::ArtifactId,
                seq: u64,
                data: &[u8],
            ) -> $crate::Result<()> {
                ::sqlx::query(
                    "INSERT INTO artifact_chunks (artifact_id, seq, data) VALUES ($1, $2, $3)",
                )
                .bind(id.to_string())
                .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                .bind(data)
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    $crate::shared::write_error(e, || format!("chunk {seq} exists"), "artifact")
                })?;
                Ok(())
            }

            async fn finish_artifact(
                &self,
                id: ::floatilla_domain::ArtifactId,
                size: u64,
                sha256: &str,
            ) -> $crate::Result<()> {
                let done = ::sqlx::query(
                    "UPDATE artifacts SET size = $2, sha256 = $3 WHERE id = $1 AND size IS NULL",
                )
                .bind(id.to_string())
                .bind(i64::try_from(size).unwrap_or(i64::MAX))
                .bind(sha256)
                .execute(&self.pool)
                .await?
                .rows_affected();
                $crate::shared::found(done, "artifact")
            }

            async fn abandon_artifact(
                &self,
                id: ::floatilla_domain::ArtifactId,
            ) -> $crate::Result<()> {
                ::sqlx::query("DELETE FROM artifacts WHERE id = $1 AND size IS NULL")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn abandon_stale_uploads(
                &self,
                before: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<u64> {
                Ok(::sqlx::query(
                    "DELETE FROM artifacts WHERE size IS NULL AND created_at < $1",
                )
                .bind($crate::rows::millis(before))
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn artifact(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::ArtifactId,
            ) -> $crate::Result<Option<$crate::Artifact>> {
                let row: Option<$crate::artifacts::ArtifactRow> = ::sqlx::query_as(
                    "SELECT * FROM artifacts WHERE tenant_id = $1 AND id = $2 \
                     AND size IS NOT NULL",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn artifacts(
                &self,
                tenant: ::floatilla_domain::TenantId,
                kind: Option<::floatilla_domain::jobs::ArtifactKind>,
            ) -> $crate::Result<Vec<$crate::Artifact>> {
                let rows: Vec<$crate::artifacts::ArtifactRow> = ::sqlx::query_as(
                    "SELECT * FROM artifacts WHERE tenant_id = $1 AND size IS NOT NULL \
                     AND ($2 IS NULL OR kind = $2) ORDER BY created_at DESC, id DESC",
                )
                .bind(tenant.to_string())
                .bind(kind.map(|k| k.as_str()))
                .fetch_all(&self.pool)
                .await?;
                $crate::rows::convert(rows)
            }

            async fn delete_artifact(
                &self,
                tenant: ::floatilla_domain::TenantId,
                id: ::floatilla_domain::ArtifactId,
            ) -> $crate::Result<()> {
                let mut tx = self.begin_write().await?;
                let used: Option<i32> =
                    ::sqlx::query_scalar("SELECT 1 FROM jobs WHERE artifact_id = $1 LIMIT 1")
                        .bind(id.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if used.is_some() {
                    return Err($crate::StoreError::Conflict(
                        "a job carries this artifact: it stays as long as the job".to_owned(),
                    ));
                }
                let deleted = ::sqlx::query(
                    "DELETE FROM artifacts WHERE tenant_id = $1 AND id = $2 AND size IS NOT NULL",
                )
                .bind(tenant.to_string())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                $crate::shared::found(deleted, "artifact")?;
                tx.commit().await?;
                Ok(())
            }

            async fn artifact_chunk(
                &self,
                id: ::floatilla_domain::ArtifactId,
                seq: u64,
            ) -> $crate::Result<Option<Vec<u8>>> {
                Ok(::sqlx::query_scalar(
                    "SELECT data FROM artifact_chunks WHERE artifact_id = $1 AND seq = $2",
                )
                .bind(id.to_string())
                .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn execution_artifact(
                &self,
                device: ::floatilla_domain::DeviceId,
                execution: ::floatilla_domain::ExecutionId,
            ) -> $crate::Result<
                Option<($crate::Artifact, ::floatilla_domain::jobs::ExecutionState)>,
            > {
                let found: Option<(String, String)> = ::sqlx::query_as(
                    "SELECT j.artifact_id, e.state FROM job_executions e \
                     JOIN jobs j ON j.id = e.job_id \
                     WHERE e.id = $1 AND e.device_id = $2 AND j.artifact_id IS NOT NULL",
                )
                .bind(execution.to_string())
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?;
                let Some((artifact, state)) = found else {
                    return Ok(None);
                };
                let row: Option<$crate::artifacts::ArtifactRow> =
                    ::sqlx::query_as("SELECT * FROM artifacts WHERE id = $1 AND size IS NOT NULL")
                        .bind(&artifact)
                        .fetch_optional(&self.pool)
                        .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some((
                    row.try_into()?,
                    $crate::rows::parse("job_executions.state", &state)?,
                )))
            }
        }
    };
}
pub(crate) use impl_artifacts;
