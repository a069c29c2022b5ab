//! What the nodes sharing one database tell each other: which node is alive, and messages about
//! sessions that live on one node but concern all of them. On PostgreSQL the messages travel by
//! LISTEN/NOTIFY; an SQLite installation is a single node, so it has no one to tell.

use async_trait::async_trait;
use floatilla_domain::{DeviceId, JobId, SessionId, TenantId, TimerChange, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;

/// The PostgreSQL notification channel every node listens on.
pub const CHANNEL: &str = "floatilla_cluster";

/// The largest message PostgreSQL carries (its limit is 8000 bytes, less a margin).
pub const MAX_MESSAGE_BYTES: usize = 7900;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterMessage {
    /// A router's session started on `node`: any older session of it elsewhere is superseded.
    SessionStarted {
        device: DeviceId,
        session: SessionId,
        node: String,
    },
    /// Heartbeat timing changed on `node`: for one router's session, or (`device` absent) for
    /// the sessions the change concerns.
    TimersChanged {
        device: Option<DeviceId>,
        change: TimerChange,
        node: String,
    },
    /// Some of the router's credentials were revoked on `node`: a session elsewhere that runs
    /// on one of them ends.
    CredentialsRevoked { device: DeviceId, node: String },
    /// `node` changed the tenant's license pool or licenses: the others read what changed.
    PoolChanged { tenant: TenantId, node: String },
    /// `node` created a job: the others send it to the routers whose sessions they hold.
    JobCreated {
        tenant: TenantId,
        job: JobId,
        node: String,
    },
    /// `node` suspended, resumed or deleted the tenant: the others read how it stands.
    TenantChanged { tenant: TenantId, node: String },
    /// Run a call on the router's session, wherever it is, and answer to node `from`.
    Call {
        call: Uuid,
        device: DeviceId,
        method: String,
        params: serde_json::Value,
        from: String,
    },
    /// The answer to a call, for node `to`: the router's result, or why there is none.
    Answer {
        call: Uuid,
        to: String,
        outcome: CallOutcome,
    },
}

/// How a forwarded call ended on the node that holds the router's session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CallOutcome {
    /// What the router answered (the protocol's call result, as JSON).
    Answered { result: serde_json::Value },
    /// The router has no session on that node, or it ended before answering.
    NotConnected,
    /// The router has too many requests pending.
    Busy,
}

impl ClusterMessage {
    pub fn encode(&self) -> Result<String> {
        let text = serde_json::to_string(self)
            .map_err(|e| crate::StoreError::Corrupt(format!("cluster message: {e}")))?;
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(crate::StoreError::Conflict(format!(
                "a cluster message may hold at most {MAX_MESSAGE_BYTES} bytes, not {}",
                text.len()
            )));
        }
        Ok(text)
    }

    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// What a subscription yields.
#[derive(Debug)]
pub enum Received {
    Message(ClusterMessage),
    /// The connection to the database was lost and is back: messages sent meanwhile are gone,
    /// so the subscriber should check its state against the database.
    Gap,
}

#[async_trait]
pub trait Cluster {
    /// Records that `node` is alive at `at`. `false` when the node was not on record: the
    /// other nodes took it for dead and closed its sessions.
    async fn node_heartbeat(&self, node: &str, at: Timestamp) -> Result<bool>;
    /// Nodes whose last heartbeat is older than `before`.
    async fn silent_nodes(&self, before: Timestamp) -> Result<Vec<String>>;
    async fn forget_node(&self, node: &str) -> Result<()>;
    /// The router's current session as recorded by the last connect: the one every node defers
    /// to when two claim the router.
    async fn current_session(&self, device: DeviceId) -> Result<Option<SessionId>>;
    /// Sends `message` to every node (this one included). Does nothing on a single-node store.
    async fn publish(&self, message: &ClusterMessage) -> Result<()>;
    /// Starts receiving messages; `None` on a single-node store.
    async fn subscribe(&self) -> Result<Option<Subscription>>;
}

/// A node's stream of messages from every node.
pub struct Subscription {
    listener: sqlx::postgres::PgListener,
}

impl Subscription {
    pub(crate) fn new(listener: sqlx::postgres::PgListener) -> Self {
        Self { listener }
    }

    /// The next message, or a gap after the connection was lost. Messages that do not decode
    /// (from a newer node during an upgrade, say) are skipped.
    pub async fn recv(&mut self) -> Received {
        loop {
            match self.listener.try_recv().await {
                Ok(Some(notification)) => match ClusterMessage::decode(notification.payload()) {
                    Some(message) => return Received::Message(message),
                    None => tracing::warn!(
                        payload = notification.payload(),
                        "ignoring a cluster message this node does not understand"
                    ),
                },
                Ok(None) => return Received::Gap,
                Err(error) => {
                    tracing::warn!(%error, "lost the cluster channel; reconnecting");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    return Received::Gap;
                }
            }
        }
    }
}

/// Implements the node bookkeeping of [`Cluster`] for a store type with a `pool` field; the type
/// provides `publish_message` and `open_subscription`.
macro_rules! impl_cluster {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::Cluster for $store {
            async fn node_heartbeat(
                &self,
                node: &str,
                at: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<bool> {
                let updated = ::sqlx::query("UPDATE nodes SET heartbeat_at = $2 WHERE id = $1")
                    .bind(node)
                    .bind($crate::rows::millis(at))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if updated > 0 {
                    return Ok(true);
                }
                ::sqlx::query(
                    "INSERT INTO nodes (id, heartbeat_at) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                )
                .bind(node)
                .bind($crate::rows::millis(at))
                .execute(&self.pool)
                .await?;
                Ok(false)
            }

            async fn silent_nodes(
                &self,
                before: ::floatilla_domain::Timestamp,
            ) -> $crate::Result<Vec<String>> {
                Ok(
                    ::sqlx::query_scalar(
                        "SELECT id FROM nodes WHERE heartbeat_at < $1 ORDER BY id",
                    )
                    .bind($crate::rows::millis(before))
                    .fetch_all(&self.pool)
                    .await?,
                )
            }

            async fn forget_node(&self, node: &str) -> $crate::Result<()> {
                ::sqlx::query("DELETE FROM nodes WHERE id = $1")
                    .bind(node)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn current_session(
                &self,
                device: ::floatilla_domain::DeviceId,
            ) -> $crate::Result<Option<::floatilla_domain::SessionId>> {
                let session: Option<Option<String>> =
                    ::sqlx::query_scalar("SELECT current_session_id FROM devices WHERE id = $1")
                        .bind(device.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                session
                    .flatten()
                    .map(|s| {
                        s.parse().map_err(|e| {
                            $crate::StoreError::Corrupt(format!(
                                "devices.current_session_id `{s}`: {e}"
                            ))
                        })
                    })
                    .transpose()
            }

            async fn publish(&self, message: &$crate::ClusterMessage) -> $crate::Result<()> {
                self.publish_message(message).await
            }

            async fn subscribe(&self) -> $crate::Result<Option<$crate::cluster::Subscription>> {
                self.open_subscription().await
            }
        }
    };
}
pub(crate) use impl_cluster;
