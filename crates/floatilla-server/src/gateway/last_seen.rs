//! Heartbeat bookkeeping: every frame from a router refreshes its "last seen" in memory, and a
//! background task writes all of them in one batch per interval instead of one write per ping.

use std::collections::HashMap;
use std::sync::Mutex;

use floatilla_domain::{DeviceId, Timestamp};
use floatilla_store::Store;

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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Timestamp>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
