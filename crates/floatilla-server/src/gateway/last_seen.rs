//! Heartbeat bookkeeping: every frame from a router refreshes its "last seen" in memory, and a
//! background task writes all of them in one batch per interval instead of one write per ping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floatilla_domain::{DeviceId, Timestamp};
use floatilla_store::Store;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct LastSeen {
    pending: Mutex<HashMap<DeviceId, Timestamp>>,
}

impl LastSeen {
    pub fn touch(&self, device: DeviceId, at: Timestamp) {
        self.lock().insert(device, at);
    }

    /// Forgets a device whose session ended: its final time is written with the disconnect.
    pub fn forget(&self, device: DeviceId) {
        self.lock().remove(&device);
    }

    /// Writes everything pending in one batch.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<_> = self.lock().drain().collect();
        if batch.is_empty() {
            return;
        }
        if let Err(error) = store.record_last_seen(&batch).await {
            tracing::warn!(%error, devices = batch.len(), "could not record last seen; will retry");
            let mut pending = self.lock();
            for (device, at) in batch {
                pending.entry(device).or_insert(at);
            }
        }
    }

    /// Flushes every `interval` until `shutdown`, then once more.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.flush(store.as_ref()).await,
                () = shutdown.cancelled() => break,
            }
        }
        self.flush(store.as_ref()).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Timestamp>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
