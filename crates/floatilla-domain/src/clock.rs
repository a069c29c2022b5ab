//! The clock every expiry, timer and timestamp is measured on. Production uses the system clock;
//! tests drive a [`ManualClock`] so that timeouts and expiry are exercised exactly, without sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// An instant in UTC, to the clock's precision.
pub type Timestamp = DateTime<Utc>;

/// A future that completes when the clock reaches a deadline.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of "now" that can also wait for a moment to arrive.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;
}

/// The operating system's clock, with tokio timers for waiting.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to. Every pending [`Clock::sleep_until`] whose deadline is
/// reached by an [`ManualClock::advance`] completes.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.now.send_modify(|now| *now += by);
    }

    pub fn set(&self, to: Timestamp) {
        self.now.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // `wait_for` only fails when the sender is gone: then time never moves again.
            if now.wait_for(|now| *now >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn manual_sleep_completes_exactly_at_the_deadline() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        let deadline = clock.now() + chrono::Duration::seconds(30);
        let mut sleep = clock.sleep_until(deadline);

        clock.advance(chrono::Duration::seconds(29));
        assert!(futures_poll_once(&mut sleep).is_none());
        clock.advance(chrono::Duration::seconds(1));
        assert!(futures_poll_once(&mut sleep).is_some());
    }

    fn futures_poll_once(sleep: &mut Sleep) -> Option<()> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match sleep.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(()) => Some(()),
            std::task::Poll::Pending => None,
        }
    }
}
