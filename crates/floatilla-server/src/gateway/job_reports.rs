//! Routers' reports about their jobs, written in batches: when a job reaches thousands of
//! routers at once, their reports arrive at once too, and one transaction per batch keeps the
//! database's writer free for everything else. A report held here when the node dies is not
//! lost for good: the router is sent its unfinished execution again when it reconnects, and
//! reports where it stands.

use std::sync::Mutex;
use std::time::Duration;

use floatilla_store::{ExecutionReport, Store};

/// How often reports are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
pub struct JobReports {
    pending: Mutex<Vec<ExecutionReport>>,
}

impl JobReports {
    pub fn push(&self, report: ExecutionReport) {
        self.lock().push(report);
    }

    /// Writes everything pending, in the order it arrived.
    pub async fn flush(&self, store: &dyn Store) {
        let batch = std::mem::take(&mut *self.lock());
        if batch.is_empty() {
            return;
        }
        if let Err(error) = store.report_executions(&batch).await {
            tracing::warn!(%error, reports = batch.len(), "could not record job reports; will retry");
            let mut pending = self.lock();
            let newer = std::mem::replace(&mut *pending, batch);
            pending.extend(newer);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ExecutionReport>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
